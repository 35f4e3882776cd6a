//! `calsync plan` through the built binary: a dry run over a standalone database synced to a
//! real Radicale (reached through a recording proxy) and over the fake Kubernetes API server.
//! Checked: the actions and field diffs it prints, its exit codes (0 nothing, 2 writes due),
//! that no write reached the calendar (the proxy's log), the database (file hashes) or the API
//! server (its request log: GET/LIST only).

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "support/kube_harness.rs"]
mod kube_harness;
mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use calsync::resources::{ProviderKind, connection_name};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::calsync_bin::{ENCRYPTION_KEY, Standalone};
use support::live::condition;
use support::radicale::Radicale;
use support::recording_proxy::RecordingProxy;

const CAL: &str = "/alice/calendar/";
const USER: &str = "plan_user";

fn task(name: &str, conn: &str, title: &str, start: &str) -> String {
    format!(
        "---\napiVersion: calendar.getitdone.app/v1alpha1\nkind: TaskSync\nmetadata:\n  name: {name}\nspec:\n  connectionRef:\n    name: {conn}\n  taskId: {name}\n  title: {title}\n  start: \"{start}\"\n  timeZone: Europe/Berlin\n  duration: 30m\n"
    )
}

/// `calsync ARGS` on the database `url`, with the test's ENCRYPTION_KEY.
fn cli(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("ENCRYPTION_KEY", ENCRYPTION_KEY)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run calsync")
}

fn plan(url: &str, args: &[&str]) -> Output {
    cli(url, &[&["plan"], args].concat())
}

/// Every stored TaskSync as `calsync get` prints it (resourceVersions included).
fn stored(url: &str) -> Value {
    let out = cli(url, &["get", "tasksyncs", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

/// Radicale behind a recording proxy, and a stopped standalone on `url` that synced `keep`,
/// `change` and `gone` to it; the connection's name.
async fn synced(dir: &Path, url: &str) -> (Radicale, RecordingProxy, String) {
    let server = Radicale::start();
    server.raw().mkcalendar(CAL, "Calendar", &["VEVENT"]).await;
    let proxy = RecordingProxy::start(&server.url).await;
    let cs = Standalone::start_with(dir, Standalone::pick_port(), &[("DATABASE_URL", url.to_string())]).await;
    let (s, body) = cs
        .call(
            "POST",
            "/apple/connect",
            Some(json!({"user_id": USER, "apple_id": server.user, "app_password": server.password, "server_url": proxy.url})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let conn = connection_name(USER, ProviderKind::Apple);
    let tasks = [
        task("keep", &conn, "Keep me", "2026-06-01T09:00:00"),
        task("change", &conn, "Dentist", "2026-06-02T09:00:00"),
        task("gone", &conn, "Cancelled meeting", "2026-06-03T09:00:00"),
    ]
    .concat();
    let file = dir.join("tasks.yaml");
    std::fs::write(&file, &tasks).expect("write");
    let out = cli(url, &["apply", "-f", file.to_str().expect("path")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let started = Instant::now();
    loop {
        let items = stored(url)["items"].as_array().cloned().unwrap_or_default();
        if items.len() == 3 && items.iter().all(|t| condition(t, "Synced").is_some_and(|(s, _)| s == "True")) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "not synced: {items:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(cs);
    (server, proxy, conn)
}

/// `keep` unchanged, `change` retitled and moved by two hours, `new` added (`gone` is not in it).
fn changed_file(dir: &Path, conn: &str) -> String {
    let changed = [
        task("keep", conn, "Keep me", "2026-06-01T09:00:00"),
        task("change", conn, "Dentist (moved)", "2026-06-02T11:00:00"),
        task("new", conn, "Gym", "2026-06-04T07:00:00"),
    ]
    .concat();
    let path = dir.join("changed.yaml");
    std::fs::write(&path, changed).expect("write");
    path.to_str().expect("path").to_string()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// SHA-256 of the database file and its WAL (what a write would change).
fn db_hash(dir: &Path) -> String {
    let mut h = Sha256::new();
    for f in ["calsync.db", "calsync.db-wal"] {
        h.update(std::fs::read(dir.join(f)).unwrap_or_default());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn line<'a>(stdout: &'a str, id: &str) -> &'a str {
    stdout.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("no line for {id}:\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_shows_the_engines_next_steps_and_never_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = Standalone::database_url(dir.path());
    let (server, proxy, conn) = synced(dir.path(), &url).await;

    // In sync: nothing to do, exit 0, and only reads.
    proxy.clear();
    let before = db_hash(dir.path());
    let out = plan(&url, &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("default/")).collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    assert!(rows.iter().all(|l| l.split_whitespace().nth(1) == Some("nothing")), "{stdout}");
    assert!(stdout.contains("Plan: 0 to create, 0 to update, 0 to delete"), "{stdout}");
    assert_eq!(db_hash(dir.path()), before, "plan changed the database");
    assert_eq!(proxy.writes(), vec![], "plan wrote to the calendar");

    // `gone` is deleted while standalone is down (marked: its finalizer waits for the engine).
    let out = cli(&url, &["delete", "tsync", "gone"]);
    assert!(text(&out.stdout).contains("marked for deletion"), "{}", text(&out.stderr));
    let changed = changed_file(dir.path(), &conn);
    proxy.clear();
    let before = db_hash(dir.path());
    let out = plan(&url, &["-f", &changed]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}{}", text(&out.stderr));
    assert!(line(&stdout, "default/keep ").contains(" nothing "), "{stdout}");
    assert!(line(&stdout, "default/change ").contains(" update "), "{stdout}");
    assert!(stdout.contains(r#"title: "Dentist" → "Dentist (moved)""#), "{stdout}");
    // 09:00 and 11:00 in Berlin in June (CEST, UTC+2).
    assert!(stdout.contains(r#"start: "2026-06-02T07:00:00Z" → "2026-06-02T09:00:00Z""#), "{stdout}");
    assert!(line(&stdout, "default/new ").contains(" create "), "{stdout}");
    assert!(stdout.contains(r#"title: (none) → "Gym""#), "{stdout}");
    assert!(line(&stdout, "default/gone ").contains(" delete "), "{stdout}");
    assert!(stdout.contains("Plan: 1 to create, 1 to update, 1 to delete"), "{stdout}");
    assert_eq!(db_hash(dir.path()), before, "plan changed the database");
    let requests = proxy.requests();
    assert!(!requests.is_empty(), "plan read nothing from the calendar");
    assert_eq!(proxy.writes(), vec![], "plan wrote to the calendar: {requests:?}");

    // The same as JSON: one object per TaskSync.
    let out = plan(&url, &["-f", &changed, "-o", "json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let items: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    let of = |n: &str| items.iter().find(|i| i["name"] == n).cloned().unwrap_or(Value::Null);
    assert_eq!(of("change")["action"], "update");
    assert_eq!(of("change")["namespace"], "default");
    let title = of("change")["diff"].as_array().and_then(|d| d.iter().find(|c| c["field"] == "title").cloned());
    assert_eq!(title, Some(json!({"field": "title", "old": "Dentist", "new": "Dentist (moved)"})));
    assert_eq!((of("new")["action"].clone(), of("gone")["action"].clone()), (json!("create"), json!("delete")));
    assert_eq!(of("keep")["action"], "nothing");
    assert!(of("keep")["reason"].is_string());
    assert_eq!(proxy.writes(), vec![]);
    assert!(!text(&out.stdout).contains(&server.password) && !text(&out.stderr).contains(&server.password));
}

/// The same dry run on PostgreSQL: read in a READ ONLY transaction, nothing stored changes.
#[tokio::test(flavor = "multi_thread")]
async fn plan_reads_postgresql_without_writing() {
    let pg = tokio::task::spawn_blocking(support::postgres::shared).await.expect("start PostgreSQL");
    support::calsync_bin::artifacts::record_secret("postgresql-password", pg.password());
    let url = tokio::task::spawn_blocking(|| support::postgres::shared().database()).await.expect("database");
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, proxy, conn) = synced(dir.path(), &url).await;
    let changed = changed_file(dir.path(), &conn);
    proxy.clear();
    let before = stored(&url);
    let out = plan(&url, &["-f", &changed]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}{}", text(&out.stderr));
    assert!(line(&stdout, "default/change ").contains(" update "), "{stdout}");
    assert!(line(&stdout, "default/new ").contains(" create "), "{stdout}");
    assert!(line(&stdout, "default/keep ").contains(" nothing "), "{stdout}");
    assert_eq!(stored(&url), before, "plan changed stored objects");
    assert_eq!(proxy.writes(), vec![], "plan wrote to the calendar");
    assert!(!stdout.contains(pg.password()) && !text(&out.stderr).contains(pg.password()));
}

/// Kubernetes mode against the fake API server over HTTP: the plan of each TaskSync, exit 2 for
/// the create, and the API server saw only GETs (LIST is a GET on a collection).
#[tokio::test(flavor = "multi_thread")]
async fn plan_on_kubernetes_reads_only() {
    use kube_harness::{FakeApiServer, NS, b64, connection_path, kubeconfig, secret_path, serve_http, task_sync_path};

    let server_cal = Radicale::start();
    server_cal.raw().mkcalendar(CAL, "Calendar", &["VEVENT"]).await;
    let proxy = RecordingProxy::start(&server_cal.url).await;
    let api = FakeApiServer::new();
    api.insert_raw(
        &secret_path(NS, "creds"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
               "data": {"username": b64(&server_cal.user), "password": b64(&server_cal.password)}}),
    );
    let conn = |name: &str, status: Value| {
        json!({"apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "CalendarConnection",
               "metadata": {"name": name},
               "spec": {"userId": "user-1", "provider": "caldav", "serverUrl": proxy.url,
                        "credentialsSecretRef": {"name": "creds"}},
               "status": status})
    };
    let ready = json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Connected", "message": "ok",
                                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                       "defaultCalendarId": CAL});
    api.insert_raw(&connection_path(NS, "ready"), conn("ready", ready));
    api.insert_raw(&connection_path(NS, "pending"), conn("pending", Value::Null));
    let ts = |name: &str, connection: &str| {
        json!({"apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "TaskSync", "metadata": {"name": name},
               "spec": {"connectionRef": {"name": connection}, "taskId": name, "title": format!("Task {name}"),
                        "start": "2026-03-05T14:00:00Z", "duration": "45m"}})
    };
    api.insert_raw(&task_sync_path(NS, "t-new"), ts("t-new", "ready"));
    api.insert_raw(&task_sync_path(NS, "t-wait"), ts("t-wait", "pending"));
    api.insert_raw(&task_sync_path(NS, "t-lost"), ts("t-lost", "nope"));
    let port = serve_http(api.clone()).await;
    api.clear_requests();

    let out = Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(["plan", "-n", NS])
        .env("KUBECONFIG", kubeconfig(port, NS))
        .env("CALSYNC_CALDAV_ALLOW_PRIVATE", "true")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("DATABASE_URL")
        .env_remove("ENCRYPTION_KEY")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run calsync plan");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}{}", text(&out.stderr));
    assert!(line(&stdout, &format!("{NS}/t-new ")).contains(" create "), "{stdout}");
    assert!(stdout.contains(r#"title: (none) → "Task t-new""#), "{stdout}");
    assert!(line(&stdout, &format!("{NS}/t-wait ")).contains(" blocked  ConnectionNotReady"), "{stdout}");
    assert!(line(&stdout, &format!("{NS}/t-lost ")).contains(" blocked  ConnectionNotFound"), "{stdout}");
    let requests = api.requests();
    assert!(!requests.is_empty(), "plan read nothing from the API server");
    let not_reads: Vec<_> = requests.iter().filter(|r| r.is_write() || r.is_watch()).collect();
    assert!(not_reads.is_empty(), "plan made other requests than GET/LIST: {not_reads:?}");
    assert!(requests.iter().any(|r| r.path.ends_with("/tasksyncs")), "no LIST of TaskSyncs: {requests:?}");
    assert_eq!(proxy.writes(), vec![], "plan wrote to the calendar");
    assert!(!proxy.requests().is_empty(), "plan did not look in the calendar");
    assert!(!stdout.contains(&server_cal.password) && !text(&out.stderr).contains(&server_cal.password));
}
