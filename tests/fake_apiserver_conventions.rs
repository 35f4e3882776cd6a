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

#[tokio::test]
async fn lists_come_in_chunks_with_continue_tokens() {
    let server = FakeApiServer::new();
    let api: Api<TaskSync> = Api::namespaced(server.client(), NS);
    for i in 0..5 {
        api.create(&PostParams::default(), &fixture(&format!("t{i}"))).await.unwrap();
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    let names = |l: &kube::core::ObjectList<TaskSync>| {
        l.items.iter().map(|t| t.metadata.name.clone().unwrap_or_default()).collect::<Vec<_>>()
    };
    assert_eq!(names(&first), ["t0", "t1"]);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().expect("a continue token while items remain");
    // A write between pages: later pages still carry the first page's resourceVersion.
    api.create(&PostParams::default(), &fixture("t9")).await.unwrap();
    let second = api.list(&ListParams::default().limit(2).continue_token(&token)).await.unwrap();
    assert_eq!(names(&second), ["t2", "t3"]);
    assert_eq!(second.metadata.resource_version, first.metadata.resource_version);
    let last = api
        .list(&ListParams::default().limit(2).continue_token(second.metadata.continue_.as_deref().unwrap()))
        .await
        .unwrap();
    assert_eq!(names(&last), ["t4", "t9"]);
    assert_eq!(last.metadata.continue_, None, "no token on the last page");
    assert_eq!(last.metadata.remaining_item_count, None);
    assert_eq!(names(&api.list(&ListParams::default()).await.unwrap()).len(), 6, "no limit: everything");
    let bad = api.list(&ListParams::default().limit(2).continue_token("not-a-token")).await;
    assert_eq!(api_code(bad), 400);

    // kube's watcher pages its initial list (500 per page by default) and sees every object.
    let many = 1_203;
    for i in 0..many {
        server.insert_raw(
            &format!("/apis/calendar.getitdone.app/v1alpha1/namespaces/{NS}/tasksyncs/bulk-{i:04}"),
            task_sync(&format!("bulk-{i:04}"), "cal", "T"),
        );
    }
    let seen = kube::runtime::watcher(api.clone(), kube::runtime::watcher::Config::default())
        .take_while(|e| futures::future::ready(!matches!(e, Ok(kube::runtime::watcher::Event::InitDone))))
        .try_fold(0usize, |n, e| async move {
            Ok(n + usize::from(matches!(e, kube::runtime::watcher::Event::InitApply(_))))
        })
        .await
        .unwrap();
    assert_eq!(seen, many + 6);
    let list_limits: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/tasksyncs") && !r.query.contains("watch=true"))
        .filter_map(|r| r.query.split('&').find(|kv| kv.starts_with("limit=")).map(str::to_string))
        .collect();
    assert!(list_limits.iter().filter(|l| *l == "limit=500").count() >= 3, "{list_limits:?}");
}
