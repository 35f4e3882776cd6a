//! The objects a dry run plans over, held in memory: read once from the standalone database or
//! the API server (plus `-f` files), never written back. It implements the `Objects` port only so
//! the providers' token manager can read credentials through it; every write answers an error.
//!
//! Owns: the in-memory view. Must not touch: any store.

use std::collections::BTreeMap;

use async_trait::async_trait;
use kube::ResourceExt;
use tokio::sync::broadcast;

use crate::credentials::Credentials;
use crate::credentials::feed::FeedRecord;
use crate::engine::{Deletion, Labels, ObjectEvent, ObjectKey, Objects, StoreError};
use crate::resources::{
    CalendarConnection, CalendarConnectionStatus, HistoryEntry, SecretRef, TaskSync, TaskSyncStatus,
};

/// Credentials of a connection, or why they cannot be read.
pub type Creds = Result<Option<Credentials>, StoreError>;

type Key = (String, String);

/// The view. Credentials are keyed by (namespace, Secret name).
pub struct Snapshot {
    pub connections: BTreeMap<Key, CalendarConnection>,
    pub task_syncs: BTreeMap<Key, TaskSync>,
    pub credentials: BTreeMap<Key, Creds>,
    changes: broadcast::Sender<ObjectKey>,
}

fn key_of<K: kube::Resource>(o: &K) -> Key {
    (o.namespace().unwrap_or_else(|| "default".into()), o.name_any())
}

fn refused(what: &str) -> StoreError {
    StoreError::Invalid(format!("calsync plan is read-only: it does not {what}"))
}

impl Snapshot {
    pub fn new(connections: Vec<CalendarConnection>, task_syncs: Vec<TaskSync>) -> Self {
        let (changes, _) = broadcast::channel(1);
        Snapshot {
            connections: connections.into_iter().map(|c| (key_of(&c), c)).collect(),
            task_syncs: task_syncs.into_iter().map(|t| (key_of(&t), t)).collect(),
            credentials: BTreeMap::new(),
            changes,
        }
    }

    pub fn key<K: kube::Resource>(o: &K) -> Key {
        key_of(o)
    }
}

fn in_scope(ns: &str, namespace: Option<&str>) -> bool {
    namespace.is_none_or(|n| n == ns)
}

fn selected(labels: &BTreeMap<String, String>, selector: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[async_trait]
impl Objects for Snapshot {
    async fn get_connection(&self, namespace: &str, name: &str) -> Result<Option<CalendarConnection>, StoreError> {
        Ok(self.connections.get(&(namespace.to_string(), name.to_string())).cloned())
    }

    async fn get_task_sync(&self, namespace: &str, name: &str) -> Result<Option<TaskSync>, StoreError> {
        Ok(self.task_syncs.get(&(namespace.to_string(), name.to_string())).cloned())
    }

    async fn apply_connection(&self, _: &CalendarConnection) -> Result<CalendarConnection, StoreError> {
        Err(refused("apply objects"))
    }

    async fn apply_task_sync(&self, _: &TaskSync) -> Result<TaskSync, StoreError> {
        Err(refused("apply objects"))
    }

    async fn patch_connection_status(
        &self,
        _: &str,
        _: &str,
        _: &CalendarConnectionStatus,
    ) -> Result<CalendarConnection, StoreError> {
        Err(refused("write status"))
    }

    async fn patch_task_sync_status(&self, _: &str, _: &str, _: &TaskSyncStatus) -> Result<TaskSync, StoreError> {
        Err(refused("write status"))
    }

    async fn delete(&self, _: &ObjectKey) -> Result<Deletion, StoreError> {
        Err(refused("delete objects"))
    }

    async fn add_finalizer(&self, _: &ObjectKey, _: &str) -> Result<(), StoreError> {
        Err(refused("change finalizers"))
    }

    async fn remove_finalizer(&self, _: &ObjectKey, _: &str) -> Result<(), StoreError> {
        Err(refused("change finalizers"))
    }

    async fn set_labels(&self, _: &ObjectKey, _: &Labels) -> Result<(), StoreError> {
        Err(refused("change labels"))
    }

    async fn set_annotations(&self, _: &ObjectKey, _: &Labels) -> Result<(), StoreError> {
        Err(refused("change annotations"))
    }

    async fn list_connections(
        &self,
        namespace: Option<&str>,
        selector: &Labels,
    ) -> Result<Vec<CalendarConnection>, StoreError> {
        Ok(self
            .connections
            .iter()
            .filter(|((ns, _), c)| in_scope(ns, namespace) && selected(c.labels(), selector))
            .map(|(_, c)| c.clone())
            .collect())
    }

    async fn list_task_syncs(&self, namespace: Option<&str>, selector: &Labels) -> Result<Vec<TaskSync>, StoreError> {
        Ok(self
            .task_syncs
            .iter()
            .filter(|((ns, _), t)| in_scope(ns, namespace) && selected(t.labels(), selector))
            .map(|(_, t)| t.clone())
            .collect())
    }

    async fn find_task_sync_by_event(&self, namespace: &str, event_id: &str) -> Result<Option<TaskSync>, StoreError> {
        Ok(self
            .task_syncs
            .iter()
            .find(|((ns, _), t)| {
                ns == namespace && t.status.as_ref().and_then(|s| s.event_id.as_deref()) == Some(event_id)
            })
            .map(|(_, t)| t.clone()))
    }

    async fn read_credentials(&self, namespace: &str, secret: &SecretRef) -> Result<Option<Credentials>, StoreError> {
        match self.credentials.get(&(namespace.to_string(), secret.name.clone())) {
            Some(c) => c.clone(),
            None => Ok(None),
        }
    }

    async fn write_credentials(
        &self,
        _: &str,
        _: &SecretRef,
        _: &Credentials,
        _: &ObjectKey,
    ) -> Result<(), StoreError> {
        Err(refused("write credentials"))
    }

    async fn delete_credentials(&self, _: &str, _: &SecretRef) -> Result<(), StoreError> {
        Err(refused("delete credentials"))
    }

    async fn read_credentials_versioned(
        &self,
        namespace: &str,
        secret: &SecretRef,
    ) -> Result<Option<(Credentials, String)>, StoreError> {
        // A fixed version: any replace is refused anyway.
        Ok(self.read_credentials(namespace, secret).await?.map(|c| (c, "plan".to_string())))
    }

    async fn replace_credentials(
        &self,
        _: &str,
        _: &SecretRef,
        _: &Credentials,
        _: &str,
    ) -> Result<String, StoreError> {
        Err(refused("write refreshed tokens back"))
    }

    async fn append_connection_history(&self, _: &str, _: &str, _: HistoryEntry) -> Result<HistoryEntry, StoreError> {
        Err(refused("write history"))
    }

    async fn get_feed(&self, _: &str, _: &str) -> Result<Option<FeedRecord>, StoreError> {
        Ok(None)
    }

    async fn create_feed(&self, _: &str, _: &FeedRecord) -> Result<FeedRecord, StoreError> {
        Err(refused("create feeds"))
    }

    async fn delete_feed(&self, _: &str, _: &str) -> Result<bool, StoreError> {
        Err(refused("delete feeds"))
    }

    async fn publish_event(&self, _: &ObjectKey, _: &ObjectEvent) -> Result<(), StoreError> {
        Err(refused("publish Events"))
    }

    fn subscribe(&self) -> broadcast::Receiver<ObjectKey> {
        self.changes.subscribe()
    }
}
