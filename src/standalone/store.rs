//! `SqliteObjects`: the engine's `Objects` port on an embedded SQLite database, with the same
//! Kubernetes semantics as `engine::memory::MemoryObjects` (the reference) and the Kubernetes
//! store: a global resourceVersion on every write, `Conflict` on a stale one, generation bumped
//! only by spec changes, finalizers with deletion marking, status patches that never touch spec,
//! connection history written only by `append_connection_history` (or with a reconcile's status
//! by `record_outcome`, `unit`). Those decisions are `standalone::semantics`, shared with the
//! PostgreSQL store.
//!
//! Owns: object/credential persistence and change notifications for standalone mode. Must not
//! touch: reconcile decisions or provider calls. Writes go to one writer thread (`commit`), which
//! commits the writes that arrived together in one durable transaction (group commit), each in a
//! savepoint of its own, and answers each caller after the COMMIT: acknowledged means durable.
//! Reads run on the blocking pool, on a read connection of their own for file databases (WAL
//! readers do not wait for the writer's fsync); `get` is answered from the decoded-object
//! `cache` when it holds the object. Other processes on the same database (e.g. `calsync apply`
//! next to `calsync standalone`) are noticed through the change log, polled by a reader thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::broadcast;

use super::db::{self, Location};
use super::rows::{self, StoredEvent, db_err};
use super::semantics;
pub use super::watch::SecretName;
use super::watch::spawn_watcher;
use access::meta_in;
use cache::{Cache, Written};
use commit::Committer;

mod access;
pub(super) mod cache;
mod commit;
mod connections;
mod feeds;
mod outbox;
pub(super) mod secrets;
mod unit;
use crate::credentials::Credentials;
use crate::credentials::envelope::Keyring;
use crate::credentials::feed::FeedRecord;
use crate::engine::{
    Deletion, EventType, Kind, Labels, ObjectEvent, ObjectKey, Objects, ReconcileRecord, Recorded, StoreError,
};
use crate::resources::history::{self, CONNECTION_HISTORY_LIMIT};
use crate::resources::{
    CalendarConnection, CalendarConnectionStatus, HistoryEntry, SecretRef, TaskSync, TaskSyncStatus,
};
pub use outbox::{OutboxEntry, OutboxMessage, OutboxSettle, StatusTap, TapHandle};

/// Counters of the SQLite store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Writes committed or failed so far.
    pub writes: u64,
    /// Transactions they took (group commit: fewer than `writes` under load).
    pub commits: u64,
    /// Decoded objects held by the cache now.
    pub cached_objects: usize,
}

/// Events kept (newest).
const EVENTS_KEPT: i64 = 1000;

/// An Event's row fields: type, reason, action, note.
fn event_fields(event: &ObjectEvent) -> [&str; 4] {
    let type_ = match event.type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    };
    [type_, &event.reason, &event.action, &event.note]
}

struct Inner {
    /// The writer's connection; also the readers' for `sqlite::memory:` (private to it).
    conn: Arc<Mutex<Connection>>,
    /// Readers' connection of a file database.
    reader: Option<Mutex<Connection>>,
    committer: Committer,
    cache: Arc<Cache>,
    keys: Keyring,
    changes: broadcast::Sender<ObjectKey>,
    /// Secrets (namespace, name) written or deleted, by this or another process.
    secret_changes: broadcast::Sender<SecretName>,
    location: Location,
    stop: Arc<AtomicBool>,
    /// Records app webhook messages with status writes (only when webhooks are configured).
    tap: std::sync::OnceLock<Arc<dyn StatusTap>>,
}

impl Inner {
    fn read_conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // Reads leave nothing half done on a panic, so a poisoned lock is still safe to use.
        self.reader.as_ref().unwrap_or(self.conn.as_ref()).lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn load_connections(conn: &mut Connection, cache: &Cache) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred).map_err(db_err)?;
    cache.connections.load(&tx)?;
    tx.commit().map_err(db_err)
}

/// Objects the cache holds: `CALSYNC_STORE_CACHE_OBJECTS` (0 turns it off), else the default.
pub(crate) fn cache_capacity() -> usize {
    std::env::var("CALSYNC_STORE_CACHE_OBJECTS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(cache::DEFAULT_CAPACITY)
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The SQLite store. Cloning shares the connection.
#[derive(Clone)]
pub struct SqliteObjects {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteObjects").field("location", &self.inner.location.to_string()).finish_non_exhaustive()
    }
}

impl SqliteObjects {
    /// Open (creating and migrating) the database at `url` (`sqlite://PATH` or `sqlite::memory:`).
    pub async fn open(url: &str, keys: Keyring) -> Result<Self, StoreError> {
        let location = Location::parse(url).map_err(StoreError::Invalid)?;
        let loc = location.clone();
        let conn = tokio::task::spawn_blocking(move || db::open(&loc))
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening the database: {e}")))?
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot open {location}: {e}; check the path and its permissions"))
            })?;
        let (changes, _) = broadcast::channel(4096);
        let (secret_changes, _) = broadcast::channel(256);
        let stop = Arc::new(AtomicBool::new(false));
        let origin = uuid::Uuid::new_v4().to_string();
        let cache = Arc::new(Cache::new(cache_capacity()));
        let mut reader = None;
        let mut conn = conn;
        if let Some(path) = location.path() {
            let start: i64 =
                conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM changelog", [], |r| r.get(0)).map_err(db_err)?;
            // After `start`: whatever another process writes from now on, the watcher re-reads.
            load_connections(&mut conn, &cache)?;
            let senders = (changes.clone(), secret_changes.clone());
            spawn_watcher(path.to_path_buf(), origin.clone(), start, senders, cache.clone(), stop.clone());
            reader = Some(Mutex::new(db::open_reader(path).map_err(db_err)?));
        } else {
            load_connections(&mut conn, &cache)?;
        }
        let conn = Arc::new(Mutex::new(conn));
        let committer = Committer::start(conn.clone(), origin.clone(), changes.clone(), cache.clone())?;
        tracing::debug!(database = %location, key_id = %keys.current_id(), "opened the standalone store");
        Ok(SqliteObjects {
            inner: Arc::new(Inner {
                conn,
                reader,
                committer,
                cache,
                keys,
                changes,
                secret_changes,
                location,
                stop,
                tap: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Where the database lives.
    pub fn location(&self) -> &Location {
        &self.inner.location
    }

    /// What group commit and the cache did so far (benches print it).
    pub fn stats(&self) -> StoreStats {
        let (writes, commits) = self.inner.committer.counts();
        StoreStats { writes, commits, cached_objects: self.inner.cache.len() }
    }

    /// The newest `limit` Events (about `key` when given), oldest first.
    pub async fn events(&self, key: Option<&ObjectKey>, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let key = key.cloned();
        self.read(move |tx| rows::events(tx, key.as_ref(), i64::from(limit))).await
    }

    /// Raw access for tests (tampering with sealed rows).
    #[doc(hidden)]
    pub async fn raw_execute(&self, sql: &'static str) -> Result<usize, StoreError> {
        let cache = self.inner.cache.clone();
        self.tx(move |tx, _, fx| {
            fx.written.push(Written::Everything);
            let n = tx.execute(sql, []).map_err(db_err)?;
            cache.connections.load(tx)?;
            Ok(n)
        })
        .await
    }
}

#[async_trait]
impl Objects for SqliteObjects {
    async fn get_connection(&self, namespace: &str, name: &str) -> Result<Option<CalendarConnection>, StoreError> {
        // From the complete set, never SQL: with many TaskSyncs flowing through the bounded
        // cache, connections fell out of it, and each TaskSync reconcile then read its
        // connection's row (its history ring spans overflow pages) and decoded it: most of the
        // CPU of `calsync-bench memory` (perf: pread copies under a blocking read).
        Ok(self.inner.cache.connections.get(namespace, name))
    }

    async fn get_task_sync(&self, namespace: &str, name: &str) -> Result<Option<TaskSync>, StoreError> {
        self.get(namespace, name).await
    }

    async fn apply_connection(&self, object: &CalendarConnection) -> Result<CalendarConnection, StoreError> {
        self.apply(object).await
    }

    async fn apply_task_sync(&self, object: &TaskSync) -> Result<TaskSync, StoreError> {
        self.apply(object).await
    }

    async fn patch_connection_status(
        &self,
        namespace: &str,
        name: &str,
        status: &CalendarConnectionStatus,
    ) -> Result<CalendarConnection, StoreError> {
        let mut new = status.clone();
        self.patch_status(namespace, name, move |obj: &mut CalendarConnection| {
            new.history = obj.status.as_ref().map(|st| st.history.clone()).unwrap_or_default();
            obj.status = Some(new);
        })
        .await
    }

    async fn patch_task_sync_status(
        &self,
        namespace: &str,
        name: &str,
        status: &TaskSyncStatus,
    ) -> Result<TaskSync, StoreError> {
        let new = status.clone();
        self.patch_status(namespace, name, move |obj: &mut TaskSync| obj.status = Some(new)).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<Deletion, StoreError> {
        let key = key.clone();
        self.tx(move |tx, origin, fx| {
            if !rows::exists(tx, &key)? {
                return Ok(Deletion::NotFound);
            }
            let marked = Arc::new(AtomicBool::new(false));
            let m2 = marked.clone();
            let f = move |m: &mut ObjectMeta| {
                m2.store(semantics::mark_deleted(m), Ordering::Relaxed);
                true
            };
            match key.kind {
                Kind::CalendarConnection => meta_in::<CalendarConnection>(tx, origin, &key, f, fx)?,
                Kind::TaskSync => meta_in::<TaskSync>(tx, origin, &key, f, fx)?,
            }
            Ok(if marked.load(Ordering::Relaxed) { Deletion::Marked } else { Deletion::Deleted })
        })
        .await
    }

    async fn add_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<(), StoreError> {
        let finalizer = finalizer.to_string();
        self.with_meta(key, move |m| semantics::add_finalizer(m, &finalizer)).await
    }

    async fn remove_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<(), StoreError> {
        let finalizer = finalizer.to_string();
        self.with_meta(key, move |m| semantics::remove_finalizer(m, &finalizer)).await
    }

    async fn set_labels(&self, key: &ObjectKey, labels: &Labels) -> Result<(), StoreError> {
        let labels = labels.clone();
        self.with_meta(key, move |m| crate::engine::objects::merge_map(&mut m.labels, &labels)).await
    }

    async fn set_labels_and_finalizer(
        &self,
        key: &ObjectKey,
        labels: &Labels,
        finalizer: &str,
    ) -> Result<(), StoreError> {
        let (labels, finalizer) = (labels.clone(), finalizer.to_string());
        self.with_meta(key, move |m| semantics::label_and_finalize(m, &labels, &finalizer)).await
    }

    async fn set_annotations(&self, key: &ObjectKey, annotations: &Labels) -> Result<(), StoreError> {
        let annotations = annotations.clone();
        self.with_meta(key, move |m| crate::engine::objects::merge_map(&mut m.annotations, &annotations)).await
    }

    async fn list_connections(
        &self,
        namespace: Option<&str>,
        selector: &Labels,
    ) -> Result<Vec<CalendarConnection>, StoreError> {
        Ok(self.inner.cache.connections.list(namespace, selector))
    }

    async fn list_task_syncs(&self, namespace: Option<&str>, selector: &Labels) -> Result<Vec<TaskSync>, StoreError> {
        self.list(namespace, selector).await
    }

    async fn list_task_syncs_page(
        &self,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<(Vec<TaskSync>, bool), StoreError> {
        self.page(after, limit).await
    }

    async fn find_task_sync_by_event(&self, namespace: &str, event_id: &str) -> Result<Option<TaskSync>, StoreError> {
        let (ns, id) = (namespace.to_string(), event_id.to_string());
        self.read(move |tx| rows::find_by_event(tx, &ns, &id)).await
    }

    async fn read_credentials(&self, namespace: &str, secret: &SecretRef) -> Result<Option<Credentials>, StoreError> {
        Ok(self.read_secret_credentials(namespace, secret).await?.map(|(c, _)| c))
    }

    async fn write_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
        credentials: &Credentials,
        owner: &ObjectKey,
    ) -> Result<(), StoreError> {
        self.write_secret_credentials(namespace, secret, credentials, owner).await
    }

    async fn delete_credentials(&self, namespace: &str, secret: &SecretRef) -> Result<(), StoreError> {
        self.delete_secret(namespace, &secret.name).await.map(|_| ())
    }

    async fn read_credentials_versioned(
        &self,
        namespace: &str,
        secret: &SecretRef,
    ) -> Result<Option<(Credentials, String)>, StoreError> {
        self.read_secret_credentials(namespace, secret).await
    }

    async fn replace_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
        credentials: &Credentials,
        expected_version: &str,
    ) -> Result<String, StoreError> {
        self.replace_secret_credentials(namespace, secret, credentials, expected_version).await
    }

    async fn get_feed(&self, namespace: &str, id: &str) -> Result<Option<FeedRecord>, StoreError> {
        self.get_feed_record(namespace, id).await
    }

    async fn create_feed(&self, namespace: &str, record: &FeedRecord) -> Result<FeedRecord, StoreError> {
        self.create_feed_record(namespace, record).await
    }

    async fn delete_feed(&self, namespace: &str, id: &str) -> Result<bool, StoreError> {
        self.delete_feed_record(namespace, id).await
    }

    async fn append_connection_history(
        &self,
        namespace: &str,
        name: &str,
        entry: HistoryEntry,
    ) -> Result<HistoryEntry, StoreError> {
        let out = Arc::new(Mutex::new(None));
        let slot = out.clone();
        self.patch_status(namespace, name, move |obj: &mut CalendarConnection| {
            let status = obj.status.get_or_insert_with(CalendarConnectionStatus::default);
            let pushed = history::push(&mut status.history, entry, CONNECTION_HISTORY_LIMIT);
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(pushed);
        })
        .await?;
        let pushed = out.lock().unwrap_or_else(|e| e.into_inner()).take();
        pushed.ok_or_else(|| StoreError::Unavailable("history entry was not recorded".into()))
    }

    async fn publish_event(&self, key: &ObjectKey, event: &ObjectEvent) -> Result<(), StoreError> {
        let key = key.clone();
        let event = event.clone();
        self.tx(move |tx, _, _| rows::insert_event(tx, &key, event_fields(&event), EVENTS_KEPT)).await
    }

    async fn record_outcome(&self, key: &ObjectKey, record: &ReconcileRecord) -> Result<Recorded, StoreError> {
        self.record_unit(key, record).await
    }

    fn subscribe(&self) -> broadcast::Receiver<ObjectKey> {
        self.inner.changes.subscribe()
    }
}
