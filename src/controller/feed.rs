//! Watches without controllers, for processes that read and wait but never reconcile (the
//! REST API on Kubernetes): they keep `KubeObjects`' TaskSync cache and change feed current.
//!
//! Owns: two watch streams. Must not touch: reconciles or writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{StreamExt, TryStreamExt};
use kube::core::DeserializeGuard;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Resource, ResourceExt};

use super::objects::KubeObjects;
use crate::engine::ObjectKey;
use crate::resources::{CalendarConnection, TaskSync};

/// Feed `objects.subscribe()` and its TaskSync cache from watches of `namespace` (all when
/// `None`) until `shutdown` resolves. Watch errors are retried with kube's default backoff.
pub async fn run_watches(
    objects: KubeObjects,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    run_watches_with_ready(objects, namespace, Arc::new(AtomicBool::new(false)), shutdown).await;
}

/// [`run_watches`], setting `ready` once both watches have listed everything once (the TaskSync
/// cache is complete, so `find_task_sync_by_event` no longer misses existing objects). It stays
/// set across later re-lists: the cache keeps serving the last complete state meanwhile.
pub async fn run_watches_with_ready(
    objects: KubeObjects,
    namespace: Option<String>,
    ready: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let client = objects.client().clone();
    let (ts_api, conn_api): (Api<DeserializeGuard<TaskSync>>, Api<DeserializeGuard<CalendarConnection>>) =
        match &namespace {
            Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client, ns)),
            None => (Api::all(client.clone()), Api::all(client)),
        };
    let synced = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
    let (reader, writer) = reflector::store();
    objects.set_task_sync_store(reader);
    let feed = objects.clone();
    let task_syncs = watcher(ts_api, watcher::Config::default())
        .default_backoff()
        .modify(prune_for_cache)
        .reflect(writer)
        .inspect_ok(mark_synced(synced.clone(), ready.clone(), 0))
        .touched_objects()
        .inspect_ok(move |o| feed.notify(ObjectKey::task_sync(&o.namespace().unwrap_or_default(), &o.name_any())))
        .for_each(|_| async {});
    let feed = objects.clone();
    let connections = watcher(conn_api, watcher::Config::default())
        .default_backoff()
        .inspect_ok(mark_synced(synced, ready, 1))
        .touched_objects()
        .inspect_ok(move |o| feed.notify(ObjectKey::connection(&o.namespace().unwrap_or_default(), &o.name_any())))
        .for_each(|_| async {});
    tokio::select! {
        _ = shutdown => {}
        _ = futures::future::join(task_syncs, connections) => {}
    }
}

/// The annotation `kubectl apply` (client-side) keeps the whole applied manifest in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drop what calsync never reads before an object goes into a reflector store: `managedFields`
/// (one entry per field manager, each with the fields it owns) and `kubectl apply`'s copy of the
/// manifest. On a real API server these can be larger than the object itself, and the stores
/// hold every TaskSync. Safe because nothing writes a cached object back: status and finalizers
/// go out as merge patches, `apply` replaces from a fresh GET (objects.rs).
pub(crate) fn prune_for_cache<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// Marks watch `which` listed once at its `InitDone`; `ready` once all of them are.
fn mark_synced<K>(synced: Arc<[AtomicBool; 2]>, ready: Arc<AtomicBool>, which: usize) -> impl Fn(&watcher::Event<K>) {
    move |event| {
        if matches!(event, watcher::Event::InitDone) {
            synced[which].store(true, Ordering::Relaxed);
            if synced.iter().all(|s| s.load(Ordering::Relaxed)) {
                ready.store(true, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    use super::*;

    #[test]
    fn pruning_drops_managed_fields_and_the_last_applied_copy_only() {
        let mut t: TaskSync = serde_json::from_value(serde_json::json!({
            "apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "TaskSync",
            "metadata": {"name": "t", "namespace": "n", "annotations": {
                LAST_APPLIED: "{\"spec\":{}}", "calendar.getitdone.app/keep": "yes"}},
            "spec": {"connectionRef": {"name": "c"}, "taskId": "1", "title": "T", "start": "2026-03-01T09:00:00Z"}
        }))
        .unwrap();
        t.metadata.managed_fields =
            Some(vec![ManagedFieldsEntry { manager: Some("kubectl".into()), ..Default::default() }]);
        prune_for_cache(&mut t);
        assert_eq!(t.metadata.managed_fields, None);
        let annotations = t.metadata.annotations.clone().unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["calendar.getitdone.app/keep"]);
        assert_eq!(t.spec.title, "T");

        t.metadata.annotations = Some([(LAST_APPLIED.to_string(), "{}".to_string())].into());
        prune_for_cache(&mut t);
        assert_eq!(t.metadata.annotations, None, "no empty map left behind");
    }
}
