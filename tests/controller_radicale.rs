//! Issue 5's acceptance lifecycle with a real calendar: the real kube-runtime controllers and
//! the real engine (`Registry::builtin()`, so the CalDAV provider) against the strict fake API
//! server, with a CalendarConnection + Secret pointing at a real Radicale. Every calendar effect
//! is checked with raw CalDAV requests (PROPFIND/GET), not through calsync's client.

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "support/radicale.rs"]
mod radicale;
#[path = "support/kube_harness.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use calsync::providers::registry::Registry;
use calsync::resources::{CalendarConnection, FINALIZER, TaskSync};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use radicale::{Radicale, RawDav, line_value};
use serde_json::{Value, json};
use support::*;

const CAL: &str = "/alice/calendar/";

/// Radicale with one calendar, and the Secret + CalendarConnection pointing at it.
async fn seed(server: &FakeApiServer) -> (Radicale, RawDav) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dav = Radicale::start();
    let raw = dav.raw();
    raw.mkcalendar(CAL, "Calendar", &["VEVENT"]).await;
    create::<Secret>(
        server,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "dav-creds", "namespace": NS},
            "data": {"username": b64(&dav.user), "password": b64(&dav.password)},
        }),
    )
    .await;
    create::<CalendarConnection>(
        server,
        json!({
            "apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "CalendarConnection",
            "metadata": {"name": "dav", "namespace": NS},
            "spec": {"userId": "user-1", "provider": "caldav", "serverUrl": dav.url,
                     "credentialsSecretRef": {"name": "dav-creds"}},
        }),
    )
    .await;
    (dav, raw)
}

fn start(server: &FakeApiServer) -> Harness {
    Harness::start_connector(server, Arc::new(Registry::builtin()))
}

/// The one event in Radicale carrying our ownership marker: (href, VEVENT lines).
async fn only_event(raw: &RawDav) -> (String, Vec<String>) {
    let events = raw.vevents(CAL).await;
    let ours: Vec<_> = events.iter().filter(|(_, l)| line_value(l, "X-CALSYNC-MARKER").is_some()).collect();
    assert_eq!(ours.len(), 1, "exactly one calsync event in Radicale: {events:?}");
    (ours[0].0.clone(), ours[0].1.clone())
}

fn status_of(server: &FakeApiServer, name: &str) -> Value {
    server.get(&task_sync_path(NS, name)).map(|o| o["status"].clone()).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_update_delete_in_radicale() {
    let server = FakeApiServer::new();
    let (_dav, raw) = seed(&server).await;
    create::<TaskSync>(&server, task_sync("t1", "dav", "Write report")).await;
    let path = task_sync_path(NS, "t1");
    let h = start(&server);

    // Create: the event is in Radicale, status and an Event say so.
    eventually(30, "TaskSync synced", || is_synced(server.get(&path).as_ref())).await;
    let conn = server.get(&connection_path(NS, "dav")).unwrap();
    assert!(condition(&conn, "Ready").is_some_and(|c| c["status"] == "True"), "connection Ready: {conn}");
    let obj = server.get(&path).unwrap();
    assert_eq!(obj["status"]["observedGeneration"], 1, "{obj}");
    assert_eq!(obj["metadata"]["finalizers"], json!([FINALIZER]));
    let event_id = obj["status"]["eventId"].as_str().expect("eventId in status").to_string();
    let (href, lines) = only_event(&raw).await;
    assert_eq!(line_value(&lines, "SUMMARY"), Some("Write report"), "{lines:?}");
    assert_eq!(line_value(&lines, "DTSTART"), Some("20260305T140000Z"), "{lines:?}");
    assert_eq!(line_value(&lines, "DTEND"), Some("20260305T144500Z"), "{lines:?}");
    let events = server.list(&events_path(NS));
    assert!(
        events.iter().any(|e| e["reason"] == "EventCreated" && e["regarding"]["name"] == "t1" && e["type"] == "Normal"),
        "an EventCreated Event was published: {events:?}"
    );

    // Spec change: the same event is updated in place.
    let api: Api<TaskSync> = Api::namespaced(server.client(), NS);
    api.patch(
        "t1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"title": "Write the report", "start": "2026-03-05T16:00:00Z"}})),
    )
    .await
    .unwrap();
    eventually(30, "generation 2 synced", || {
        server.get(&path).is_some_and(|o| o["status"]["observedGeneration"] == 2 && is_synced(Some(&o)))
    })
    .await;
    assert_eq!(status_of(&server, "t1")["eventId"], event_id.as_str(), "same event id after the update");
    let (href2, lines) = only_event(&raw).await;
    assert_eq!(href2, href, "updated in place, not re-created");
    assert_eq!(line_value(&lines, "SUMMARY"), Some("Write the report"), "{lines:?}");
    assert_eq!(line_value(&lines, "DTSTART"), Some("20260305T160000Z"), "{lines:?}");

    // Delete: the event goes from Radicale, then the finalizer, then the object.
    api.delete("t1", &DeleteParams::default()).await.unwrap();
    eventually(30, "TaskSync gone (finalizer removed)", || server.get(&path).is_none()).await;
    assert!(raw.get(&href).await.is_none(), "the event is deleted in Radicale");
    assert!(raw.vevents(CAL).await.is_empty(), "nothing left in the calendar");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_keeps_the_event_in_radicale() {
    let server = FakeApiServer::new();
    let (_dav, raw) = seed(&server).await;
    let mut fixture = task_sync("keep", "dav", "Keep me");
    fixture["spec"]["deletionPolicy"] = json!("Orphan");
    create::<TaskSync>(&server, fixture).await;
    let path = task_sync_path(NS, "keep");
    let h = start(&server);
    eventually(30, "synced", || is_synced(server.get(&path).as_ref())).await;
    let (href, _) = only_event(&raw).await;

    let api: Api<TaskSync> = Api::namespaced(server.client(), NS);
    api.delete("keep", &DeleteParams::default()).await.unwrap();
    eventually(30, "TaskSync gone (finalizer removed)", || server.get(&path).is_none()).await;
    // Give a wrong delete every chance to land before looking.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kept = raw.get(&href).await.expect("Orphan leaves the event in Radicale");
    assert_eq!(line_value(&radicale::vevent_lines(&kept.body), "SUMMARY"), Some("Keep me"));
    h.stop().await;
}
