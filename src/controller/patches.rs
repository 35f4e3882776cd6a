//! Request bodies and error mapping for `KubeObjects`: the JSON patches kube's finalizer helper
//! uses, status merge patches with explicit nulls, label selectors, and kube errors → store errors.
//!
//! Owns: pure functions only (table-testable). Must not touch: I/O.

use kube::Resource;
use kube::api::ListParams;
use serde::Serialize;
use serde_json::{Value, json};

use crate::engine::{Labels, StoreError};

/// Map a kube error onto the store's classes; messages come from the API server's Status and
/// never carry Secret data (we never send Secret data in a request that can echo it).
pub fn store_error(what: &str, e: kube::Error) -> StoreError {
    match e {
        kube::Error::Api(s) if s.code == 404 => StoreError::NotFound(what.to_string()),
        kube::Error::Api(s) if s.code == 409 => StoreError::Conflict(what.to_string()),
        kube::Error::Api(s) if s.code == 400 || s.code == 422 => StoreError::Invalid(format!("{what}: {}", s.message)),
        kube::Error::SerdeError(e) => StoreError::Invalid(format!("{what} cannot be read: {e}")),
        other => StoreError::Unavailable(format!("{what}: {other}")),
    }
}

pub(super) fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Every property of a status type, from its schema, so a merge patch can null the ones the
/// new status leaves out ("replace the status" semantics with a merge patch).
fn status_properties<T: schemars::JsonSchema>() -> Vec<String> {
    let schema = schemars::schema_for!(T);
    schema.get("properties").and_then(Value::as_object).map(|p| p.keys().cloned().collect()).unwrap_or_default()
}

/// The merge-patch body that makes `status` exactly `new` (except keys in `keep`, left untouched).
pub fn status_merge_patch<T: Serialize + schemars::JsonSchema>(new: &T, keep: &[&str]) -> Result<Value, StoreError> {
    let mut value =
        serde_json::to_value(new).map_err(|e| StoreError::Invalid(format!("status cannot be serialized: {e}")))?;
    let Some(map) = value.as_object_mut() else {
        return Err(StoreError::Invalid("status is not an object".into()));
    };
    for k in keep {
        map.remove(*k);
    }
    for prop in status_properties::<T>() {
        if !keep.contains(&prop.as_str()) && !map.contains_key(&prop) {
            map.insert(prop, Value::Null);
        }
    }
    Ok(json!({ "status": value }))
}

/// JSON patch adding a finalizer, guarded by a `test` of the list we read (kube's finalizer helper).
pub fn add_finalizer_patch(current: Option<&Vec<String>>, finalizer: &str) -> Value {
    match current {
        None => json!([
            { "op": "test", "path": "/metadata/finalizers", "value": null },
            { "op": "add", "path": "/metadata/finalizers", "value": [finalizer] },
        ]),
        Some(list) => json!([
            { "op": "test", "path": "/metadata/finalizers", "value": list },
            { "op": "add", "path": "/metadata/finalizers/-", "value": finalizer },
        ]),
    }
}

/// JSON patch removing the finalizer at `index`, guarded by a `test` that it is still there.
pub fn remove_finalizer_patch(index: usize, finalizer: &str) -> Value {
    let path = format!("/metadata/finalizers/{index}");
    json!([
        { "op": "test", "path": path, "value": finalizer },
        { "op": "remove", "path": path },
    ])
}

/// A DELETE answered with the object: is it only marked (finalizers left) or already gone?
pub(super) fn still_there<K: Resource>(o: &K) -> bool {
    o.meta().deletion_timestamp.is_some() && o.meta().finalizers.as_ref().is_some_and(|f| !f.is_empty())
}

pub(super) fn selector(labels: &Labels) -> ListParams {
    let s: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if s.is_empty() { ListParams::default() } else { ListParams::default().labels(&s.join(",")) }
}
