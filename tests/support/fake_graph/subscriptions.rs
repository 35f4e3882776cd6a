//! The fake Graph's change-notification subscriptions: `POST /subscriptions` (validation
//! handshake on both URLs over real HTTP before answering), `PATCH` (renew), `DELETE`, the
//! hook every event write goes through, and the test helpers.
//!
//! Resources: `me/events` is the whole mailbox (Graph: "changes to all events in a user's
//! mailbox"), `me/calendar/events` the default calendar, `me/calendars/{id}/events` one calendar.
//! Lifetimes: beyond `max_lifetime` is 400; less than `min_lifetime` away is raised to it.
//! Expired subscriptions are removed silently (no lifecycle notification), as Graph does.

// Handlers return a ready Graph error response as their `Err`; boxing it buys nothing here.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use super::delivery::{self, Outgoing};
use super::odata::id_ok;
use super::{FakeGraph, Shared, St, graph_error};

/// The mailbox owner and tenant notifications name.
pub const USER_ID: &str = "87d349ed-44d7-43e1-9a83-5f2406dee5bd";
pub const TENANT_ID: &str = "84bd8158-6d4d-4958-8b9f-9d6445542f95";
/// The application the fake's tokens belong to.
pub const APP_ID: &str = "24d3b144-21ae-4080-943f-7067b395b913";

const CHANGE_TYPES: [&str; 3] = ["created", "updated", "deleted"];
const CREATE_FIELDS: [&str; 8] = [
    "changeType",
    "notificationUrl",
    "lifecycleNotificationUrl",
    "resource",
    "expirationDateTime",
    "clientState",
    "includeResourceData",
    "latestSupportedTlsVersion",
];

/// Limits and timings of subscriptions (defaults are Graph's).
#[derive(Clone, Debug)]
pub struct SubscriptionOptions {
    /// Longest lifetime a create or renew may ask for (Graph's older Outlook value: 4230 min).
    pub max_lifetime: Duration,
    /// A shorter requested lifetime is raised to this (Graph: 45 min).
    pub min_lifetime: Duration,
    /// How long each validation request may take (Graph: 10 s).
    pub validation_timeout: Duration,
    /// How long a notification POST may take before it counts as failed (Graph: 3 s).
    pub delivery_timeout: Duration,
    /// Further attempts after a failed notification (non-2xx, timeout, refused connection).
    pub retries: u32,
    /// Wait before the first retry; doubles on each further one.
    pub retry_backoff: Duration,
    /// Change notifications are lost instead of sent (what a `missed` lifecycle event reports).
    pub drop_notifications: bool,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        SubscriptionOptions {
            max_lifetime: Duration::from_secs(4230 * 60),
            min_lifetime: Duration::from_secs(45 * 60),
            validation_timeout: Duration::from_secs(10),
            delivery_timeout: Duration::from_secs(3),
            retries: 3,
            retry_backoff: Duration::from_millis(100),
            drop_notifications: false,
        }
    }
}

/// A live subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub id: String,
    /// As the client sent it.
    pub resource: String,
    /// The calendar watched; `None`: every calendar of the mailbox.
    pub calendar: Option<String>,
    pub change_types: Vec<String>,
    pub notification_url: String,
    pub lifecycle_url: Option<String>,
    pub expiration: DateTime<Utc>,
    pub client_state: Option<String>,
}

/// What a POST to the client carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryKind {
    Change,
    Lifecycle,
}

/// One attempt to deliver one subscription's items (a batched POST gives one per subscription).
#[derive(Clone, Debug)]
pub struct Delivery {
    pub subscription_id: String,
    pub kind: DeliveryKind,
    pub url: String,
    /// This subscription's entries of `value`.
    pub items: Vec<Value>,
    /// 1 for the first try.
    pub attempt: u32,
    /// The receiver's status; `None`: no answer within the timeout, or no connection.
    pub status: Option<u16>,
    /// Lost on purpose (`drop_notifications`): never sent.
    pub dropped: bool,
}

/// One validation request of a create.
#[derive(Clone, Debug)]
pub struct Validation {
    pub url: String,
    pub status: Option<u16>,
    pub passed: bool,
}

/// Graph's lifecycle events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifecycleEvent {
    ReauthorizationRequired,
    SubscriptionRemoved,
    Missed,
}

impl LifecycleEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleEvent::ReauthorizationRequired => "reauthorizationRequired",
            LifecycleEvent::SubscriptionRemoved => "subscriptionRemoved",
            LifecycleEvent::Missed => "missed",
        }
    }
}

/// The subscription part of the fake's state.
pub(crate) struct Subs {
    pub live: BTreeMap<String, Subscription>,
    pub options: SubscriptionOptions,
    pub deliveries: Vec<Delivery>,
    pub validations: Vec<Validation>,
    pub outbox: UnboundedSender<Outgoing>,
    pub http: reqwest::Client,
}

impl Subs {
    pub fn new(outbox: UnboundedSender<Outgoing>, http: reqwest::Client) -> Subs {
        Subs {
            live: BTreeMap::new(),
            options: SubscriptionOptions::default(),
            deliveries: vec![],
            validations: vec![],
            outbox,
            http,
        }
    }

    fn purge(&mut self, now: DateTime<Utc>) {
        self.live.retain(|_, s| s.expiration > now);
    }
}

/// Graph's seven-digit fractions (`2031-06-03T11:00:00.1234567Z`).
pub fn graph_time(t: DateTime<Utc>) -> String {
    format!("{}.{:07}Z", t.format("%Y-%m-%dT%H:%M:%S"), t.timestamp_subsec_nanos() / 100)
}

fn event_path(event_id: &str) -> String {
    format!("Users/{USER_ID}/Events/{event_id}")
}

impl St {
    /// Every event write calls this: queue a notification for each live subscription that
    /// watches `calendar` and `change_type`; delivery happens on the dispatcher task.
    pub fn changed(&mut self, event_id: &str, calendar: &str, change_type: &str, etag: &str) {
        let subs = &mut self.subs;
        subs.purge(Utc::now());
        let watching = subs.live.values().filter(|s| {
            s.calendar.as_deref().is_none_or(|c| c == calendar) && s.change_types.iter().any(|t| t == change_type)
        });
        let mut dropped = vec![];
        for s in watching {
            let item = json!({
                "subscriptionId": s.id,
                "subscriptionExpirationDateTime": graph_time(s.expiration),
                "changeType": change_type,
                "resource": event_path(event_id),
                "resourceData": {
                    "@odata.type": "#Microsoft.Graph.Event",
                    "@odata.id": event_path(event_id),
                    "@odata.etag": etag,
                    "id": event_id,
                },
                "clientState": s.client_state,
                "tenantId": TENANT_ID,
            });
            let out = Outgoing { subscription_id: s.id.clone(), url: s.notification_url.clone(), item };
            if subs.options.drop_notifications {
                dropped.push(out);
            } else {
                // Closed only once the fake is dropped: nobody is listening any more.
                let _ = subs.outbox.send(out);
            }
        }
        subs.deliveries.extend(dropped.into_iter().map(|o| Delivery {
            subscription_id: o.subscription_id,
            kind: DeliveryKind::Change,
            url: o.url,
            items: vec![o.item],
            attempt: 0,
            status: None,
            dropped: true,
        }));
    }
}

fn bad(code: &str, msg: &str) -> Response {
    graph_error(400, code, msg)
}

fn not_found() -> Response {
    graph_error(404, "ResourceNotFound", "The object was not found.")
}

fn render(base: &str, s: &Subscription) -> Value {
    json!({
        "@odata.context": format!("{base}/$metadata#subscriptions/$entity"),
        "id": s.id,
        "resource": s.resource,
        "applicationId": APP_ID,
        "changeType": s.change_types.join(","),
        "clientState": s.client_state,
        "notificationUrl": s.notification_url,
        "notificationQueryOptions": null,
        "lifecycleNotificationUrl": s.lifecycle_url,
        "expirationDateTime": graph_time(s.expiration),
        "creatorId": USER_ID,
        "includeResourceData": null,
        "latestSupportedTlsVersion": "v1_2",
        "encryptionCertificate": null,
        "encryptionCertificateId": null,
        "notificationUrlAppId": null,
    })
}

/// The calendar a resource names (`None`: the whole mailbox).
fn resolve(st: &St, resource: &str) -> Result<Option<String>, Response> {
    let parts: Vec<&str> = resource.trim_start_matches('/').split('/').collect();
    let is = |i: usize, w: &str| parts.get(i).is_some_and(|p| p.eq_ignore_ascii_case(w));
    match parts.len() {
        2 if is(0, "me") && is(1, "events") => Ok(None),
        3 if is(0, "me") && is(1, "calendar") && is(2, "events") => Ok(Some(st.default_calendar())),
        4 if is(0, "me") && is(1, "calendars") && is(3, "events") => {
            let id = parts[2];
            if !id_ok(id) {
                return Err(bad("ErrorInvalidIdMalformed", "Id is malformed."));
            }
            st.calendar(id).map(|c| Some(c.id.clone())).ok_or_else(|| {
                graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            })
        }
        _ => Err(bad("InvalidRequest", &format!("Resource '{resource}' is not supported for change notifications."))),
    }
}

/// The requested expiration, refused when past or beyond the maximum, raised to the minimum.
fn granted(v: &Value, o: &SubscriptionOptions) -> Result<DateTime<Utc>, Response> {
    let asked = v
        .get("expirationDateTime")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| bad("InvalidRequest", "expirationDateTime is required and must be an ISO 8601 date-time."))?;
    let now = Utc::now();
    let (max, min) = (chrono::Duration::from_std(o.max_lifetime), chrono::Duration::from_std(o.min_lifetime));
    let (Ok(max), Ok(min)) = (max, min) else {
        return Err(bad("InvalidRequest", "the fake's lifetime options are out of range"));
    };
    if asked <= now {
        return Err(bad("InvalidRequest", "Subscription expiration can only be in the future."));
    }
    if asked > now + max {
        return Err(bad(
            "InvalidRequest",
            &format!("Subscription expiration can only be {} minutes in the future.", max.num_minutes()),
        ));
    }
    Ok(asked.max(now + min))
}

/// HTTPS, or plain HTTP to this machine (tests).
fn url_ok(url: &str) -> bool {
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "https" => u.host_str().is_some(),
        Ok(u) if u.scheme() == "http" => matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")),
        _ => false,
    }
}

pub async fn create(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return bad("RequestBodyRead", "The request body must be a JSON object."),
    };
    if let Some(k) = v.as_object().into_iter().flatten().map(|(k, _)| k).find(|k| !CREATE_FIELDS.contains(&k.as_str()))
    {
        return bad(
            "RequestBodyRead",
            &format!("The property '{k}' does not exist on type 'microsoft.graph.subscription'."),
        );
    }
    if v.get("includeResourceData") == Some(&json!(true)) {
        return bad("InvalidRequest", "includeResourceData needs encryptionCertificate and encryptionCertificateId.");
    }
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let change_types: Vec<String> =
        text("changeType").unwrap_or_default().split(',').map(|t| t.trim().to_string()).collect();
    if change_types.iter().any(|t| !CHANGE_TYPES.contains(&t.as_str())) {
        return bad("InvalidRequest", "changeType must be a comma-separated list of created, updated, deleted.");
    }
    let (Some(resource), Some(url)) = (text("resource"), text("notificationUrl")) else {
        return bad("InvalidRequest", "resource and notificationUrl are required.");
    };
    let lifecycle = match v.get("lifecycleNotificationUrl") {
        None | Some(Value::Null) => None,
        Some(Value::String(l)) => Some(l.clone()),
        Some(_) => return bad("InvalidRequest", "lifecycleNotificationUrl must be a string."),
    };
    if !url_ok(&url) || lifecycle.as_deref().is_some_and(|l| !url_ok(l)) {
        return bad("InvalidRequest", "The Notification URL must be HTTPS.");
    }
    let client_state = text("clientState");
    if client_state.as_ref().is_some_and(|c| c.chars().count() > 128) {
        return bad("InvalidRequest", "clientState can be at most 128 characters.");
    }
    let (calendar, options, http) = {
        let st = s.lock();
        let calendar = match resolve(&st, &resource) {
            Ok(c) => c,
            Err(r) => return r,
        };
        (calendar, st.subs.options.clone(), st.subs.http.clone())
    };
    if let Err(r) = granted(&v, &options) {
        return r;
    }
    // Graph checks both URLs (two requests even when they are the same) before it answers.
    for target in std::iter::once(&url).chain(lifecycle.as_ref()) {
        let outcome = delivery::validate(&http, target, options.validation_timeout).await;
        s.lock().subs.validations.push(outcome.clone());
        if !outcome.passed {
            return bad(
                "ValidationError",
                "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.",
            );
        }
    }
    // The lifetime counts from when the subscription exists, after the handshake.
    let expiration = match granted(&v, &options) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let sub = Subscription {
        id: uuid::Uuid::new_v4().to_string(),
        resource,
        calendar,
        change_types,
        notification_url: url,
        lifecycle_url: lifecycle,
        expiration,
        client_state,
    };
    let body = render(&s.base, &sub);
    s.lock().subs.live.insert(sub.id.clone(), sub);
    (axum::http::StatusCode::CREATED, axum::Json(body)).into_response()
}

pub async fn renew(State(s): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return bad("RequestBodyRead", "The request body must be a JSON object."),
    };
    if let Some(k) = v.as_object().into_iter().flatten().map(|(k, _)| k).find(|k| *k != "expirationDateTime") {
        return bad("InvalidRequest", &format!("Only expirationDateTime can be updated, not '{k}'."));
    }
    let mut st = s.lock();
    st.subs.purge(Utc::now());
    if !st.subs.live.contains_key(&id) {
        return not_found();
    }
    let expiration = match granted(&v, &st.subs.options) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let Some(sub) = st.subs.live.get_mut(&id) else { return not_found() };
    sub.expiration = expiration;
    axum::Json(render(&s.base, sub)).into_response()
}

pub async fn remove(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let mut st = s.lock();
    st.subs.purge(Utc::now());
    match st.subs.live.remove(&id) {
        Some(_) => axum::http::StatusCode::NO_CONTENT.into_response(),
        None => not_found(),
    }
}

/// Test helpers.
impl FakeGraph {
    /// Change the subscription limits and timings.
    pub fn subscription_options(&self, f: impl FnOnce(&mut SubscriptionOptions)) {
        f(&mut self.st().subs.options)
    }

    /// Live subscriptions (expired ones are removed first).
    pub fn subscriptions(&self) -> Vec<Subscription> {
        let mut st = self.st();
        st.subs.purge(Utc::now());
        st.subs.live.values().cloned().collect()
    }

    /// Every delivery attempt (and dropped notification) for one subscription, oldest first.
    pub fn deliveries(&self, subscription_id: &str) -> Vec<Delivery> {
        self.st().subs.deliveries.iter().filter(|d| d.subscription_id == subscription_id).cloned().collect()
    }

    /// Every validation request made by creates, oldest first.
    pub fn validations(&self) -> Vec<Validation> {
        self.st().subs.validations.clone()
    }

    /// The subscription's expiry passes now: Graph forgets it without telling anyone.
    pub fn expire_subscription(&self, subscription_id: &str) -> bool {
        self.st().subs.live.remove(subscription_id).is_some()
    }

    /// POST a lifecycle notification to the subscription's lifecycle URL (retried as change
    /// notifications are) and return the last status the receiver answered. `None`: unknown
    /// subscription, no lifecycle URL, or no answer. `SubscriptionRemoved` deletes it first.
    pub async fn send_lifecycle(&self, subscription_id: &str, event: LifecycleEvent) -> Option<u16> {
        let (sub, options, http) = {
            let mut st = self.st();
            st.subs.purge(Utc::now());
            let sub = if event == LifecycleEvent::SubscriptionRemoved {
                st.subs.live.remove(subscription_id)
            } else {
                st.subs.live.get(subscription_id).cloned()
            }?;
            (sub, st.subs.options.clone(), st.subs.http.clone())
        };
        let url = sub.lifecycle_url.clone()?;
        let item = json!({
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": graph_time(sub.expiration),
            "tenantId": TENANT_ID,
            "clientState": sub.client_state,
            "lifecycleEvent": event.as_str(),
        });
        let out = Outgoing { subscription_id: sub.id, url, item };
        delivery::deliver(&self.shared, &http, &options, DeliveryKind::Lifecycle, vec![out]).await
    }
}
