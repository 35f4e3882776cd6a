//! PostgreSQL-only properties of `standalone::pg::PgObjects` on a real server
//! (`support/postgres.rs`): migrations once under concurrent openers, refusal of a newer
//! schema, clear connection errors that never show the password, PGPASSWORD, credentials sealed
//! at rest, cross-process notifications, a shared resourceVersion sequence, bounded Events,
//! the outbox, and `record_outcome` as one transaction. The `Objects` contract itself runs in
//! `objects_contract.rs`.
//!
//! Tests here take `ENV` because one sets PGPASSWORD, which sqlx reads on every URL parse.

#[path = "support/postgres.rs"]
mod postgres;

// The binary, migrate, recovery and backups (tests/postgres_store/operations.rs).
#[path = "postgres_store/operations.rs"]
mod operations;

// `record_outcome` as one transaction (tests/postgres_store/outcome.rs).
#[path = "postgres_store/outcome.rs"]
mod outcome;

// The object cache across processes (tests/postgres_store/cache.rs).
#[path = "postgres_store/cache.rs"]
mod cache;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calsync::credentials::Credentials;
use calsync::credentials::envelope::{Key, Keyring};
use calsync::engine::{EventType, ObjectEvent, ObjectKey, Objects, StoreError};
use calsync::resources::{
    CalendarConnection, CalendarConnectionSpec, ConflictPolicy, ConnectionRef, DeletionPolicy, ProviderKind, SecretRef,
    TaskSync, TaskSyncSpec,
};
use calsync::standalone::pg::{PgObjects, schema};
use calsync::standalone::store::{OutboxMessage, OutboxSettle};
use secrecy::SecretString;

static ENV: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn keyring() -> Keyring {
    Keyring::new(Key::generate().0)
}

async fn fresh_db() -> (String, String) {
    tokio::task::spawn_blocking(|| {
        let pg = postgres::shared();
        let db = pg.create_database();
        (pg.url_of(&db), db)
    })
    .await
    .unwrap()
}

fn conn(name: &str) -> CalendarConnection {
    CalendarConnection::new(
        name,
        CalendarConnectionSpec {
            user_id: "alice".into(),
            provider: ProviderKind::Apple,
            credentials_secret_ref: SecretRef { name: format!("{name}-creds"), key: None },
            calendar_id: None,
            server_url: None,
            category_calendars: BTreeMap::new(),
            user_default: false,
            import: None,
            active: true,
        },
    )
}

fn task(name: &str) -> TaskSync {
    TaskSync::new(
        name,
        TaskSyncSpec {
            connection_ref: ConnectionRef { name: "c".into() },
            task_id: name.into(),
            title: "Essay".into(),
            start: "2026-12-10T10:00:00Z".into(),
            time_zone: None,
            duration: None,
            end: None,
            all_day: None,
            category: None,
            description: None,
            recurrence: vec![],
            exceptions: vec![],
            calendar_id: None,
            deletion_policy: DeletionPolicy::Delete,
            conflict_policy: ConflictPolicy::Manual,
            schedule: None,
        },
    )
}

fn rv(o: &impl kube::Resource) -> u64 {
    o.meta().resource_version.as_deref().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_starting_together_migrate_once() {
    let _env = ENV.lock().await;
    let (url, db) = fresh_db().await;
    let (a, b) = tokio::join!(PgObjects::open(&url, keyring()), PgObjects::open(&url, keyring()));
    let (a, b) = (a.unwrap(), b.unwrap());
    let versions = tokio::task::spawn_blocking(move || {
        postgres::shared().psql(&db, "SELECT string_agg(version::text, ',' ORDER BY version) FROM calsync_schema")
    })
    .await
    .unwrap();
    let want: Vec<String> = (1..=schema::current_version()).map(|v| v.to_string()).collect();
    assert_eq!(versions, want.join(","), "each migration recorded once");
    a.apply_connection(&conn("c")).await.unwrap();
    assert!(b.get_connection("default", "c").await.unwrap().is_some());
}

#[tokio::test]
async fn a_schema_from_a_newer_calsync_is_refused_naming_both_versions() {
    let _env = ENV.lock().await;
    let (url, db) = fresh_db().await;
    drop(PgObjects::open(&url, keyring()).await.unwrap());
    tokio::task::spawn_blocking(move || {
        postgres::shared().psql(&db, "INSERT INTO calsync_schema (version, calsync_version) VALUES (999, '9.9.9')")
    })
    .await
    .unwrap();
    let err = PgObjects::open(&url, keyring()).await.unwrap_err().to_string();
    assert!(err.contains("version 999"), "{err}");
    assert!(err.contains(&format!("version {}", schema::current_version())), "{err}");
    assert!(err.contains("newer calsync"), "{err}");
}

#[tokio::test]
async fn connection_errors_name_the_host_and_what_to_check_never_the_password() {
    let _env = ENV.lock().await;
    let pg = tokio::task::spawn_blocking(postgres::shared).await.unwrap();
    let secret = "wrong-pw-3f9a1c";
    let cases = [
        (format!("postgresql://postgres:{secret}@127.0.0.1:{}/postgres?sslmode=disable", pg.port), "password"),
        (format!("postgresql://postgres:{secret}@127.0.0.1:{}/postgres", free_closed_port()), "running and reachable"),
        (format!("postgresql://postgres:{}@127.0.0.1:{}/no_such_db", pg.password(), pg.port), "does not exist"),
        (format!("postgres://postgres:{secret}@127.0.0.1:{}/postgres?sslmode=require", pg.port), "sslmode"),
    ];
    for (url, what) in cases {
        let started = Instant::now();
        let err = PgObjects::open(&url, keyring()).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
        let text = err.to_string();
        assert!(matches!(err, StoreError::Unavailable(_)), "{text}");
        assert!(text.contains("127.0.0.1"), "names the host: {text}");
        assert!(text.contains(what), "says what to check ({what}): {text}");
        assert!(!text.contains(secret) && !text.contains(pg.password()), "shows a password: {text}");
    }
    let err = PgObjects::open(&format!("postgres://u:{secret}@host:notaport/db"), keyring()).await.unwrap_err();
    assert!(matches!(&err, StoreError::Invalid(m) if m.contains("postgresql://USER") && !m.contains(secret)), "{err}");
}

/// A loopback port with nothing listening.
fn free_closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn the_password_can_come_from_pgpassword_and_is_never_logged() {
    let _env = ENV.lock().await;
    let pg = tokio::task::spawn_blocking(postgres::shared).await.unwrap();
    let db = tokio::task::spawn_blocking(|| postgres::shared().create_database()).await.unwrap();
    // Everything the store logs, at every level, while it opens and works.
    let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || Sink(sink.clone()))
        .finish();
    let _log = tracing::subscriber::set_default(subscriber);
    // SAFETY: every test of this binary holds ENV, so nothing reads the environment meanwhile.
    unsafe { std::env::set_var("PGPASSWORD", pg.password()) };
    let opened = PgObjects::open(&format!("postgresql://postgres@127.0.0.1:{}/{db}", pg.port), keyring()).await;
    unsafe { std::env::remove_var("PGPASSWORD") };
    let store = opened.unwrap();
    store.apply_connection(&conn("c")).await.unwrap();
    assert!(format!("{store:?}").contains("127.0.0.1") && !format!("{store:?}").contains(pg.password()));
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.contains("opened the PostgreSQL store"), "{text}");
    assert!(!text.contains(pg.password()), "the password was logged: {text}");
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn credentials_are_sealed_at_rest_and_tampering_is_isolated() {
    let _env = ENV.lock().await;
    let (url, db) = fresh_db().await;
    let (key, _) = Key::generate();
    let store = PgObjects::open(&url, Keyring::new(key.clone())).await.unwrap();
    let data = |pw: &str| {
        BTreeMap::from([("username".to_string(), b"u".to_vec()), ("password".to_string(), pw.as_bytes().to_vec())])
    };
    store.put_secret("default", "a", data("very-secret-password-a")).await.unwrap();
    store.put_secret("default", "b", data("very-secret-password-b")).await.unwrap();
    let dump = tokio::task::spawn_blocking(move || {
        postgres::shared().psql(&db, "SELECT encode(sealed, 'escape') || key_id FROM secrets")
    })
    .await
    .unwrap();
    assert!(!dump.is_empty() && !dump.contains("very-secret-password"), "plaintext in the database");
    for sql in [
        "UPDATE secrets SET sealed = (SELECT sealed FROM secrets WHERE name = 'b') WHERE name = 'a'",
        "UPDATE secrets SET sealed = substring(sealed from 1 for length(sealed) - 1) WHERE name = 'a'",
        "UPDATE secrets SET sealed = 'garbage'::bytea WHERE name = 'a'",
    ] {
        store.raw_execute(sql).await.unwrap();
        let err = store.read_credentials("default", &SecretRef { name: "a".into(), key: None }).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Unreadable(m) if m.contains("default/a") && m.contains("ENCRYPTION_KEYS_PREVIOUS") && !m.contains("very-secret")),
            "{sql}: {err}"
        );
    }
    assert!(store.read_credentials("default", &SecretRef { name: "b".into(), key: None }).await.unwrap().is_some());
    let other = PgObjects::open(&url, keyring()).await.unwrap();
    let err = other.read_credentials("default", &SecretRef { name: "b".into(), key: None }).await.unwrap_err();
    assert!(err.to_string().contains("key id"), "{err}");
    assert_eq!(store.stored_key_ids().await.unwrap(), [Keyring::new(key).current_id()]);
}

#[tokio::test]
async fn data_survives_reopen_and_owned_credentials_go_with_their_owner() {
    let _env = ENV.lock().await;
    let (url, _) = fresh_db().await;
    let keys = keyring();
    let store = PgObjects::open(&url, keys.clone()).await.unwrap();
    let c = store.apply_connection(&conn("c")).await.unwrap();
    let creds = Credentials::Basic { username: "u".into(), password: SecretString::from("p") };
    let r = SecretRef { name: "c-creds".into(), key: None };
    store.write_credentials("default", &r, &creds, &ObjectKey::connection("default", "c")).await.unwrap();
    drop(store);
    let store = PgObjects::open(&url, keys).await.unwrap();
    let again = store.get_connection("default", "c").await.unwrap().unwrap();
    assert_eq!(
        (again.metadata.uid, again.metadata.resource_version),
        (c.metadata.uid.clone(), c.metadata.resource_version.clone())
    );
    assert!(rv(&store.apply_task_sync(&task("t")).await.unwrap()) > rv(&c));
    assert_eq!(store.read_credentials("default", &r).await.unwrap(), Some(creds));
    store.delete(&ObjectKey::connection("default", "c")).await.unwrap();
    assert_eq!(store.read_credentials("default", &r).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_processes_writes_are_notified_and_share_one_resource_version_sequence() {
    let _env = ENV.lock().await;
    let (url, _) = fresh_db().await;
    let keys = keyring();
    let a = PgObjects::open(&url, keys.clone()).await.unwrap();
    let b = PgObjects::open(&url, keys).await.unwrap();
    let mut objects = a.subscribe();
    let mut secrets = a.subscribe_secrets();
    b.apply_task_sync(&task("t")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), objects.recv()).await.unwrap().unwrap();
    assert_eq!(got, ObjectKey::task_sync("default", "t"));
    b.put_secret("default", "s", BTreeMap::from([("k".to_string(), b"v".to_vec())])).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), secrets.recv()).await.unwrap().unwrap();
    assert_eq!((got.namespace.as_str(), got.name.as_str()), ("default", "s"));

    let mut handles = Vec::new();
    for i in 0..40 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        handles.push(tokio::spawn(async move { store.apply_task_sync(&task(&format!("t{i}"))).await }));
    }
    let mut versions = std::collections::BTreeSet::new();
    for h in handles {
        assert!(versions.insert(rv(&h.await.unwrap().unwrap())), "resourceVersion handed out twice");
    }
    let first = a.get_task_sync("default", "t0").await.unwrap().unwrap();
    let mut newer = first.clone();
    newer.spec.title = "b wins".into();
    b.apply_task_sync(&newer).await.unwrap();
    let mut stale = first;
    stale.spec.title = "a loses".into();
    assert!(matches!(a.apply_task_sync(&stale).await, Err(StoreError::Conflict(_))));
}

#[tokio::test]
async fn events_are_bounded() {
    let _env = ENV.lock().await;
    let (url, _) = fresh_db().await;
    let store = PgObjects::open(&url, keyring()).await.unwrap();
    let key = ObjectKey::task_sync("default", "t");
    // Pruning runs every 64th id (1088 here); readers never see more than the newest 1000.
    for i in 0..1100 {
        let ev = ObjectEvent {
            type_: EventType::Normal,
            reason: "EventCreated".into(),
            note: format!("n{i}"),
            action: "Create".into(),
        };
        store.publish_event(&key, &ev).await.unwrap();
    }
    let all = store.events(None, 5000).await.unwrap();
    assert_eq!(all.len(), 1000);
    assert_eq!(all.first().map(|e| e.note.as_str()), Some("n100"));
    assert_eq!(all.last().map(|e| (e.note.as_str(), e.key.clone())), Some(("n1099", key.clone())));
    let stored = store.raw_execute("DELETE FROM events WHERE id <= 88").await.unwrap();
    assert_eq!(stored, 0, "the prune at id 1088 removed every Event older than the newest 1000 then");
    let left = store.raw_execute("UPDATE events SET note = note").await.unwrap();
    assert_eq!(left, 1100 - 88);
    assert_eq!(store.events(Some(&key), 3).await.unwrap().len(), 3);
}

#[tokio::test]
async fn the_outbox_delivers_reschedules_dead_letters_and_disables() {
    let _env = ENV.lock().await;
    let (url, _) = fresh_db().await;
    let store = PgObjects::open(&url, keyring()).await.unwrap();
    let msg = |id: &str| OutboxMessage { id: id.into(), body: "{}".into() };
    store.outbox_push(vec![msg("a"), msg("b"), msg("c")]).await.unwrap();
    let due = store.outbox_due(i64::MAX, 10, vec![]).await.unwrap();
    assert_eq!(due.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
    let seq = |id: &str| due.iter().find(|e| e.id == id).unwrap().seq;
    let not_busy = store.outbox_due(i64::MAX, 10, vec![seq("a")]).await.unwrap();
    assert_eq!(not_busy.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["b", "c"]);
    let later = chrono::Utc::now().timestamp_millis() + 60_000;
    store
        .outbox_settle(vec![
            OutboxSettle::Delivered { seq: seq("a") },
            OutboxSettle::Retry { seq: seq("b"), attempts: 1, next_ms: later, error: "HTTP 503".into() },
            OutboxSettle::Dead { seq: seq("c"), attempts: 9, reason: "HTTP 500".into() },
        ])
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    assert!(store.outbox_due(now, 10, vec![]).await.unwrap().is_empty());
    assert_eq!(store.outbox_next_due(now).await.unwrap(), Some(later));
    assert_eq!(store.outbox_depth().await.unwrap().0, 1);
    let b = store.outbox_due(later, 10, vec![]).await.unwrap();
    assert_eq!((b.len(), b[0].id.as_str(), b[0].attempts), (1, "b", 1));
    assert_eq!(store.outbox_dead(10).await.unwrap(), [("c".to_string(), 9, "HTTP 500".to_string())]);
    assert_eq!(store.outbox_endpoint_disabled("h").await.unwrap(), None);
    store.outbox_disable_endpoint("h", "410").await.unwrap();
    assert_eq!(store.outbox_endpoint_disabled("h").await.unwrap().as_deref(), Some("410"));
}

/// One message per TaskSync status write naming its owner; panics (inside the transaction)
/// when told to.
#[derive(Default)]
pub(crate) struct TestTap {
    pub(crate) panic: std::sync::atomic::AtomicBool,
}

impl calsync::standalone::store::StatusTap for TestTap {
    fn task_sync(
        &self,
        _before: &TaskSync,
        after: &TaskSync,
        owner: &dyn Fn(&str) -> Option<(String, String)>,
    ) -> Vec<OutboxMessage> {
        assert!(!self.panic.load(std::sync::atomic::Ordering::Relaxed), "tap fails inside the transaction");
        let (user, provider) = owner(&after.spec.connection_ref.name).unwrap_or_default();
        vec![OutboxMessage { id: format!("msg_{}", rv(after)), body: format!("{user}/{provider}") }]
    }
    fn connection(&self, _: &CalendarConnection, _: &CalendarConnection) -> Vec<OutboxMessage> {
        Vec::new()
    }
    fn recorded(&self, _: usize) {}
}

#[tokio::test]
async fn webhook_messages_commit_with_the_status_write_or_not_at_all() {
    let _env = ENV.lock().await;
    let (url, _) = fresh_db().await;
    let store = PgObjects::open(&url, keyring()).await.unwrap();
    let tap = Arc::new(TestTap::default());
    store.set_status_tap(tap.clone()).unwrap();
    store.apply_connection(&conn("c")).await.unwrap();
    store.apply_task_sync(&task("ts")).await.unwrap();
    let status = |e: &str| calsync::resources::TaskSyncStatus { event_id: Some(e.into()), ..Default::default() };
    let written = store.patch_task_sync_status("default", "ts", &status("e1")).await.unwrap();
    let due = store.outbox_due(i64::MAX, 10, vec![]).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].id.clone(), due[0].body.as_str()), (format!("msg_{}", rv(&written)), "alice/apple"));
    tap.panic.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(store.patch_task_sync_status("default", "ts", &status("e2")).await.is_err());
    let ts = store.get_task_sync("default", "ts").await.unwrap().unwrap();
    assert_eq!(ts.status.unwrap().event_id.as_deref(), Some("e1"), "the status write rolled back with the tap");
    assert_eq!(store.outbox_depth().await.unwrap().0, 1);
}

/// Shard leases: two replicas split the shards without overlap (shards given back wait out the
/// hand-over before the newcomer takes them); a replica that cannot renew (here: the lease
/// tables locked away from it) stops owning anything, and refuses calendar writes, before its
/// leases may expire, and owns again once it can renew; a replica that goes away leaves its shards to the
/// other after the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_split_shards_stop_when_they_cannot_renew_and_take_over() {
    use calsync::standalone::pg::shards::{SHARDS, TTL, shard_of};
    let _env = ENV.lock().await;
    let (url, db) = fresh_db().await;
    let (a, b) = (PgObjects::open(&url, keyring()).await.unwrap(), PgObjects::open(&url, keyring()).await.unwrap());
    let sa = a.shards().await.unwrap();
    assert_eq!(sa.held().len(), SHARDS as usize, "alone, one replica holds every shard");
    let sb = b.shards().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(25);
    let (mut overlap, mut given_back, mut taken) = (0, None, None);
    while !(sa.held().len() == 32 && sb.held().len() == 32) {
        assert!(Instant::now() < deadline, "no even split: {} / {}", sa.held().len(), sb.held().len());
        overlap += sa.held().intersection(&sb.held()).count();
        if sa.held().len() == 32 {
            given_back.get_or_insert_with(Instant::now);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    taken.get_or_insert_with(Instant::now);
    assert_eq!(overlap, 0, "a shard was held by both replicas during the hand-over");
    let waited = taken.unwrap() - given_back.expect("replica a gave shards back");
    assert!(
        waited + Duration::from_millis(600) >= calsync::standalone::pg::shards::HANDOVER,
        "the newcomer took the given-back shards after {waited:?}, before the hand-over ended"
    );
    assert!(sa.held().is_disjoint(&sb.held()));
    let key = ObjectKey::task_sync("default", "t");
    assert!(sa.owns(&key) != sb.owns(&key), "exactly one replica owns {key} (shard {})", shard_of(&key));

    // Lock the lease tables for 12 s: neither replica can renew.
    let locker = std::thread::spawn(move || {
        postgres::shared().psql(&db, "BEGIN; LOCK TABLE replicas, shard_leases; SELECT pg_sleep(12); COMMIT;")
    });
    use calsync::providers::gate::WriteGate;
    assert!(sa.refuse("default/c").is_none(), "calendar writes are allowed while the leases hold");
    tokio::time::sleep(TTL).await;
    assert!(!sa.owns(&key) && !sb.owns(&key), "a replica kept reconciling without its lease");
    // And a reconcile already under way writes nothing more to calendars.
    let refused = sa.refuse("default/c").expect("calendar writes refused without the leases");
    assert_eq!(refused.0, "NoLease");
    tokio::task::spawn_blocking(move || locker.join().unwrap()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sa.owns(&key) == sb.owns(&key) {
        assert!(Instant::now() < deadline, "ownership did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    drop(sb);
    drop(b);
    let deadline = Instant::now() + TTL * 3;
    while sa.held().len() < SHARDS as usize {
        assert!(Instant::now() < deadline, "the other replica's shards were not taken over: {}", sa.held().len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(sa.owns(&key));
}

/// Two processes on one outbox (replicas) never get the same message at once.
#[tokio::test]
async fn two_dispatchers_never_fetch_the_same_message() {
    let _env = ENV.lock().await;
    let (url, _) = fresh_db().await;
    let (a, b) = (PgObjects::open(&url, keyring()).await.unwrap(), PgObjects::open(&url, keyring()).await.unwrap());
    let msgs = (0..10).map(|i| OutboxMessage { id: format!("m{i}"), body: "{}".into() }).collect();
    a.outbox_push(msgs).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let first = a.outbox_due(now, 6, vec![]).await.unwrap();
    let second = b.outbox_due(now, 10, vec![]).await.unwrap();
    assert_eq!((first.len(), second.len()), (6, 4));
    assert_eq!(first.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["m0", "m1", "m2", "m3", "m4", "m5"]);
    assert!(first.iter().all(|e| second.iter().all(|f| f.seq != e.seq)));
    assert!(b.outbox_due(now, 10, vec![]).await.unwrap().is_empty(), "claimed messages are not due");
    // A sender that died: its claims run out and the messages are due again.
    let later = now + 6 * 60 * 1000;
    assert_eq!(b.outbox_due(later, 100, vec![]).await.unwrap().len(), 10);
}
