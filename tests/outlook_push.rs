//! Outlook change-notification subscriptions against the strict fake Graph
//! (`support::fake_graph`), with a real HTTP receiver on loopback standing in for calsync's
//! webhook endpoint: the validation handshake (and its refusals), notifications for changes
//! made through the API and by the user, retries, renewal, deletion, lifecycle events, the
//! lifetime limit, and the secret staying out of every message.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use calsync::credentials::Credentials;
use calsync::oauth::{AccessTokens, TokenBroker};
use calsync::providers::outlook::{OutlookConfig, OutlookConnector};
use calsync::providers::{
    Connector, Created, Provider, ProviderError, PushSupport, Target, Watch, WatchRequest, event_key,
};
use calsync::resources::ProviderKind;
use chrono::{TimeZone, Utc};
use secrecy::SecretString;
use serde_json::Value;
use support::fake_graph::{DeliveryKind, FakeGraph, LifecycleEvent, TENANT_ID};

const SECRET: &str = "pZ7-secret-never-shown-4Qx";

struct Fixed(String);

#[async_trait]
impl AccessTokens for Fixed {
    async fn access_token(&self) -> Result<SecretString, ProviderError> {
        Ok(SecretString::from(self.0.clone()))
    }
    async fn refresh_after_rejection(&self, _: &SecretString) -> Result<SecretString, ProviderError> {
        Ok(SecretString::from(self.0.clone()))
    }
}

#[async_trait]
impl TokenBroker for Fixed {
    async fn tokens(&self, _: &Target, _: &Credentials) -> Result<Arc<dyn AccessTokens>, ProviderError> {
        Ok(Arc::new(Fixed(self.0.clone())))
    }
}

async fn provider(fake: &FakeGraph) -> Arc<dyn Provider> {
    let config = OutlookConfig { api_url: fake.url.clone(), timeout: Duration::from_secs(15) };
    let connector = OutlookConnector::new(config, Arc::new(Fixed(fake.token()))).expect("connector");
    let target = Target { provider: ProviderKind::Outlook, server_url: None, connection: "test/push".into() };
    let creds = Credentials::OAuth {
        refresh_token: SecretString::from("r"),
        access_token: None,
        expires_at: None,
        refresh_lease: None,
    };
    connector.connect(&target, &creds).await.expect("connect")
}

/// How the receiver answers validation requests.
#[derive(Clone, Copy, Debug)]
enum Handshake {
    Echo,
    WrongBody,
    Html,
    Slow(Duration),
}

/// One POST the receiver got.
#[derive(Clone, Debug)]
struct Received {
    /// `notify` or `lifecycle`.
    path: String,
    validation: Option<String>,
    /// The query parameter the watch's address carries.
    tenant: Option<String>,
    body: Option<Value>,
    status: u16,
}

struct Receiver {
    base: String,
    handshake: Mutex<Handshake>,
    /// Answer this many notifications with 503.
    fail_next: AtomicU32,
    got: Mutex<Vec<Received>>,
}

impl Receiver {
    async fn start(handshake: Handshake) -> Arc<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let r = Arc::new(Receiver {
            base,
            handshake: Mutex::new(handshake),
            fail_next: AtomicU32::new(0),
            got: Mutex::new(vec![]),
        });
        let app = axum::Router::new().route("/{path}", axum::routing::post(receive)).with_state(r.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        r
    }

    fn request(&self, secret: &str, ttl: Duration) -> WatchRequest {
        WatchRequest {
            id: uuid::Uuid::new_v4().to_string(),
            // A query on the URL must survive Graph appending its validation token.
            address: format!("{}/notify?tenant=t1", self.base),
            lifecycle_address: Some(format!("{}/lifecycle", self.base)),
            secret: SecretString::from(secret.to_string()),
            ttl,
        }
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Notification entries received at `path` so far (validations excluded).
    fn items(&self, path: &str) -> Vec<Value> {
        self.got()
            .into_iter()
            .filter(|r| r.path == path && r.status == 202)
            .filter_map(|r| r.body)
            .flat_map(|b| b["value"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Wait until an accepted entry at `path` satisfies `pick`.
    async fn wait_for(&self, path: &str, pick: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..100 {
            if let Some(v) = self.items(path).into_iter().find(|v| pick(v)) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no matching notification at /{path}; got {:#?}", self.got());
    }
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    Path(path): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(token) = q.get("validationToken").cloned() {
        let tenant = q.get("tenant").cloned();
        r.got.lock().unwrap().push(Received { path, validation: Some(token.clone()), tenant, body: None, status: 200 });
        let mode = *r.handshake.lock().unwrap();
        let plain = [("content-type", "text/plain")];
        return match mode {
            Handshake::Echo => (plain, token).into_response(),
            Handshake::WrongBody => (plain, format!("{token}\n")).into_response(),
            Handshake::Html => ([("content-type", "text/html")], token).into_response(),
            Handshake::Slow(d) => {
                tokio::time::sleep(d).await;
                (plain, token).into_response()
            }
        };
    }
    let failing = r.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    let status = if failing { 503 } else { 202 };
    let body = serde_json::from_slice(&body).ok();
    let tenant = q.get("tenant").cloned();
    r.got.lock().unwrap().push(Received { path, validation: None, tenant, body, status });
    axum::http::StatusCode::from_u16(status).unwrap().into_response()
}

fn hour() -> Duration {
    Duration::from_secs(3600)
}

fn at(h: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2031, 6, 3, h, 0, 0).single().unwrap()
}

async fn setup() -> (FakeGraph, Arc<dyn Provider>, Arc<Receiver>) {
    let fake = FakeGraph::start("at-push").await;
    let p = provider(&fake).await;
    let r = Receiver::start(Handshake::Echo).await;
    (fake, p, r)
}

fn secret_free(e: &ProviderError) {
    assert!(!e.to_string().contains(SECRET) && !format!("{e:?}").contains(SECRET), "{e:?}");
}

#[tokio::test]
async fn create_validates_both_urls_then_returns_the_subscription() {
    let (fake, p, r) = setup().await;
    assert_eq!(p.push_support(), PushSupport::Renew);
    let req = r.request(SECRET, hour());
    let before = Utc::now();
    let w = p.watch("primary", &req).await.expect("watch");
    assert_eq!(w.id, req.id);
    let subs = fake.subscriptions();
    assert_eq!(subs.len(), 1);
    let s = &subs[0];
    assert_eq!(w.provider_id, s.id);
    assert_eq!(w.expiration, s.expiration, "the granted expiration is returned");
    assert!(w.expiration >= before + chrono::Duration::minutes(59) && w.expiration <= Utc::now() + hour());
    assert_eq!(s.resource, "me/events");
    assert_eq!(s.client_state.as_deref(), Some(format!("{}.{SECRET}", req.id).as_str()));
    assert_eq!(s.notification_url, req.address);
    assert_eq!(s.lifecycle_url, req.lifecycle_address);
    assert_eq!(s.change_types, ["created", "updated", "deleted"]);
    // Both URLs were checked, each with the decoded token, before the answer.
    let v = fake.validations();
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v.iter().all(|v| v.passed && v.status == Some(200)));
    let got: Vec<_> = r.got().into_iter().filter(|g| g.validation.is_some()).map(|g| g.path).collect();
    assert_eq!(got, ["notify", "lifecycle"]);
    assert!(r.got()[0].validation.as_deref().unwrap().contains("Validation: Testing"));

    // Another calendar is its own resource.
    let work = fake.calendar_named("Work");
    let w2 = p.watch(&work, &r.request(SECRET, hour())).await.expect("watch Work");
    let s2 = fake.subscriptions().into_iter().find(|s| s.id == w2.provider_id).unwrap();
    assert_eq!(s2.resource, format!("me/calendars/{work}/events"));
    assert_eq!(s2.calendar.as_deref(), Some(work.as_str()));
}

#[tokio::test]
async fn a_failed_handshake_refuses_the_create() {
    let fake = FakeGraph::start("at-push").await;
    fake.subscription_options(|o| o.validation_timeout = Duration::from_millis(300));
    let p = provider(&fake).await;
    for mode in [Handshake::WrongBody, Handshake::Html, Handshake::Slow(Duration::from_millis(1500))] {
        let r = Receiver::start(mode).await;
        match p.watch("primary", &r.request(SECRET, hour())).await {
            Err(e @ ProviderError::Invalid { .. }) => {
                assert!(e.to_string().contains("ValidationError"), "{mode:?}: {e}");
                secret_free(&e);
            }
            other => panic!("{mode:?}: {other:?}"),
        }
    }
    // The lifecycle URL is validated too: nothing listens there.
    let r = Receiver::start(Handshake::Echo).await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let mut req = r.request(SECRET, hour());
    req.lifecycle_address = Some(format!("http://{closed}/lifecycle"));
    assert!(matches!(p.watch("primary", &req).await, Err(ProviderError::Invalid { .. })));
    // Plain HTTP off this machine is refused before any request.
    let mut req = r.request(SECRET, hour());
    req.address = "http://calsync.example.com/api/calendar/webhooks/outlook".into();
    let e = p.watch("primary", &req).await.unwrap_err();
    assert!(matches!(e, ProviderError::Invalid { .. }) && e.to_string().contains("HTTPS"), "{e}");
    assert!(fake.subscriptions().is_empty());
    assert!(!fake.validations().iter().any(|v| v.passed && v.url.contains("lifecycle")));
}

#[tokio::test]
async fn changes_through_the_api_and_by_the_user_are_notified() {
    let (fake, p, r) = setup().await;
    let req = r.request(SECRET, hour());
    let w = p.watch("primary", &req).await.expect("watch");
    let state = format!("{}.{SECRET}", req.id);
    let is = |id: &str, change: &str| {
        let (id, change) = (id.to_string(), change.to_string());
        move |v: &Value| v["resourceData"]["id"] == id.as_str() && v["changeType"] == change.as_str()
    };

    // Through the API.
    let Created::New(ev) =
        p.create("primary", &event_key("push-1"), &support::contract::event("push-1", "Essay")).await.unwrap()
    else {
        panic!("a new event")
    };
    let n = r.wait_for("notify", is(&ev.id, "created")).await;
    assert_eq!(n["subscriptionId"], w.provider_id.as_str());
    assert_eq!(n["clientState"], state.as_str());
    assert_eq!(n["tenantId"], TENANT_ID);
    assert_eq!(n["resource"], n["resourceData"]["@odata.id"]);
    assert!(n["resource"].as_str().unwrap().ends_with(&format!("/Events/{}", ev.id)));
    assert_eq!(n["resourceData"]["@odata.type"], "#Microsoft.Graph.Event");
    assert_eq!(n["resourceData"]["@odata.etag"], ev.etag.as_deref().unwrap());
    let exp = n["subscriptionExpirationDateTime"].as_str().unwrap();
    assert_eq!(chrono::DateTime::parse_from_rfc3339(exp).unwrap(), w.expiration);
    p.delete("primary", &ev.id, None).await.unwrap();
    r.wait_for("notify", is(&ev.id, "deleted")).await;

    // By the user in Outlook (the fake's raw helpers).
    let cal = fake.default_calendar();
    let id = fake.insert_external(&cal, "Dentist", at(9), at(10));
    r.wait_for("notify", is(&id, "created")).await;
    fake.edit_title(&id, "Dentist (moved)");
    let n = r.wait_for("notify", is(&id, "updated")).await;
    assert_eq!(n["clientState"], state.as_str());
    assert_eq!(n["resourceData"]["@odata.etag"], fake.get(&id).unwrap()["@odata.etag"]);
    fake.delete(&id);
    r.wait_for("notify", is(&id, "deleted")).await;
    let d = fake.deliveries(&w.provider_id);
    assert!(d.iter().all(|d| d.kind == DeliveryKind::Change && d.status == Some(202) && !d.dropped), "{d:?}");
    assert_eq!(d.iter().map(|d| d.items.len()).sum::<usize>(), 5);
    // Graph keeps the query the notification URL came with.
    assert!(r.got().iter().filter(|g| g.path == "notify").all(|g| g.tenant.as_deref() == Some("t1")));

    // A subscription on another calendar hears nothing of these.
    let work = fake.calendar_named("Work");
    let w2 = p.watch(&work, &r.request(SECRET, hour())).await.unwrap();
    fake.insert_external(&cal, "Not Work", at(11), at(12));
    let on_work = fake.insert_external(&work, "Work", at(11), at(12));
    r.wait_for("notify", is(&on_work, "created")).await;
    let d2 = fake.deliveries(&w2.provider_id);
    assert_eq!(d2.len(), 1, "{d2:?}");
    assert_eq!(d2[0].items[0]["resourceData"]["id"], on_work.as_str());
}

#[tokio::test]
async fn a_503_is_retried() {
    let (fake, p, r) = setup().await;
    fake.subscription_options(|o| o.retry_backoff = Duration::from_millis(20));
    let w = p.watch("primary", &r.request(SECRET, hour())).await.unwrap();
    r.fail_next.store(2, Ordering::SeqCst);
    let id = fake.insert_external(&fake.default_calendar(), "Retried", at(9), at(10));
    r.wait_for("notify", |v| v["resourceData"]["id"] == id.as_str()).await;
    let statuses: Vec<_> = fake.deliveries(&w.provider_id).iter().map(|d| (d.attempt, d.status)).collect();
    assert_eq!(statuses, [(1, Some(503)), (2, Some(503)), (3, Some(202))]);
}

#[tokio::test]
async fn renew_moves_the_expiration_and_a_forgotten_subscription_is_not_found() {
    let (fake, p, r) = setup().await;
    fake.subscription_options(|o| o.min_lifetime = Duration::ZERO);
    let req = r.request(SECRET, Duration::from_secs(600));
    let w = p.watch("primary", &req).await.unwrap();
    let renewed = p.renew_watch(&w, &WatchRequest { ttl: hour(), ..req.clone() }).await.expect("renew");
    assert_eq!((renewed.id.as_str(), renewed.provider_id.as_str()), (w.id.as_str(), w.provider_id.as_str()));
    assert!(renewed.expiration > w.expiration + chrono::Duration::minutes(45));
    assert_eq!(fake.subscriptions()[0].expiration, renewed.expiration);
    // Past the fake's maximum: Graph's 400 on a renewal asks for a new subscription.
    fake.subscription_options(|o| o.max_lifetime = Duration::from_secs(1800));
    p.renew_watch(&w, &req).await.expect("a renewal within the maximum");
    let e = p.renew_watch(&w, &WatchRequest { ttl: hour(), ..req.clone() }).await.unwrap_err();
    assert!(matches!(e, ProviderError::NotFound { .. }), "{e:?}");
    secret_free(&e);
    assert!(fake.expire_subscription(&w.provider_id));
    let e = p.renew_watch(&w, &req).await.unwrap_err();
    assert!(matches!(e, ProviderError::NotFound { .. }), "{e:?}");
    secret_free(&e);
}

#[tokio::test]
async fn an_expired_subscription_stops_delivering_and_is_removed() {
    let (fake, p, r) = setup().await;
    fake.subscription_options(|o| o.min_lifetime = Duration::ZERO);
    let w = p.watch("primary", &r.request(SECRET, Duration::from_secs(2))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    fake.insert_external(&fake.default_calendar(), "Too late", at(9), at(10));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.deliveries(&w.provider_id).is_empty());
    assert!(fake.subscriptions().is_empty());
    assert!(r.items("notify").is_empty());
}

#[tokio::test]
async fn stop_ends_deliveries_and_a_second_stop_is_ok() {
    let (fake, p, r) = setup().await;
    let w = p.watch("primary", &r.request(SECRET, hour())).await.unwrap();
    p.stop_watch("primary", &w).await.expect("stop");
    assert!(fake.subscriptions().is_empty());
    fake.insert_external(&fake.default_calendar(), "Unheard", at(9), at(10));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.deliveries(&w.provider_id).is_empty() && r.items("notify").is_empty());
    p.stop_watch("primary", &w).await.expect("already gone is success");
    let unknown = Watch { provider_id: uuid::Uuid::new_v4().to_string(), ..w };
    p.stop_watch("primary", &unknown).await.expect("never known is success too");
}

#[tokio::test]
async fn lifecycle_events_reach_the_lifecycle_url() {
    let (fake, p, r) = setup().await;
    let req = r.request(SECRET, hour());
    let w = p.watch("primary", &req).await.unwrap();

    // Lost notifications, then Graph owns up with `missed`.
    fake.subscription_options(|o| o.drop_notifications = true);
    fake.insert_external(&fake.default_calendar(), "Lost", at(9), at(10));
    let d = fake.deliveries(&w.provider_id);
    assert!(d.len() == 1 && d[0].dropped && d[0].status.is_none(), "{d:?}");
    assert_eq!(fake.send_lifecycle(&w.provider_id, LifecycleEvent::Missed).await, Some(202));
    assert!(r.items("notify").is_empty());
    let missed = r.wait_for("lifecycle", |v| v["lifecycleEvent"] == "missed").await;
    assert_eq!(missed["subscriptionId"], w.provider_id.as_str());
    assert_eq!(fake.subscriptions().len(), 1, "missed keeps the subscription");

    assert_eq!(fake.send_lifecycle(&w.provider_id, LifecycleEvent::SubscriptionRemoved).await, Some(202));
    let removed = r.wait_for("lifecycle", |v| v["lifecycleEvent"] == "subscriptionRemoved").await;
    assert_eq!(removed["clientState"], format!("{}.{SECRET}", req.id).as_str());
    assert_eq!(removed["tenantId"], TENANT_ID);
    assert!(removed["subscriptionExpirationDateTime"].is_string());
    assert!(fake.subscriptions().is_empty(), "subscriptionRemoved deletes it");
    assert!(fake.deliveries(&w.provider_id).iter().any(|d| d.kind == DeliveryKind::Lifecycle));
    assert!(matches!(p.renew_watch(&w, &req).await, Err(ProviderError::NotFound { .. })));
    assert_eq!(fake.send_lifecycle(&w.provider_id, LifecycleEvent::ReauthorizationRequired).await, None);
}

#[tokio::test]
async fn a_lifetime_beyond_the_maximum_is_invalid() {
    let (fake, p, r) = setup().await;
    fake.subscription_options(|o| o.max_lifetime = Duration::from_secs(1800));
    let e = p.watch("primary", &r.request(SECRET, hour())).await.unwrap_err();
    assert!(matches!(e, ProviderError::Invalid { .. }), "{e:?}");
    assert!(e.to_string().contains("30 minutes"), "{e}");
    secret_free(&e);
    assert!(fake.validations().is_empty(), "refused before the handshake");
    assert!(fake.subscriptions().is_empty());
}

#[tokio::test]
async fn the_secret_never_shows_in_debug_output_or_errors() {
    let (fake, p, r) = setup().await;
    let req = r.request(SECRET, hour());
    assert!(!format!("{req:?}").contains(SECRET));
    let w = p.watch("primary", &req).await.unwrap();
    assert!(!format!("{w:?}").contains(SECRET));
    // Every failure path of the calls that carry the secret.
    let mut errors = vec![];
    errors.push(p.watch("AAMkNOSUCHCALENDAR000=", &req).await.unwrap_err());
    let long = WatchRequest { secret: SecretString::from(format!("{SECRET}{}", "x".repeat(100))), ..req.clone() };
    errors.push(p.watch("primary", &long).await.unwrap_err());
    fake.switches(|s| s.unavailable_next = 1);
    errors.push(p.watch("primary", &req).await.unwrap_err());
    fake.switches(|s| s.access_denied = true);
    errors.push(p.renew_watch(&w, &req).await.unwrap_err());
    errors.push(p.stop_watch("primary", &w).await.unwrap_err());
    for e in &errors {
        secret_free(e);
    }
    assert!(matches!(errors[0], ProviderError::NotFound { .. }), "{:?}", errors[0]);
    assert!(matches!(errors[1], ProviderError::Invalid { .. }));
    assert!(matches!(errors[2], ProviderError::Transient { .. }));
    assert!(matches!(errors[3], ProviderError::Revoked { .. }));
}
