//! Provider webhooks (`/api/calendar/webhooks/...`): authentic notifications signal exactly the
//! connection holding the watch, bursts coalesce, and forged, unknown or malformed ones change
//! nothing, never get a 5xx, and are counted.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use calsync::credentials::envelope::{Key, Keyring};
use calsync::credentials::push::PushKeys;
use calsync::engine::Objects;
use calsync::resources::push::CHANGED_ANNOTATION;
use calsync::resources::{
    CalendarConnection, CalendarConnectionSpec, CalendarConnectionStatus, ProviderKind, PushMode, PushStatus,
    SecretRef, WatchedCalendar,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::support::{Harness, NS, config};

fn keys() -> PushKeys {
    Keyring::new(Key::from_bytes(&[7u8; 32]).expect("key")).push_keys()
}

/// A connection holding watch `watch_id` (as the engine records it).
async fn watched(h: &Harness, name: &str, watch_id: &str) {
    let conn = CalendarConnection {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(NS.into()), ..Default::default() },
        spec: CalendarConnectionSpec {
            user_id: format!("user-{name}"),
            provider: ProviderKind::Google,
            credentials_secret_ref: SecretRef { name: format!("{name}-creds"), key: None },
            calendar_id: None,
            server_url: None,
            category_calendars: Default::default(),
            user_default: false,
            import: None,
            active: true,
        },
        status: None,
    };
    h.objects.apply_connection(&conn).await.expect("apply");
    let mut w = WatchedCalendar::polled("primary");
    w.mode = PushMode::Push;
    w.watch_id = Some(watch_id.into());
    w.provider_id = Some(format!("res-{watch_id}"));
    let status = CalendarConnectionStatus {
        push: Some(PushStatus { calendars: vec![w], ..Default::default() }),
        ..Default::default()
    };
    h.objects.patch_connection_status(NS, name, &status).await.expect("status");
}

async fn signal_of(h: &Harness, name: &str) -> Option<String> {
    let c = h.objects.get_connection(NS, name).await.expect("get")?;
    c.metadata.annotations.and_then(|a| a.get(CHANGED_ANNOTATION).cloned())
}

async fn google(h: &Harness, channel: Option<&str>, token: Option<&str>, state: &str) -> (StatusCode, Value) {
    let mut headers = vec![("x-goog-resource-state", state), ("x-goog-message-number", "2")];
    if let Some(c) = channel {
        headers.push(("x-goog-channel-id", c));
    }
    if let Some(t) = token {
        headers.push(("x-goog-channel-token", t));
    }
    let (s, _, v) = h.raw(Method::POST, "/api/calendar/webhooks/google", None, None, &headers).await;
    (s, v)
}

async fn metrics(h: &Harness) -> String {
    let (_, _, v) = h.raw(Method::GET, "/metrics", None, None, &[]).await;
    v.as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn google_notifications_signal_only_their_connection_and_bursts_coalesce() {
    let k = keys();
    let h = Harness::with_push_keys(config(), k.clone());
    watched(&h, "c1", "w-1").await;
    watched(&h, "c2", "w-2").await;
    let token = k.secret_for("w-1");

    // The first message of a channel, and authentic messages of unknown channels: 200, nothing.
    assert_eq!(google(&h, Some("w-1"), Some(token.expose_secret()), "sync").await.0, StatusCode::OK);
    let unknown = k.secret_for("w-unknown");
    assert_eq!(google(&h, Some("w-unknown"), Some(unknown.expose_secret()), "exists").await.0, StatusCode::OK);
    // Forged: wrong token, another channel's token, no token. 401 JSON, nothing signalled.
    let other = k.secret_for("w-2");
    for t in [Some("forged"), Some(other.expose_secret()), None] {
        let (s, v) = google(&h, Some("w-1"), t, "exists").await;
        assert_eq!((s, v["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_channel_token")), "{v}");
        assert!(!v.to_string().contains(token.expose_secret()));
    }
    // Not a notification at all.
    let (s, v) = google(&h, None, Some(token.expose_secret()), "exists").await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_notification")), "{v}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(signal_of(&h, "c1").await, None);
    assert_eq!(signal_of(&h, "c2").await, None);

    // Authentic: c1 is signalled, c2 is not.
    assert_eq!(google(&h, Some("w-1"), Some(token.expose_secret()), "exists").await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let first = signal_of(&h, "c1").await.expect("signalled");
    assert_eq!(signal_of(&h, "c2").await, None);

    // A burst of 300 in well under a second costs a couple of writes, and ends signalled.
    let rv_before = h.objects.get_connection(NS, "c1").await.unwrap().unwrap().metadata.resource_version;
    let started = std::time::Instant::now();
    for _ in 0..300 {
        assert_eq!(google(&h, Some("w-1"), Some(token.expose_secret()), "exists").await.0, StatusCode::OK);
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let last = signal_of(&h, "c1").await.expect("signalled");
    assert_ne!(last, first, "the burst after the first signal must signal again");
    let rv_after = h.objects.get_connection(NS, "c1").await.unwrap().unwrap().metadata.resource_version;
    let writes = rv_after.and_then(|r| r.parse::<i64>().ok()).unwrap_or(0)
        - rv_before.and_then(|r| r.parse::<i64>().ok()).unwrap_or(0);
    // One write per 250 ms at most (plus the trailing one), however slow this machine is.
    let most = (took.as_millis() / 250) as i64 + 2;
    assert!((1..=most).contains(&writes), "{writes} writes for a burst of 300 in {took:?}");
    assert_eq!(signal_of(&h, "c2").await, None);

    let m = metrics(&h).await;
    for (outcome, at_least) in [("sync", 1), ("unknown_watch", 1), ("forged", 3), ("malformed", 1), ("accepted", 301)] {
        let line = format!("calsync_push_notifications_total{{provider=\"google\",outcome=\"{outcome}\"}}");
        let n = m
            .lines()
            .find(|l| l.starts_with(&line))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok());
        assert!(n.is_some_and(|n| n >= at_least), "{outcome}: {n:?}\n{m}");
    }
}

#[tokio::test]
async fn without_keys_every_notification_is_refused() {
    let h = Harness::without_engine(config());
    watched(&h, "c1", "w-1").await;
    let token = keys().secret_for("w-1");
    assert_eq!(google(&h, Some("w-1"), Some(token.expose_secret()), "exists").await.0, StatusCode::UNAUTHORIZED);
}

async fn graph(h: &Harness, path: &str, body: &str) -> (StatusCode, Value) {
    let (s, _, v) = h.raw(Method::POST, path, None, Some(body.to_string()), &[]).await;
    (s, v)
}

#[tokio::test]
async fn graph_validation_change_and_lifecycle_notifications() {
    let k = keys();
    let h = Harness::with_push_keys(config(), k.clone());
    watched(&h, "c1", "w-1").await;
    let secret = k.secret_for("w-1");
    let client_state = format!("w-1.{}", secret.expose_secret());

    // The validation handshake on both URLs: the decoded token, as plain text, never as HTML.
    for path in ["/api/calendar/webhooks/outlook", "/api/calendar/webhooks/outlook/lifecycle"] {
        let uri = format!("{path}?validationToken=%3Cscript%3Ealert(1)%3C%2Fscript%3E%20ok");
        let (s, headers, v) =
            h.raw(Method::POST, &uri, None, Some(String::new()), &[("content-type", "text/plain")]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v, json!("<script>alert(1)</script> ok"));
        assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    let long = format!("/api/calendar/webhooks/outlook?validationToken={}", "a".repeat(2000));
    assert_eq!(h.raw(Method::POST, &long, None, None, &[]).await.0, StatusCode::BAD_REQUEST);

    // Garbage and oversized bodies: 4xx JSON.
    for body in ["not json", "{\"value\": 3}", "[]"] {
        let (s, v) = graph(&h, "/api/calendar/webhooks/outlook", body).await;
        assert_eq!((s, v["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_notification")), "{body}: {v}");
    }
    let huge = format!("{{\"value\":[{{\"clientState\":\"{}\"}}]}}", "x".repeat(70_000));
    let (s, v) = graph(&h, "/api/calendar/webhooks/outlook", &huge).await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")), "{v}");

    // Forged clientStates: 202 (Graph would retry anything else) and nothing signalled.
    let forged = json!({"value": [
        {"subscriptionId": "s", "clientState": "w-1.forged", "changeType": "updated"},
        {"subscriptionId": "s", "clientState": "nodot", "changeType": "updated"},
        {"subscriptionId": "s", "changeType": "updated"}
    ]});
    assert_eq!(graph(&h, "/api/calendar/webhooks/outlook", &forged.to_string()).await.0, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(signal_of(&h, "c1").await, None);

    // Authentic change notification (a batch repeating one subscription): one signal.
    let real = json!({"value": [
        {"subscriptionId": "s", "clientState": client_state, "changeType": "updated", "resource": "Users/u/Events/e1"},
        {"subscriptionId": "s", "clientState": client_state, "changeType": "deleted", "resource": "Users/u/Events/e2"}
    ]});
    assert_eq!(graph(&h, "/api/calendar/webhooks/outlook", &real.to_string()).await.0, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let look = signal_of(&h, "c1").await.expect("signalled");
    assert!(!look.contains(':'), "a change asks only to look: {look}");

    // Lifecycle events carry what the engine must do, for that watch.
    for (event, action) in
        [("reauthorizationRequired", "renew"), ("subscriptionRemoved", "resync"), ("missed", "resync")]
    {
        let body = json!({"value": [{"subscriptionId": "s", "clientState": client_state, "lifecycleEvent": event}]});
        assert_eq!(
            graph(&h, "/api/calendar/webhooks/outlook/lifecycle", &body.to_string()).await.0,
            StatusCode::ACCEPTED
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        let v = signal_of(&h, "c1").await.expect("signalled");
        assert!(v.ends_with(&format!(":{action}:w-1")), "{event}: {v}");
    }
    assert!(!metrics(&h).await.contains(secret.expose_secret()));
}
