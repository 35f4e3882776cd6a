//! A strict, in-process fake of the Microsoft Graph v1.0 calendar API for one mailbox, written
//! from the documented shapes (`/work/shared/reference/providers.md` §2), because no Graph
//! emulator exists.
//!
//! What it enforces (what calsync relies on, and a lax fake would hide):
//! - bearer auth: a static token (rotatable, to drive 401 → refresh → retry) or an async
//!   validator (the hook for token introspection against a real authorization server);
//!   anything else is 401 `InvalidAuthenticationToken`;
//! - at most 4 requests in flight for the mailbox; the fifth is 429 `ApplicationThrottled`
//!   "MailboxConcurrency" (a per-request `delay` switch makes overlap likely in tests);
//! - event bodies: unknown properties, offsets inside `dateTime`, unknown zones, non-midnight
//!   all-day events and a changed `transactionId` are 400; `@odata.etag` is W/"changeKey" and
//!   changes on every write; a stale `If-Match` is 412 `ErrorIrresolvableConflict`;
//! - ids: malformed ids are 400 `ErrorInvalidIdMalformed`, unknown ones 404 `ErrorItemNotFound`;
//! - `$filter` only in the extended-property `Any` form (eq / startswith), `$expand` only for
//!   single-value extended properties, neither on calendarView/delta (400, as Graph says);
//! - calendarView needs `startDateTime`/`endDateTime`; pages (default 10, like Graph's
//!   calendarView) via `@odata.nextLink`; times in the `Prefer: outlook.timezone` zone;
//! - delta rounds end in `@odata.deltaLink`; later rounds report changes and `@removed`;
//!   expired tokens are 410 `syncStateNotFound`.
//!
//! - calendars: `POST /me/calendars` (a name the mailbox has is 409 `ErrorFolderExists`),
//!   `GET`/`DELETE /me/calendars/{id}` (`calendars`);
//! - single occurrences of a series: read, PATCH (start/end: an `exception`) and DELETE by
//!   occurrence id, `originalStart` on instances, `GET /me/events/{id}/instances` (`series`);
//! - change-notification subscriptions (`subscriptions`, `delivery`): a create validates
//!   `notificationUrl` and `lifecycleNotificationUrl` over real HTTP first (200, `text/plain`,
//!   the decoded token, within 10 s; else 400 `ValidationError`), only HTTPS or loopback HTTP,
//!   `clientState` ≤ 128, lifetimes beyond the maximum are 400; PATCH renews, DELETE removes,
//!   unknown or expired ids are 404. Every event write, through the API or the raw helpers
//!   below (the user's Outlook), is notified over real HTTP from a dispatcher task, batched
//!   per URL, retried a few times when not taken. Helpers list subscriptions, deliveries and
//!   validations, drop notifications, expire a subscription and send lifecycle events.
//!
//! - JSON batching (`batch`): `POST /v1.0/$batch` of 1 to 20 requests, each served as above (the
//!   batch itself is not a mailbox request; its parts are, at most four at once).
//!
//! `transactionId` on a repeated POST: Graph does not document it, so `DuplicatePost` picks
//! between returning the existing event (201) and creating a second one (the harsher case).

#![allow(dead_code, unused_imports)]

mod batch;
mod calendars;
mod delivery;
pub mod odata;
mod routes;
mod series;
mod store;
mod subscriptions;

pub use odata::{PropFilter, ValueCond, id_ok, parse_bound, parse_expand, parse_filter, same_prop};
pub use subscriptions::{
    APP_ID, Delivery, DeliveryKind, LifecycleEvent, Subscription, SubscriptionOptions, TENANT_ID, USER_ID, Validation,
};

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use store::{Calendar, Event};

/// Checks a bearer token (e.g. by introspection at an authorization server).
pub type TokenValidator = Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// What a second POST with a known `transactionId` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DuplicatePost {
    /// 201 with the event the first POST made.
    ReturnExisting,
    /// A second event (as if Graph forgot the transactionId).
    CreateDuplicate,
}

/// Failure switches; counters apply to the next N authorized requests.
#[derive(Clone, Debug)]
pub struct Switches {
    pub duplicate_post: DuplicatePost,
    /// Caps every page (without `$top` / `odata.maxpagesize`, Graph's default is 10).
    pub page_size: usize,
    pub throttle_next: u32,
    pub throttle_retry_after: u64,
    pub unavailable_next: u32,
    /// The next N creates are stored, but answered 504 (the answer is lost on the way back).
    pub lose_create_answer_next: u32,
    /// Time every request spends in flight.
    pub delay: Duration,
    /// The user withdrew consent: every authorized request is 403 `ErrorAccessDenied`.
    pub access_denied: bool,
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    /// Path and query, as sent (percent-encoded).
    pub uri: String,
    pub if_match: Option<String>,
    pub prefer: Vec<String>,
    pub status: u16,
    /// Served as a request inside a `$batch` (the batch itself is logged too, `/v1.0/$batch`).
    pub in_batch: bool,
}

pub(crate) struct St {
    pub token: String,
    pub calendars: Vec<Calendar>,
    pub events: BTreeMap<String, Event>,
    /// (id, calendar, seq) of deleted events.
    pub tombstones: Vec<(String, String, u64)>,
    pub seq: u64,
    pub next_id: u64,
    /// Delta tokens from an older epoch have expired.
    pub epoch: u64,
    pub switches: Switches,
    pub log: Vec<Logged>,
    pub subs: subscriptions::Subs,
    /// Single occurrences changed or deleted, by occurrence id (`series`).
    pub occurrences: BTreeMap<String, series::Occurrence>,
}

pub(crate) struct Shared {
    pub st: Mutex<St>,
    pub base: String,
    validator: Option<TokenValidator>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, St> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl St {
    pub fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("AAMk{prefix}{:016X}AAA=", self.next_id * 7919)
    }

    pub fn bump(&mut self) -> (u64, String) {
        self.seq += 1;
        (self.seq, format!("DwAAABYAAA{:012X}", self.seq * 104_729))
    }

    pub fn calendar(&self, id: &str) -> Option<&Calendar> {
        self.calendars.iter().find(|c| c.id == id)
    }

    pub fn default_calendar(&self) -> String {
        self.calendars.iter().find(|c| c.default).map(|c| c.id.clone()).unwrap_or_default()
    }

    /// Store a new event from a validated body.
    pub fn insert(&mut self, calendar: &str, body: &Value) -> String {
        let id = self.new_id("AGI2");
        let (seq, change_key) = self.bump();
        let mut fields: Map<String, Value> = body.as_object().cloned().unwrap_or_default();
        let props = fields
            .remove("singleValueExtendedProperties")
            .and_then(|p| p.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|p| {
                (p["id"].as_str().unwrap_or_default().to_string(), p["value"].as_str().unwrap_or_default().to_string())
            })
            .collect();
        let transaction_id = fields.remove("transactionId").and_then(|t| t.as_str().map(str::to_string));
        let now = Utc::now();
        let etag = format!("W/\"{change_key}\"");
        let ev = Event {
            id: id.clone(),
            calendar: calendar.to_string(),
            change_key,
            seq,
            created: now,
            modified: now,
            fields,
            transaction_id,
            props,
        };
        self.events.insert(id.clone(), ev);
        self.changed(&id, calendar, "created", &etag);
        id
    }

    pub fn remove(&mut self, id: &str) -> bool {
        let Some(ev) = self.events.remove(id) else { return false };
        let (seq, _) = self.bump();
        self.changed(&ev.id, &ev.calendar, "deleted", &ev.etag());
        self.tombstones.push((ev.id, ev.calendar, seq));
        true
    }
}

/// A Graph error answer.
pub(crate) fn graph_error(status: u16, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message, "innerError": {
        "date": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "request-id": uuid::Uuid::new_v4().to_string(),
        "client-request-id": uuid::Uuid::new_v4().to_string(),
    }}});
    let status = axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_REQUEST);
    (status, axum::Json(body)).into_response()
}

/// Decrements the in-flight count however the request ends.
struct InFlight<'a>(&'a AtomicUsize);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn guard(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    // Request bodies are not Sync: read the headers before any await.
    let (mut logged, token) = {
        let header = |n: &str| {
            req.headers().get_all(n).iter().filter_map(|v| v.to_str().ok().map(str::to_string)).collect::<Vec<_>>()
        };
        let logged = Logged {
            method: req.method().to_string(),
            uri: req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default(),
            if_match: header("if-match").into_iter().next(),
            prefer: header("prefer"),
            status: 0,
            in_batch: !header(batch::PART_HEADER).is_empty(),
        };
        let token =
            header("authorization").into_iter().next().and_then(|a| a.strip_prefix("Bearer ").map(str::to_string));
        (logged, token)
    };
    // The batch itself only carries requests: its parts pass this guard one by one.
    let is_batch = req.uri().path().ends_with("/$batch");
    let now = if is_batch { 0 } else { s.in_flight.fetch_add(1, Ordering::SeqCst) + 1 };
    let _in_flight = (!is_batch).then(|| InFlight(&s.in_flight));
    s.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let resp = async {
        let expected = s.lock().token.clone();
        let authorized = match (&token, &s.validator) {
            (None, _) => false,
            (Some(t), Some(v)) => v(t.clone()).await,
            (Some(t), None) => *t == expected,
        };
        if !authorized {
            return graph_error(401, "InvalidAuthenticationToken", "Access token is empty or invalid.");
        }
        if is_batch {
            return next.run(req).await;
        }
        if now > 4 {
            let mut r = graph_error(429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.");
            r.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
            return r;
        }
        let (throttle, unavailable, delay, denied) = {
            let mut st = s.lock();
            let sw = &mut st.switches;
            let denied = sw.access_denied;
            let t = (sw.throttle_next > 0).then_some(sw.throttle_retry_after);
            sw.throttle_next = sw.throttle_next.saturating_sub(1);
            let u = t.is_none() && sw.unavailable_next > 0;
            if u {
                sw.unavailable_next -= 1;
            }
            (t, u, sw.delay, denied)
        };
        if denied {
            return graph_error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.");
        }
        if let Some(secs) = throttle {
            let mut r = graph_error(429, "TooManyRequests", "Please retry again later.");
            r.headers_mut().insert("retry-after", secs.into());
            return r;
        }
        if unavailable {
            return graph_error(503, "ServiceUnavailable", "The service is temporarily unavailable.");
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        next.run(req).await
    }
    .await;
    logged.status = resp.status().as_u16();
    s.lock().log.push(logged);
    resp
}

/// A running fake Graph; stops when dropped.
pub struct FakeGraph {
    /// Base URL including `/v1.0`, as `OutlookConfig::api_url` takes it.
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    dispatcher: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGraph {
    fn drop(&mut self) {
        self.task.abort();
        self.dispatcher.abort();
    }
}

impl FakeGraph {
    /// A mailbox with a default calendar, a second writable one and a read-only one, accepting
    /// `token`.
    pub async fn start(token: &str) -> FakeGraph {
        Self::start_with(token, None).await
    }

    /// As `start`, with `validator` deciding which bearer tokens are good instead.
    pub async fn start_with(token: &str, validator: Option<TokenValidator>) -> FakeGraph {
        // Tests talk to the fake with raw reqwest clients too; reqwest here has no bundled
        // crypto provider (`Err` only means one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port for fake Graph");
        let addr = listener.local_addr().expect("local addr");
        let base = format!("http://{addr}/v1.0");
        let (outbox, queue) = tokio::sync::mpsc::unbounded_channel();
        // Graph does not follow redirects from a notification endpoint.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client for fake Graph's notifications");
        let mut st = St {
            token: token.to_string(),
            calendars: vec![],
            events: BTreeMap::new(),
            tombstones: vec![],
            seq: 0,
            next_id: 0,
            epoch: 1,
            switches: Switches {
                duplicate_post: DuplicatePost::ReturnExisting,
                page_size: usize::MAX,
                throttle_next: 0,
                throttle_retry_after: 0,
                unavailable_next: 0,
                lose_create_answer_next: 0,
                delay: Duration::ZERO,
                access_denied: false,
            },
            log: vec![],
            subs: subscriptions::Subs::new(outbox, http),
            occurrences: BTreeMap::new(),
        };
        for (name, default, can_edit) in [("Birthdays", false, false), ("Calendar", true, true), ("Work", false, true)]
        {
            let id = st.new_id("CAL");
            st.calendars.push(Calendar { id, name: name.into(), default, can_edit });
        }
        let shared = Arc::new(Shared {
            st: Mutex::new(st),
            base: base.clone(),
            validator,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let api = routes::router(shared.clone()).layer(axum::middleware::from_fn_with_state(shared.clone(), guard));
        let app =
            batch::router(api.clone()).layer(axum::middleware::from_fn_with_state(shared.clone(), guard)).merge(api);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let dispatcher = tokio::spawn(delivery::dispatch(shared.clone(), queue));
        FakeGraph { url: base, shared, task, dispatcher }
    }

    fn st(&self) -> MutexGuard<'_, St> {
        self.shared.lock()
    }

    /// Accept only `token` from now on (the old one is expired).
    pub fn rotate_token(&self, token: &str) {
        self.st().token = token.to_string();
    }

    pub fn token(&self) -> String {
        self.st().token.clone()
    }

    pub fn default_calendar(&self) -> String {
        self.st().default_calendar()
    }

    pub fn calendar_named(&self, name: &str) -> String {
        self.st().calendars.iter().find(|c| c.name == name).map(|c| c.id.clone()).unwrap_or_default()
    }

    /// Change the failure switches.
    pub fn switches(&self, f: impl FnOnce(&mut Switches)) {
        f(&mut self.st().switches)
    }

    /// Every delta token issued so far expires (410 `syncStateNotFound`).
    pub fn expire_delta_tokens(&self) {
        self.st().epoch += 1;
    }

    /// An event made in Outlook by the user from a whole Graph body (a series, say); panics
    /// when Graph would refuse the body.
    pub fn insert_body(&self, calendar: &str, body: Value) -> String {
        if let Err((status, code, msg)) = store::validate(&body, true) {
            panic!("insert_body: {status} {code} {msg}");
        }
        self.st().insert(calendar, &body)
    }

    /// An event made in Outlook by the user: no transactionId, no properties.
    pub fn insert_external(&self, calendar: &str, title: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> String {
        let f = |t: DateTime<Utc>| json!({"dateTime": t.format("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": "UTC"});
        let body =
            json!({"subject": title, "start": f(start), "end": f(end), "body": {"contentType": "html", "content": ""}});
        self.st().insert(calendar, &body)
    }

    /// Change an event's title as Outlook would (new changeKey).
    pub fn edit_title(&self, id: &str, title: &str) {
        let mut st = self.st();
        let (seq, ck) = st.bump();
        let ev = st.events.get_mut(id).expect("the event to edit exists");
        ev.fields.insert("subject".into(), json!(title));
        ev.seq = seq;
        ev.change_key = ck;
        ev.modified = Utc::now();
        let (calendar, etag) = (ev.calendar.clone(), ev.etag());
        st.changed(id, &calendar, "updated", &etag);
    }

    /// The stored event with all its extended properties, in UTC; `None` when absent.
    pub fn get(&self, id: &str) -> Option<Value> {
        let st = self.st();
        let ev = st.events.get(id)?;
        let ids: Vec<String> = ev.props.iter().map(|p| p.0.clone()).collect();
        let mut v = ev.render(chrono_tz::UTC, Some(&ids), false);
        v["calendarId"] = json!(ev.calendar);
        Some(v)
    }

    /// Every event in the mailbox (see `get`).
    pub fn all(&self) -> Vec<Value> {
        let ids: Vec<String> = self.st().events.keys().cloned().collect();
        ids.iter().filter_map(|id| self.get(id)).collect()
    }

    /// Delete as the user would.
    pub fn delete(&self, id: &str) {
        self.st().remove(id);
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.st().log.clone()
    }

    pub fn clear_requests(&self) {
        self.st().log.clear();
    }

    /// Most requests ever in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn reset_max_in_flight(&self) {
        self.shared.max_in_flight.store(0, Ordering::SeqCst);
    }
}
