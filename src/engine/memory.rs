//! An in-memory `Objects` store with Kubernetes semantics: the test double the engine is tested
//! on (it records writes and injects failures), and the reference the real stores must match.
//!
//! Owns: its maps only. Must not touch: reconcile decisions.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use tokio::sync::broadcast;

use super::objects::{Deletion, Kind, Labels, ObjectEvent, ObjectKey, Objects, StoreError};
use crate::credentials::feed::FeedRecord;
use crate::credentials::{self, Credentials};
use crate::resources::{
    CalendarConnection, CalendarConnectionStatus, HistoryEntry, SecretRef, TaskSync, TaskSyncStatus, history,
};

// Apply and metadata rules live apart to keep this file short.
#[path = "memory_meta.rs"]
mod meta;

use meta::apply_into;

/// Store operations that can be made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOp {
    Get,
    Apply,
    PatchStatus,
    Delete,
    Finalizer,
    AppendHistory,
    Credentials,
}

type SecretData = BTreeMap<String, Vec<u8>>;

#[derive(Default)]
struct State {
    connections: BTreeMap<(String, String), CalendarConnection>,
    task_syncs: BTreeMap<(String, String), TaskSync>,
    /// Secret data with its version (the global resourceVersion of its last write, so a
    /// deleted and re-created Secret never repeats an old version).
    secrets: BTreeMap<(String, String), (SecretData, u64)>,
    events: Vec<(ObjectKey, ObjectEvent)>,
    resource_version: u64,
    faults: VecDeque<(StoreOp, StoreError)>,
    writes: Vec<(StoreOp, ObjectKey)>,
}

/// The in-memory store. Cloning shares the state.
#[derive(Clone)]
pub struct MemoryObjects {
    state: Arc<Mutex<State>>,
    changes: broadcast::Sender<ObjectKey>,
}

impl Default for MemoryObjects {
    fn default() -> Self {
        Self::new()
    }
}

fn key_of(ns: &str, name: &str) -> (String, String) {
    (ns.to_string(), name.to_string())
}

fn matches(labels: Option<&BTreeMap<String, String>>, selector: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

impl MemoryObjects {
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(1024);
        MemoryObjects { state: Arc::new(Mutex::new(State::default())), changes }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Only a bug in this test double can poison the lock; keep the data usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self, key: ObjectKey) {
        // No subscribers is fine.
        let _ = self.changes.send(key);
    }

    /// Fail the next store call of `op` with `err`.
    pub fn inject(&self, op: StoreOp, err: StoreError) {
        self.lock().faults.push_back((op, err));
    }

    /// Writes made so far (for "status is written only when it changed" assertions).
    pub fn writes(&self) -> Vec<(StoreOp, ObjectKey)> {
        self.lock().writes.clone()
    }

    pub fn clear_writes(&self) {
        self.lock().writes.clear();
    }

    /// Events published so far.
    pub fn events(&self) -> Vec<(ObjectKey, ObjectEvent)> {
        self.lock().events.clone()
    }

    /// Put a Secret's raw data (as a platform team would write it).
    pub fn put_secret(&self, namespace: &str, name: &str, data: BTreeMap<String, Vec<u8>>) {
        let mut s = self.lock();
        let version = Self::next_rv(&mut s);
        s.secrets.insert(key_of(namespace, name), (data, version));
    }

    /// A Secret's raw data (what a write left in it).
    pub fn secret_data(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.lock().secrets.get(&key_of(namespace, name)).map(|(data, _)| data.clone())
    }

    /// Whether a Secret exists.
    pub fn has_secret(&self, namespace: &str, name: &str) -> bool {
        self.lock().secrets.contains_key(&key_of(namespace, name))
    }

    fn enter(&self, s: &mut State, op: StoreOp, key: Option<&ObjectKey>) -> Result<(), StoreError> {
        if let Some(pos) = s.faults.iter().position(|(o, _)| *o == op)
            && let Some((_, err)) = s.faults.remove(pos)
        {
            return Err(err);
        }
        if let Some(key) = key
            && op != StoreOp::Get
        {
            s.writes.push((op, key.clone()));
        }
        Ok(())
    }

    fn next_rv(s: &mut State) -> u64 {
        s.resource_version += 1;
        s.resource_version
    }
}

#[async_trait]
impl Objects for MemoryObjects {
    async fn get_connection(&self, namespace: &str, name: &str) -> Result<Option<CalendarConnection>, StoreError> {
        let mut s = self.lock();
        self.enter(&mut s, StoreOp::Get, None)?;
        Ok(s.connections.get(&key_of(namespace, name)).cloned())
    }

    async fn get_task_sync(&self, namespace: &str, name: &str) -> Result<Option<TaskSync>, StoreError> {
        let mut s = self.lock();
        self.enter(&mut s, StoreOp::Get, None)?;
        Ok(s.task_syncs.get(&key_of(namespace, name)).cloned())
    }

    async fn apply_connection(&self, object: &CalendarConnection) -> Result<CalendarConnection, StoreError> {
        let mut s = self.lock();
        let key = ObjectKey::connection(
            object.meta().namespace.as_deref().unwrap_or("default"),
            object.meta().name.as_deref().unwrap_or(""),
        );
        self.enter(&mut s, StoreOp::Apply, Some(&key))?;
        let rv = Self::next_rv(&mut s);
        let out = apply_into(&mut s.connections, rv, object, "CalendarConnection")?;
        drop(s);
        self.notify(key);
        Ok(out)
    }

    async fn apply_task_sync(&self, object: &TaskSync) -> Result<TaskSync, StoreError> {
        let mut s = self.lock();
        let key = ObjectKey::task_sync(
            object.meta().namespace.as_deref().unwrap_or("default"),
            object.meta().name.as_deref().unwrap_or(""),
        );
        self.enter(&mut s, StoreOp::Apply, Some(&key))?;
        let rv = Self::next_rv(&mut s);
        let out = apply_into(&mut s.task_syncs, rv, object, "TaskSync")?;
        drop(s);
        self.notify(key);
        Ok(out)
    }

    async fn patch_connection_status(
        &self,
        namespace: &str,
        name: &str,
        status: &CalendarConnectionStatus,
    ) -> Result<CalendarConnection, StoreError> {
        let key = ObjectKey::connection(namespace, name);
        let mut s = self.lock();
        self.enter(&mut s, StoreOp::PatchStatus, Some(&key))?;
        let rv = Self::next_rv(&mut s);
        let obj =
            s.connections.get_mut(&key_of(namespace, name)).ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        let history = obj.status.as_ref().map(|st| st.history.clone()).unwrap_or_default();
        let mut new = status.clone();
        new.history = history;
        obj.status = Some(new);
        obj.meta_mut().resource_version = Some(rv.to_string());
        let out = obj.clone();
        drop(s);
        self.notify(key);
        Ok(out)
    }

    async fn patch_task_sync_status(
        &self,
        namespace: &str,
        name: &str,
        status: &TaskSyncStatus,
    ) -> Result<TaskSync, StoreError> {
        let key = ObjectKey::task_sync(namespace, name);
        let mut s = self.lock();
        self.enter(&mut s, StoreOp::PatchStatus, Some(&key))?;
        let rv = Self::next_rv(&mut s);
        let obj =
            s.task_syncs.get_mut(&key_of(namespace, name)).ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        obj.status = Some(status.clone());
        obj.meta_mut().resource_version = Some(rv.to_string());
        let out = obj.clone();
        drop(s);
        self.notify(key);
        Ok(out)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<Deletion, StoreError> {
        let exists = {
            let s = self.lock();
            let k = key_of(&key.namespace, &key.name);
            match key.kind {
                Kind::CalendarConnection => s.connections.contains_key(&k),
                Kind::TaskSync => s.task_syncs.contains_key(&k),
            }
        };
        if !exists {
            return Ok(Deletion::NotFound);
        }
        let mut marked = false;
        self.with_meta(key, StoreOp::Delete, |m| {
            if m.deletion_timestamp.is_none() {
                m.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
            }
            marked = m.finalizers.as_ref().is_some_and(|f| !f.is_empty());
            true
        })?;
        Ok(if marked { Deletion::Marked } else { Deletion::Deleted })
    }

    async fn add_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<(), StoreError> {
        self.with_meta(key, StoreOp::Finalizer, |m| {
            if m.deletion_timestamp.is_some() {
                // Kubernetes forbids adding finalizers to an object being deleted.
                return false;
            }
            let list = m.finalizers.get_or_insert_with(Vec::new);
            if list.iter().any(|f| f == finalizer) {
                return false;
            }
            list.push(finalizer.to_string());
            true
        })
    }

    async fn remove_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<(), StoreError> {
        self.with_meta(key, StoreOp::Finalizer, |m| {
            let Some(list) = m.finalizers.as_mut() else { return false };
            let before = list.len();
            list.retain(|f| f != finalizer);
            list.len() != before
        })
    }

    async fn set_labels(&self, key: &ObjectKey, labels: &Labels) -> Result<(), StoreError> {
        self.with_meta(key, StoreOp::Apply, |m| super::objects::merge_map(&mut m.labels, labels))
    }

    async fn set_annotations(&self, key: &ObjectKey, annotations: &Labels) -> Result<(), StoreError> {
        self.with_meta(key, StoreOp::Apply, |m| super::objects::merge_map(&mut m.annotations, annotations))
    }

    async fn list_connections(
        &self,
        namespace: Option<&str>,
        selector: &Labels,
    ) -> Result<Vec<CalendarConnection>, StoreError> {
        let mut s = self.lock();
        self.enter(&mut s, StoreOp::Get, None)?;
        Ok(s.connections
            .iter()
            .filter(|((ns, _), o)| namespace.is_none_or(|n| n == ns) && matches(o.meta().labels.as_ref(), selector))
            .map(|(_, o)| o.clone())
            .collect())
    }

    async fn list_task_syncs(&self, namespace: Option<&str>, selector: &Labels) -> Result<Vec<TaskSync>, StoreError> {
        let mut s = self.lock();
        self.enter(&mut s, StoreOp::Get, None)?;
        Ok(s.task_syncs
            .iter()
            .filter(|((ns, _), o)| namespace.is_none_or(|n| n == ns) && matches(o.meta().labels.as_ref(), selector))
            .map(|(_, o)| o.clone())
            .collect())
    }

    async fn find_task_sync_by_event(&self, namespace: &str, event_id: &str) -> Result<Option<TaskSync>, StoreError> {
        let mut s = self.lock();
        self.enter(&mut s, StoreOp::Get, None)?;
        Ok(s.task_syncs
            .iter()
            .find(|((ns, _), o)| {
                ns == namespace && o.status.as_ref().and_then(|st| st.event_id.as_deref()) == Some(event_id)
            })
            .map(|(_, o)| o.clone()))
    }

    async fn read_credentials(&self, namespace: &str, secret: &SecretRef) -> Result<Option<Credentials>, StoreError> {
        let mut s = self.lock();
        self.enter(&mut s, StoreOp::Credentials, None)?;
        let Some((data, _)) = s.secrets.get(&key_of(namespace, &secret.name)) else { return Ok(None) };
        credentials::from_secret_data(data, secret.key.as_deref())
            .map(Some)
            .map_err(|e| StoreError::Invalid(format!("Secret {namespace}/{}: {e}", secret.name)))
    }

    async fn write_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
        credentials: &Credentials,
        _owner: &ObjectKey,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_vec(credentials)
            .map_err(|e| StoreError::Invalid(format!("credentials cannot be serialized: {e}")))?;
        let mut s = self.lock();
        self.enter(&mut s, StoreOp::Credentials, None)?;
        let key = secret.key.clone().unwrap_or_else(|| credentials::CREDENTIALS_KEY.to_string());
        let version = Self::next_rv(&mut s);
        s.secrets.insert(key_of(namespace, &secret.name), (BTreeMap::from([(key, json)]), version));
        Ok(())
    }

    async fn delete_credentials(&self, namespace: &str, secret: &SecretRef) -> Result<(), StoreError> {
        let mut s = self.lock();
        self.enter(&mut s, StoreOp::Credentials, None)?;
        s.secrets.remove(&key_of(namespace, &secret.name));
        Ok(())
    }

    async fn get_feed(&self, namespace: &str, id: &str) -> Result<Option<FeedRecord>, StoreError> {
        let mut s = self.lock();
        self.enter(&mut s, StoreOp::Credentials, None)?;
        Ok(s.secrets
            .get(&key_of(namespace, &FeedRecord::secret_name(id)))
            .and_then(|(d, _)| FeedRecord::from_secret_data(d)))
    }

    async fn create_feed(&self, namespace: &str, record: &FeedRecord) -> Result<FeedRecord, StoreError> {
        let mut s = self.lock();
        self.enter(&mut s, StoreOp::Credentials, None)?;
        let key = key_of(namespace, &FeedRecord::secret_name(&record.id));
        if let Some(existing) = s.secrets.get(&key).and_then(|(d, _)| FeedRecord::from_secret_data(d)) {
            return Ok(existing);
        }
        let version = Self::next_rv(&mut s);
        s.secrets.insert(key, (record.to_secret_data(), version));
        Ok(record.clone())
    }

    async fn delete_feed(&self, namespace: &str, id: &str) -> Result<bool, StoreError> {
        let mut s = self.lock();
        self.enter(&mut s, StoreOp::Credentials, None)?;
        Ok(s.secrets.remove(&key_of(namespace, &FeedRecord::secret_name(id))).is_some())
    }

    async fn read_credentials_versioned(
        &self,
        namespace: &str,
        secret: &SecretRef,
    ) -> Result<Option<(Credentials, String)>, StoreError> {
        let mut s = self.lock();
        self.enter(&mut s, StoreOp::Credentials, None)?;
        let Some((data, version)) = s.secrets.get(&key_of(namespace, &secret.name)) else { return Ok(None) };
        credentials::from_secret_data(data, secret.key.as_deref())
            .map(|c| Some((c, version.to_string())))
            .map_err(|e| StoreError::Invalid(format!("Secret {namespace}/{}: {e}", secret.name)))
    }

    async fn replace_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
        credentials: &Credentials,
        expected_version: &str,
    ) -> Result<String, StoreError> {
        let mut s = self.lock();
        self.enter(&mut s, StoreOp::Credentials, None)?;
        let label = format!("Secret {namespace}/{}", secret.name);
        let k = key_of(namespace, &secret.name);
        let (mut data, version) = s.secrets.get(&k).cloned().ok_or_else(|| StoreError::NotFound(label.clone()))?;
        if version.to_string() != expected_version {
            return Err(StoreError::Conflict(label));
        }
        // This store keeps calsync's form unsealed.
        credentials::form::write_back(&mut data, secret.key.as_deref(), credentials, Ok)
            .map_err(|e| StoreError::Invalid(format!("{label}: {e}")))?;
        let version = Self::next_rv(&mut s);
        s.secrets.insert(k, (data, version));
        Ok(version.to_string())
    }

    async fn append_connection_history(
        &self,
        namespace: &str,
        name: &str,
        entry: HistoryEntry,
    ) -> Result<HistoryEntry, StoreError> {
        let key = ObjectKey::connection(namespace, name);
        let mut s = self.lock();
        self.enter(&mut s, StoreOp::AppendHistory, Some(&key))?;
        let rv = Self::next_rv(&mut s);
        let obj =
            s.connections.get_mut(&key_of(namespace, name)).ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        let status = obj.status.get_or_insert_with(CalendarConnectionStatus::default);
        let out = history::push(&mut status.history, entry, history::CONNECTION_HISTORY_LIMIT);
        obj.meta_mut().resource_version = Some(rv.to_string());
        drop(s);
        self.notify(key);
        Ok(out)
    }

    async fn publish_event(&self, key: &ObjectKey, event: &ObjectEvent) -> Result<(), StoreError> {
        self.lock().events.push((key.clone(), event.clone()));
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<ObjectKey> {
        self.changes.subscribe()
    }
}
