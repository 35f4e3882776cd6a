//! `KubeObjects`: the engine's `Objects` port on the Kubernetes API.
//!
//! Owns: how each `Objects` operation becomes API requests (status subresource, JSON patches for
//! finalizers, merge patches with resourceVersion preconditions, Secrets, events.k8s.io Events)
//! and the change feed the REST API waits on. Must not touch: reconcile decisions (engine) or
//! scheduling (run.rs).

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::events::{Event as KubeEvent, EventType as KubeEventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::patches::{
    add_finalizer_patch, is_code, remove_finalizer_patch, selector, status_merge_patch, still_there, store_error,
};
use super::secrets::{CredentialSealer, PlainSealer};
use crate::credentials::Credentials;
use crate::credentials::feed::FeedRecord;
use crate::engine::{Deletion, EventType, Kind, Labels, ObjectEvent, ObjectKey, Objects, StoreError};
use crate::resources::{
    CalendarConnection, CalendarConnectionStatus, HistoryEntry, SecretRef, TaskSync, TaskSyncStatus, history,
};

/// How often a read-modify-write retries after a 409 (someone else wrote in between).
pub(super) const CONFLICT_RETRIES: usize = 5;

/// The `Objects` port on a Kubernetes API server.
#[derive(Clone)]
pub struct KubeObjects {
    pub(super) client: Client,
    pub(super) recorder: Recorder,
    pub(super) changes: broadcast::Sender<ObjectKey>,
    pub(super) sealer: Arc<dyn CredentialSealer>,
    /// TaskSync cache fed by the controller's (or the API's) watch, for `find_task_sync_by_event`.
    pub(super) task_syncs: Arc<RwLock<Option<Store<DeserializeGuard<TaskSync>>>>>,
    pub(super) field_manager: String,
}

impl KubeObjects {
    /// Merge-patch an object's metadata (labels, annotations): no resourceVersion
    /// precondition, because a merge of map keys cannot lose another writer's keys.
    async fn patch_metadata(&self, key: &ObjectKey, body: serde_json::Value) -> Result<(), StoreError> {
        let pp = PatchParams::default();
        let r = match key.kind {
            Kind::CalendarConnection => self
                .api::<CalendarConnection>(&key.namespace)
                .patch(&key.name, &pp, &Patch::Merge(&body))
                .await
                .map(|_| ()),
            Kind::TaskSync => {
                self.api::<TaskSync>(&key.namespace).patch(&key.name, &pp, &Patch::Merge(&body)).await.map(|_| ())
            }
        };
        r.map_err(|e| store_error(&key.to_string(), e))?;
        self.notify(key.clone());
        Ok(())
    }

    /// `reporter_instance` names this pod in Events (POD_NAME from the downward API).
    pub fn new(client: Client, reporter_instance: Option<String>) -> Self {
        let reporter = Reporter { controller: "calsync".into(), instance: reporter_instance };
        let (changes, _) = broadcast::channel(1024);
        KubeObjects {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            changes,
            sealer: Arc::new(PlainSealer),
            task_syncs: Arc::new(RwLock::new(None)),
            field_manager: "calsync".into(),
        }
    }

    /// Use another credentials envelope (the encryption seam).
    pub fn with_sealer(mut self, sealer: Arc<dyn CredentialSealer>) -> Self {
        self.sealer = sealer;
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Hand over the TaskSync reflector store once a watch feeds it.
    pub fn set_task_sync_store(&self, store: Store<DeserializeGuard<TaskSync>>) {
        // A poisoned lock only means a panic elsewhere while swapping a handle; the value is fine.
        *self.task_syncs.write().unwrap_or_else(|e| e.into_inner()) = Some(store);
    }

    /// Tell subscribers that `key` changed (called by the watch streams and after our writes).
    pub fn notify(&self, key: ObjectKey) {
        // No subscribers is fine.
        let _ = self.changes.send(key);
    }

    pub(super) fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    pub(super) async fn get<K>(&self, namespace: &str, name: &str, what: &str) -> Result<Option<K>, StoreError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>(namespace).get_opt(name).await.map_err(|e| store_error(&format!("{what} {namespace}/{name}"), e))
    }

    /// Create, or take spec/labels/annotations from `object` onto the current one and replace it
    /// with the current resourceVersion (so a concurrent write is a 409, never lost).
    async fn apply<K>(
        &self,
        object: &K,
        key: ObjectKey,
        what: &str,
        take_spec: impl Fn(&mut K, &K),
    ) -> Result<K, StoreError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug,
    {
        let api = self.api::<K>(&key.namespace);
        let label = format!("{what} {}/{}", key.namespace, key.name);
        let current = api.get_opt(&key.name).await.map_err(|e| store_error(&label, e))?;
        let out = match current {
            None => {
                if object.meta().resource_version.is_some() {
                    return Err(StoreError::NotFound(label));
                }
                let mut new = object.clone();
                new.meta_mut().namespace = Some(key.namespace.clone());
                api.create(&PostParams { field_manager: Some(self.field_manager.clone()), ..Default::default() }, &new)
                    .await
                    .map_err(|e| store_error(&label, e))?
            }
            Some(mut current) => {
                if let Some(expected) = &object.meta().resource_version
                    && current.meta().resource_version.as_ref() != Some(expected)
                {
                    return Err(StoreError::Conflict(label));
                }
                let before = serde_json::to_value(&current).ok();
                take_spec(&mut current, object);
                current.meta_mut().labels = object.meta().labels.clone();
                current.meta_mut().annotations = object.meta().annotations.clone();
                // Repeating the same apply (REST retries) sends nothing.
                if before.is_some() && before == serde_json::to_value(&current).ok() {
                    return Ok(current);
                }
                api.replace(
                    &key.name,
                    &PostParams { field_manager: Some(self.field_manager.clone()), ..Default::default() },
                    &current,
                )
                .await
                .map_err(|e| store_error(&label, e))?
            }
        };
        self.notify(key);
        Ok(out)
    }

    async fn patch_status_value<K>(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        body: &Value,
    ) -> Result<K, StoreError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>(namespace)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(body))
            .await
            .map_err(|e| store_error(&format!("{what} {namespace}/{name}"), e))
    }

    /// Metadata of the object `key` names (finalizers, deletion mark, uid).
    pub(super) async fn meta_of(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StoreError> {
        Ok(match key.kind {
            Kind::CalendarConnection => self
                .get::<CalendarConnection>(&key.namespace, &key.name, "CalendarConnection")
                .await?
                .map(|o| o.metadata),
            Kind::TaskSync => self.get::<TaskSync>(&key.namespace, &key.name, "TaskSync").await?.map(|o| o.metadata),
        })
    }

    async fn json_patch(&self, key: &ObjectKey, patch: Value) -> Result<(), kube::Error> {
        let patch: json_patch::Patch = serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
        let pp = PatchParams::default();
        match key.kind {
            Kind::CalendarConnection => {
                self.api::<CalendarConnection>(&key.namespace).patch(&key.name, &pp, &Patch::<()>::Json(patch)).await?;
            }
            Kind::TaskSync => {
                self.api::<TaskSync>(&key.namespace).patch(&key.name, &pp, &Patch::<()>::Json(patch)).await?;
            }
        }
        Ok(())
    }

    /// Run a finalizer JSON patch built from fresh metadata; a failed `test` (the list changed
    /// under us: 409/422) means read again and retry.
    async fn finalizer_op(
        &self,
        key: &ObjectKey,
        build: impl Fn(&ObjectMeta) -> Option<Value>,
    ) -> Result<(), StoreError> {
        for _ in 0..CONFLICT_RETRIES {
            let Some(meta) = self.meta_of(key).await? else {
                return Err(StoreError::NotFound(key.to_string()));
            };
            let Some(patch) = build(&meta) else {
                return Ok(());
            };
            match self.json_patch(key, patch).await {
                Ok(()) => {
                    self.notify(key.clone());
                    return Ok(());
                }
                Err(e) if is_code(&e, 409) || is_code(&e, 422) => continue,
                Err(e) if is_code(&e, 404) => return Ok(()),
                Err(e) => return Err(store_error(&key.to_string(), e)),
            }
        }
        Err(StoreError::Conflict(key.to_string()))
    }

    fn reference(key: &ObjectKey) -> ObjectReference {
        let (api_version, kind) = match key.kind {
            Kind::CalendarConnection => (CalendarConnection::api_version(&()), CalendarConnection::kind(&())),
            Kind::TaskSync => (TaskSync::api_version(&()), TaskSync::kind(&())),
        };
        ObjectReference {
            api_version: Some(api_version.into_owned()),
            kind: Some(kind.into_owned()),
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
            ..Default::default()
        }
    }

    fn cached_task_syncs(&self) -> Option<Store<DeserializeGuard<TaskSync>>> {
        self.task_syncs.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

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

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::truncate_bytes;

    #[test]
    fn notes_are_cut_on_char_boundaries() {
        let s = "é".repeat(600); // 1200 bytes
        let t = truncate_bytes(&s, 1024);
        assert!(t.len() <= 1024 && t.len() >= 1023);
        assert_eq!(truncate_bytes("short", 1024), "short");
    }
}
