//! The fake API server is only worth trusting if it is as strict as a real one: these pin the
//! conventions it enforces, and `KubeObjects` on top of them (the same contract as the memory
//! store: Conflict on a stale resourceVersion, generation only on spec changes, delete marks).

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "support/kube_harness.rs"]
mod support;

use calsync::controller::KubeObjects;
use calsync::engine::{Deletion, ObjectKey, Objects, StoreError};
use calsync::resources::{FINALIZER, TaskSync, TaskSyncStatus};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use support::*;

fn fixture(name: &str) -> TaskSync {
    serde_json::from_value(task_sync(name, "cal", "T")).unwrap()
}

fn api_code<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Err(kube::Error::Api(s)) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn resource_version_generation_and_status_rules() {
    let server = FakeApiServer::new();
    let api: Api<TaskSync> = Api::namespaced(server.client(), NS);
    let created = api.create(&PostParams::default(), &fixture("a")).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(api_code(api.create(&PostParams::default(), &fixture("a")).await), 409, "AlreadyExists");

    // PUT needs the current resourceVersion.
    let mut stale = created.clone();
    let mut changed = created.clone();
    changed.spec.title = "New".into();
    let updated = api.replace("a", &PostParams::default(), &changed).await.unwrap();
    assert_eq!(updated.metadata.generation, Some(2), "spec change bumps generation");
    stale.spec.title = "Lost update".into();
    assert_eq!(api_code(api.replace("a", &PostParams::default(), &stale).await), 409);
    let mut no_rv = updated.clone();
    no_rv.metadata.resource_version = None;
    assert_eq!(api_code(api.replace("a", &PostParams::default(), &no_rv).await), 422);

    // Labels do not move generation; status on the main resource is ignored.
    let mut labelled = updated.clone();
    labelled.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
    labelled.status = Some(TaskSyncStatus { event_id: Some("sneaky".into()), ..Default::default() });
    let after = api.replace("a", &PostParams::default(), &labelled).await.unwrap();
    assert_eq!(after.metadata.generation, Some(2));
    assert!(after.status.is_none(), "status only through /status");

    // /status changes status only.
    let patched = api
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"title": "via status"}, "status": {"eventId": "e"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.spec.title, "New");
    assert_eq!(patched.status.unwrap().event_id.as_deref(), Some("e"));
    assert_eq!(patched.metadata.generation, Some(2));

    // A resourceVersion inside a patch is a precondition.
    let r = api
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "status": {"eventId": "f"}})),
        )
        .await;
    assert_eq!(api_code(r), 409);

    // Label selectors.
    let listed = api.list(&ListParams::default().labels("x=y")).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(api.list(&ListParams::default().labels("x=z")).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn finalizers_and_deletion_marks() {
    let server = FakeApiServer::new();
    let api: Api<TaskSync> = Api::namespaced(server.client(), NS);
    api.create(&PostParams::default(), &fixture("a")).await.unwrap();
    let objects = KubeObjects::new(server.client(), None);
    let key = ObjectKey::task_sync(NS, "a");
    objects.add_finalizer(&key, FINALIZER).await.unwrap();
    objects.add_finalizer(&key, FINALIZER).await.unwrap();
    assert_eq!(api.get("a").await.unwrap().metadata.finalizers, Some(vec![FINALIZER.to_string()]), "added once");

    // A failing JSON patch test is a 422.
    let bad: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/metadata/finalizers", "value": ["nope"]}])).unwrap();
    assert_eq!(api_code(api.patch("a", &PatchParams::default(), &Patch::<()>::Json(bad)).await), 422);

    assert_eq!(objects.delete(&key).await.unwrap(), Deletion::Marked);
    let marked = api.get("a").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.generation, Some(2), "the deletion mark bumps generation, as the real server does");
    // No new finalizers on a marked object.
    let add: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/metadata/finalizers/-", "value": "other.io/x"}]))
            .unwrap();
    assert_eq!(api_code(api.patch("a", &PatchParams::default(), &Patch::<()>::Json(add)).await), 422);
    objects.remove_finalizer(&key, FINALIZER).await.unwrap();
    assert!(api.get_opt("a").await.unwrap().is_none(), "removing the last finalizer deletes");
    assert_eq!(objects.delete(&key).await.unwrap(), Deletion::NotFound);
    api.create(&PostParams::default(), &fixture("b")).await.unwrap();
    assert_eq!(objects.delete(&ObjectKey::task_sync(NS, "b")).await.unwrap(), Deletion::Deleted);
    let _ = api.delete("zzz", &DeleteParams::default()).await.unwrap_err();
}

#[tokio::test]
async fn kube_objects_apply_matches_the_store_contract() {
    let server = FakeApiServer::new();
    let objects = KubeObjects::new(server.client(), None);
    let mut t = fixture("a");
    let first = objects.apply_task_sync(&t).await.unwrap();
    assert_eq!(first.metadata.generation, Some(1));
    server.clear_requests();
    let same = objects.apply_task_sync(&t).await.unwrap();
    assert!(server.requests().iter().all(|r| !r.is_write()), "{:?}", server.requests());
    assert_eq!(same.metadata.resource_version, first.metadata.resource_version, "a no-op apply writes nothing");
    t.spec.title = "Changed".into();
    let second = objects.apply_task_sync(&t).await.unwrap();
    assert_eq!(second.metadata.generation, Some(2));
    let mut stale = t.clone();
    stale.metadata.resource_version = first.metadata.resource_version.clone();
    assert!(matches!(objects.apply_task_sync(&stale).await, Err(StoreError::Conflict(_))));
    let mut ghost = fixture("ghost");
    ghost.metadata.resource_version = Some("1".into());
    assert!(matches!(objects.apply_task_sync(&ghost).await, Err(StoreError::NotFound(_))));
}

#[tokio::test]
async fn watch_streams_changes_from_a_resource_version() {
    let server = FakeApiServer::new();
    let api: Api<TaskSync> = Api::namespaced(server.client(), NS);
    let a = api.create(&PostParams::default(), &fixture("a")).await.unwrap();
    let rv = a.metadata.resource_version.clone().unwrap();
    api.create(&PostParams::default(), &fixture("b")).await.unwrap();
    let mut stream = api.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(t)) => {
            assert_eq!(t.metadata.name.as_deref(), Some("b"), "replayed after rv")
        }
        other => panic!("{other:?}"),
    }
    api.delete("a", &DeleteParams::default()).await.unwrap();
    match stream.next().await {
        Some(Ok(WatchEvent::Deleted(t))) => assert_eq!(t.metadata.name.as_deref(), Some("a")),
        other => panic!("{other:?}"),
    }
}
