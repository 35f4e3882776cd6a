//! `KubeObjects`: the engine's `Objects` port on the Kubernetes API.
//!
//! Owns: how each `Objects` operation becomes API requests (status subresource, JSON patches for
//! finalizers, merge patches with resourceVersion preconditions, Secrets, events.k8s.io Events)
//! and the change feed the REST API waits on. Must not touch: reconcile decisions (engine) or
//! scheduling (run.rs).

use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::broadcast;

use super::patches::{is_code, store_error};
use super::secrets::{CredentialSealer, PlainSealer};
use crate::engine::{Kind, ObjectKey, StoreError};
use crate::resources::{CalendarConnection, TaskSync};

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

    /// The TaskSync watch cache, once a watch feeds one (objects as the watch delivered them,
    /// minus what `feed::prune_for_cache` drops).
    pub fn cached_task_syncs(&self) -> Option<Store<DeserializeGuard<TaskSync>>> {
        self.task_syncs.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

mod port;

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
