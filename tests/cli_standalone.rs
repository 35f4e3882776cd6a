//! `calsync apply/get/delete` through the built binary: refusals worded like the API server's,
//! kubectl-like output, generated secrets printed by path only, and durability of acknowledged
//! writes across kill -9.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_calsync");

fn calsync(db: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .env_remove("ENCRYPTION_KEY")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const SETUP: &str = r#"
apiVersion: v1
kind: Secret
metadata:
  name: icloud-creds
stringData:
  username: someone@icloud.com
  password: abcd-efgh-ijkl-mnop
---
apiVersion: calendar.getitdone.app/v1alpha1
kind: CalendarConnection
metadata:
  name: alice-apple
spec:
  userId: alice
  provider: apple
  credentialsSecretRef:
    name: icloud-creds
---
apiVersion: calendar.getitdone.app/v1alpha1
kind: TaskSync
metadata:
  name: dentist
spec:
  connectionRef:
    name: alice-apple
  taskId: "42"
  title: Dentist
  start: "2026-03-05T14:00:00"
  timeZone: Europe/Berlin
  duration: 45m
"#;

fn bad_task(extra: &str) -> String {
    format!(
        "apiVersion: calendar.getitdone.app/v1alpha1\nkind: TaskSync\nmetadata:\n  name: bad\nspec:\n  connectionRef:\n    name: alice-apple\n  taskId: \"1\"\n  title: T\n{extra}"
    )
}

#[test]
fn apply_get_delete_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("calsync.db");
    let out = calsync(&db, &["apply", "-f", "-"], Some(SETUP));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        stdout,
        "secret/icloud-creds created\ncalendarconnection.calendar.getitdone.app/alice-apple created\ntasksync.calendar.getitdone.app/dentist created\n"
    );
    // The generated key is announced by path, never by value.
    let key_file = dir.path().join("calsync.db.encryption-key");
    assert!(stderr.contains(&key_file.display().to_string()), "{stderr}");
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert!(!stderr.contains(key.trim()) && !stdout.contains("abcd-efgh"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // Labels set by others (the engine labels TaskSyncs) survive a re-apply of the same file.
    {
        use calsync::credentials::envelope::{Key, Keyring};
        use calsync::engine::{Labels, ObjectKey, Objects};
        use calsync::standalone::SqliteObjects;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let keys = Keyring::new(Key::from_base64(&key).unwrap());
            let store = SqliteObjects::open(&format!("sqlite://{}", db.display()), keys).await.unwrap();
            let labels = Labels::from([("calendar.getitdone.app/connection".to_string(), "alice-apple".to_string())]);
            store.set_labels(&ObjectKey::task_sync("default", "dentist"), &labels).await.unwrap();
        });
    }
    let again = calsync(&db, &["apply", "-f", "-"], Some(SETUP));
    assert!(
        text(&again.stdout).contains("tasksync.calendar.getitdone.app/dentist unchanged"),
        "{}",
        text(&again.stdout)
    );
    assert!(text(&again.stdout).contains("secret/icloud-creds unchanged"));

    let table = calsync(&db, &["get", "tsync"], None);
    let t = text(&table.stdout);
    assert!(t.starts_with("NAME      CONNECTION    TASK   SYNCED   EVENT    AGE"), "{t}");
    assert!(t.contains("dentist   alice-apple   42     <none>   <none>"), "{t}");
    let conns = text(&calsync(&db, &["get", "calendarconnections"], None).stdout);
    assert!(conns.contains("alice-apple") && conns.contains("apple"), "{conns}");

    let yaml = text(&calsync(&db, &["get", "tasksync", "dentist", "-o", "yaml"], None).stdout);
    assert!(yaml.contains("kind: TaskSync") && yaml.contains("generation: 1") && yaml.contains("uid:"), "{yaml}");
    assert!(yaml.contains("calendar.getitdone.app/connection: alice-apple"), "{yaml}");
    let json: serde_json::Value =
        serde_json::from_slice(&calsync(&db, &["get", "calconn", "-o", "json"], None).stdout).unwrap();
    assert_eq!(json["kind"], "List");
    assert_eq!(json["items"][0]["spec"]["provider"], "apple");
    // The REST API finds a user's connections by the hashed user label.
    let label = calsync::resources::user_label_value("alice");
    assert_eq!(json["items"][0]["metadata"]["labels"]["calendar.getitdone.app/user"], label.as_str());

    let missing = calsync(&db, &["get", "tsync", "nope"], None);
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("tasksyncs.calendar.getitdone.app \"nope\" not found"));

    let del = calsync(&db, &["delete", "tsync", "dentist"], None);
    assert!(del.status.success(), "{}", text(&del.stderr));
    assert_eq!(text(&del.stdout), "tasksync.calendar.getitdone.app \"dentist\" deleted\n");
    let empty = calsync(&db, &["get", "tasksyncs"], None);
    assert!(text(&empty.stderr).contains("No resources found in default namespace."));

    let del = calsync(&db, &["delete", "-f", "-"], Some(SETUP));
    assert!(!del.status.success(), "dentist is already gone: kubectl fails on NotFound");
    assert!(text(&del.stdout).contains("secret \"icloud-creds\" deleted"));
    assert!(text(&del.stdout).contains("calendarconnection.calendar.getitdone.app \"alice-apple\" deleted"));
    let del = calsync(&db, &["delete", "--ignore-not-found", "-f", "-"], Some(SETUP));
    assert!(del.status.success());
}

#[test]
fn apply_refuses_what_kubernetes_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("calsync.db");
    let cases = [
        (
            bad_task("  start: \"2026-03-05T14:00:00Z\"\n  end: \"2026-03-05T13:00:00Z\"\n"),
            "The TaskSync \"bad\" is invalid: spec: Invalid value: \"object\": end must be after start",
        ),
        (
            bad_task("  start: \"2026-03-05T14:00:00\"\n  timeZone: \"Europe/Ber lin\"\n"),
            "The TaskSync \"bad\" is invalid: spec.timeZone: Invalid value: \"Europe/Ber lin\": spec.timeZone in body should match",
        ),
        (
            bad_task("  start: \"2026-03-05T14:00:00\"\n"),
            "start without an offset needs timeZone",
        ),
        (bad_task("  start: \"tomorrow\"\n"), "spec.start: Invalid value: \"tomorrow\""),
        (bad_task("  start: \"2026-03-05\"\n  colour: red\n"), "strict decoding error: unknown field \"spec.colour\""),
        (
            "apiVersion: calendar.getitdone.app/v1alpha1\nkind: CalendarConnection\nmetadata:\n  name: c\nspec:\n  userId: u\n  provider: yahoo\n  credentialsSecretRef:\n    name: s\n".to_string(),
            "The CalendarConnection \"c\" is invalid: spec.provider: Unsupported value: \"yahoo\": supported values: \"google\", \"outlook\", \"apple\", \"caldav\"",
        ),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n".to_string(), "no matches for kind \"ConfigMap\" in version \"v1\""),
        ("spec: [unclosed\n".to_string(), "error parsing"),
    ];
    for (yaml, want) in cases {
        let out = calsync(&db, &["apply", "-f", "-"], Some(&yaml));
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{yaml}");
        assert!(stderr.contains(want), "for:\n{yaml}\nwanted {want:?} in:\n{stderr}");
    }
    // Nothing was stored.
    let out = calsync(&db, &["get", "tsync", "-o", "json"], None);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["items"].as_array().map(Vec::len), Some(0));

    // Transition rules: taskId is immutable on update.
    let ok = bad_task("  start: \"2026-03-05\"\n");
    assert!(calsync(&db, &["apply", "-f", "-"], Some(&ok)).status.success());
    let changed = ok.replace("taskId: \"1\"", "taskId: \"2\"");
    let out = calsync(&db, &["apply", "-f", "-"], Some(&changed));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("taskId is immutable"), "{}", text(&out.stderr));
}

/// kill -9 in the middle of `calsync apply` of many documents: every object whose "created"
/// line was printed (acknowledged) is in the database after reopening.
#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("calsync.db");
    let mut yaml = String::new();
    for i in 0..3000 {
        yaml.push_str(&format!(
            "---\napiVersion: calendar.getitdone.app/v1alpha1\nkind: TaskSync\nmetadata:\n  name: t{i}\nspec:\n  connectionRef:\n    name: c\n  taskId: \"{i}\"\n  title: Task {i}\n  start: \"2026-03-05\"\n"
        ));
    }
    let file = dir.path().join("many.yaml");
    std::fs::write(&file, yaml).unwrap();
    let mut child = Command::new(BIN)
        .args(["apply", "-f", file.to_str().unwrap()])
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut acked = Vec::new();
    let mut line = String::new();
    while acked.len() < 100 {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "apply ended early");
        acked.push(line.trim().to_string());
    }
    child.kill().unwrap(); // SIGKILL
    // Lines already in the pipe were acknowledged before the kill, too.
    for l in reader.lines() {
        acked.push(l.unwrap().trim().to_string());
    }
    child.wait().unwrap();
    assert!(acked.len() < 3000, "the kill came too late to test anything");
    let out = calsync(&db, &["get", "tsync", "-o", "json"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stored: std::collections::HashSet<String> =
        json["items"].as_array().unwrap().iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_string()).collect();
    for l in &acked {
        let name = l.trim_start_matches("tasksync.calendar.getitdone.app/").trim_end_matches(" created");
        assert!(stored.contains(name), "acknowledged {name} is missing after kill -9");
    }
    eprintln!("acknowledged {} writes before kill -9; {} stored", acked.len(), stored.len());
}
