//! The Kubernetes metadata rules of the in-memory store, shared by both kinds: server-side
//! apply into a table (generation, resourceVersion, spec kept on status-only changes) and
//! metadata edits that end an object once it is being deleted and has no finalizers left.
//!
//! Owns: those rules. Must not touch: the store's maps beyond the object being written, nor
//! reconcile decisions.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;

use super::{MemoryObjects, StoreOp, key_of};
use crate::engine::objects::{Kind, ObjectKey, StoreError};
use crate::resources::{CalendarConnection, TaskSync};

/// Shared metadata rules for both kinds.
pub(super) trait Stored: Resource<DynamicType = ()> + Clone {
    fn same_spec(&self, other: &Self) -> bool;
    fn take_spec_from(&mut self, other: &Self);
}

impl Stored for CalendarConnection {
    fn same_spec(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
    fn take_spec_from(&mut self, other: &Self) {
        self.spec = other.spec.clone();
    }
}

impl Stored for TaskSync {
    fn same_spec(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
    fn take_spec_from(&mut self, other: &Self) {
        self.spec = other.spec.clone();
    }
}

pub(super) fn apply_into<K: Stored>(
    table: &mut BTreeMap<(String, String), K>,
    rv: u64,
    object: &K,
    what: &str,
) -> Result<K, StoreError> {
    let meta = object.meta();
    let name = meta.name.clone().ok_or_else(|| StoreError::Invalid(format!("{what}: metadata.name is required")))?;
    let ns = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let k = key_of(&ns, &name);
    match table.get_mut(&k) {
        Some(current) => {
            if let Some(expected) = &meta.resource_version
                && current.meta().resource_version.as_ref() != Some(expected)
            {
                return Err(StoreError::Conflict(format!("{what} {ns}/{name}")));
            }
            if !current.same_spec(object) {
                current.take_spec_from(object);
                let generation = current.meta().generation.unwrap_or(1) + 1;
                current.meta_mut().generation = Some(generation);
            }
            current.meta_mut().labels = meta.labels.clone();
            current.meta_mut().annotations = meta.annotations.clone();
            current.meta_mut().resource_version = Some(rv.to_string());
            Ok(current.clone())
        }
        None => {
            if meta.resource_version.is_some() {
                return Err(StoreError::NotFound(format!("{what} {ns}/{name}")));
            }
            let mut new = object.clone();
            let m = new.meta_mut();
            m.namespace = Some(ns);
            m.uid = Some(uuid::Uuid::new_v4().to_string());
            m.generation = Some(1);
            m.resource_version = Some(rv.to_string());
            m.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
            m.deletion_timestamp = None;
            table.insert(k, new.clone());
            Ok(new)
        }
    }
}

impl MemoryObjects {
    pub(super) fn with_meta(
        &self,
        key: &ObjectKey,
        op: StoreOp,
        f: impl FnOnce(&mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool,
    ) -> Result<(), StoreError> {
        let mut s = self.lock();
        self.enter(&mut s, op, Some(key))?;
        let rv = Self::next_rv(&mut s);
        let k = key_of(&key.namespace, &key.name);
        let (changed, gone) = match key.kind {
            Kind::CalendarConnection => {
                let obj = s.connections.get_mut(&k).ok_or_else(|| StoreError::NotFound(key.to_string()))?;
                let changed = f(obj.meta_mut());
                if changed {
                    obj.meta_mut().resource_version = Some(rv.to_string());
                }
                let gone = obj.meta().deletion_timestamp.is_some()
                    && obj.meta().finalizers.as_ref().is_none_or(|f| f.is_empty());
                if gone {
                    s.connections.remove(&k);
                }
                (changed, gone)
            }
            Kind::TaskSync => {
                let obj = s.task_syncs.get_mut(&k).ok_or_else(|| StoreError::NotFound(key.to_string()))?;
                let changed = f(obj.meta_mut());
                if changed {
                    obj.meta_mut().resource_version = Some(rv.to_string());
                }
                let gone = obj.meta().deletion_timestamp.is_some()
                    && obj.meta().finalizers.as_ref().is_none_or(|f| f.is_empty());
                if gone {
                    s.task_syncs.remove(&k);
                }
                (changed, gone)
            }
        };
        drop(s);
        if changed || gone {
            self.notify(key.clone());
        }
        Ok(())
    }
}
