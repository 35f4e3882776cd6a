//! Group commit under kill -9: a child process (this test binary, re-run as a writer) makes
//! concurrent writes to a SQLite file (create a TaskSync, then record a reconcile's outcome:
//! status, an entry in the writer's connection's history and an Event as one unit, from 64
//! tasks at once) and prints each write it had acknowledged; the parent kills it with SIGKILL
//! while group commits are in flight, reopens the database and checks that every acknowledged
//! write is there, whole (every stored object decodes; an acknowledged status is present) and
//! that no unit landed in part (each connection's history has exactly one entry per stored
//! status).

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use calsync::credentials::envelope::{Key, Keyring};
use calsync::engine::{EventType, ObjectEvent, ObjectKey, Objects, ReconcileRecord};
use calsync::resources::{
    CalendarConnection, Direction, HistoryEntry, Operation, SyncStatus, TaskSync, TaskSyncStatus,
};
use calsync::standalone::store::SqliteObjects;

const CHILD_ENV: &str = "CALSYNC_GROUP_COMMIT_CHILD_DB";
const KEY_ENV: &str = "CALSYNC_GROUP_COMMIT_CHILD_KEY";
const WRITERS: usize = 64;

fn task(name: &str) -> TaskSync {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "TaskSync",
        "metadata": {"name": name, "namespace": "default", "labels": {"writer": name.split('-').next().unwrap()}},
        "spec": {"connectionRef": {"name": "c"}, "taskId": name, "title": "T", "start": "2026-03-05T14:00:00Z"}
    }))
    .unwrap()
}

fn connection(w: usize) -> CalendarConnection {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "CalendarConnection",
        "metadata": {"name": format!("c-w{w}"), "namespace": "default"},
        "spec": {"userId": "u", "provider": "caldav", "credentialsSecretRef": {"name": "s"}}
    }))
    .unwrap()
}

/// What a successful create's reconcile records, as the engine does.
fn outcome(w: usize, name: &str) -> ReconcileRecord {
    let entry = HistoryEntry {
        id: 0,
        time: chrono::Utc::now(),
        task_id: Some(name.to_string()),
        event_id: Some(format!("ev-{name}")),
        direction: Direction::ToCalendar,
        operation: Operation::Create,
        status: SyncStatus::Success,
        error: None,
        note: None,
    };
    let event = ObjectEvent {
        type_: EventType::Normal,
        reason: "EventCreated".into(),
        note: format!("calendar event ev-{name} created"),
        action: "Create".into(),
    };
    ReconcileRecord {
        status: Some(TaskSyncStatus { event_id: Some(format!("ev-{name}")), ..Default::default() }),
        history: vec![(format!("c-w{w}"), entry)],
        events: vec![event],
    }
}

/// The writer (runs only in the child): writes until killed, printing `created NAME` and
/// `status NAME` after each acknowledgement and `stats WRITES COMMITS` now and then.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn child_writer() {
    let (Ok(path), Ok(key)) = (std::env::var(CHILD_ENV), std::env::var(KEY_ENV)) else {
        return; // Not the child: nothing to do.
    };
    let keys = Keyring::new(Key::from_base64(&key).unwrap());
    let store = SqliteObjects::open(&format!("sqlite://{path}"), keys).await.unwrap();
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    for w in 0..WRITERS {
        store.apply_connection(&connection(w)).await.unwrap();
    }
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, out) = (store.clone(), out.clone());
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let name = format!("w{w}-{n}");
                store.apply_task_sync(&task(&name)).await.unwrap();
                writeln!(out.lock().unwrap(), "created {name}").unwrap();
                let key = ObjectKey::task_sync("default", &name);
                store.record_outcome(&key, &outcome(w, &name)).await.unwrap();
                let mut o = out.lock().unwrap();
                writeln!(o, "status {name}").unwrap();
                if n % 10 == 0 {
                    let s = store.stats();
                    writeln!(o, "stats {} {}", s.writes, s.commits).unwrap();
                }
                o.flush().unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_group_commits_loses_no_acknowledged_write() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gc.db");
    let (key, encoded) = Key::generate();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, &path)
        .env(KEY_ENV, &encoded)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut created, mut status, mut stats) = (HashSet::new(), HashSet::new(), (0u64, 0u64));
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some("created"), Some(n), None) => {
                    created.insert(n.to_string());
                }
                (Some("status"), Some(n), None) => {
                    status.insert(n.to_string());
                }
                (Some("stats"), Some(w), Some(c)) => stats = (w.parse().unwrap(), c.parse().unwrap()),
                _ => {}
            }
        }
        (created, status, stats)
    });
    // Kill once plenty of writes were acknowledged (the child writes the database's file only
    // after it exists, so wait for that first), mid-stream: 64 writers always have commits in
    // flight.
    let start = Instant::now();
    while !path.exists() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let (created, status, (writes, commits)) = reader.join().unwrap();
    assert!(created.len() >= 50, "too few acknowledged writes before the kill: {}", created.len());
    assert!(commits > 0 && commits < writes, "writes did not share commits: {writes} writes in {commits} commits");

    let store = SqliteObjects::open(&format!("sqlite://{}", path.display()), Keyring::new(key)).await.unwrap();
    let stored = store.list_task_syncs(None, &BTreeMap::new()).await.unwrap();
    let names: HashSet<String> = stored.iter().filter_map(|t| t.metadata.name.clone()).collect();
    for name in &created {
        assert!(names.contains(name), "acknowledged create of {name} lost");
    }
    for name in &status {
        let t = store.get_task_sync("default", name).await.unwrap().unwrap();
        assert_eq!(t.status.and_then(|s| s.event_id), Some(format!("ev-{name}")), "acknowledged status of {name} lost");
    }
    // Whole units only: per writer (one unit in flight at a time), the connection's history
    // holds one entry per stored status, the newest being the newest stored status's.
    let limit = calsync::resources::history::CONNECTION_HISTORY_LIMIT;
    for w in 0..WRITERS {
        let prefix = format!("w{w}-");
        let newest = stored
            .iter()
            .filter(|t| t.status.as_ref().is_some_and(|s| s.event_id.is_some()))
            .filter_map(|t| t.metadata.name.as_deref()?.strip_prefix(&prefix)?.parse::<usize>().ok())
            .max();
        let c = store.get_connection("default", &format!("c-w{w}")).await.unwrap().unwrap();
        let ring = c.status.map(|s| s.history).unwrap_or_default();
        assert_eq!(ring.len(), newest.map_or(0, |n| (n + 1).min(limit)), "writer {w}: history and statuses differ");
        let last = ring.last().and_then(|e| e.task_id.clone());
        assert_eq!(
            last,
            newest.map(|n| format!("{prefix}{n}")),
            "writer {w}: the newest entry is not the newest status's"
        );
    }
    // Whole objects only: every stored row decodes (a listing skips undecodable ones) and
    // carries its labels.
    for t in &stored {
        let name = t.metadata.name.clone().unwrap();
        let got = store.get_task_sync("default", &name).await.unwrap().unwrap();
        assert_eq!(got.metadata.labels.unwrap().get("writer").map(String::as_str), name.split('-').next());
    }
    eprintln!(
        "killed after {} acknowledged creates, {} statuses; {writes} writes in {commits} commits; {} stored",
        created.len(),
        status.len(),
        stored.len()
    );
}
