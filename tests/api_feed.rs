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
