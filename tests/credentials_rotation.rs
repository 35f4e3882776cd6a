//! Key rotation and tampering, end to end (issue 9's acceptance): data written under key A reads
//! after switching to key B with A as previous; `calsync rotate-keys` moves every row to B;
//! removing A afterwards still reads everything. Run against the real binary on SQLite, and
//! against `KubeObjects` on the strict fake API server. A tampered Secret fails only its own
//! connection (`CredentialsUnreadable`) while the others stay Ready.

#[path = "support/artifacts.rs"]
mod artifacts;
#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[allow(clippy::duplicate_mod)]
#[path = "support/ports.rs"]
mod ports;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use calsync::controller::KubeObjects;
use calsync::controller::secrets::EnvelopeSealer;
use calsync::credentials::Credentials;
use calsync::credentials::envelope::{Key, Keyring};
use calsync::engine::{Engine, EngineConfig, ObjectKey, Objects, StoreError};
use calsync::providers::memory::{MemoryCalendar, MemoryConnector};
use calsync::resources::{CalendarConnection, CalendarConnectionSpec, ProviderKind, SecretRef, condition};
use calsync::standalone::SqliteObjects;
use fake_apiserver::{FakeApiServer, secret_path};
use secrecy::SecretString;

/// Two fixed test keys (32 bytes of 0xA0 / 0xB0), recorded for the leak check.
const KEY_A: &str = "oKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKA=";
const KEY_B: &str = "sLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLA=";

fn id(text: &str) -> String {
    Key::from_base64(text).unwrap().id()
}

/// Run `calsync ARGS` with the given keys; stdout+stderr are saved for the leak check.
fn calsync(db: &str, current: &str, previous: Option<&str>, args: &[&str]) -> (bool, String) {
    artifacts::record_secret("encryption-key-a", KEY_A);
    artifacts::record_secret("encryption-key-b", KEY_B);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_calsync"));
    cmd.args(args).env("DATABASE_URL", db).env("ENCRYPTION_KEY", current).env_remove("ENCRYPTION_KEY_PREVIOUS");
    match previous {
        Some(p) => cmd.env("ENCRYPTION_KEYS_PREVIOUS", p),
        None => cmd.env_remove("ENCRYPTION_KEYS_PREVIOUS"),
    };
    let out = cmd.output().expect("run calsync");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    std::fs::write(artifacts::path("calsync-rotation", "log"), &text).unwrap();
    (out.status.success(), text)
}

/// `calsync standalone` until it is healthy (Ok) or exits (Err with its output).
fn standalone_starts(db: &str, current: &str) -> Result<(), String> {
    let port = ports::free_port();
    let log_path = artifacts::path("calsync-rotation-standalone", "log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_calsync"))
        .arg("standalone")
        .env("DATABASE_URL", db)
        .env("ENCRYPTION_KEY", current)
        .env_remove("ENCRYPTION_KEYS_PREVIOUS")
        .env_remove("ENCRYPTION_KEY_PREVIOUS")
        .env("CALSYNC_API_KEYS", "rotation-test-api-key")
        .env("SECRET_KEY", "rotation-test-secret-key")
        .env("CALSYNC_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let result = loop {
        if child.try_wait().unwrap().is_some() {
            break Err(std::fs::read_to_string(&log_path).unwrap_or_default());
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break Ok(());
        }
        assert!(Instant::now() < deadline, "standalone neither started nor failed");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

const SECRETS_YAML: &str = "apiVersion: v1
kind: Secret
metadata: {name: one}
stringData: {username: alice, password: rotation-pw-one}
---
apiVersion: v1
kind: Secret
metadata: {name: two}
stringData: {refresh_token: rotation-refresh-two}
";

#[test]
fn standalone_rotation_from_key_a_to_key_b() {
    artifacts::record_secret("caldav-password", "rotation-pw-one");
    artifacts::record_secret("refresh-token", "rotation-refresh-two");
    artifacts::record_secret("api-key", "rotation-test-api-key");
    artifacts::record_secret("secret-key", "rotation-test-secret-key");
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("calsync.db").display());
    let yaml = dir.path().join("secrets.yaml");
    std::fs::write(&yaml, SECRETS_YAML).unwrap();
    let (ok, out) = calsync(&db, KEY_A, None, &["apply", "-f", yaml.to_str().unwrap()]);
    assert!(ok, "{out}");

    // Key B alone cannot read A's rows: standalone refuses to start, naming both key ids.
    let err = standalone_starts(&db, KEY_B).unwrap_err();
    assert!(err.contains(&id(KEY_A)) && err.contains(&id(KEY_B)), "names found and configured key ids: {err}");
    assert!(err.contains("ENCRYPTION_KEYS_PREVIOUS"), "says what to do: {err}");
    // rotate-keys without A: both unreadable, reported, nothing changed, non-zero exit.
    let (ok, out) = calsync(&db, KEY_B, None, &["rotate-keys", "--database-url", &db]);
    assert!(!ok && out.contains("re-sealed: 0") && out.contains("unreadable: 2"), "{out}");

    // B with A as previous: reads, and rotate-keys moves every row to B. Idempotent.
    let (ok, out) = calsync(&db, KEY_B, Some(KEY_A), &["rotate-keys", "--database-url", &db]);
    assert!(ok && out.contains("re-sealed: 2, already current: 0"), "{out}");
    let (ok, out) = calsync(&db, KEY_B, Some(KEY_A), &["rotate-keys", "--database-url", &db]);
    assert!(ok && out.contains("re-sealed: 0, already current: 2"), "{out}");

    // A removed: everything still reads.
    let (ok, out) = calsync(&db, KEY_B, None, &["rotate-keys", "--database-url", &db]);
    assert!(ok && out.contains("already current: 2") && out.contains("unreadable: 0"), "{out}");
    standalone_starts(&db, KEY_B).expect("standalone starts with key B only after the rotation");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqliteObjects::open(&db, Keyring::new(Key::from_base64(KEY_B).unwrap())).await.unwrap();
        let one = store.read_credentials("default", &SecretRef { name: "one".into(), key: None }).await.unwrap();
        assert_eq!(one, Some(Credentials::Basic { username: "alice".into(), password: "rotation-pw-one".into() }));
        let two = store.read_credentials("default", &SecretRef { name: "two".into(), key: None }).await.unwrap();
        assert!(matches!(two, Some(Credentials::OAuth { .. })));
    });
}

fn ring(current: &str, previous: &[&str]) -> Arc<EnvelopeSealer> {
    let ring = previous
        .iter()
        .fold(Keyring::new(Key::from_base64(current).unwrap()), |r, p| r.with_old_key(Key::from_base64(p).unwrap()));
    Arc::new(EnvelopeSealer::new(ring))
}

fn connection(name: &str, secret: &str) -> CalendarConnection {
    let mut c = CalendarConnection::new(
        name,
        CalendarConnectionSpec {
            user_id: "user-1".into(),
            provider: ProviderKind::Apple,
            credentials_secret_ref: SecretRef { name: secret.into(), key: None },
            calendar_id: None,
            server_url: None,
            category_calendars: BTreeMap::new(),
            user_default: false,
            import: None,
            active: true,
        },
    );
    c.metadata.namespace = Some("team-a".into());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_rotation_from_key_a_to_key_b() {
    let server = FakeApiServer::new();
    let ns = "team-a";
    let basic = |pw: &str| Credentials::Basic { username: "u".into(), password: SecretString::from(pw) };
    let under_a = KubeObjects::new(server.client(), None).with_sealer(ring(KEY_A, &[]));
    under_a.apply_connection(&connection("c1", "sealed")).await.unwrap();
    under_a.apply_connection(&connection("c2", "plain")).await.unwrap();
    let sealed = SecretRef { name: "sealed".into(), key: None };
    under_a.write_credentials(ns, &sealed, &basic("k8s-pw-sealed"), &ObjectKey::connection(ns, "c1")).await.unwrap();
    let stored = server.get(&secret_path(ns, "sealed")).unwrap();
    assert!(!stored.to_string().contains("k8s-pw-sealed"), "sealed at rest: {stored}");
    // A platform team's plain keys, and a calsync Secret from before sealing (plain JSON).
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    server.insert_raw(
        &secret_path(ns, "plain"),
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "plain"},
            "data": {"username": b64("u"), "password": b64("k8s-pw-plain")}}),
    );
    server.insert_raw(
        &secret_path(ns, "legacy"),
        serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "legacy", "labels": {"app.kubernetes.io/managed-by": "calsync"}},
            "data": {"credentials": b64(r#"{"type":"basic","username":"u","password":"k8s-pw-legacy"}"#)}}),
    );

    let b_only = KubeObjects::new(server.client(), None).with_sealer(ring(KEY_B, &[]));
    let err = b_only.read_credentials(ns, &sealed).await.unwrap_err();
    assert!(matches!(&err, StoreError::Unreadable(m) if m.contains(&id(KEY_A))), "{err}");

    let b_with_a = KubeObjects::new(server.client(), None).with_sealer(ring(KEY_B, &[KEY_A]));
    assert_eq!(b_with_a.read_credentials(ns, &sealed).await.unwrap(), Some(basic("k8s-pw-sealed")));
    let report = b_with_a.rotate_keys(Some(ns)).await.unwrap();
    assert_eq!((report.resealed, report.already_current, report.plain_left_alone), (2, 0, 1), "{report}");
    assert!(report.unreadable.is_empty(), "{report}");
    let again = b_with_a.rotate_keys(None).await.unwrap();
    assert_eq!((again.resealed, again.already_current, again.plain_left_alone), (0, 2, 1), "{again}");
    let plain_after = server.get(&secret_path(ns, "plain")).unwrap();
    assert_eq!(plain_after["data"]["password"], b64("k8s-pw-plain"), "plain keys are left alone");

    // A removed: everything reads with B alone.
    for name in ["sealed", "plain", "legacy"] {
        let r = SecretRef { name: name.into(), key: None };
        assert!(b_only.read_credentials(ns, &r).await.unwrap().is_some(), "{name}");
    }
    // Tampering is reported for that Secret only, and rotation goes on.
    let mut t = server.get(&secret_path(ns, "legacy")).unwrap();
    let mut raw =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, t["data"]["credentials"].as_str().unwrap())
            .unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    t["data"]["credentials"] =
        serde_json::json!(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw));
    server.insert_raw(&secret_path(ns, "legacy"), t);
    let report = b_only.rotate_keys(Some(ns)).await.unwrap();
    assert_eq!((report.already_current, report.unreadable.len()), (1, 1), "{report}");
    assert!(report.unreadable[0].contains("team-a/legacy") && report.unreadable[0].contains("tampered"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_credentials_fail_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = SqliteObjects::open(&url, Keyring::new(Key::from_base64(KEY_A).unwrap())).await.unwrap();
    let calendar = MemoryCalendar::new();
    let data =
        BTreeMap::from([("username".to_string(), b"user".to_vec()), ("password".to_string(), b"secret".to_vec())]);
    for name in ["good", "bad"] {
        store.put_secret("team-a", &format!("{name}-creds"), data.clone()).await.unwrap();
        store.apply_connection(&connection(name, &format!("{name}-creds"))).await.unwrap();
    }
    store
        .raw_execute(
            "UPDATE secrets SET sealed = substr(sealed, 1, length(sealed) - 1) || x'00' WHERE name = 'bad-creds'",
        )
        .await
        .unwrap();
    let engine =
        Engine::new(Arc::new(store.clone()), Arc::new(MemoryConnector { service: calendar }), EngineConfig::default());
    for name in ["good", "bad"] {
        engine.reconcile_connection("team-a", name).await.unwrap();
    }
    let ready = |c: &CalendarConnection| {
        let conds = &c.status.as_ref().unwrap().conditions;
        let r = condition::find(conds, "Ready").unwrap().clone();
        (r.status == calsync::resources::ConditionStatus::True, r.reason, r.message)
    };
    let good = store.get_connection("team-a", "good").await.unwrap().unwrap();
    assert!(ready(&good).0, "{:?}", ready(&good));
    let bad = store.get_connection("team-a", "bad").await.unwrap().unwrap();
    let (is_ready, reason, message) = ready(&bad);
    assert!(!is_ready);
    assert_eq!(reason, "CredentialsUnreadable");
    assert!(message.contains("team-a/bad-creds") && message.contains("reconnect"), "{message}");
    assert!(!message.contains("secret"), "{message}");
}
