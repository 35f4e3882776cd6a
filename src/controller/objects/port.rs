//! `impl Objects for KubeObjects`: each port operation as Kubernetes API requests, on the
//! request helpers of the parent module. Owns nothing of its own.

use async_trait::async_trait;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use kube::runtime::events::{Event as KubeEvent, EventType as KubeEventType};
use serde_json::json;
use tokio::sync::broadcast;

use super::super::patches::{
    add_finalizer_patch, is_code, remove_finalizer_patch, selector, status_merge_patch, still_there, store_error,
};
use crate::credentials::Credentials;
use crate::credentials::feed::FeedRecord;
use crate::engine::{Deletion, EventType, Kind, Labels, ObjectEvent, ObjectKey, Objects, StoreError};
use crate::resources::{
    CalendarConnection, CalendarConnectionStatus, HistoryEntry, SecretRef, TaskSync, TaskSyncStatus, history,
};

use super::{CONFLICT_RETRIES, KubeObjects, truncate_bytes};

#[async_trait]
impl Objects for KubeObjects {
    async fn get_connection(&self, namespace: &str, name: &str) -> Result<Option<CalendarConnection>, StoreError> {
        self.get(namespace, name, "CalendarConnection").await
    }

    async fn get_task_sync(&self, namespace: &str, name: &str) -> Result<Option<TaskSync>, StoreError> {
        self.get(namespace, name, "TaskSync").await
    }

    async fn apply_connection(&self, object: &CalendarConnection) -> Result<CalendarConnection, StoreError> {
        let ns = object.namespace().unwrap_or_else(|| self.client.default_namespace().to_string());
        let key = ObjectKey::connection(&ns, &object.name_any());
        let applied = self.apply(object, key, "CalendarConnection", |cur, new| cur.spec = new.spec.clone()).await?;
        // The connection exists now: its credentials, written first, can get their owner. A
        // failure here leaves a working connection whose Secret is not garbage-collected, so
        // it is logged rather than failing the apply (which would make the caller undo it).
        if let Err(e) = self.adopt_credentials(&applied).await {
            tracing::warn!(connection = %format!("{ns}/{}", applied.name_any()), error = %e, "could not set the credentials Secret's owner");
        }
        Ok(applied)
    }

    async fn apply_task_sync(&self, object: &TaskSync) -> Result<TaskSync, StoreError> {
        let ns = object.namespace().unwrap_or_else(|| self.client.default_namespace().to_string());
        let key = ObjectKey::task_sync(&ns, &object.name_any());
        self.apply(object, key, "TaskSync", |cur, new| cur.spec = new.spec.clone()).await
    }

    async fn patch_connection_status(
        &self,
        namespace: &str,
        name: &str,
        status: &CalendarConnectionStatus,
    ) -> Result<CalendarConnection, StoreError> {
        // history is appended concurrently by TaskSync reconciles; leaving the key out of the
        // merge patch leaves it as it is on the server.
        let body = status_merge_patch(status, &["history"])?;
        let out = self.patch_status_value(namespace, name, "CalendarConnection", &body).await?;
        self.notify(ObjectKey::connection(namespace, name));
        Ok(out)
    }

    async fn patch_task_sync_status(
        &self,
        namespace: &str,
        name: &str,
        status: &TaskSyncStatus,
    ) -> Result<TaskSync, StoreError> {
        let body = status_merge_patch(status, &[])?;
        let out = self.patch_status_value(namespace, name, "TaskSync", &body).await?;
        self.notify(ObjectKey::task_sync(namespace, name));
        Ok(out)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<Deletion, StoreError> {
        let dp = DeleteParams::default();
        let result = match key.kind {
            Kind::CalendarConnection => self
                .api::<CalendarConnection>(&key.namespace)
                .delete(&key.name, &dp)
                .await
                .map(|e| e.left().is_some_and(|o| still_there(&o))),
            Kind::TaskSync => self
                .api::<TaskSync>(&key.namespace)
                .delete(&key.name, &dp)
                .await
                .map(|e| e.left().is_some_and(|o| still_there(&o))),
        };
        match result {
            // The server answers with the object (or a Status); it stays only while finalizers remain.
            Ok(true) => {
                self.notify(key.clone());
                Ok(Deletion::Marked)
            }
            Ok(false) => {
                self.notify(key.clone());
                Ok(Deletion::Deleted)
            }
            Err(e) if is_code(&e, 404) => Ok(Deletion::NotFound),
            Err(e) => Err(store_error(&key.to_string(), e)),
        }
    }

    async fn add_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<(), StoreError> {
        self.finalizer_op(key, |meta| {
            // Kubernetes refuses new finalizers on an object being deleted.
            if meta.deletion_timestamp.is_some()
                || meta.finalizers.as_ref().is_some_and(|f| f.iter().any(|x| x == finalizer))
            {
                return None;
            }
            Some(add_finalizer_patch(meta.finalizers.as_ref(), finalizer))
        })
        .await
    }

    async fn remove_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<(), StoreError> {
        self.finalizer_op(key, |meta| {
            let index = meta.finalizers.as_ref()?.iter().position(|f| f == finalizer)?;
            Some(remove_finalizer_patch(index, finalizer))
        })
        .await
    }

    async fn set_labels(&self, key: &ObjectKey, labels: &Labels) -> Result<(), StoreError> {
        self.patch_metadata(key, json!({ "metadata": { "labels": labels } })).await
    }

    async fn set_annotations(&self, key: &ObjectKey, annotations: &Labels) -> Result<(), StoreError> {
        // JSON merge patch: `null` removes a key (an empty value asks for that).
        let values: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(k, v)| (k.clone(), if v.is_empty() { serde_json::Value::Null } else { json!(v) }))
            .collect();
        self.patch_metadata(key, json!({ "metadata": { "annotations": values } })).await
    }

    async fn list_connections(
        &self,
        namespace: Option<&str>,
        sel: &Labels,
    ) -> Result<Vec<CalendarConnection>, StoreError> {
        let api: Api<CalendarConnection> = match namespace {
            Some(ns) => self.api(ns),
            None => Api::all(self.client.clone()),
        };
        api.list(&selector(sel)).await.map(|l| l.items).map_err(|e| store_error("CalendarConnections", e))
    }

    async fn list_task_syncs(&self, namespace: Option<&str>, sel: &Labels) -> Result<Vec<TaskSync>, StoreError> {
        let api: Api<TaskSync> = match namespace {
            Some(ns) => self.api(ns),
            None => Api::all(self.client.clone()),
        };
        api.list(&selector(sel)).await.map(|l| l.items).map_err(|e| store_error("TaskSyncs", e))
    }

    async fn find_task_sync_by_event(&self, namespace: &str, event_id: &str) -> Result<Option<TaskSync>, StoreError> {
        let matches = |t: &TaskSync| {
            t.namespace().as_deref() == Some(namespace)
                && t.status.as_ref().and_then(|s| s.event_id.as_deref()) == Some(event_id)
        };
        // The watch cache answers without a LIST; without one (no watch running), list the namespace.
        if let Some(store) = self.cached_task_syncs() {
            let hit = store.state().iter().find_map(|g| g.0.as_ref().ok().filter(|t| matches(t)).cloned());
            if let Some(t) = hit {
                // Re-read so the caller gets the current object, not a possibly stale cache copy.
                return self.get_task_sync(namespace, &t.name_any()).await;
            }
            return Ok(None);
        }
        Ok(self.list_task_syncs(Some(namespace), &Labels::new()).await?.into_iter().find(matches))
    }

    async fn read_credentials(&self, namespace: &str, secret: &SecretRef) -> Result<Option<Credentials>, StoreError> {
        Ok(self.read_secret_credentials(namespace, secret).await?.map(|(c, _)| c))
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

    async fn write_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
        creds: &Credentials,
        owner: &ObjectKey,
    ) -> Result<(), StoreError> {
        self.write_secret_credentials(namespace, secret, creds, owner).await
    }

    async fn delete_credentials(&self, namespace: &str, secret: &SecretRef) -> Result<(), StoreError> {
        self.delete_secret_credentials(namespace, secret).await
    }

    async fn get_feed(&self, namespace: &str, id: &str) -> Result<Option<FeedRecord>, StoreError> {
        self.get_feed_secret(namespace, id).await
    }

    async fn create_feed(&self, namespace: &str, record: &FeedRecord) -> Result<FeedRecord, StoreError> {
        self.create_feed_secret(namespace, record).await
    }

    async fn delete_feed(&self, namespace: &str, id: &str) -> Result<bool, StoreError> {
        self.delete_feed_secret(namespace, id).await
    }

    async fn append_connection_history(
        &self,
        namespace: &str,
        name: &str,
        entry: HistoryEntry,
    ) -> Result<HistoryEntry, StoreError> {
        let label = format!("CalendarConnection {namespace}/{name}");
        for _ in 0..CONFLICT_RETRIES {
            let Some(conn) = self.get_connection(namespace, name).await? else {
                return Err(StoreError::NotFound(label));
            };
            let mut ring = conn.status.as_ref().map(|s| s.history.clone()).unwrap_or_default();
            let out = history::push(&mut ring, entry.clone(), history::CONNECTION_HISTORY_LIMIT);
            // resourceVersion in a patch body is a precondition: a concurrent append is a 409
            // and we read again, so no entry is lost and no id is given twice.
            let body = json!({
                "metadata": { "resourceVersion": conn.resource_version() },
                "status": { "history": ring },
            });
            match self.patch_status_value::<CalendarConnection>(namespace, name, "CalendarConnection", &body).await {
                Ok(_) => {
                    self.notify(ObjectKey::connection(namespace, name));
                    return Ok(out);
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict(label))
    }

    async fn publish_event(&self, key: &ObjectKey, event: &ObjectEvent) -> Result<(), StoreError> {
        let ev = KubeEvent {
            type_: match event.type_ {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: event.reason.clone(),
            // events.k8s.io caps the note at 1 KiB (bytes, so cut on a char boundary).
            note: Some(truncate_bytes(&event.note, 1024).to_string()),
            action: event.action.clone(),
            secondary: None,
        };
        self.recorder
            .publish(&ev, &Self::reference(key))
            .await
            .map_err(|e| store_error(&format!("Event about {key}"), e))
    }

    fn subscribe(&self) -> broadcast::Receiver<ObjectKey> {
        self.changes.subscribe()
    }
}
