//! The PostgreSQL store's object cache across processes: a read is served from memory only
//! while no other process changed the object, and a key lock's read sees what the previous
//! holder committed.

use std::time::{Duration, Instant};

use calsync::engine::{ObjectKey, Objects, ReconcileRecord, Recorded};
use calsync::resources::TaskSyncStatus;
use calsync::resources::history::{Direction, HistoryEntry, Operation, SyncStatus};
use calsync::standalone::pg::PgObjects;

use super::{ENV, conn, fresh_db, keyring, task};

fn entry(task_id: &str) -> HistoryEntry {
    HistoryEntry {
        id: 0,
        time: chrono::Utc::now(),
        task_id: Some(task_id.into()),
        event_id: None,
        direction: Direction::ToCalendar,
        operation: Operation::Create,
        status: SyncStatus::Success,
        error: None,
        note: None,
    }
}

fn annotation(t: &calsync::resources::TaskSync) -> Option<String> {
    t.metadata.annotations.as_ref().and_then(|a| a.get("n").cloned())
}

/// `b` caches a TaskSync it read; `a` (another process) changes it: `b` reads the change once
/// `a`'s notification arrives, never keeps the old copy. Raw SQL behind the store's back drops
/// the whole cache of the store that ran it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_processes_write_replaces_the_cached_copy() {
    let _env = ENV.lock().await;
    let (url, _) = fresh_db().await;
    let a = PgObjects::open(&url, keyring()).await.unwrap();
    let b = PgObjects::open(&url, keyring()).await.unwrap();
    let key = ObjectKey::task_sync("default", "t");
    a.apply_task_sync(&task("t")).await.unwrap();
    let before = b.get_task_sync("default", "t").await.unwrap().unwrap();
    assert_eq!(annotation(&before), None);
    for round in 1..=3 {
        let mut changes = b.subscribe();
        a.set_annotations(&key, &[("n".to_string(), round.to_string())].into()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        // The notification is broadcast after the cache dropped the key: reading after it must
        // return the new version.
        loop {
            let got = tokio::time::timeout(Duration::from_secs(10), changes.recv()).await.unwrap().unwrap();
            if got == key {
                break;
            }
            assert!(Instant::now() < deadline, "no notification for {key}");
        }
        let seen = b.get_task_sync("default", "t").await.unwrap().unwrap();
        assert_eq!(annotation(&seen), Some(round.to_string()), "round {round}: b served its stale copy");
    }
    // A process's own writes are read back at once (no notification needed).
    b.set_annotations(&key, &[("n".to_string(), "b".to_string())].into()).await.unwrap();
    assert_eq!(annotation(&b.get_task_sync("default", "t").await.unwrap().unwrap()), Some("b".into()));

    a.apply_connection(&conn("c")).await.unwrap();
    assert!(b.get_connection("default", "c").await.unwrap().is_some());
    b.raw_execute(
        "UPDATE objects SET body = jsonb_set(body::jsonb, '{spec,userId}', '\"raw\"')::text WHERE name = 'c'",
    )
    .await
    .unwrap();
    assert_eq!(b.get_connection("default", "c").await.unwrap().unwrap().spec.user_id, "raw");
}

/// Writers of one key on two stores (two processes' pools) interleave: each write's read,
/// taken after its key lock, sees every write committed before, so none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_of_one_key_lose_no_update() {
    let _env = ENV.lock().await;
    let (url, _) = fresh_db().await;
    let a = PgObjects::open(&url, keyring()).await.unwrap();
    let b = PgObjects::open(&url, keyring()).await.unwrap();
    a.apply_connection(&conn("c")).await.unwrap();
    let mut writers = Vec::new();
    for i in 0..40 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        writers.push(tokio::spawn(async move {
            store.append_connection_history("default", "c", entry(&format!("task-{i}"))).await
        }));
    }
    for w in writers {
        w.await.unwrap().unwrap();
    }
    // A third store: its cache is empty, so this reads the database (a's cache may still wait
    // for b's last notification).
    let fresh = PgObjects::open(&url, keyring()).await.unwrap();
    let c = fresh.get_connection("default", "c").await.unwrap().unwrap();
    let mut ids: Vec<String> = c.status.unwrap().history.into_iter().filter_map(|e| e.task_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "lost updates: {ids:?}");
}

/// A reconcile's unit (one statement for its objects) notifies other processes of each object
/// it wrote, and their cached copies are replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_units_writes_reach_other_processes() {
    let _env = ENV.lock().await;
    let (url, _) = fresh_db().await;
    let a = PgObjects::open(&url, keyring()).await.unwrap();
    let b = PgObjects::open(&url, keyring()).await.unwrap();
    a.apply_connection(&conn("c")).await.unwrap();
    a.apply_task_sync(&task("t")).await.unwrap();
    // Cached in b before the unit.
    assert!(b.get_task_sync("default", "t").await.unwrap().unwrap().status.is_none());
    assert!(b.get_connection("default", "c").await.unwrap().unwrap().status.is_none());
    let mut changes = b.subscribe();
    let record = ReconcileRecord {
        status: Some(TaskSyncStatus { event_id: Some("ev-1".into()), ..Default::default() }),
        history: vec![("c".into(), entry("t"))],
        events: vec![],
    };
    assert_eq!(a.record_outcome(&ObjectKey::task_sync("default", "t"), &record).await.unwrap(), Recorded::Stored);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(tokio::time::timeout(Duration::from_secs(10), changes.recv()).await.unwrap().unwrap());
    }
    seen.sort_by_key(|k| k.to_string());
    assert_eq!(seen, vec![ObjectKey::connection("default", "c"), ObjectKey::task_sync("default", "t")]);
    let t = b.get_task_sync("default", "t").await.unwrap().unwrap();
    assert_eq!(t.status.and_then(|s| s.event_id).as_deref(), Some("ev-1"));
    let c = b.get_connection("default", "c").await.unwrap().unwrap();
    assert_eq!(c.status.unwrap_or_default().history.len(), 1);
}

/// Wait until `a` serves `t` with annotation `want`, reading every 50 ms for up to 10 s.
async fn until_annotated(a: &PgObjects, want: &str) -> Duration {
    let start = Instant::now();
    loop {
        let got = a.get_task_sync("default", "t").await.unwrap().unwrap();
        if annotation(&got).as_deref() == Some(want) {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "still served {:?}, not {want}", annotation(&got));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Change `t`'s annotation as another process's transaction would, in `tx`: the row, and its
/// change-log row, but no wake-up (the writer died after its COMMIT, or its `NOTIFY` was lost).
async fn write_without_wake_up(tx: &mut sqlx::PgConnection, value: &str) {
    sqlx::query(
        "WITH v AS (SELECT nextval('calsync_resource_version') AS rv),
              up AS (UPDATE objects o SET resource_version = v.rv,
                       body = jsonb_set(jsonb_set(o.body::jsonb, '{metadata,annotations}', jsonb_build_object('n', $1::text)),
                                        '{metadata,resourceVersion}', to_jsonb(v.rv::text))::text
                     FROM v WHERE o.kind = 'TaskSync' AND o.name = 't' RETURNING o.resource_version)
         INSERT INTO calsync_changes (origin, kind, namespace, name, rv)
         SELECT 'elsewhere', 'TaskSync', 'default', 't', resource_version FROM up",
    )
    .bind(value)
    .execute(tx)
    .await
    .unwrap();
}

/// A change whose wake-up never came is read from the change log: the cached copy is dropped
/// and the key broadcast. And a transaction that commits after a later-numbered one (log rows
/// become visible out of `seq` order) is still read, after the reader has moved past the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_without_a_wake_up_are_read_from_the_log_even_out_of_order() {
    use sqlx::Connection as _;
    let _env = ENV.lock().await;
    let (url, _) = fresh_db().await;
    let a = PgObjects::open(&url, keyring()).await.unwrap();
    a.apply_task_sync(&task("t")).await.unwrap();
    a.apply_task_sync(&task("u")).await.unwrap();
    // Served from a's cache from now on.
    assert_eq!(annotation(&a.get_task_sync("default", "t").await.unwrap().unwrap()), None);
    let mut changes = a.subscribe();

    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    write_without_wake_up(&mut other, "from the log").await;
    let took = until_annotated(&a, "from the log").await;
    let got = tokio::time::timeout(Duration::from_secs(5), changes.recv()).await.unwrap().unwrap();
    assert_eq!(got, ObjectKey::task_sync("default", "t"));
    eprintln!("read from the log after {took:?}");

    // A slow transaction draws its seq first and commits last.
    let mut slow = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut slow_tx = slow.begin().await.unwrap();
    write_without_wake_up(&mut slow_tx, "slow").await;
    let mut fast = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO calsync_changes (origin, kind, namespace, name, rv) VALUES ('elsewhere', 'TaskSync', 'default', 'u', NULL)",
    )
    .execute(&mut fast)
    .await
    .unwrap();
    // a reads the fast one (and moves on) while the slow one is still open.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = tokio::time::timeout(Duration::from_secs(10), changes.recv()).await.unwrap().unwrap();
        if got.name == "u" {
            break;
        }
        assert!(Instant::now() < deadline, "the fast change was not read");
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(annotation(&a.get_task_sync("default", "t").await.unwrap().unwrap()).as_deref(), Some("from the log"));
    slow_tx.commit().await.unwrap();
    until_annotated(&a, "slow").await;
}

/// Deleting a connection deletes the credentials it owns, and other processes hear of those
/// Secrets too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_secrets_deleted_with_their_owner_are_announced() {
    let _env = ENV.lock().await;
    let (url, _) = fresh_db().await;
    let a = PgObjects::open(&url, keyring()).await.unwrap();
    let b = PgObjects::open(&url, keyring()).await.unwrap();
    b.apply_connection(&conn("c")).await.unwrap();
    let creds =
        calsync::credentials::Credentials::Basic { username: "u".into(), password: secrecy::SecretString::from("p") };
    let r = calsync::resources::SecretRef { name: "c-creds".into(), key: None };
    b.write_credentials("default", &r, &creds, &ObjectKey::connection("default", "c")).await.unwrap();
    let mut secrets = a.subscribe_secrets();
    b.delete(&ObjectKey::connection("default", "c")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = tokio::time::timeout(Duration::from_secs(10), secrets.recv()).await.unwrap().unwrap();
        if got.name == r.name {
            break;
        }
        assert!(Instant::now() < deadline, "no announcement for the owned Secret");
    }
}

/// Credentials are read from memory after the first read, and follow another process's write:
/// its wake-up (or change-log row) drops the kept row; a compare-and-swap that fails on a kept
/// version drops it at once, so the retry reads the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_credentials_follow_other_processes_writes() {
    use calsync::credentials::Credentials;
    use calsync::resources::SecretRef;
    use secrecy::{ExposeSecret, SecretString};
    let _env = ENV.lock().await;
    let (url, _) = fresh_db().await;
    let keys = keyring();
    let a = PgObjects::open(&url, keys.clone()).await.unwrap();
    let b = PgObjects::open(&url, keys).await.unwrap();
    let owner = ObjectKey::connection("default", "c");
    a.apply_connection(&conn("c")).await.unwrap();
    let r = SecretRef { name: "c-creds".into(), key: None };
    let basic = |p: &str| Credentials::Basic { username: "u".into(), password: SecretString::from(p.to_string()) };
    let password = |c: Option<Credentials>| match c {
        Some(Credentials::Basic { password, .. }) => password.expose_secret().to_string(),
        other => panic!("unexpected credentials: {}", other.is_some()),
    };
    a.write_credentials("default", &r, &basic("one"), &owner).await.unwrap();
    assert_eq!(password(a.read_credentials("default", &r).await.unwrap()), "one");
    let (_, v1) = a.read_credentials_versioned("default", &r).await.unwrap().unwrap();

    b.write_credentials("default", &r, &basic("two"), &owner).await.unwrap();
    let start = Instant::now();
    while password(a.read_credentials("default", &r).await.unwrap()) != "two" {
        assert!(start.elapsed() < Duration::from_secs(10), "a kept the old credentials");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A stale expected version is refused, and the next read is fresh whatever the timing.
    assert!(a.replace_credentials("default", &r, &basic("three"), &v1).await.is_err());
    let (now, v2) = a.read_credentials_versioned("default", &r).await.unwrap().unwrap();
    assert_ne!(v2, v1);
    assert_eq!(password(Some(now)), "two");
    a.replace_credentials("default", &r, &basic("three"), &v2).await.unwrap();
    assert_eq!(password(a.read_credentials("default", &r).await.unwrap()), "three", "own writes are read back at once");
}

/// The change log is pruned: rows of transactions that ended `keep` ago are deleted by any
/// running process, and the row of a transaction still open is kept however old it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_log_is_pruned_but_never_ahead_of_an_open_transaction() {
    use sqlx::Connection as _;
    let _env = ENV.lock().await;
    let (url, _) = fresh_db().await;
    let keep = Duration::from_secs(3);
    let a = PgObjects::open_with_change_log(&url, keyring(), keep).await.unwrap();
    let mut raw = sqlx::PgConnection::connect(&url).await.unwrap();
    let count = async |raw: &mut sqlx::PgConnection| -> i64 {
        sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM calsync_changes").fetch_one(raw).await.unwrap().0
    };
    let until_empty = async |raw: &mut sqlx::PgConnection| {
        let start = Instant::now();
        while count(raw).await > 0 {
            assert!(start.elapsed() < Duration::from_secs(15), "the change log was not pruned");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    a.apply_task_sync(&task("t")).await.unwrap();
    for i in 0..20 {
        a.apply_task_sync(&task(&format!("p{i}"))).await.unwrap();
    }
    assert!(count(&mut raw).await >= 21);
    until_empty(&mut raw).await;

    // A transaction that stays open across several prunes, its row logged first.
    let mut slow = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut slow_tx = slow.begin().await.unwrap();
    write_without_wake_up(&mut slow_tx, "slow").await;
    // Writes go on meanwhile, so the prunes (every keep / 4) always have newer rows in view.
    let writer = {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 0.. {
                a.apply_task_sync(&task(&format!("q{}", i % 10))).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(keep * 3).await;
    slow_tx.commit().await.unwrap();
    // The row stays `keep` after its commit (checked a third of the way, for slack).
    tokio::time::sleep(keep / 3).await;
    writer.abort();
    let rows: Vec<(String,)> = sqlx::query_as("SELECT name FROM calsync_changes WHERE origin = 'elsewhere'")
        .fetch_all(&mut raw)
        .await
        .unwrap();
    assert_eq!(rows, [("t".to_string(),)], "the long transaction's row was pruned before its commit");
    until_annotated(&a, "slow").await;
    until_empty(&mut raw).await;
}
