//! Live sync on Kubernetes, end to end through the fake API server: the controller (real
//! kube-runtime controllers, real engine) and `calsync api` (in-process `controller::api::serve`)
//! run as two "processes" with their own clients, sharing only the API server, as in a cluster.
//! A push-capable in-memory calendar gets a watch from the controller; a Google-style
//! notification posted to the API becomes the `changed` annotation, the controller lists the
//! calendar on it and the TaskSync records the user's edit — with every poll 600 s away, so
//! nothing but the signal can explain it. Forged, unknown and `sync` notifications change
//! nothing, and deleting the connection stops its watch without sticking on the finalizer.

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "support/kube_harness.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use calsync::controller::api::{ApiSettings, serve};
use calsync::credentials::envelope::{Key, Keyring};
use calsync::credentials::push::PushKeys;
use calsync::engine::EngineConfig;
use calsync::engine::live::{LiveConfig, stats};
use calsync::providers::EventTime;
use calsync::providers::memory::{MemoryCalendar, MemoryConnector, Op};
use calsync::resources::push::{CHANGED_ANNOTATION, PUSH_FINALIZER};
use calsync::resources::{CalendarConnection, TaskSync};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use support::*;

const WEBHOOK: &str = "/api/calendar/webhooks/google";
const LONG: Duration = Duration::from_secs(600);

fn keyring_of(base64_key: &str) -> Keyring {
    Keyring::new(Key::from_base64(base64_key).expect("test key"))
}

fn google_connection(name: &str, secret: &str) -> Value {
    json!({
        "apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "CalendarConnection",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"userId": "user-1", "provider": "google", "credentialsSecretRef": {"name": secret}},
    })
}

/// A task two days ahead: change syncs list a window around now, and a fixed date would
/// drift out of it.
fn upcoming_task(name: &str, connection: &str) -> Value {
    let start = (chrono::Utc::now() + chrono::Duration::days(2)).format("%Y-%m-%dT%H:00:00Z").to_string();
    let mut ts = task_sync(name, connection, "Write report");
    ts["spec"]["start"] = json!(start);
    ts
}

fn shifted(t: &EventTime, by: chrono::Duration) -> EventTime {
    match t {
        EventTime::DateTime { utc, local, zone } => {
            EventTime::DateTime { utc: *utc + by, local: *local + by, zone: zone.clone() }
        }
        EventTime::Date(d) => EventTime::Date(*d),
    }
}

fn changed_annotation(conn: &Value) -> Option<String> {
    conn["metadata"]["annotations"][CHANGED_ANNOTATION].as_str().map(str::to_string)
}

fn connections_path() -> String {
    connection_path(NS, "").trim_end_matches('/').to_string()
}

/// The `changed` annotation of every connection, by name.
fn all_signals(server: &FakeApiServer) -> Vec<(String, Option<String>)> {
    server
        .list(&connections_path())
        .iter()
        .map(|c| (c["metadata"]["name"].as_str().unwrap_or_default().to_string(), changed_annotation(c)))
        .collect()
}

struct Notification<'a> {
    channel: &'a str,
    token: &'a str,
    state: &'a str,
}

async fn notify(http: &reqwest::Client, base: &str, n: Notification<'_>) -> u16 {
    http.post(format!("{base}{WEBHOOK}"))
        .header("X-Goog-Channel-ID", n.channel)
        .header("X-Goog-Channel-Token", n.token)
        .header("X-Goog-Resource-State", n.state)
        .header("X-Goog-Resource-ID", "mem-calendar")
        .header("X-Goog-Message-Number", "2")
        .send()
        .await
        .expect("the API answers")
        .status()
        .as_u16()
}

async fn api_ready(http: &reqwest::Client, base: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the API process never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn engine_config(public_url: &str, keys: &PushKeys) -> EngineConfig {
    EngineConfig {
        live: LiveConfig {
            public_url: Some(public_url.to_string()),
            push_keys: Some(keys.clone()),
            poll: LONG,
            caldav_poll: LONG,
            push_safety_poll: LONG,
            ..LiveConfig::default()
        },
        ..EngineConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_notification_to_the_api_process_makes_the_controller_sync_the_edit() {
    let server = FakeApiServer::new();
    let calendar = MemoryCalendar::new();
    calendar.enable_push();
    let keys = keyring_of(TEST_ENCRYPTION_KEY).push_keys();

    // The API's address must be known before the controller asks for watches pointing at it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());

    let controller = Harness::start_with_engine(
        &server,
        Arc::new(MemoryConnector { service: calendar.clone() }),
        engine_config(&base, &keys),
    );
    let (stop_api, api_shutdown) = calsync::controller::shutdown_signal();
    let settings = ApiSettings {
        namespace: NS.into(),
        config: calsync::api::ApiConfig::default(),
        connector: Arc::new(MemoryConnector { service: calendar.clone() }),
        reporter_instance: None,
        oauth: None,
        sealer: test_sealer(),
        push_keys: Some(keys.clone()),
    };
    // Its own client and KubeObjects: nothing is shared with the controller but the API server.
    let api = tokio::spawn(serve(server.client(), listener, settings, api_shutdown));
    // kube uses ring and reqwest would pick aws-lc: one process-level provider, as the binaries do.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    api_ready(&http, &base).await;

    create::<Secret>(&server, secret("creds")).await;
    create::<CalendarConnection>(&server, google_connection("cal", "creds")).await;
    let ts: TaskSync = create(&server, upcoming_task("t1", "cal")).await;
    let uid = ts.metadata.uid.clone().unwrap();
    let ts_path = task_sync_path(NS, "t1");
    let conn_path = connection_path(NS, "cal");

    eventually(15, "TaskSync synced", || is_synced(server.get(&ts_path).as_ref())).await;
    eventually(15, "the connection holds a live push watch", || {
        server.get(&conn_path).is_some_and(|c| {
            let w = &c["status"]["push"]["calendars"][0];
            w["mode"] == "Push" && w["watchId"].is_string()
        })
    })
    .await;
    let conn = server.get(&conn_path).unwrap();
    let watch_id = conn["status"]["push"]["calendars"][0]["watchId"].as_str().unwrap().to_string();
    assert_eq!(conn["status"]["push"]["calendars"][0]["calendarId"], "calendar");
    assert_eq!(conn["status"]["push"]["calendars"][0]["providerId"], "mem-calendar");
    assert!(condition(&conn, "Push").is_some_and(|c| c["status"] == "True"), "Push condition: {conn}");
    assert!(
        conn["metadata"]["finalizers"].as_array().is_some_and(|f| f.iter().any(|f| f == PUSH_FINALIZER)),
        "the push finalizer guards the watch: {conn}"
    );
    assert_eq!(changed_annotation(&conn), None);

    let watches = calendar.watches();
    assert_eq!(watches.len(), 1, "one watch for the one watched calendar: {watches:?}");
    let watch = &watches[0];
    assert_eq!(watch.id, watch_id);
    assert_eq!(watch.calendar, "calendar");
    assert_eq!(watch.address, format!("{base}{WEBHOOK}"));
    assert!(watch.expiration > chrono::Utc::now() + chrono::Duration::days(6), "the requested TTL was used");
    let token = watch.secret.expose_secret().to_string();

    // Bad input first, while the connection has never been signalled: nothing may write it.
    let wrong = Notification { channel: &watch_id, token: "not-the-channel-token", state: "exists" };
    assert_eq!(notify(&http, &base, wrong).await, 401, "a forged token is refused");
    let unknown_token = keys.secret_for("unknown-id");
    let unknown = Notification { channel: "unknown-id", token: unknown_token.expose_secret(), state: "exists" };
    assert_eq!(notify(&http, &base, unknown).await, 200, "an authentic but unknown channel is acknowledged");
    let sync = Notification { channel: &watch_id, token: &token, state: "sync" };
    assert_eq!(notify(&http, &base, sync).await, 200, "a channel's sync message is acknowledged");
    // Longer than the API's 250 ms coalescing, so a wrongly accepted signal would show.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        all_signals(&server).iter().all(|(_, v)| v.is_none()),
        "forged, unknown and sync notifications signal nothing: {:?}",
        all_signals(&server)
    );

    // The user moves the event in the calendar app.
    let event_id = server.get(&ts_path).unwrap()["status"]["eventId"].as_str().expect("eventId").to_string();
    let polls_before = stats().polls.load(Ordering::Relaxed);
    let signals_before = stats().signals.load(Ordering::Relaxed);
    let updates_before = calendar.count(Op::Update);
    let two_hours = chrono::Duration::hours(2);
    assert!(calendar.edit_external("calendar", &event_id, |ev| {
        ev.start = shifted(&ev.start, two_hours);
        ev.end = shifted(&ev.end, two_hours);
    }));
    let edited_etag = calendar.events("calendar").into_iter().find(|e| e.id == event_id).and_then(|e| e.etag);
    assert_ne!(edited_etag, server.get(&ts_path).unwrap()["status"]["etag"].as_str().map(str::to_string));

    let change = Notification { channel: &watch_id, token: &token, state: "exists" };
    assert_eq!(notify(&http, &base, change).await, 200);

    eventually(5, "the API process annotated the connection", || {
        server.get(&conn_path).is_some_and(|c| changed_annotation(&c).is_some())
    })
    .await;
    let signal = changed_annotation(&server.get(&conn_path).unwrap()).unwrap();
    eventually(5, "the controller saw the signal", || {
        server.get(&conn_path).is_some_and(|c| c["status"]["push"]["signalSeen"] == signal.as_str())
    })
    .await;
    eventually(5, "the TaskSync recorded the calendar edit", || {
        server.get(&ts_path).is_some_and(|t| t["status"]["calendarEdit"].is_object())
    })
    .await;
    let edit = server.get(&ts_path).unwrap()["status"]["calendarEdit"].clone();
    assert!(
        edit["changed"].as_array().is_some_and(|c| c.iter().any(|f| f == "start")),
        "the edit names the start: {edit}"
    );
    assert_eq!(edit["resolution"], "Manual", "the default conflictPolicy holds the edit: {edit}");
    assert_eq!(edit["etag"].as_str().map(str::to_string), edited_etag, "the edit is the user's version");
    assert_eq!(edit["deleted"], false);
    assert_eq!(stats().polls.load(Ordering::Relaxed), polls_before, "no poll ran: the signal did it");
    assert!(stats().signals.load(Ordering::Relaxed) > signals_before, "a signalled change sync ran");
    assert_eq!(calendar.count(Op::Update), updates_before, "Manual never overwrites the user's edit");
    assert_eq!(
        all_signals(&server),
        vec![("cal".to_string(), Some(signal.clone()))],
        "one notification, one annotation write"
    );

    // A forged notification after the fact changes nothing either.
    let wrong = Notification { channel: &watch_id, token: "forged", state: "exists" };
    assert_eq!(notify(&http, &base, wrong).await, 401);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(changed_annotation(&server.get(&conn_path).unwrap()), Some(signal.clone()));

    // The user keeps the calendar's version with kubectl (the annotation, a metadata-only
    // change): the controller acts on it, the spec follows the event, the calendar is not written.
    let start_before = server.get(&ts_path).unwrap()["spec"]["start"].clone();
    let patch = serde_json::json!({"metadata": {"annotations": {calsync::resources::RESOLVE_ANNOTATION: "calendar"}}});
    let tasks: Api<TaskSync> = Api::namespaced(server.client(), NS);
    tasks.patch("t1", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    eventually(5, "the choice was acted on and removed", || {
        server.get(&ts_path).is_some_and(|t| {
            t["status"]["calendarEdit"].is_null()
                && t["metadata"]["annotations"][calsync::resources::RESOLVE_ANNOTATION].is_null()
        })
    })
    .await;
    let ts = server.get(&ts_path).unwrap();
    assert_ne!(ts["spec"]["start"], start_before, "the spec follows the moved event: {ts}");
    assert_eq!(condition(&ts, "Synced").map(|c| c["reason"].clone()), Some(serde_json::json!("CalendarKept")), "{ts}");
    assert_eq!(calendar.count(Op::Update), updates_before, "keeping the calendar's version writes nothing");
    assert!(
        server.list(&events_path(NS)).iter().any(|e| e["reason"] == "ConflictResolved"),
        "an Event records the choice"
    );

    // Deleting the task, then the connection: the watch is stopped and nothing sticks.
    tasks.delete("t1", &DeleteParams::default()).await.unwrap();
    eventually(15, "TaskSync gone", || server.get(&ts_path).is_none()).await;
    assert!(calendar.events_for_uid(&uid).is_empty(), "the task's event was deleted");
    let connections: Api<CalendarConnection> = Api::namespaced(server.client(), NS);
    connections.delete("cal", &DeleteParams::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while let Some(c) = server.get(&conn_path) {
        assert!(tokio::time::Instant::now() < deadline, "the connection is stuck in deletion: {c}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(calendar.watches().is_empty(), "deleting the connection stopped its watch: {:?}", calendar.watches());
    assert!(calendar.calls().iter().any(|c| c.op == Op::StopWatch && c.id == watch_id));

    controller.stop().await;
    let _ = stop_api.send(());
    let served = tokio::time::timeout(Duration::from_secs(10), api).await;
    assert!(matches!(served, Ok(Ok(Ok(())))), "the API process stops cleanly: {served:?}");
}
