//! The Kubernetes object semantics both standalone stores (SQLite and PostgreSQL) apply inside
//! their write transactions, as pure functions over the object read in that transaction: what an
//! `apply` makes of the stored object, what a metadata change does (finalizers, deletion marking).
//!
//! Owns: those decisions, so the two SQL stores cannot drift apart. Must not touch: SQL, I/O or
//! the async runtime (each store loads, calls these, and saves in its own transaction).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::rows::{self, Row};
use crate::engine::{ObjectKey, StoreError};

/// The key of a stored object (namespace defaulted as the stores default it).
pub fn object_key<K: Row>(object: &K) -> ObjectKey {
    ObjectKey {
        kind: K::KIND,
        namespace: object.meta().namespace.clone().unwrap_or_else(|| "default".into()),
        name: object.meta().name.clone().unwrap_or_default(),
    }
}

/// The (namespace, name) an `apply` of `object` writes; `Invalid` without a name.
pub fn apply_target<K: Row>(object: &K) -> Result<(String, String), StoreError> {
    let meta = object.meta();
    let name = meta
        .name
        .clone()
        .ok_or_else(|| StoreError::Invalid(format!("{}: metadata.name is required", rows::kind_str(K::KIND))))?;
    Ok((meta.namespace.clone().unwrap_or_else(|| "default".into()), name))
}

/// What `apply` stores, given the object currently stored (`current`) and the next
/// resourceVersion: a stale resourceVersion is a `Conflict`, one for a missing object `NotFound`;
/// the generation moves only with the spec; status is never taken from `object`.
pub fn applied<K: Row>(current: Option<K>, object: &K, rv: u64) -> Result<K, StoreError> {
    let what = rows::kind_str(K::KIND);
    let (ns, name) = apply_target(object)?;
    let meta = object.meta();
    Ok(match current {
        Some(mut current) => {
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
            current
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
            new
        }
    })
}

/// What a metadata change did to the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaOutcome {
    /// Nothing changed: no write, no notification.
    Unchanged,
    /// Changed: save it (with the new resourceVersion already set).
    Save,
    /// Marked for deletion and no finalizer remains: remove it.
    Remove,
}

/// Apply `f` to the object's metadata (it says whether it changed anything), set `rv` when it
/// did, and say what to store.
pub fn change_meta<K: Row>(object: &mut K, rv: u64, f: impl FnOnce(&mut ObjectMeta) -> bool) -> MetaOutcome {
    let changed = f(object.meta_mut());
    if changed {
        object.meta_mut().resource_version = Some(rv.to_string());
    }
    let m = object.meta();
    if m.deletion_timestamp.is_some() && m.finalizers.as_ref().is_none_or(|f| f.is_empty()) {
        MetaOutcome::Remove
    } else if changed {
        MetaOutcome::Save
    } else {
        MetaOutcome::Unchanged
    }
}

/// `delete`'s metadata change: set deletionTimestamp (once). Returns whether finalizers remain
/// (the object is only marked).
pub fn mark_deleted(m: &mut ObjectMeta) -> bool {
    if m.deletion_timestamp.is_none() {
        m.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    }
    m.finalizers.as_ref().is_some_and(|f| !f.is_empty())
}

/// `add_finalizer`'s change; false (no write) when present or when the object is being deleted
/// (Kubernetes forbids adding finalizers then).
pub fn add_finalizer(m: &mut ObjectMeta, finalizer: &str) -> bool {
    if m.deletion_timestamp.is_some() {
        return false;
    }
    let list = m.finalizers.get_or_insert_with(Vec::new);
    if list.iter().any(|f| f == finalizer) {
        return false;
    }
    list.push(finalizer.to_string());
    true
}

/// `set_labels_and_finalizer`'s change: both apply whatever the other found (`|`, not `||`);
/// false when neither changed anything.
pub fn label_and_finalize(m: &mut ObjectMeta, labels: &crate::engine::Labels, finalizer: &str) -> bool {
    crate::engine::objects::merge_map(&mut m.labels, labels) | add_finalizer(m, finalizer)
}

/// `remove_finalizer`'s change; false when absent.
pub fn remove_finalizer(m: &mut ObjectMeta, finalizer: &str) -> bool {
    let Some(list) = m.finalizers.as_mut() else {
        return false;
    };
    let before = list.len();
    list.retain(|f| f != finalizer);
    list.len() != before
}
