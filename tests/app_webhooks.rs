//! Webhooks to the app's backend, end to end on the built `calsync standalone` binary with a
//! real CalDAV server (Radicale) and a local receiver: every request is verified with the
//! reference Standard Webhooks library (PyPI `standardwebhooks`), not with calsync's code; two
//! secrets during a rotation both verify; a kill -9 with deliveries pending (the receiver
//! answering 503) loses nothing, and duplicates carry the same `webhook-id`.

mod support;

#[path = "support/pyvenv.rs"]
mod pyvenv;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use calsync::api::app_webhooks::Secret;
use chrono::{Datelike, Utc};
use serde_json::{Value, json};
use support::calsync_bin::{Standalone, artifacts};
use support::live::until;
use support::radicale::{Radicale, RawDav};

const CAL: &str = "/alice/calendar/";
const USER: &str = "hook_user";

/// One request the receiver got, and what it answered.
#[derive(Clone, Debug)]
struct Got {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    answered: u16,
}

/// A local webhook receiver; answers `status` (changeable) and records every request.
struct Receiver {
    url: String,
    status: Arc<Mutex<u16>>,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    async fn start(status: u16) -> Receiver {
        let got = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(Mutex::new(status));
        let (g, s) = (got.clone(), status.clone());
        let app = Router::new().route(
            "/hooks/calsync",
            post(move |headers: HeaderMap, body: String| {
                let (got, status) = (g.clone(), s.clone());
                async move {
                    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                    let answered = *status.lock().unwrap();
                    got.lock().unwrap().push(Got {
                        id: h("webhook-id"),
                        timestamp: h("webhook-timestamp"),
                        signature: h("webhook-signature"),
                        body,
                        answered,
                    });
                    StatusCode::from_u16(answered).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
        let url = format!("http://{}/hooks/calsync", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
        Receiver { url, status, got }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    fn answer(&self, status: u16) {
        *self.status.lock().unwrap() = status;
    }

    /// Distinct webhook-ids acknowledged (2xx), with their event type.
    fn acknowledged(&self) -> BTreeMap<String, String> {
        self.got()
            .into_iter()
            .filter(|g| g.answered < 300)
            .map(|g| {
                let t = serde_json::from_str::<Value>(&g.body).ok().and_then(|b| b["type"].as_str().map(String::from));
                (g.id, t.unwrap_or_default())
            })
            .collect()
    }

    async fn wait_for(&self, what: &str, limit: Duration, check: impl Fn(&[Got]) -> bool) {
        let deadline = Instant::now() + limit;
        while !check(&self.got()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}; got {:#?}", self.got());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Verify every request with the reference library, once per secret; each must pass, and the
/// same request with a changed body must fail (so the check can fail).
fn verify_with_reference_library(secrets: &[String], got: &[Got]) {
    let py = pyvenv::venv("standardwebhooks", &["standardwebhooks==1.3.0"]);
    let items: Vec<Value> = secrets
        .iter()
        .flat_map(|s| {
            got.iter().map(move |g| {
                json!({"secret": s, "body": g.body, "headers": {
                    "webhook-id": g.id, "webhook-timestamp": g.timestamp, "webhook-signature": g.signature}})
            })
        })
        .collect();
    let script = r#"
import json, sys
from standardwebhooks import Webhook, WebhookVerificationError
items = json.load(sys.stdin)
for it in items:
    wh = Webhook(it["secret"])
    payload = wh.verify(it["body"], it["headers"])
    assert isinstance(payload, dict) and "type" in payload and "data" in payload, payload
    try:
        wh.verify(it["body"].replace("}", " }", 1), it["headers"])
        print("TAMPERED BODY ACCEPTED"); sys.exit(1)
    except WebhookVerificationError:
        pass
print("verified", len(items))
"#;
    let out = pyvenv::run_python(&py, script, &Value::Array(items.clone()).to_string());
    assert_eq!(out.trim(), format!("verified {}", items.len()));
}

async fn connect(cs: &Standalone, server: &Radicale) {
    let (s, body) = cs
        .call(
            "POST",
            "/apple/connect",
            Some(json!({"user_id": USER, "apple_id": server.user, "app_password": server.password, "server_url": server.url})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
}

fn when(hour: u32) -> String {
    let day = (Utc::now() + chrono::Duration::days(3)).date_naive();
    format!("{}-{:02}-{:02}T{hour:02}:00:00", day.year(), day.month(), day.day())
}

async fn task(cs: &Standalone, id: &str) -> String {
    let body = json!({"user_id": USER, "task_data": {"id": id, "name": format!("Task {id}"),
        "scheduled_time": when(14), "timezone": "Europe/Berlin"}});
    let (s, body) = cs.call("POST", "/task-to-calendar", Some(body)).await;
    assert_eq!(s, 200, "{body}");
    body["event_id"].as_str().expect("event_id").to_string()
}

async fn rename_in_calendar(raw: &RawDav, event_id: &str) {
    let href = format!("{CAL}{event_id}.ics");
    let got = raw.get(&href).await.expect("event");
    let edited = got.body.replace("SUMMARY:Task t1", "SUMMARY:Renamed on the phone");
    assert_ne!(edited, got.body, "{}", got.body);
    let put = raw.put(&href, &edited, ("if-match", &got.etag.expect("etag"))).await;
    assert!(matches!(put.status, 200 | 201 | 204), "PUT {href}: {} {}", put.status, put.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_signed_per_standard_webhooks_and_both_rotation_secrets_verify() {
    let server = Radicale::start();
    let raw = server.raw();
    raw.mkcalendar(CAL, "Calendar", &["VEVENT"]).await;
    let receiver = Receiver::start(200).await;
    let (old, new) = (Secret::generate(), Secret::generate());
    artifacts::record_secret("app-webhook-secret", &old);
    artifacts::record_secret("app-webhook-secret", &new);
    artifacts::record_secret("radicale-password", &server.password);
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [
        ("CALSYNC_APP_WEBHOOK_URL", receiver.url.clone()),
        // A rotation: the new secret first, the old one still signing.
        ("CALSYNC_APP_WEBHOOK_SECRET", format!("{new} {old}")),
        ("CALSYNC_CALDAV_POLL_SECONDS", "1".to_string()),
    ];
    let cs = Standalone::start_with(dir.path(), Standalone::pick_port(), &env).await;
    connect(&cs, &server).await;
    let event = task(&cs, "t1").await;
    receiver
        .wait_for("connection.connected and task.synced", Duration::from_secs(20), |g| {
            let types: BTreeSet<String> = g
                .iter()
                .map(|g| serde_json::from_str::<Value>(&g.body).unwrap()["type"].as_str().unwrap().to_string())
                .collect();
            types.contains("connection.connected") && types.contains("task.synced")
        })
        .await;

    // An edit in the calendar app is a task.conflict carrying the diff.
    tokio::time::sleep(Duration::from_secs(2)).await;
    rename_in_calendar(&raw, &event).await;
    until(dir.path(), "t1", Duration::from_secs(20), |t| !t["status"]["calendarEdit"].is_null()).await;
    receiver
        .wait_for("task.conflict", Duration::from_secs(10), |g| g.iter().any(|g| g.body.contains("task.conflict")))
        .await;

    let got = receiver.got();
    let bodies: Vec<Value> = got.iter().map(|g| serde_json::from_str(&g.body).expect("JSON body")).collect();
    let connected = bodies.iter().find(|b| b["type"] == "connection.connected").expect("connected");
    assert_eq!(connected["data"]["user_id"], USER, "{connected}");
    assert_eq!(connected["data"]["calendar_type"], "apple", "{connected}");
    let synced = bodies.iter().find(|b| b["type"] == "task.synced").expect("synced");
    assert_eq!((&synced["data"]["task_id"], &synced["data"]["event_id"]), (&json!("t1"), &json!(event)), "{synced}");
    assert!(synced["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{synced}");
    let conflict = bodies.iter().find(|b| b["type"] == "task.conflict").expect("conflict");
    let diff = conflict["data"]["diff"].as_array().expect("diff");
    assert!(
        diff.iter().any(|d| d["field"] == "title" && d["task"] == "Task t1" && d["calendar"] == "Renamed on the phone"),
        "{conflict}"
    );
    for g in &got {
        assert!(g.id.starts_with("msg_"), "{g:?}");
        assert_eq!(g.signature.split(' ').count(), 2, "two signatures during a rotation: {g:?}");
    }
    // Every request verifies with the new secret alone and with the old one alone.
    verify_with_reference_library(&[new.clone(), old.clone()], &got);

    let metrics = reqwest::get(format!("{}/metrics", cs.base)).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("calsync_app_webhook_deliveries_total{result=\"delivered\"}"), "{metrics}");
    let log = cs.log();
    assert!(!log.contains(&new[6..]) && !log.contains(&old[6..]), "a webhook secret reached the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_with_deliveries_pending_loses_nothing() {
    let server = Radicale::start();
    let raw = server.raw();
    raw.mkcalendar(CAL, "Calendar", &["VEVENT"]).await;
    artifacts::record_secret("radicale-password", &server.password);
    let receiver = Receiver::start(503).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // No secret configured: standalone generates one beside the database.
    let env = [
        ("CALSYNC_APP_WEBHOOK_URL", receiver.url.clone()),
        ("CALSYNC_APP_WEBHOOK_RETRY_MIN_SECONDS", "0.2".to_string()),
        ("CALSYNC_APP_WEBHOOK_RETRY_MAX_SECONDS", "1".to_string()),
    ];
    let port = Standalone::pick_port();
    let mut cs = Standalone::start_with(dir.path(), port, &env).await;
    let secret_file = dir.path().join("calsync.db.app-webhook-secret");
    let secret = std::fs::read_to_string(&secret_file).expect("the generated webhook secret").trim().to_string();
    artifacts::record_secret("app-webhook-secret", &secret);
    assert!(secret.starts_with("whsec_"));
    assert!(cs.log().contains("app-webhook-secret"), "the log names the secret's file");

    connect(&cs, &server).await;
    const TASKS: usize = 8;
    for i in 0..TASKS {
        task(&cs, &format!("t{i}")).await;
    }
    // Every event has been tried (and refused) at least once: all are pending.
    let expected = TASKS + 1;
    receiver
        .wait_for("an attempt of every event", Duration::from_secs(30), |g| {
            g.iter().map(|g| &g.id).collect::<BTreeSet<_>>().len() >= expected
        })
        .await;
    cs.kill9();
    let before: BTreeSet<String> = receiver.got().into_iter().map(|g| g.id).collect();
    assert!(receiver.acknowledged().is_empty());

    // The receiver recovers; calsync restarts on the same database.
    receiver.answer(200);
    let cs = Standalone::start_with(dir.path(), port, &env).await;
    receiver
        .wait_for("every pending event to be delivered", Duration::from_secs(30), |_| {
            before.iter().all(|id| receiver.acknowledged().contains_key(id))
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let got = receiver.got();
    // Duplicates only with the same webhook-id: one id per event, the same body on every try.
    let mut bodies: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for g in &got {
        bodies.entry(&g.id).or_default().insert(&g.body);
    }
    for (id, b) in &bodies {
        assert_eq!(b.len(), 1, "{id} was sent with different bodies: {b:#?}");
    }
    let acked = receiver.acknowledged();
    let mut per_event: BTreeMap<(String, String), Vec<&String>> = BTreeMap::new();
    for id in acked.keys() {
        let body: Value = serde_json::from_str(bodies[id.as_str()].iter().next().unwrap()).unwrap();
        let key =
            (body["type"].as_str().unwrap().to_string(), body["data"]["task_id"].as_str().unwrap_or("").to_string());
        per_event.entry(key).or_default().push(id);
    }
    for (event, ids) in &per_event {
        assert_eq!(ids.len(), 1, "{event:?} was delivered under several webhook-ids: {ids:?}");
    }
    let synced: BTreeSet<&str> =
        per_event.keys().filter(|(t, _)| t == "task.synced").map(|(_, task)| task.as_str()).collect();
    assert_eq!(synced.len(), TASKS, "{per_event:#?}");
    assert!(per_event.contains_key(&("connection.connected".to_string(), String::new())), "{per_event:#?}");
    verify_with_reference_library(std::slice::from_ref(&secret), &got);
    assert!(!cs.log().contains(&secret[6..]), "the webhook secret reached the log");
}
