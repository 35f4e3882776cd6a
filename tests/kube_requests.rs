//! Exact API requests of the finalizer, status, history, delete and Event paths, asserted one by
//! one with tower-test (the controller-rs ApiServerVerifier pattern). A request the scenario
//! does not expect fails the call, because the mock is gone once the scenario ends.

use std::time::Duration;

use calsync::controller::KubeObjects;
use calsync::engine::{Deletion, EventType, ObjectEvent, ObjectKey, Objects};
use calsync::resources::{
    CalendarConnectionStatus, Direction, FINALIZER, HistoryEntry, Operation, SyncStatus, TaskSyncStatus,
};
use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};

type Mock = Handle<Request<Body>, Response<Body>>;

fn setup() -> (KubeObjects, Mock) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (KubeObjects::new(kube::Client::new(svc, "default"), Some("calsync-0".into())), handle)
}

const TS: &str = "/apis/calendar.getitdone.app/v1alpha1/namespaces/ns/tasksyncs/t1";
const CONN: &str = "/apis/calendar.getitdone.app/v1alpha1/namespaces/ns/calendarconnections/c1";

fn task_sync(finalizers: Option<Vec<&str>>, rv: &str) -> Value {
    let mut v = json!({
        "apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "TaskSync",
        "metadata": {"name": "t1", "namespace": "ns", "uid": "u-1", "resourceVersion": rv, "generation": 1},
        "spec": {"connectionRef": {"name": "c1"}, "taskId": "t", "title": "T", "start": "2026-03-05"},
    });
    if let Some(f) = finalizers {
        v["metadata"]["finalizers"] = json!(f);
    }
    v
}

fn connection(rv: &str, history: Value) -> Value {
    json!({
        "apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "CalendarConnection",
        "metadata": {"name": "c1", "namespace": "ns", "uid": "c-1", "resourceVersion": rv, "generation": 1},
        "spec": {"userId": "u", "provider": "google", "credentialsSecretRef": {"name": "s"}},
        "status": {"conditions": [], "calendars": [], "history": history},
    })
}

fn reply(send: SendResponse<Response<Body>>, code: u16, body: Value) {
    send.send_response(Response::builder().status(code).body(Body::from(serde_json::to_vec(&body).unwrap())).unwrap());
}

fn conflict(send: SendResponse<Response<Body>>) {
    reply(
        send,
        409,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "the object has been modified"}),
    );
}

async fn next(handle: &mut Mock, method: Method, path: &str) -> (Value, String, String, SendResponse<Response<Body>>) {
    let (req, send) = handle.next_request().await.expect("a request");
    assert_eq!(req.method(), method, "method of {}", req.uri());
    assert_eq!(req.uri().path(), path);
    let query = req.uri().query().unwrap_or("").to_string();
    let ct = req.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (body, ct, query, send)
}

async fn within(task: tokio::task::JoinHandle<()>) {
    tokio::time::timeout(Duration::from_secs(2), task).await.expect("scenario finished").expect("scenario passed");
}

#[tokio::test]
async fn add_finalizer_tests_the_absent_list_then_adds() {
    let (objects, mut h) = setup();
    let server = tokio::spawn(async move {
        let (_, _, _, send) = next(&mut h, Method::GET, TS).await;
        reply(send, 200, task_sync(None, "7"));
        let (body, ct, _, send) = next(&mut h, Method::PATCH, TS).await;
        assert_eq!(ct, "application/json-patch+json");
        assert_eq!(
            body,
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
            ])
        );
        reply(send, 200, task_sync(Some(vec![FINALIZER]), "8"));
    });
    objects.add_finalizer(&ObjectKey::task_sync("ns", "t1"), FINALIZER).await.unwrap();
    within(server).await;
}

#[tokio::test]
async fn add_finalizer_next_to_another_and_retries_a_failed_test() {
    let (objects, mut h) = setup();
    let server = tokio::spawn(async move {
        let (_, _, _, send) = next(&mut h, Method::GET, TS).await;
        reply(send, 200, task_sync(Some(vec!["other.io/x"]), "7"));
        let (body, _, _, send) = next(&mut h, Method::PATCH, TS).await;
        assert_eq!(
            body,
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": ["other.io/x"]},
                {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
            ])
        );
        // The list changed under us: the server's test op fails.
        reply(
            send,
            422,
            json!({"kind": "Status", "status": "Failure", "reason": "Invalid", "code": 422, "message": "test failed"}),
        );
        let (_, _, _, send) = next(&mut h, Method::GET, TS).await;
        reply(send, 200, task_sync(Some(vec![FINALIZER]), "9"));
        // Already there now: nothing more is sent.
    });
    objects.add_finalizer(&ObjectKey::task_sync("ns", "t1"), FINALIZER).await.unwrap();
    within(server).await;
}

#[tokio::test]
async fn remove_finalizer_tests_the_index_then_removes() {
    let (objects, mut h) = setup();
    let server = tokio::spawn(async move {
        let (_, _, _, send) = next(&mut h, Method::GET, TS).await;
        reply(send, 200, task_sync(Some(vec!["other.io/x", FINALIZER]), "7"));
        let (body, ct, _, send) = next(&mut h, Method::PATCH, TS).await;
        assert_eq!(ct, "application/json-patch+json");
        assert_eq!(
            body,
            json!([
                {"op": "test", "path": "/metadata/finalizers/1", "value": FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/1"},
            ])
        );
        reply(send, 200, task_sync(Some(vec!["other.io/x"]), "8"));
    });
    objects.remove_finalizer(&ObjectKey::task_sync("ns", "t1"), FINALIZER).await.unwrap();
    within(server).await;
}

#[tokio::test]
async fn task_sync_status_is_one_merge_patch_on_the_status_subresource_with_nulls() {
    let (objects, mut h) = setup();
    let server = tokio::spawn(async move {
        let (body, ct, _, send) = next(&mut h, Method::PATCH, &format!("{TS}/status")).await;
        assert_eq!(ct, "application/merge-patch+json");
        let st = &body["status"];
        assert_eq!(st["eventId"], "ev-1");
        assert_eq!(st["observedGeneration"], 1);
        // Cleared optional fields are sent as null so the merge patch removes them.
        for cleared in ["etag", "calendarEdit", "nextAttemptTime", "lastFailureTime", "failedAttempts"] {
            assert!(st.get(cleared).is_some_and(Value::is_null), "{cleared} should be an explicit null: {st}");
        }
        assert_eq!(body.as_object().unwrap().len(), 1, "only status is sent: {body}");
        let mut obj = task_sync(Some(vec![FINALIZER]), "8");
        obj["status"] = json!({"eventId": "ev-1", "observedGeneration": 1, "conditions": []});
        reply(send, 200, obj);
    });
    let status = TaskSyncStatus { event_id: Some("ev-1".into()), observed_generation: Some(1), ..Default::default() };
    objects.patch_task_sync_status("ns", "t1", &status).await.unwrap();
    within(server).await;
}

#[tokio::test]
async fn connection_status_patch_never_sends_history() {
    let (objects, mut h) = setup();
    let server = tokio::spawn(async move {
        let (body, ct, _, send) = next(&mut h, Method::PATCH, &format!("{CONN}/status")).await;
        assert_eq!(ct, "application/merge-patch+json");
        assert!(body["status"].get("history").is_none(), "history is left to append_connection_history: {body}");
        assert!(body["status"]["accountEmail"].is_null());
        assert_eq!(body["status"]["defaultCalendarId"], "primary");
        reply(send, 200, connection("8", json!([])));
    });
    let status = CalendarConnectionStatus { default_calendar_id: Some("primary".into()), ..Default::default() };
    objects.patch_connection_status("ns", "c1", &status).await.unwrap();
    within(server).await;
}

fn entry(id: u64) -> HistoryEntry {
    HistoryEntry {
        id,
        time: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        task_id: Some("t".into()),
        event_id: Some("ev".into()),
        direction: Direction::ToCalendar,
        operation: Operation::Create,
        status: SyncStatus::Success,
        error: None,
        note: None,
    }
}

#[tokio::test]
async fn history_append_is_a_resource_version_guarded_read_modify_write() {
    let (objects, mut h) = setup();
    let server = tokio::spawn(async move {
        let (_, _, _, send) = next(&mut h, Method::GET, CONN).await;
        reply(send, 200, connection("5", json!([])));
        let (body, _, _, send) = next(&mut h, Method::PATCH, &format!("{CONN}/status")).await;
        assert_eq!(body["metadata"]["resourceVersion"], "5");
        assert_eq!(body["status"]["history"].as_array().unwrap().len(), 1);
        // Someone appended meanwhile.
        conflict(send);
        let (_, _, _, send) = next(&mut h, Method::GET, CONN).await;
        reply(send, 200, connection("6", json!([serde_json::to_value(entry(1)).unwrap()])));
        let (body, _, _, send) = next(&mut h, Method::PATCH, &format!("{CONN}/status")).await;
        assert_eq!(body["metadata"]["resourceVersion"], "6");
        let ids: Vec<u64> =
            body["status"]["history"].as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, vec![1, 2], "the other entry is kept and ours gets the next id");
        reply(send, 200, connection("7", body["status"]["history"].clone()));
    });
    let out = objects.append_connection_history("ns", "c1", entry(0)).await.unwrap();
    assert_eq!(out.id, 2);
    within(server).await;
}

#[tokio::test]
async fn delete_with_finalizers_is_reported_as_marked() {
    let (objects, mut h) = setup();
    let server = tokio::spawn(async move {
        let (_, _, _, send) = next(&mut h, Method::DELETE, TS).await;
        let mut obj = task_sync(Some(vec![FINALIZER]), "9");
        obj["metadata"]["deletionTimestamp"] = json!("2026-11-24T00:00:00Z");
        reply(send, 200, obj);
        let (_, _, _, send) = next(&mut h, Method::DELETE, TS).await;
        reply(
            send,
            404,
            json!({"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
        );
    });
    let key = ObjectKey::task_sync("ns", "t1");
    assert_eq!(objects.delete(&key).await.unwrap(), Deletion::Marked);
    assert_eq!(objects.delete(&key).await.unwrap(), Deletion::NotFound);
    within(server).await;
}

#[tokio::test]
async fn events_go_to_events_k8s_io_with_reason_and_reporter() {
    let (objects, mut h) = setup();
    let server = tokio::spawn(async move {
        let (body, _, _, send) = next(&mut h, Method::POST, "/apis/events.k8s.io/v1/namespaces/ns/events").await;
        assert_eq!(body["reason"], "EventCreated");
        assert_eq!(body["type"], "Normal");
        assert_eq!(body["action"], "Create");
        assert_eq!(body["reportingController"], "calsync");
        assert_eq!(body["reportingInstance"], "calsync-0");
        assert_eq!(body["regarding"]["kind"], "TaskSync");
        assert_eq!(body["regarding"]["name"], "t1");
        reply(send, 201, body);
    });
    let ev = ObjectEvent {
        type_: EventType::Normal,
        reason: "EventCreated".into(),
        note: "calendar event ev created".into(),
        action: "Create".into(),
    };
    objects.publish_event(&ObjectKey::task_sync("ns", "t1"), &ev).await.unwrap();
    within(server).await;
}

mod lease {
    use super::*;
    use calsync::controller::{Elector, Leadership, LeaseConfig};

    const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/calsync";

    fn elector(handle_owner: &str) -> (Elector, Leadership, Mock) {
        let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let leadership = Leadership::follower();
        let config = LeaseConfig {
            namespace: "ns".into(),
            name: "calsync".into(),
            identity: handle_owner.into(),
            duration: Duration::from_secs(15),
        };
        (Elector::new(kube::Client::new(svc, "ns"), config, leadership.clone()), leadership, handle)
    }

    fn lease(holder: &str, renewed_secs_ago: i64, rv: &str) -> Value {
        let renew = chrono::Utc::now() - chrono::Duration::seconds(renewed_secs_ago);
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "calsync", "namespace": "ns", "resourceVersion": rv},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": 3,
                     "renewTime": renew.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)},
        })
    }

    #[tokio::test]
    async fn taking_an_expired_lease_is_a_guarded_replace_and_a_409_means_follower() {
        let (elector, leadership, mut h) = elector("me");
        let server = tokio::spawn(async move {
            let (_, _, _, send) = next(&mut h, Method::GET, LEASE).await;
            reply(send, 200, lease("other", 60, "41"));
            let (body, _, _, send) = next(&mut h, Method::PUT, LEASE).await;
            assert_eq!(body["metadata"]["resourceVersion"], "41", "the replace carries the version read");
            assert_eq!(body["spec"]["holderIdentity"], "me");
            assert_eq!(body["spec"]["leaseTransitions"], 4);
            // Another replica won the race.
            conflict(send);
        });
        assert!(elector.try_acquire_or_renew().await.is_err());
        assert!(!leadership.is_leader());
        within(server).await;
    }

    #[tokio::test]
    async fn a_live_lease_of_another_is_left_alone_and_ours_is_renewed() {
        let (elector, leadership, mut h) = elector("me");
        let server = tokio::spawn(async move {
            let (_, _, _, send) = next(&mut h, Method::GET, LEASE).await;
            reply(send, 200, lease("other", 2, "41"));
            // No write: the next request is the second attempt's GET.
            let (_, _, _, send) = next(&mut h, Method::GET, LEASE).await;
            reply(send, 200, lease("me", 4, "42"));
            let (body, _, _, send) = next(&mut h, Method::PUT, LEASE).await;
            assert_eq!(body["metadata"]["resourceVersion"], "42");
            assert_eq!(body["spec"]["holderIdentity"], "me");
            assert_eq!(body["spec"]["leaseTransitions"], 3, "a renewal is not a transition");
            reply(send, 200, lease("me", 0, "43"));
        });
        assert!(!elector.try_acquire_or_renew().await.unwrap());
        assert!(!leadership.is_leader());
        assert!(elector.try_acquire_or_renew().await.unwrap());
        assert!(leadership.is_leader());
        within(server).await;
    }
}
