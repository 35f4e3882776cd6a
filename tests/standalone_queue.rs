//! The real engine driven by the standalone work queue on SQLite, against the in-memory
//! calendar: apply connection + Secret + TaskSyncs → exactly one event per TaskSync; delete →
//! event gone and object gone; a driver restart mid-way makes no duplicates.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use calsync::credentials::envelope::{Key, Keyring};
use calsync::engine::{Engine, EngineConfig, Labels, ObjectKey, Objects};
use calsync::providers::memory::{MemoryCalendar, MemoryConnector};
use calsync::resources::{
    CalendarConnection, CalendarConnectionSpec, ConnectionRef, ProviderKind, SecretRef, TaskSync, TaskSyncSpec,
};
use calsync::standalone::SqliteObjects;
use calsync::standalone::queue::{self, QueueConfig};
use kube::ResourceExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

fn connection() -> CalendarConnection {
    let mut c = CalendarConnection::new(
        "conn",
        CalendarConnectionSpec {
            user_id: "user-1".into(),
            provider: ProviderKind::Apple,
            credentials_secret_ref: SecretRef { name: "conn-creds".into(), key: None },
            calendar_id: None,
            server_url: None,
            category_calendars: BTreeMap::new(),
            user_default: false,
            import: None,
            active: true,
        },
    );
    c.metadata.namespace = Some("default".into());
    c
}

fn task(i: usize) -> TaskSync {
    let mut t = TaskSync::new(
        &format!("task-{i}"),
        TaskSyncSpec {
            connection_ref: ConnectionRef { name: "conn".into() },
            task_id: format!("t{i}"),
            title: format!("Task {i}"),
            start: format!("2030-03-{:02}T14:00:00Z", 1 + i % 28),
            time_zone: None,
            duration: Some("45m".into()),
            end: None,
            all_day: None,
            category: None,
            description: None,
            recurrence: vec![],
            exceptions: Vec::new(),
            calendar_id: None,
            deletion_policy: Default::default(),
            conflict_policy: Default::default(),
            schedule: None,
        },
    );
    t.metadata.namespace = Some("default".into());
    t
}

struct Driver {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

fn start(store: &SqliteObjects, calendar: &MemoryCalendar) -> Driver {
    let engine = Engine::new(
        Arc::new(store.clone()),
        Arc::new(MemoryConnector { service: calendar.clone() }),
        EngineConfig::default(),
    );
    let (stop, rx) = oneshot::channel::<()>();
    let config = QueueConfig { concurrency: 4, ..Default::default() };
    let handle = tokio::spawn(queue::run_with_secrets(engine, config, store.subscribe_secrets(), async move {
        let _ = rx.await;
    }));
    Driver { stop, handle }
}

impl Driver {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.handle).await.unwrap().unwrap();
    }
}

async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn synced(store: &(impl Objects + ?Sized)) -> usize {
    let all = store.list_task_syncs(Some("default"), &Labels::new()).await.unwrap();
    all.iter().filter(|t| t.status.as_ref().and_then(|s| s.event_id.as_ref()).is_some()).count()
}

fn assert_one_event_each(calendar: &MemoryCalendar, tasks: &[TaskSync]) {
    for t in tasks {
        let uid = t.uid().unwrap();
        assert_eq!(calendar.events_for_uid(&uid).len(), 1, "TaskSync {} must have exactly one event", t.name_any());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_sync_restart_delete() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("calsync.db").display());
    let store = SqliteObjects::open(&url, Keyring::new(Key::generate().0)).await.unwrap();
    let calendar = MemoryCalendar::new();

    let driver = start(&store, &calendar);
    store
        .put_secret(
            "default",
            "conn-creds",
            BTreeMap::from([("username".into(), b"user".to_vec()), ("password".into(), b"secret".to_vec())]),
        )
        .await
        .unwrap();
    store.apply_connection(&connection()).await.unwrap();
    for i in 0..10 {
        store.apply_task_sync(&task(i)).await.unwrap();
    }
    eventually("10 TaskSyncs synced", async || synced(&store).await == 10).await;
    assert_eq!(calendar.events("calendar").len(), 10);

    // Restart the driver in the middle of a burst: no duplicates afterwards.
    for i in 10..30 {
        store.apply_task_sync(&task(i)).await.unwrap();
    }
    driver.stop().await;
    let driver = start(&store, &calendar);
    eventually("30 TaskSyncs synced", async || synced(&store).await == 30).await;
    let all = store.list_task_syncs(Some("default"), &Labels::new()).await.unwrap();
    assert_eq!(calendar.events("calendar").iter().filter(|e| !e.cancelled).count(), 30);
    assert_one_event_each(&calendar, &all);

    // A spec change is written through once.
    let mut changed = task(3);
    changed.spec.title = "Renamed".into();
    store.apply_task_sync(&changed).await.unwrap();
    eventually("rename reaches the calendar", async || {
        calendar.events("calendar").iter().any(|e| e.title == "Renamed")
    })
    .await;

    // Delete: the event goes, then the object.
    let victim = all.iter().find(|t| t.name_any() == "task-5").unwrap().clone();
    store.delete(&ObjectKey::task_sync("default", "task-5")).await.unwrap();
    eventually("task-5 gone", async || store.get_task_sync("default", "task-5").await.unwrap().is_none()).await;
    assert!(calendar.events_for_uid(&victim.uid().unwrap()).is_empty());
    assert_eq!(calendar.events("calendar").iter().filter(|e| !e.cancelled).count(), 29);

    // History reached the connection's ring.
    let conn = store.get_connection("default", "conn").await.unwrap().unwrap();
    assert!(conn.status.unwrap().history.len() >= 31);
    driver.stop().await;
}

/// TaskSyncs declared with the engine's finalizer (as the REST API does) and deleted before the
/// engine ever reconciled them: marked, then released by the engine, whether the driver was
/// down at the time (start-up enqueues them) or running (the deletion mark triggers them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_with_the_finalizer_and_deleted_before_any_reconcile() {
    let store = SqliteObjects::open("sqlite::memory:", Keyring::new(Key::generate().0)).await.unwrap();
    let calendar = MemoryCalendar::new();
    let creds = BTreeMap::from([("username".into(), b"user".to_vec()), ("password".into(), b"secret".to_vec())]);
    store.put_secret("default", "conn-creds", creds).await.unwrap();
    store.apply_connection(&connection()).await.unwrap();
    let declare = async |i: usize| {
        let mut t = task(i);
        t.metadata.finalizers = Some(vec![calsync::resources::FINALIZER.to_string()]);
        store.apply_task_sync(&t).await.unwrap();
        let key = ObjectKey::task_sync("default", &t.name_any());
        assert_eq!(store.delete(&key).await.unwrap(), calsync::engine::Deletion::Marked);
    };
    declare(0).await;
    let driver = start(&store, &calendar);
    eventually("task-0 released", async || store.get_task_sync("default", "task-0").await.unwrap().is_none()).await;
    declare(1).await;
    eventually("task-1 released", async || store.get_task_sync("default", "task-1").await.unwrap().is_none()).await;
    assert!(calendar.events("calendar").iter().all(|e| e.cancelled), "no event was left behind");
    driver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_becoming_ready_requeues_its_task_syncs() {
    let store = SqliteObjects::open("sqlite::memory:", Keyring::new(Key::generate().0)).await.unwrap();
    let calendar = MemoryCalendar::new();
    let driver = start(&store, &calendar);
    // TaskSyncs first, no credentials yet: they wait for the connection.
    store.apply_connection(&connection()).await.unwrap();
    for i in 0..3 {
        store.apply_task_sync(&task(i)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(calendar.events("calendar").is_empty());
    // Credentials arrive after the connection (as `calsync apply` of a file listing the Secret
    // last): the Secret write alone re-checks the connection.
    store
        .put_secret(
            "default",
            "conn-creds",
            BTreeMap::from([("username".into(), b"user".to_vec()), ("password".into(), b"secret".to_vec())]),
        )
        .await
        .unwrap();
    // The connection turning Ready must wake the TaskSyncs well before their 60 s wait requeue.
    eventually("3 TaskSyncs synced", async || synced(&store).await == 3).await;
    driver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_standalone_mounts_a_component_and_shuts_down_gracefully() {
    use calsync::standalone::{StandaloneConfig, StandaloneError, run_standalone};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("calsync.db").display());
    let calendar = MemoryCalendar::new();
    let connector = Arc::new(MemoryConnector { service: calendar.clone() });
    let (synced_tx, synced_rx) = oneshot::channel::<()>();
    let config = StandaloneConfig { database_url: url.clone(), ..Default::default() };
    let mounted = move |services: calsync::standalone::Services| async move {
        let store = services.store.clone();
        let data = BTreeMap::from([("username".into(), b"user".to_vec()), ("password".into(), b"secret".to_vec())]);
        store.put_secret("default", "conn-creds", data).await.map_err(|e| e.to_string())?;
        store.apply_connection(&connection()).await.map_err(|e| e.to_string())?;
        store.apply_task_sync(&task(1)).await.map_err(|e| e.to_string())?;
        // (A plain loop: async closures inside a spawned future trip a rustc Send limitation.)
        for _ in 0..600 {
            if synced(&store).await == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = synced_tx.send(());
        // Like a server: run until standalone shuts down.
        let mut shutdown = services.shutdown.clone();
        let _ = shutdown.wait_for(|s| *s).await;
        Ok(())
    };
    let c = connector.clone();
    let result =
        run_standalone(config.clone(), move |_| Ok(c as Arc<dyn calsync::providers::Connector>), mounted, async move {
            let _ = synced_rx.await;
        })
        .await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(calendar.events("calendar").len(), 1);
    // Secrets were generated beside the database, mode 0600.
    for suffix in ["encryption-key", "secret-key", "api-keys"] {
        assert!(dir.path().join(format!("calsync.db.{suffix}")).exists(), "{suffix}");
    }
    // A failing component stops standalone with its error.
    let failing = |_services| async { Err::<(), String>("port 5000 is in use".into()) };
    let c = connector.clone();
    let err = run_standalone(
        config,
        move |_| Ok(c as Arc<dyn calsync::providers::Connector>),
        failing,
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(matches!(&err, StandaloneError::Component(m) if m.contains("port 5000")), "{err}");
}

/// Throughput figure (not a pass/fail test): `cargo test --release --test standalone_queue --
/// --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_sync_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("calsync.db").display());
    let store = SqliteObjects::open(&url, Keyring::new(Key::generate().0)).await.unwrap();
    let calendar = MemoryCalendar::new();
    let creds = BTreeMap::from([("username".into(), b"user".to_vec()), ("password".into(), b"secret".to_vec())]);
    store.put_secret("default", "conn-creds", creds).await.unwrap();
    store.apply_connection(&connection()).await.unwrap();
    let driver = start(&store, &calendar);
    let n = 500;
    let t0 = std::time::Instant::now();
    for i in 0..n {
        store.apply_task_sync(&task(i)).await.unwrap();
    }
    let applied = t0.elapsed();
    eventually("all synced", async || synced(&store).await == n).await;
    let synced_at = t0.elapsed();
    eprintln!(
        "{n} TaskSyncs: applied in {applied:?} ({:.0}/s), all events written after {synced_at:?} ({:.0}/s end to end)",
        n as f64 / applied.as_secs_f64(),
        n as f64 / synced_at.as_secs_f64()
    );
    driver.stop().await;
}
