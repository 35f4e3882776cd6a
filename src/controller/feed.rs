//! Watches without controllers, for processes that read and wait but never reconcile (the
//! REST API on Kubernetes): they keep `KubeObjects`' TaskSync cache and change feed current.
//!
//! Owns: two watch streams. Must not touch: reconciles or writes.

use futures::{StreamExt, TryStreamExt};
use kube::core::DeserializeGuard;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, ResourceExt};

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
    let client = objects.client().clone();
    let (ts_api, conn_api): (Api<DeserializeGuard<TaskSync>>, Api<DeserializeGuard<CalendarConnection>>) =
        match &namespace {
            Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client, ns)),
            None => (Api::all(client.clone()), Api::all(client)),
        };
    let (reader, writer) = reflector::store();
    objects.set_task_sync_store(reader);
    let feed = objects.clone();
    let task_syncs = watcher(ts_api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects()
        .inspect_ok(move |o| feed.notify(ObjectKey::task_sync(&o.namespace().unwrap_or_default(), &o.name_any())))
        .for_each(|_| async {});
    let feed = objects.clone();
    let connections = watcher(conn_api, watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .inspect_ok(move |o| feed.notify(ObjectKey::connection(&o.namespace().unwrap_or_default(), &o.name_any())))
        .for_each(|_| async {});
    tokio::select! {
        _ = shutdown => {}
        _ = futures::future::join(task_syncs, connections) => {}
    }
}
