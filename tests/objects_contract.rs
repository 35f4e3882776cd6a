//! The `Objects` contract, run against both stores: the in-memory reference
//! (`engine::memory::MemoryObjects`) and the standalone SQLite store. Same test bodies, so the
//! two cannot drift apart. SQLite-only properties (encryption at rest, tampering, reopening,
//! cross-process notifications) are in `sqlite_only`. The versioned-credentials cases (token
//! write-back with optimistic concurrency) also run against `KubeObjects` on the fake API server,
//! as does `record_outcome` (its default: the separate calls).

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/versioned_credentials.rs"]
mod versioned_credentials;
use versioned_credentials::*;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use calsync::credentials::Credentials;
use calsync::credentials::envelope::{Key, Keyring};
use calsync::engine::memory::MemoryObjects;
use calsync::engine::{
    Deletion, EventType, Labels, ObjectEvent, ObjectKey, Objects, ReconcileRecord, Recorded, StoreError,
};
use calsync::resources::{
    CalendarConnection, CalendarConnectionSpec, CalendarConnectionStatus, ConnectionRef, Direction, HistoryEntry,
    Operation, ProviderKind, SecretRef, SyncStatus, TaskSync, TaskSyncSpec, TaskSyncStatus,
};
use calsync::standalone::SqliteObjects;
use calsync::standalone::pg::PgObjects;
use kube::{Resource, ResourceExt};
use secrecy::SecretString;

#[async_trait]
trait Harness: Send + Sync {
    fn objects(&self) -> Arc<dyn Objects>;
    async fn put_secret(&self, ns: &str, name: &str, data: BTreeMap<String, Vec<u8>>);
    /// The Secret's data as stored (decrypted where the store seals whole rows).
    async fn secret_data(&self, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>>;
}

struct Mem(MemoryObjects);

#[async_trait]
impl Harness for Mem {
    fn objects(&self) -> Arc<dyn Objects> {
        Arc::new(self.0.clone())
    }
    async fn put_secret(&self, ns: &str, name: &str, data: BTreeMap<String, Vec<u8>>) {
        self.0.put_secret(ns, name, data);
    }
    async fn secret_data(&self, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.0.secret_data(ns, name)
    }
}

struct Sql(SqliteObjects, #[allow(dead_code)] Option<tempfile::TempDir>);

#[async_trait]
impl Harness for Sql {
    fn objects(&self) -> Arc<dyn Objects> {
        Arc::new(self.0.clone())
    }
    async fn put_secret(&self, ns: &str, name: &str, data: BTreeMap<String, Vec<u8>>) {
        self.0.put_secret(ns, name, data).await.unwrap();
    }
    async fn secret_data(&self, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.0.get_secret(ns, name).await.unwrap()
    }
}

/// `PgObjects` on a fresh database of the test process's PostgreSQL server.
struct Pg(PgObjects);

#[async_trait]
impl Harness for Pg {
    fn objects(&self) -> Arc<dyn Objects> {
        Arc::new(self.0.clone())
    }
    async fn put_secret(&self, ns: &str, name: &str, data: BTreeMap<String, Vec<u8>>) {
        self.0.put_secret(ns, name, data).await.unwrap();
    }
    async fn secret_data(&self, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.0.get_secret(ns, name).await.unwrap()
    }
}

async fn pg() -> Pg {
    let url = tokio::task::spawn_blocking(|| postgres::shared().database()).await.unwrap();
    Pg(PgObjects::open(&url, keyring()).await.unwrap())
}

/// `KubeObjects` on the strict fake API server (Secrets as the API server holds them).
struct Kube(fake_apiserver::FakeApiServer);

#[async_trait]
impl Harness for Kube {
    fn objects(&self) -> Arc<dyn Objects> {
        Arc::new(calsync::controller::KubeObjects::new(self.0.client(), None))
    }
    async fn put_secret(&self, ns: &str, name: &str, data: BTreeMap<String, Vec<u8>>) {
        use base64::Engine as _;
        let data: BTreeMap<String, String> =
            data.into_iter().map(|(k, v)| (k, base64::engine::general_purpose::STANDARD.encode(v))).collect();
        let secret =
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": data});
        self.0.insert_raw(&fake_apiserver::secret_path(ns, name), secret);
    }
    async fn secret_data(&self, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        use base64::Engine as _;
        let s = self.0.get(&fake_apiserver::secret_path(ns, name))?;
        let data = s["data"].as_object().cloned().unwrap_or_default();
        Some(
            data.into_iter()
                .map(|(k, v)| (k, base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap()))
                .collect(),
        )
    }
}

fn keyring() -> Keyring {
    Keyring::new(Key::generate().0)
}

async fn sqlite_file() -> Sql {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    Sql(SqliteObjects::open(&url, keyring()).await.unwrap(), Some(dir))
}

fn conn(name: &str) -> CalendarConnection {
    let mut c = CalendarConnection::new(
        name,
        CalendarConnectionSpec {
            user_id: "user-1".into(),
            provider: ProviderKind::Apple,
            credentials_secret_ref: SecretRef { name: format!("{name}-creds"), key: None },
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

fn task(ns: &str, name: &str, labels: &[(&str, &str)]) -> TaskSync {
    let mut t = TaskSync::new(
        name,
        TaskSyncSpec {
            connection_ref: ConnectionRef { name: "c".into() },
            task_id: name.into(),
            title: "Title".into(),
            start: "2026-03-05T14:00:00Z".into(),
            time_zone: None,
            duration: None,
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
    t.metadata.namespace = Some(ns.into());
    t.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    t
}

fn entry() -> HistoryEntry {
    HistoryEntry {
        id: 0,
        time: chrono::Utc::now(),
        task_id: Some("t".into()),
        event_id: None,
        direction: Direction::ToCalendar,
        operation: Operation::Create,
        status: SyncStatus::Success,
        error: None,
        note: None,
    }
}

fn rv(o: &impl Resource) -> u64 {
    o.meta().resource_version.as_deref().unwrap().parse().unwrap()
}

async fn resource_versions_and_conflicts(h: &dyn Harness) {
    let o = h.objects();
    let created = o.apply_connection(&conn("c")).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let first = rv(&created);
    let mut stale = created.clone();
    stale.spec.calendar_id = Some("x".into());
    let updated = o.apply_connection(&stale).await.unwrap();
    assert!(rv(&updated) > first);
    assert_eq!(updated.metadata.uid, created.metadata.uid);
    // The same stale resourceVersion again: Conflict.
    assert!(matches!(o.apply_connection(&stale).await, Err(StoreError::Conflict(_))));
    // Without a resourceVersion: last writer wins.
    let mut blind = conn("c");
    blind.spec.calendar_id = Some("y".into());
    assert_eq!(o.apply_connection(&blind).await.unwrap().spec.calendar_id.as_deref(), Some("y"));
    // A resourceVersion for an object that does not exist: NotFound.
    let mut ghost = conn("ghost");
    ghost.metadata.resource_version = Some("1".into());
    assert!(matches!(o.apply_connection(&ghost).await, Err(StoreError::NotFound(_))));
    let mut nameless = conn("x");
    nameless.metadata.name = None;
    assert!(matches!(o.apply_connection(&nameless).await, Err(StoreError::Invalid(_))));
}

async fn generation_moves_only_with_spec(h: &dyn Harness) {
    let o = h.objects();
    let t = o.apply_task_sync(&task("default", "t", &[])).await.unwrap();
    assert_eq!(t.metadata.generation, Some(1));
    let mut relabeled = task("default", "t", &[("a", "b")]);
    relabeled.metadata.annotations = Some(BTreeMap::from([("note".into(), "x".into())]));
    let t2 = o.apply_task_sync(&relabeled).await.unwrap();
    assert_eq!(t2.metadata.generation, Some(1));
    assert!(rv(&t2) > rv(&t));
    assert_eq!(t2.labels().get("a").map(String::as_str), Some("b"));
    let status = TaskSyncStatus { event_id: Some("e1".into()), ..Default::default() };
    let t3 = o.patch_task_sync_status("default", "t", &status).await.unwrap();
    assert_eq!(t3.metadata.generation, Some(1));
    assert_eq!(t3.spec, t.spec);
    assert!(rv(&t3) > rv(&t2));
    let mut changed = task("default", "t", &[("a", "b")]);
    changed.spec.title = "New".into();
    let t4 = o.apply_task_sync(&changed).await.unwrap();
    assert_eq!(t4.metadata.generation, Some(2));
    // apply never touches status.
    assert_eq!(t4.status.as_ref().and_then(|s| s.event_id.as_deref()), Some("e1"));
    assert!(matches!(o.patch_task_sync_status("default", "nope", &status).await, Err(StoreError::NotFound(_))));
}

async fn finalizers_and_deletion(h: &dyn Harness) {
    let o = h.objects();
    o.apply_task_sync(&task("default", "t", &[])).await.unwrap();
    let key = ObjectKey::task_sync("default", "t");
    o.add_finalizer(&key, "f1").await.unwrap();
    o.add_finalizer(&key, "f1").await.unwrap();
    o.add_finalizer(&key, "f2").await.unwrap();
    assert_eq!(o.get_task_sync("default", "t").await.unwrap().unwrap().finalizers(), ["f1", "f2"]);
    assert_eq!(o.delete(&key).await.unwrap(), Deletion::Marked);
    let marked = o.get_task_sync("default", "t").await.unwrap().unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(o.delete(&key).await.unwrap(), Deletion::Marked);
    o.add_finalizer(&key, "f3").await.unwrap();
    assert_eq!(o.get_task_sync("default", "t").await.unwrap().unwrap().finalizers(), ["f1", "f2"]);
    o.remove_finalizer(&key, "f1").await.unwrap();
    o.remove_finalizer(&key, "absent").await.unwrap();
    assert!(o.get_task_sync("default", "t").await.unwrap().is_some());
    o.remove_finalizer(&key, "f2").await.unwrap();
    assert!(o.get_task_sync("default", "t").await.unwrap().is_none());
    assert_eq!(o.delete(&key).await.unwrap(), Deletion::NotFound);
    assert!(matches!(o.add_finalizer(&key, "f").await, Err(StoreError::NotFound(_))));
    o.apply_connection(&conn("c")).await.unwrap();
    assert_eq!(o.delete(&ObjectKey::connection("default", "c")).await.unwrap(), Deletion::Deleted);
    assert!(o.get_connection("default", "c").await.unwrap().is_none());
}

async fn status_never_overwrites_history(h: &dyn Harness) {
    let o = h.objects();
    o.apply_connection(&conn("c")).await.unwrap();
    assert_eq!(o.append_connection_history("default", "c", entry()).await.unwrap().id, 1);
    assert_eq!(o.append_connection_history("default", "c", entry()).await.unwrap().id, 2);
    let status = CalendarConnectionStatus { account_email: Some("a@b".into()), ..Default::default() };
    let after = o.patch_connection_status("default", "c", &status).await.unwrap();
    let st = after.status.unwrap();
    assert_eq!(st.account_email.as_deref(), Some("a@b"));
    assert_eq!(st.history.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(after.metadata.generation, Some(1));
    assert!(matches!(o.append_connection_history("default", "nope", entry()).await, Err(StoreError::NotFound(_))));
    for _ in 0..205 {
        o.append_connection_history("default", "c", entry()).await.unwrap();
    }
    let ring = o.get_connection("default", "c").await.unwrap().unwrap().status.unwrap().history;
    assert_eq!(ring.len(), 200);
    assert_eq!(ring.last().map(|e| e.id), Some(207));
}

async fn selectors_and_namespaces(h: &dyn Harness) {
    let o = h.objects();
    o.apply_task_sync(&task("default", "a", &[("user", "u1"), ("conn", "c1")])).await.unwrap();
    o.apply_task_sync(&task("default", "b", &[("user", "u1"), ("conn", "c2")])).await.unwrap();
    o.apply_task_sync(&task("other", "c", &[("user", "u1")])).await.unwrap();
    let names = |v: Vec<TaskSync>| v.into_iter().map(|t| t.name_any()).collect::<Vec<_>>();
    let sel = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Labels>();
    assert_eq!(names(o.list_task_syncs(Some("default"), &sel(&[("user", "u1")])).await.unwrap()), ["a", "b"]);
    assert_eq!(names(o.list_task_syncs(None, &sel(&[("user", "u1")])).await.unwrap()), ["a", "b", "c"]);
    assert_eq!(names(o.list_task_syncs(None, &sel(&[("user", "u1"), ("conn", "c2")])).await.unwrap()), ["b"]);
    assert!(o.list_task_syncs(None, &sel(&[("user", "nobody")])).await.unwrap().is_empty());
    o.set_labels(&ObjectKey::task_sync("other", "c"), &sel(&[("conn", "c2")])).await.unwrap();
    assert_eq!(names(o.list_task_syncs(None, &sel(&[("conn", "c2")])).await.unwrap()), ["b", "c"]);
    let c = o.get_task_sync("other", "c").await.unwrap().unwrap();
    assert_eq!(c.labels().get("user").map(String::as_str), Some("u1"), "set_labels merges");
    // A status write leaves the labels selectable (the SQLite store no longer rewrites them
    // when they did not change), and a re-apply that changes them is seen by selectors.
    let st = TaskSyncStatus { event_id: Some("ev-a".into()), ..Default::default() };
    o.patch_task_sync_status("default", "a", &st).await.unwrap();
    assert_eq!(names(o.list_task_syncs(None, &sel(&[("conn", "c1")])).await.unwrap()), ["a"]);
    let moved = o.apply_task_sync(&task("default", "a", &[("user", "u1"), ("conn", "c3")])).await.unwrap();
    let by_c1 = names(o.list_task_syncs(None, &sel(&[("conn", "c1")])).await.unwrap());
    let by_c3 = names(o.list_task_syncs(None, &sel(&[("conn", "c3")])).await.unwrap());
    match moved.labels().get("conn").map(String::as_str) {
        Some("c3") => assert!(by_c1.is_empty() && by_c3 == ["a"], "{by_c1:?} {by_c3:?}"),
        other => panic!("apply kept the old label: {other:?}"),
    }
    o.patch_task_sync_status("default", "a", &st).await.unwrap();
    assert_eq!(names(o.list_task_syncs(None, &sel(&[("user", "u1"), ("conn", "c3")])).await.unwrap()), ["a"]);
    o.apply_connection(&conn("k")).await.unwrap();
    assert_eq!(o.list_connections(Some("default"), &Labels::new()).await.unwrap().len(), 1);
    assert!(o.list_connections(Some("other"), &Labels::new()).await.unwrap().is_empty());
}

async fn pages_of_task_syncs(h: &dyn Harness) {
    let o = h.objects();
    for (ns, name) in [("default", "b"), ("other", "a"), ("default", "a"), ("default", "c"), ("x", "z")] {
        o.apply_task_sync(&task(ns, name, &[])).await.unwrap();
    }
    let key = |t: &TaskSync| ObjectKey::task_sync(&t.namespace().unwrap_or_default(), &t.name_any());
    let want: Vec<ObjectKey> = o.list_task_syncs(None, &Labels::new()).await.unwrap().iter().map(key).collect();
    let mut got = Vec::new();
    let mut after: Option<ObjectKey> = None;
    for _ in 0..10 {
        let (page, more) = o.list_task_syncs_page(after.as_ref(), 2).await.unwrap();
        got.extend(page.iter().map(key));
        after = page.last().map(key);
        if !more || after.is_none() {
            break;
        }
    }
    let mut sorted = want.clone();
    sorted.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    assert_eq!(got, sorted, "every TaskSync once, in (namespace, name) order");
    assert_eq!(got.len(), 5);
    let (rest, _) = o.list_task_syncs_page(Some(&ObjectKey::task_sync("other", "a")), 10).await.unwrap();
    assert_eq!(rest.iter().map(key).collect::<Vec<_>>(), [ObjectKey::task_sync("x", "z")]);
}

async fn find_by_event_id(h: &dyn Harness) {
    let o = h.objects();
    o.apply_task_sync(&task("default", "a", &[])).await.unwrap();
    o.apply_task_sync(&task("other", "a", &[])).await.unwrap();
    let st = |id: &str| TaskSyncStatus { event_id: Some(id.into()), ..Default::default() };
    o.patch_task_sync_status("default", "a", &st("ev-1")).await.unwrap();
    assert_eq!(o.find_task_sync_by_event("default", "ev-1").await.unwrap().map(|t| t.name_any()).as_deref(), Some("a"));
    assert!(o.find_task_sync_by_event("other", "ev-1").await.unwrap().is_none());
    o.patch_task_sync_status("default", "a", &st("ev-2")).await.unwrap();
    assert!(o.find_task_sync_by_event("default", "ev-1").await.unwrap().is_none());
    assert!(o.find_task_sync_by_event("default", "ev-2").await.unwrap().is_some());
}

async fn credentials_both_forms(h: &dyn Harness) {
    let o = h.objects();
    let plain =
        BTreeMap::from([("username".to_string(), b"u@x".to_vec()), ("password".to_string(), b"pw-123".to_vec())]);
    h.put_secret("default", "plain", plain).await;
    let r = SecretRef { name: "plain".into(), key: None };
    let c = o.read_credentials("default", &r).await.unwrap().unwrap();
    assert!(matches!(&c, Credentials::Basic { username, .. } if username == "u@x"));
    let oauth = Credentials::OAuth {
        refresh_token: SecretString::from("refresh-secret"),
        access_token: Some(SecretString::from("access")),
        expires_at: Some(chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap()),
        refresh_lease: None,
    };
    let r2 = SecretRef { name: "written".into(), key: Some("creds".into()) };
    o.write_credentials("default", &r2, &oauth, &ObjectKey::connection("default", "c")).await.unwrap();
    assert_eq!(o.read_credentials("default", &r2).await.unwrap(), Some(oauth));
    assert_eq!(o.read_credentials("default", &SecretRef { name: "absent".into(), key: None }).await.unwrap(), None);
    o.delete_credentials("default", &r2).await.unwrap();
    assert_eq!(o.read_credentials("default", &r2).await.unwrap(), None);
    h.put_secret("default", "half", BTreeMap::from([("username".to_string(), b"u".to_vec())])).await;
    let err = o.read_credentials("default", &SecretRef { name: "half".into(), key: None }).await.unwrap_err();
    assert!(matches!(&err, StoreError::Invalid(m) if m.contains("password")), "{err}");
}

async fn subscribe_notifies_changes(h: &dyn Harness) {
    let o = h.objects();
    let mut rx = o.subscribe();
    let next = async |rx: &mut tokio::sync::broadcast::Receiver<ObjectKey>| {
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap()
    };
    o.apply_task_sync(&task("default", "t", &[])).await.unwrap();
    assert_eq!(next(&mut rx).await, ObjectKey::task_sync("default", "t"));
    o.patch_task_sync_status("default", "t", &TaskSyncStatus::default()).await.unwrap();
    assert_eq!(next(&mut rx).await, ObjectKey::task_sync("default", "t"));
    o.apply_connection(&conn("c")).await.unwrap();
    assert_eq!(next(&mut rx).await, ObjectKey::connection("default", "c"));
    o.append_connection_history("default", "c", entry()).await.unwrap();
    assert_eq!(next(&mut rx).await, ObjectKey::connection("default", "c"));
    o.delete(&ObjectKey::task_sync("default", "t")).await.unwrap();
    assert_eq!(next(&mut rx).await, ObjectKey::task_sync("default", "t"));
}

/// Annotations carry signals between processes (live sync): they merge, a write that changes
/// nothing is no write, they never move the generation, and they are notified.
async fn annotations_merge_without_touching_generation(h: &dyn Harness) {
    let o = h.objects();
    let c = o.apply_connection(&conn("a")).await.unwrap();
    let key = ObjectKey::connection("default", "a");
    let mut rx = o.subscribe();
    let set = |k: &str, v: &str| Labels::from([(k.to_string(), v.to_string())]);
    o.set_annotations(&key, &set("one", "1")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    o.set_annotations(&key, &set("two", "2")).await.unwrap();
    let after = o.get_connection("default", "a").await.unwrap().unwrap();
    let ann = after.metadata.annotations.clone().unwrap_or_default();
    assert_eq!((ann.get("one").map(String::as_str), ann.get("two").map(String::as_str)), (Some("1"), Some("2")));
    assert_eq!(after.metadata.generation, c.metadata.generation, "annotations are not spec");
    o.set_annotations(&key, &set("two", "2")).await.unwrap();
    assert_eq!(rv(&o.get_connection("default", "a").await.unwrap().unwrap()), rv(&after), "no change, no write");
}

// `record_outcome` (one reconcile's writes as one unit): tests/objects_contract/outcome.rs.
#[path = "objects_contract/outcome.rs"]
mod outcome;
use outcome::reconcile_outcome_as_one_unit;

// `set_labels_and_finalizer` (a new TaskSync's first write): tests/objects_contract/meta.rs.
#[path = "objects_contract/meta.rs"]
mod meta;
use meta::labels_and_finalizer_in_one_write;

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(#[tokio::test] async fn $name() { super::$name(&Mem(MemoryObjects::new())).await })*
        }
        mod sqlite_in_memory {
            use super::*;
            $(#[tokio::test] async fn $name() {
                super::$name(&Sql(SqliteObjects::open("sqlite::memory:", keyring()).await.unwrap(), None)).await
            })*
        }
        mod sqlite_file {
            use super::*;
            $(#[tokio::test] async fn $name() { super::$name(&sqlite_file().await).await })*
        }
        mod postgresql {
            use super::*;
            $(#[tokio::test] async fn $name() { super::$name(&pg().await).await })*
        }
    };
}

contract!(
    resource_versions_and_conflicts,
    generation_moves_only_with_spec,
    finalizers_and_deletion,
    status_never_overwrites_history,
    selectors_and_namespaces,
    find_by_event_id,
    pages_of_task_syncs,
    credentials_both_forms,
    subscribe_notifies_changes,
    annotations_merge_without_touching_generation,
    reconcile_outcome_as_one_unit,
    labels_and_finalizer_in_one_write,
);

macro_rules! credentials_contract {
    ($($name:ident),* $(,)?) => {
        mod credentials_memory {
            use super::*;
            $(#[tokio::test] async fn $name() { super::$name(&Mem(MemoryObjects::new())).await })*
        }
        mod credentials_sqlite {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(&sqlite_file().await).await })*
        }
        mod credentials_postgresql {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(&pg().await).await })*
        }
        mod credentials_kube {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(&Kube(fake_apiserver::FakeApiServer::new())).await })*
        }
    };
}

credentials_contract!(
    versioned_credentials_compare_and_swap,
    versioned_credentials_keep_plain_keys,
    concurrent_replace_exactly_one_wins,
);

/// On Kubernetes `record_outcome` is the trait's default (the API server is the durability).
mod record_kube {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reconcile_outcome_as_one_unit() {
        super::reconcile_outcome_as_one_unit(&Kube(fake_apiserver::FakeApiServer::new())).await
    }

    /// The trait's default there: two requests.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn labels_and_finalizer_in_one_write() {
        super::labels_and_finalizer_in_one_write(&Kube(fake_apiserver::FakeApiServer::new())).await
    }
}

// SQLite only: tests/objects_contract/sqlite_only.rs.
#[path = "objects_contract/sqlite_only.rs"]
mod sqlite_only;
