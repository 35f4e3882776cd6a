//! `KubeObjects` as the REST API would use it (no controller): `wait_for` wakes on watch
//! events, and `find_task_sync_by_event` answers from the watch cache.

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "support/kube_harness.rs"]
mod support;

use std::time::Duration;

use calsync::controller::{KubeObjects, feed};
use calsync::engine::{Objects, wait_for};
use calsync::resources::{TaskSync, TaskSyncStatus};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_sees_a_status_written_by_someone_else() {
    let server = FakeApiServer::new();
    let api_side = KubeObjects::new(server.client(), None);
    let (stop, shutdown) = calsync::controller::shutdown_signal();
    let watches = tokio::spawn(feed::run_watches(api_side.clone(), Some(NS.into()), shutdown));
    create::<TaskSync>(&server, task_sync("t1", "cal", "Wait for me")).await;

    // "The controller" (another client) writes the status a little later.
    let writer = KubeObjects::new(server.client(), None);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let st = TaskSyncStatus { event_id: Some("ev-9".into()), ..Default::default() };
        writer.patch_task_sync_status(NS, "t1", &st).await.unwrap();
    });
    let objects = api_side.clone();
    let (done, id) = wait_for(&api_side, Duration::from_secs(5), || {
        let objects = objects.clone();
        async move {
            let t = objects.get_task_sync(NS, "t1").await?;
            let id = t.and_then(|t| t.status.and_then(|s| s.event_id));
            Ok((id.is_some(), id))
        }
    })
    .await
    .unwrap();
    assert!(done);
    assert_eq!(id.as_deref(), Some("ev-9"));

    let mut found = None;
    for _ in 0..100 {
        found = api_side.find_task_sync_by_event(NS, "ev-9").await.unwrap();
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(found.map(|t| t.metadata.name), Some(Some("t1".to_string())));
    assert!(api_side.find_task_sync_by_event(NS, "nope").await.unwrap().is_none());
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), watches).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_cache_holds_objects_without_managed_fields_or_the_last_applied_copy() {
    let server = FakeApiServer::new();
    let mut applied = task_sync("t1", "cal", "Applied with kubectl");
    applied["metadata"]["annotations"] = serde_json::json!({
        "kubectl.kubernetes.io/last-applied-configuration": "{\"spec\":{}}",
        "example.com/kept": "yes",
    });
    applied["metadata"]["managedFields"] = serde_json::json!([{
        "manager": "kubectl-client-side-apply", "operation": "Update", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {".": {}, "f:title": {}}},
    }]);
    applied["status"] = serde_json::json!({"eventId": "ev-1"});
    server.insert_raw(&format!("/apis/calendar.getitdone.app/v1alpha1/namespaces/{NS}/tasksyncs/t1"), applied);
    let objects = KubeObjects::new(server.client(), None);
    let (stop, shutdown) = calsync::controller::shutdown_signal();
    let watches = tokio::spawn(feed::run_watches(objects.clone(), Some(NS.into()), shutdown));
    let mut cached = None;
    for _ in 0..200 {
        cached = objects
            .cached_task_syncs()
            .and_then(|store| store.state().into_iter().find_map(|g| g.0.as_ref().ok().cloned()));
        if cached.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let cached = cached.expect("the watch cache holds the TaskSync");
    assert_eq!(cached.spec.title, "Applied with kubectl");
    assert_eq!(cached.metadata.managed_fields, None);
    let annotations = cached.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations.keys().collect::<Vec<_>>(), ["example.com/kept"]);
    drop(stop);
    watches.await.unwrap();
}
