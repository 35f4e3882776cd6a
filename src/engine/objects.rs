//! The `Objects` port: everything the engine and the REST API need from wherever resources live
//! (the Kubernetes API, or the standalone SQLite store).
//!
//! Owns: the contract both stores implement, with Kubernetes semantics (resourceVersion,
//! generation bumped only on spec changes, finalizers and deletion marking). Must not touch:
//! reconcile decisions or provider calls.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::credentials::Credentials;
use crate::credentials::feed::FeedRecord;
use crate::resources::{
    CalendarConnection, CalendarConnectionStatus, HistoryEntry, SecretRef, TaskSync, TaskSyncStatus,
};

/// The two kinds calsync manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    CalendarConnection,
    TaskSync,
}

/// Identifies one object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn connection(namespace: &str, name: &str) -> Self {
        ObjectKey { kind: Kind::CalendarConnection, namespace: namespace.into(), name: name.into() }
    }

    pub fn task_sync(namespace: &str, name: &str) -> Self {
        ObjectKey { kind: Kind::TaskSync, namespace: namespace.into(), name: name.into() }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::CalendarConnection => "calendarconnection",
            Kind::TaskSync => "tasksync",
        };
        write!(f, "{kind}/{}/{}", self.namespace, self.name)
    }
}

/// Why a store call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} was changed by someone else (stale resourceVersion); read it again and retry")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the object store is unavailable, will retry: {0}")]
    Unavailable(String),
    /// Stored credentials that cannot be opened: tampered with, damaged, or sealed with a key
    /// that is not configured. The message says which Secret and what to do.
    #[error("{0}")]
    Unreadable(String),
}

impl StoreError {
    pub fn class(&self) -> crate::error::ErrorClass {
        match self {
            StoreError::Conflict(_) | StoreError::Unavailable(_) => crate::error::ErrorClass::Retry { after: None },
            StoreError::NotFound(_) | StoreError::Invalid(_) | StoreError::Unreadable(_) => {
                crate::error::ErrorClass::Permanent
            }
        }
    }
}

/// What `delete` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// The object is gone.
    Deleted,
    /// Finalizers remain: the object is marked (deletionTimestamp) and stays until they are removed.
    Marked,
    /// There was nothing to delete.
    NotFound,
}

/// Normal or Warning, as Kubernetes Events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// A Kubernetes-style Event about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectEvent {
    pub type_: EventType,
    /// PascalCase reason, e.g. `EventCreated`, `ReconnectRequired`.
    pub reason: String,
    /// Human-readable note (no secrets).
    pub note: String,
    /// PascalCase action, e.g. `Create`, `Delete`.
    pub action: String,
}

/// What one TaskSync reconcile leaves behind, written as one unit by `Objects::record_outcome`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReconcileRecord {
    /// The TaskSync's new status; `None` when it did not change (no status write).
    pub status: Option<TaskSyncStatus>,
    /// Entries for connections' history rings: (connection name, entry).
    pub history: Vec<(String, HistoryEntry)>,
    /// Events about the TaskSync.
    pub events: Vec<ObjectEvent>,
}

impl ReconcileRecord {
    pub fn is_empty(&self) -> bool {
        self.status.is_none() && self.history.is_empty() && self.events.is_empty()
    }
}

/// What `record_outcome` did with the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Written (or there was no status to write).
    Stored,
    /// The TaskSync is gone (deleted meanwhile): there was no status to write it to.
    Gone,
}

/// Label equality selector (`k=v` for every entry).
pub type Labels = BTreeMap<String, String>;

/// Where resources, credentials and history live. Both stores implement the same semantics:
/// - every write bumps `metadata.resourceVersion`; an `apply` carrying a resourceVersion that is
///   not the current one fails with `Conflict`;
/// - `metadata.generation` starts at 1 and moves only when the spec changes;
/// - `delete` of an object with finalizers only sets `deletionTimestamp`; removing the last
///   finalizer of a marked object deletes it;
/// - status writes never change spec or generation.
#[async_trait]
pub trait Objects: Send + Sync {
    async fn get_connection(&self, namespace: &str, name: &str) -> Result<Option<CalendarConnection>, StoreError>;
    async fn get_task_sync(&self, namespace: &str, name: &str) -> Result<Option<TaskSync>, StoreError>;

    /// Create the object, or update its spec, labels and annotations (not its status).
    async fn apply_connection(&self, object: &CalendarConnection) -> Result<CalendarConnection, StoreError>;
    async fn apply_task_sync(&self, object: &TaskSync) -> Result<TaskSync, StoreError>;

    /// Replace the status, except `history`, which only `append_connection_history` writes (so a
    /// connection reconcile never erases entries that TaskSync reconciles appended meanwhile).
    async fn patch_connection_status(
        &self,
        namespace: &str,
        name: &str,
        status: &CalendarConnectionStatus,
    ) -> Result<CalendarConnection, StoreError>;
    /// Replace the status (the TaskSync's own history ring included: one writer per TaskSync).
    async fn patch_task_sync_status(
        &self,
        namespace: &str,
        name: &str,
        status: &TaskSyncStatus,
    ) -> Result<TaskSync, StoreError>;

    async fn delete(&self, key: &ObjectKey) -> Result<Deletion, StoreError>;
    /// Add a finalizer (no-op if present).
    async fn add_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<(), StoreError>;
    /// Remove a finalizer (no-op if absent); deletes a marked object once none remain.
    async fn remove_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<(), StoreError>;
    /// Merge labels into `metadata.labels`.
    async fn set_labels(&self, key: &ObjectKey, labels: &Labels) -> Result<(), StoreError>;
    /// `set_labels` and `add_finalizer` as one write where the store can (a new TaskSync's first
    /// reconcile needs both: one durable commit instead of two on the SQL stores). Default: the
    /// two calls, labels first (Kubernetes: two requests, as before).
    async fn set_labels_and_finalizer(
        &self,
        key: &ObjectKey,
        labels: &Labels,
        finalizer: &str,
    ) -> Result<(), StoreError> {
        self.set_labels(key, labels).await?;
        self.add_finalizer(key, finalizer).await
    }
    /// Merge annotations into `metadata.annotations` (no write when nothing changes); an empty
    /// value removes the key. Carries signals between processes through the store, e.g. "this
    /// connection's calendar changed" from the REST process that received a provider
    /// notification to the engine, or a user's choice in a conflict to the engine.
    async fn set_annotations(&self, key: &ObjectKey, annotations: &Labels) -> Result<(), StoreError>;

    /// Connections in `namespace` (all namespaces when `None`) carrying every label in `selector`.
    async fn list_connections(
        &self,
        namespace: Option<&str>,
        selector: &Labels,
    ) -> Result<Vec<CalendarConnection>, StoreError>;
    /// TaskSyncs in `namespace` (all when `None`) carrying every label in `selector`.
    async fn list_task_syncs(&self, namespace: Option<&str>, selector: &Labels) -> Result<Vec<TaskSync>, StoreError>;
    /// A page of every namespace's TaskSyncs: up to `limit` after `after`, in (namespace, name)
    /// order, and whether more may follow. The standalone work queue's sweep reads them a page
    /// at a time so that it never holds all of them decoded: at 100,000 the one full listing was
    /// most of the process's high-water mark and, through allocator slack, of its resident
    /// memory afterwards. Default: everything after `after` in one page.
    async fn list_task_syncs_page(
        &self,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<(Vec<TaskSync>, bool), StoreError> {
        let _ = limit;
        let mut all = self.list_task_syncs(None, &Labels::new()).await?;
        if let Some(a) = after {
            all.retain(|t| {
                (t.metadata.namespace.as_deref().unwrap_or_default(), t.metadata.name.as_deref().unwrap_or_default())
                    > (a.namespace.as_str(), a.name.as_str())
            });
        }
        Ok((all, false))
    }
    /// The TaskSync whose status records this provider event id.
    async fn find_task_sync_by_event(&self, namespace: &str, event_id: &str) -> Result<Option<TaskSync>, StoreError>;

    /// Credentials a connection's `credentialsSecretRef` points to (`None` when absent).
    async fn read_credentials(&self, namespace: &str, secret: &SecretRef) -> Result<Option<Credentials>, StoreError>;
    /// Store credentials (calsync's form), owned by `owner` so they go when it goes.
    async fn write_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
        credentials: &Credentials,
        owner: &ObjectKey,
    ) -> Result<(), StoreError>;
    async fn delete_credentials(&self, namespace: &str, secret: &SecretRef) -> Result<(), StoreError>;
    /// Credentials with the store's current version of them (Secret resourceVersion; row
    /// version). `None` when the Secret is absent.
    async fn read_credentials_versioned(
        &self,
        namespace: &str,
        secret: &SecretRef,
    ) -> Result<Option<(Credentials, String)>, StoreError>;
    /// Replace credentials only if they are still at `expected_version`; returns the new version.
    /// `Conflict` when someone wrote in between, `NotFound` when they are gone.
    /// Writes the form that is stored: calsync's sealed `credentials` key, or, for a Secret a
    /// platform team wrote with plain keys, the plain keys (`refresh_token`, `expires_at`, and the
    /// refresh lease as JSON under `refresh_lease`), leaving every other key of that Secret
    /// alone; never an access token.
    async fn replace_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
        credentials: &Credentials,
        expected_version: &str,
    ) -> Result<String, StoreError>;

    /// Append to a connection's history ring (bounded), assigning the next id.
    async fn append_connection_history(
        &self,
        namespace: &str,
        name: &str,
        entry: HistoryEntry,
    ) -> Result<HistoryEntry, StoreError>;

    /// The record of ICS feed `id` (`credentials::feed`); `None` when there is none.
    async fn get_feed(&self, namespace: &str, id: &str) -> Result<Option<FeedRecord>, StoreError>;
    /// Store a new feed record unless one with its id exists; returns the record stored (the
    /// existing one when another request created it first).
    async fn create_feed(&self, namespace: &str, record: &FeedRecord) -> Result<FeedRecord, StoreError>;
    /// Delete feed `id` (its token fails at once); whether it existed.
    async fn delete_feed(&self, namespace: &str, id: &str) -> Result<bool, StoreError>;

    /// Publish a Kubernetes-style Event about `key`. Best effort: failures are logged by callers.
    async fn publish_event(&self, key: &ObjectKey, event: &ObjectEvent) -> Result<(), StoreError>;

    /// Write one TaskSync reconcile's outcome: the connections' history entries, the Events and
    /// the status of `key`. Semantics every store keeps: a connection that is gone skips its
    /// entry (it never fails the status); an Event that cannot be stored is logged, never an
    /// error; the TaskSync being gone skips the status and answers `Gone` (history and Events
    /// still land: the calendar write they record happened). Other errors fail the call.
    ///
    /// This default makes the separate calls, history and Events before the status: a crash in
    /// between leaves the status behind, so the reconcile runs again and records again (an entry
    /// may appear twice, none is lost). The SQL stores override it to write everything in one
    /// transaction, so a reconcile waits for one durable commit instead of three.
    async fn record_outcome(&self, key: &ObjectKey, record: &ReconcileRecord) -> Result<Recorded, StoreError> {
        for (connection, entry) in &record.history {
            match self.append_connection_history(&key.namespace, connection, entry.clone()).await {
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        for event in &record.events {
            if let Err(e) = self.publish_event(key, event).await {
                tracing::warn!(object = %key, reason = %event.reason, error = %e, "could not publish event");
            }
        }
        match &record.status {
            None => Ok(Recorded::Stored),
            Some(status) => match self.patch_task_sync_status(&key.namespace, &key.name, status).await {
                Ok(_) => Ok(Recorded::Stored),
                Err(StoreError::NotFound(_)) => Ok(Recorded::Gone),
                Err(e) => Err(e),
            },
        }
    }

    /// Changes to any object (key of the changed object). Receivers that lag may miss keys and
    /// should re-read what they wait for.
    fn subscribe(&self) -> broadcast::Receiver<ObjectKey>;
}

/// Merge `new` into a metadata map (labels, annotations); an empty value removes the key;
/// `true` when anything changed, so a store writes (and notifies) only then.
pub fn merge_map(current: &mut Option<std::collections::BTreeMap<String, String>>, new: &Labels) -> bool {
    let current = current.get_or_insert_with(Default::default);
    let mut changed = false;
    for (k, v) in new {
        if v.is_empty() {
            changed |= current.remove(k).is_some();
        } else if current.get(k) != Some(v) {
            current.insert(k.clone(), v.clone());
            changed = true;
        }
    }
    changed
}

/// Wait until `check` says the object is as wanted, re-checking on every change notification and
/// at least every 500 ms. Returns the last value seen when `timeout` passes first.
pub async fn wait_for<T, F, Fut>(objects: &dyn Objects, timeout: Duration, check: F) -> Result<(bool, T), StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(bool, T), StoreError>>,
{
    wait_on(objects, None, timeout, check).await
}

/// `wait_for` about one object: re-checks only on notifications of `key` (or a lagged
/// channel, or every 500 ms), so a waiter is not woken by every other object's writes (16
/// requests in flight each wrote 4–5 times per task: every waiter re-read on all of them).
pub async fn wait_for_key<T, F, Fut>(
    objects: &dyn Objects,
    key: &ObjectKey,
    timeout: Duration,
    check: F,
) -> Result<(bool, T), StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(bool, T), StoreError>>,
{
    wait_on(objects, Some(key), timeout, check).await
}

/// The loop of both: `key` None means any notification wakes the check.
async fn wait_on<T, F, Fut>(
    objects: &dyn Objects,
    key: Option<&ObjectKey>,
    timeout: Duration,
    mut check: F,
) -> Result<(bool, T), StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(bool, T), StoreError>>,
{
    let mut changes = objects.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (done, value) = check().await?;
        if done || tokio::time::Instant::now() >= deadline {
            return Ok((done, value));
        }
        let tick = deadline.min(tokio::time::Instant::now() + Duration::from_millis(500));
        loop {
            match tokio::time::timeout_at(tick, changes.recv()).await {
                Ok(Ok(changed)) if key.is_some_and(|k| k != &changed) => continue,
                // Ours (or any, without a key), a lag (it may have been ours), a closed channel or
                // the timer: look again.
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::engine::memory::MemoryObjects;

    fn annotate(n: usize) -> Labels {
        Labels::from([("n".to_string(), n.to_string())])
    }

    #[tokio::test]
    async fn wait_for_key_is_not_woken_by_other_objects() {
        let objects = Arc::new(MemoryObjects::new());
        let task = |name: &str| -> crate::resources::TaskSync {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "TaskSync",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"connectionRef": {"name": "c"}, "taskId": name, "title": "T", "start": "2026-03-05T14:00:00Z"}
            }))
            .unwrap()
        };
        objects.apply_task_sync(&task("mine")).await.unwrap();
        objects.apply_task_sync(&task("other")).await.unwrap();
        let (mine, other) = (ObjectKey::task_sync("default", "mine"), ObjectKey::task_sync("default", "other"));
        let checks = Arc::new(AtomicUsize::new(0));
        let waiter = {
            let (objects, checks, mine) = (objects.clone(), checks.clone(), mine.clone());
            tokio::spawn(async move {
                wait_for_key(objects.as_ref(), &mine, Duration::from_secs(5), || {
                    let (objects, checks) = (objects.clone(), checks.clone());
                    async move {
                        checks.fetch_add(1, Ordering::SeqCst);
                        let ts = objects.get_task_sync("default", "mine").await?;
                        Ok((ts.is_some_and(|t| t.metadata.annotations.is_some_and(|a| a.contains_key("n"))), ()))
                    }
                })
                .await
            })
        };
        tokio::task::yield_now().await;
        for n in 0..50 {
            objects.set_annotations(&other, &annotate(n)).await.unwrap();
            tokio::task::yield_now().await;
        }
        objects.set_annotations(&mine, &annotate(1)).await.unwrap();
        let (done, ()) = waiter.await.unwrap().unwrap();
        assert!(done);
        assert!(checks.load(Ordering::SeqCst) <= 3, "woken {} times", checks.load(Ordering::SeqCst));
    }
}
