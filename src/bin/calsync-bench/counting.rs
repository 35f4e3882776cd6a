//! An `Objects` decorator that counts writes, so the steady-state scenario can show that a
//! reconcile of an unchanged TaskSync writes nothing.
//!
//! Owns: the counters. Must not touch: the semantics of the store it wraps (it only delegates).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use tokio::sync::broadcast;

use calsync::credentials::Credentials;
use calsync::credentials::feed::FeedRecord;
use calsync::engine::{Deletion, Labels, ObjectEvent, ObjectKey, Objects, ReconcileRecord, Recorded, StoreError};
use calsync::resources::{
    CalendarConnection, CalendarConnectionStatus, HistoryEntry, SecretRef, TaskSync, TaskSyncStatus,
};

/// Wraps a store; `writes()` and `reads()` count calls since creation.
pub struct CountingObjects {
    inner: Arc<dyn Objects>,
    writes: AtomicU64,
    reads: AtomicU64,
}

impl CountingObjects {
    pub fn new(inner: Arc<dyn Objects>) -> Self {
        CountingObjects { inner, writes: AtomicU64::new(0), reads: AtomicU64::new(0) }
    }

    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn w(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    fn r(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl Objects for CountingObjects {
    async fn get_connection(&self, namespace: &str, name: &str) -> Result<Option<CalendarConnection>, StoreError> {
        self.r();
        self.inner.get_connection(namespace, name).await
    }
    async fn get_task_sync(&self, namespace: &str, name: &str) -> Result<Option<TaskSync>, StoreError> {
        self.r();
        self.inner.get_task_sync(namespace, name).await
    }
    async fn apply_connection(&self, object: &CalendarConnection) -> Result<CalendarConnection, StoreError> {
        self.w();
        self.inner.apply_connection(object).await
    }
    async fn apply_task_sync(&self, object: &TaskSync) -> Result<TaskSync, StoreError> {
        self.w();
        self.inner.apply_task_sync(object).await
    }
    async fn patch_connection_status(
        &self,
        namespace: &str,
        name: &str,
        status: &CalendarConnectionStatus,
    ) -> Result<CalendarConnection, StoreError> {
        self.w();
        self.inner.patch_connection_status(namespace, name, status).await
    }
    async fn patch_task_sync_status(
        &self,
        namespace: &str,
        name: &str,
        status: &TaskSyncStatus,
    ) -> Result<TaskSync, StoreError> {
        self.w();
        self.inner.patch_task_sync_status(namespace, name, status).await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<Deletion, StoreError> {
        self.w();
        self.inner.delete(key).await
    }
    async fn add_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<(), StoreError> {
        self.w();
        self.inner.add_finalizer(key, finalizer).await
    }
    async fn remove_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<(), StoreError> {
        self.w();
        self.inner.remove_finalizer(key, finalizer).await
    }
    async fn set_labels(&self, key: &ObjectKey, labels: &Labels) -> Result<(), StoreError> {
        self.w();
        self.inner.set_labels(key, labels).await
    }
    async fn set_labels_and_finalizer(
        &self,
        key: &ObjectKey,
        labels: &Labels,
        finalizer: &str,
    ) -> Result<(), StoreError> {
        self.w();
        self.inner.set_labels_and_finalizer(key, labels, finalizer).await
    }
    async fn set_annotations(&self, key: &ObjectKey, annotations: &Labels) -> Result<(), StoreError> {
        self.w();
        self.inner.set_annotations(key, annotations).await
    }
    async fn list_connections(
        &self,
        namespace: Option<&str>,
        selector: &Labels,
    ) -> Result<Vec<CalendarConnection>, StoreError> {
        self.r();
        self.inner.list_connections(namespace, selector).await
    }
    async fn list_task_syncs(&self, namespace: Option<&str>, selector: &Labels) -> Result<Vec<TaskSync>, StoreError> {
        self.r();
        self.inner.list_task_syncs(namespace, selector).await
    }
    async fn find_task_sync_by_event(&self, namespace: &str, event_id: &str) -> Result<Option<TaskSync>, StoreError> {
        self.r();
        self.inner.find_task_sync_by_event(namespace, event_id).await
    }
    async fn read_credentials(&self, namespace: &str, secret: &SecretRef) -> Result<Option<Credentials>, StoreError> {
        self.r();
        self.inner.read_credentials(namespace, secret).await
    }
    async fn write_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
        credentials: &Credentials,
        owner: &ObjectKey,
    ) -> Result<(), StoreError> {
        self.w();
        self.inner.write_credentials(namespace, secret, credentials, owner).await
    }
    async fn get_feed(&self, namespace: &str, id: &str) -> Result<Option<FeedRecord>, StoreError> {
        self.r();
        self.inner.get_feed(namespace, id).await
    }
    async fn create_feed(&self, namespace: &str, record: &FeedRecord) -> Result<FeedRecord, StoreError> {
        self.w();
        self.inner.create_feed(namespace, record).await
    }
    async fn delete_feed(&self, namespace: &str, id: &str) -> Result<bool, StoreError> {
        self.w();
        self.inner.delete_feed(namespace, id).await
    }
    async fn delete_credentials(&self, namespace: &str, secret: &SecretRef) -> Result<(), StoreError> {
        self.w();
        self.inner.delete_credentials(namespace, secret).await
    }
    async fn read_credentials_versioned(
        &self,
        namespace: &str,
        secret: &SecretRef,
    ) -> Result<Option<(Credentials, String)>, StoreError> {
        self.r();
        self.inner.read_credentials_versioned(namespace, secret).await
    }
    async fn replace_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
        credentials: &Credentials,
        expected_version: &str,
    ) -> Result<String, StoreError> {
        self.w();
        self.inner.replace_credentials(namespace, secret, credentials, expected_version).await
    }
    async fn append_connection_history(
        &self,
        namespace: &str,
        name: &str,
        entry: HistoryEntry,
    ) -> Result<HistoryEntry, StoreError> {
        self.w();
        self.inner.append_connection_history(namespace, name, entry).await
    }
    async fn publish_event(&self, key: &ObjectKey, event: &ObjectEvent) -> Result<(), StoreError> {
        self.w();
        self.inner.publish_event(key, event).await
    }
    async fn record_outcome(&self, key: &ObjectKey, record: &ReconcileRecord) -> Result<Recorded, StoreError> {
        self.w();
        self.inner.record_outcome(key, record).await
    }
    fn subscribe(&self) -> broadcast::Receiver<ObjectKey> {
        self.inner.subscribe()
    }
}
