//! `Store`: the standalone store `DATABASE_URL` selects: SQLite (`sqlite://PATH`,
//! `sqlite::memory:`, a bare path) or PostgreSQL (`postgres://`, `postgresql://`). Everything
//! standalone mode, the REST API it mounts and the `apply`/`get`/`delete`/`rotate-keys` commands
//! need from a store, delegated to the one chosen.
//!
//! Owns: the choice and the delegation. Must not touch: what either store does (`store`, `pg`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::StoredEvent;
use super::db::Location;
use super::pg::{self, PgObjects};
use super::store::{OutboxEntry, OutboxMessage, OutboxSettle, SecretName, SqliteObjects, StatusTap};
use crate::credentials::Credentials;
use crate::credentials::envelope::Keyring;
use crate::credentials::feed::FeedRecord;
use crate::credentials::keys::RotationReport;
use crate::engine::{Deletion, Labels, ObjectEvent, ObjectKey, Objects, ReconcileRecord, Recorded, StoreError};
use crate::resources::{
    CalendarConnection, CalendarConnectionStatus, HistoryEntry, SecretRef, TaskSync, TaskSyncStatus,
};

/// The store standalone runs on.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqliteObjects),
    Postgres(PgObjects),
}

/// Where the secrets standalone generates are kept for `url`: beside a SQLite file; in the
/// working directory (`calsync.<name>`) for `sqlite::memory:` and PostgreSQL, whose replicas
/// should rather all get ENCRYPTION_KEY (and the others) from their environment.
pub fn secrets_path(url: &str) -> Result<Option<PathBuf>, String> {
    if pg::is_postgres_url(url) {
        return Ok(None);
    }
    Ok(Location::parse(url)?.path().map(PathBuf::from))
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// Open (creating and migrating) the database `url` names.
    pub async fn open(url: &str, keys: Keyring) -> Result<Self, StoreError> {
        if pg::is_postgres_url(url) {
            Ok(Store::Postgres(PgObjects::open(url, keys).await?))
        } else {
            Ok(Store::Sqlite(SqliteObjects::open(url, keys).await?))
        }
    }

    pub async fn put_secret(
        &self,
        namespace: &str,
        name: &str,
        data: BTreeMap<String, Vec<u8>>,
    ) -> Result<bool, StoreError> {
        each!(self, s => s.put_secret(namespace, name, data).await)
    }

    pub async fn get_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, StoreError> {
        each!(self, s => s.get_secret(namespace, name).await)
    }

    pub async fn delete_secret(&self, namespace: &str, name: &str) -> Result<bool, StoreError> {
        each!(self, s => s.delete_secret(namespace, name).await)
    }

    pub async fn secret_names(&self, namespace: &str) -> Result<Vec<String>, StoreError> {
        each!(self, s => s.secret_names(namespace).await)
    }

    pub fn subscribe_secrets(&self) -> broadcast::Receiver<SecretName> {
        each!(self, s => s.subscribe_secrets())
    }

    pub async fn stored_key_ids(&self) -> Result<Vec<String>, StoreError> {
        each!(self, s => s.stored_key_ids().await)
    }

    pub async fn rotate_keys(&self) -> Result<RotationReport, StoreError> {
        each!(self, s => s.rotate_keys().await)
    }

    pub async fn events(&self, key: Option<&ObjectKey>, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        each!(self, s => s.events(key, limit).await)
    }

    pub fn set_status_tap(&self, tap: Arc<dyn StatusTap>) -> Result<(), StoreError> {
        each!(self, s => s.set_status_tap(tap))
    }

    pub async fn outbox_push(&self, messages: Vec<OutboxMessage>) -> Result<(), StoreError> {
        each!(self, s => s.outbox_push(messages).await)
    }

    pub async fn outbox_due(&self, now_ms: i64, limit: usize, busy: Vec<i64>) -> Result<Vec<OutboxEntry>, StoreError> {
        each!(self, s => s.outbox_due(now_ms, limit, busy).await)
    }

    pub async fn outbox_next_due(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        each!(self, s => s.outbox_next_due(now_ms).await)
    }

    pub async fn outbox_depth(&self) -> Result<(u64, Option<i64>), StoreError> {
        each!(self, s => s.outbox_depth().await)
    }

    pub async fn outbox_settle(&self, outcomes: Vec<OutboxSettle>) -> Result<(), StoreError> {
        each!(self, s => s.outbox_settle(outcomes).await)
    }

    pub async fn outbox_endpoint_disabled(&self, endpoint: &str) -> Result<Option<String>, StoreError> {
        each!(self, s => s.outbox_endpoint_disabled(endpoint).await)
    }

    pub async fn outbox_disable_endpoint(&self, endpoint: &str, reason: &str) -> Result<(), StoreError> {
        each!(self, s => s.outbox_disable_endpoint(endpoint, reason).await)
    }

    pub async fn outbox_dead(&self, limit: u32) -> Result<Vec<(String, u32, String)>, StoreError> {
        each!(self, s => s.outbox_dead(limit).await)
    }
}

#[async_trait]
impl Objects for Store {
    async fn get_connection(&self, namespace: &str, name: &str) -> Result<Option<CalendarConnection>, StoreError> {
        each!(self, s => s.get_connection(namespace, name).await)
    }

    async fn get_task_sync(&self, namespace: &str, name: &str) -> Result<Option<TaskSync>, StoreError> {
        each!(self, s => s.get_task_sync(namespace, name).await)
    }

    async fn apply_connection(&self, object: &CalendarConnection) -> Result<CalendarConnection, StoreError> {
        each!(self, s => s.apply_connection(object).await)
    }

    async fn apply_task_sync(&self, object: &TaskSync) -> Result<TaskSync, StoreError> {
        each!(self, s => s.apply_task_sync(object).await)
    }

    async fn patch_connection_status(
        &self,
        namespace: &str,
        name: &str,
        status: &CalendarConnectionStatus,
    ) -> Result<CalendarConnection, StoreError> {
        each!(self, s => s.patch_connection_status(namespace, name, status).await)
    }

    async fn patch_task_sync_status(
        &self,
        namespace: &str,
        name: &str,
        status: &TaskSyncStatus,
    ) -> Result<TaskSync, StoreError> {
        each!(self, s => s.patch_task_sync_status(namespace, name, status).await)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<Deletion, StoreError> {
        each!(self, s => s.delete(key).await)
    }

    async fn add_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<(), StoreError> {
        each!(self, s => s.add_finalizer(key, finalizer).await)
    }

    async fn remove_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<(), StoreError> {
        each!(self, s => s.remove_finalizer(key, finalizer).await)
    }

    async fn set_labels(&self, key: &ObjectKey, labels: &Labels) -> Result<(), StoreError> {
        each!(self, s => s.set_labels(key, labels).await)
    }

    async fn set_labels_and_finalizer(
        &self,
        key: &ObjectKey,
        labels: &Labels,
        finalizer: &str,
    ) -> Result<(), StoreError> {
        each!(self, s => s.set_labels_and_finalizer(key, labels, finalizer).await)
    }

    async fn set_annotations(&self, key: &ObjectKey, annotations: &Labels) -> Result<(), StoreError> {
        each!(self, s => s.set_annotations(key, annotations).await)
    }

    async fn list_connections(
        &self,
        namespace: Option<&str>,
        selector: &Labels,
    ) -> Result<Vec<CalendarConnection>, StoreError> {
        each!(self, s => s.list_connections(namespace, selector).await)
    }

    async fn list_task_syncs(&self, namespace: Option<&str>, selector: &Labels) -> Result<Vec<TaskSync>, StoreError> {
        each!(self, s => s.list_task_syncs(namespace, selector).await)
    }
    async fn list_task_syncs_page(
        &self,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<(Vec<TaskSync>, bool), StoreError> {
        each!(self, s => s.list_task_syncs_page(after, limit).await)
    }

    async fn find_task_sync_by_event(&self, namespace: &str, event_id: &str) -> Result<Option<TaskSync>, StoreError> {
        each!(self, s => s.find_task_sync_by_event(namespace, event_id).await)
    }

    async fn read_credentials(&self, namespace: &str, secret: &SecretRef) -> Result<Option<Credentials>, StoreError> {
        each!(self, s => s.read_credentials(namespace, secret).await)
    }

    async fn write_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
        credentials: &Credentials,
        owner: &ObjectKey,
    ) -> Result<(), StoreError> {
        each!(self, s => s.write_credentials(namespace, secret, credentials, owner).await)
    }

    async fn delete_credentials(&self, namespace: &str, secret: &SecretRef) -> Result<(), StoreError> {
        each!(self, s => s.delete_credentials(namespace, secret).await)
    }

    async fn read_credentials_versioned(
        &self,
        namespace: &str,
        secret: &SecretRef,
    ) -> Result<Option<(Credentials, String)>, StoreError> {
        each!(self, s => s.read_credentials_versioned(namespace, secret).await)
    }

    async fn replace_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
        credentials: &Credentials,
        expected_version: &str,
    ) -> Result<String, StoreError> {
        each!(self, s => s.replace_credentials(namespace, secret, credentials, expected_version).await)
    }

    async fn append_connection_history(
        &self,
        namespace: &str,
        name: &str,
        entry: HistoryEntry,
    ) -> Result<HistoryEntry, StoreError> {
        each!(self, s => s.append_connection_history(namespace, name, entry).await)
    }

    async fn get_feed(&self, namespace: &str, id: &str) -> Result<Option<FeedRecord>, StoreError> {
        each!(self, s => s.get_feed(namespace, id).await)
    }

    async fn create_feed(&self, namespace: &str, record: &FeedRecord) -> Result<FeedRecord, StoreError> {
        each!(self, s => s.create_feed(namespace, record).await)
    }

    async fn delete_feed(&self, namespace: &str, id: &str) -> Result<bool, StoreError> {
        each!(self, s => s.delete_feed(namespace, id).await)
    }

    async fn publish_event(&self, key: &ObjectKey, event: &ObjectEvent) -> Result<(), StoreError> {
        each!(self, s => s.publish_event(key, event).await)
    }

    async fn record_outcome(&self, key: &ObjectKey, record: &ReconcileRecord) -> Result<Recorded, StoreError> {
        each!(self, s => s.record_outcome(key, record).await)
    }

    fn subscribe(&self) -> broadcast::Receiver<ObjectKey> {
        each!(self, s => s.subscribe())
    }
}
