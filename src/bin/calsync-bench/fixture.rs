//! Objects the in-process scenarios load: connections with their credentials Secrets and
//! TaskSyncs spread round-robin over them, in a real SQLite store, plus the checks every scenario
//! ends with (how many TaskSyncs are synced, duplicates, lost tasks).
//!
//! Owns: bench fixtures and convergence checks. Must not touch: engine or store internals (it
//! only uses the `Objects` port and `SqliteObjects`' public API).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use kube::ResourceExt;

use calsync::credentials::envelope::{Key, Keyring};
use calsync::engine::{Labels, Objects};
use calsync::resources::{
    CalendarConnection, CalendarConnectionSpec, ConnectionRef, ProviderKind, SecretRef, TaskSync, TaskSyncSpec,
};
use calsync::standalone::SqliteObjects;
use calsync::standalone::backend::Store;

pub const NAMESPACE: &str = "default";

pub fn connection_name(c: usize) -> String {
    format!("conn-{c:04}")
}

pub fn connection(c: usize, provider: ProviderKind, server_url: Option<String>) -> CalendarConnection {
    let mut conn = CalendarConnection::new(
        &connection_name(c),
        CalendarConnectionSpec {
            user_id: format!("user-{c:04}"),
            provider,
            credentials_secret_ref: SecretRef { name: format!("{}-creds", connection_name(c)), key: None },
            calendar_id: None,
            server_url,
            category_calendars: BTreeMap::new(),
            user_default: false,
            import: None,
            active: true,
        },
    );
    conn.metadata.namespace = Some(NAMESPACE.into());
    conn
}

/// TaskSync `i`, on connection `i % connections` (round-robin, so work is spread evenly).
pub fn task(i: usize, connections: usize) -> TaskSync {
    let mut t = TaskSync::new(
        &format!("task-{i:06}"),
        TaskSyncSpec {
            connection_ref: ConnectionRef { name: connection_name(i % connections.max(1)) },
            task_id: format!("t{i}"),
            title: format!("Bench task {i}"),
            start: format!("2030-03-{:02}T{:02}:00:00Z", 1 + i % 28, 8 + i % 10),
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
    t.metadata.namespace = Some(NAMESPACE.into());
    t
}

/// Open a fresh store in `dir`.
pub async fn open_store(dir: &Path) -> anyhow::Result<SqliteObjects> {
    let url = format!("sqlite://{}", dir.join("calsync.db").display());
    SqliteObjects::open(&url, Keyring::new(Key::generate().0)).await.context("opening the bench SQLite store")
}

/// Load `connections` connections (+ Secrets) and `tasks` TaskSyncs (into either SQL store).
pub async fn load(store: &Store, connections: usize, tasks: usize) -> anyhow::Result<()> {
    load_at(store, connections, tasks, None).await
}

/// `load`, with the connections' `serverUrl` (a bench provider server's address).
pub async fn load_at(store: &Store, connections: usize, tasks: usize, server_url: Option<&str>) -> anyhow::Result<()> {
    for c in 0..connections {
        let creds =
            BTreeMap::from([("username".to_string(), b"bench".to_vec()), ("password".to_string(), b"bench".to_vec())]);
        store.put_secret(NAMESPACE, &format!("{}-creds", connection_name(c)), creds).await?;
        store.apply_connection(&connection(c, ProviderKind::Caldav, server_url.map(str::to_string))).await?;
    }
    for i in 0..tasks {
        store.apply_task_sync(&task(i, connections)).await?;
    }
    Ok(())
}

/// How many TaskSyncs have an event recorded in status.
pub async fn synced(objects: &dyn Objects) -> anyhow::Result<usize> {
    let all = objects.list_task_syncs(Some(NAMESPACE), &Labels::new()).await?;
    Ok(all.iter().filter(|t| t.status.as_ref().and_then(|s| s.event_id.as_ref()).is_some()).count())
}

/// Poll until `want` TaskSyncs are synced or `timeout` passes; returns when it converged.
pub async fn wait_synced(objects: &dyn Objects, want: usize, timeout: Duration) -> anyhow::Result<Option<Duration>> {
    wait_synced_after(objects, want, timeout, || u64::MAX).await
}

/// `wait_synced`, listing the TaskSyncs only once `events()` (the calendar's event count, read
/// in-process) has reached `want`. Listing 10,000 decoded TaskSyncs every 100 ms from the start
/// cost the store under test a full scan each time (PostgreSQL: 40 ms of server time per list,
/// 124 lists in a 30 s run) and the bench process their decoding; a TaskSync is synced only
/// after its event exists, so the gate hides nothing from the measured time.
pub async fn wait_synced_after(
    objects: &dyn Objects,
    want: usize,
    timeout: Duration,
    events: impl Fn() -> u64,
) -> anyhow::Result<Option<Duration>> {
    let start = Instant::now();
    loop {
        if events() >= want as u64 && synced(objects).await? >= want {
            return Ok(Some(start.elapsed()));
        }
        if start.elapsed() > timeout {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the calendar holds compared with the TaskSyncs that should be there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Audit {
    pub tasks: u64,
    /// TaskSyncs with no event under their uid.
    pub lost: u64,
    /// Extra events: more than one for a uid, or events for no TaskSync.
    pub duplicates: u64,
}

/// Compare TaskSync uids with the calendar's events per marker uid.
pub fn audit(tasks: &[TaskSync], events_by_uid: &HashMap<String, u64>) -> Audit {
    let uids: HashSet<String> = tasks.iter().map(|t| t.uid().unwrap_or_default()).collect();
    let lost = uids.iter().filter(|u| events_by_uid.get(*u).copied().unwrap_or(0) == 0).count() as u64;
    let extra_per_uid: u64 = events_by_uid.values().map(|n| n.saturating_sub(1)).sum();
    let orphans = events_by_uid.keys().filter(|u| !uids.contains(*u)).count() as u64;
    Audit { tasks: tasks.len() as u64, lost, duplicates: extra_per_uid + orphans }
}

/// A directory for a scenario's database: `dir` if given, else a fresh temporary one.
pub fn workdir(dir: Option<&Path>) -> anyhow::Result<tempfile::TempDir> {
    match dir {
        Some(d) => tempfile::tempdir_in(d).with_context(|| format!("creating a directory under {}", d.display())),
        None => tempfile::tempdir().context("creating a temporary directory"),
    }
}
