//! A strict, wire-faithful fake of the Google Calendar API v3 for tests (no Google emulator runs
//! here). Written from the documented behaviour in `shared/reference/providers.md` §1: calendarList,
//! events insert/get/patch/update/delete/list, client-supplied base32hex ids, 409 `duplicate` (also
//! for deleted = `cancelled` events), etags with `If-Match` → 412, `timeMin` bounding an event's END
//! and `timeMax` its START, `singleEvents` expansion, paging with `nextSyncToken` on the last page
//! only, sync tokens (410 `fullSyncRequired` when expired), bearer tokens checked through a real
//! authorization server's introspection (or a static set), scope checks, and Google's error bodies.
//! Push channels (`shared/reference/push.md` §1): `events.watch` and `channels.stop`, lifetimes
//! capped by `FakeGoogleOptions::max_channel_lifetime`, and notifications POSTed over real HTTP to
//! each live channel's address (`sync` right after the watch, `exists` on every change of an event
//! in the watched calendar, through the API or the raw helpers), retried on 500/502/503/504.
//! `freeBusy.query` (`freebusy.rs`) answers from the same events.
//! Single instances of a recurring event can be changed or deleted (stored as exceptions), and
//! `events.instances` lists a series with them (`series.rs`). Secondary calendars can be
//! created and deleted (`calendars.rs`; calendarList entries carry their `description`).
//!
//! Deliberately stricter than Google where Google is lenient, so calsync cannot rely on leniency:
//! unknown query parameters are 400, and a `require_if_match` switch refuses unconditional writes.
//! Batch requests (`POST /batch/calendar/v3`, `batch.rs`) serve each part through the same routes.
//! Not modelled: partial responses (`fields` is accepted and ignored), attendees (beyond freeBusy reading the
//! `self` attendee's `responseStatus`), reminders logic,
//! `not_exists` notifications (a deleted calendar's channels just stop), watching anything but events, and channels that keep delivering
//! after `channels.stop` (Google's may; a receiver must drop unknown channel ids anyway).
//!
//! Owns an in-process axum server on its own thread and runtime (so it serves whatever runtime the
//! test uses) with state in memory; the raw helpers read and change that state directly, bypassing
//! HTTP, as the user's calendar app would. It must not depend on calsync's code.

#![allow(dead_code)]

mod batch;
mod calendars;
mod deliver;
pub mod errors;
mod event;
mod expand;
mod freebusy;
mod handlers;
mod list;
mod push;
mod series;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

pub use push::{ChannelInfo, DEFAULT_MAX_LIFETIME as DEFAULT_MAX_CHANNEL_LIFETIME, DeliveryAttempt};

/// The account of the default fake: its primary calendar's id.
pub const ACCOUNT: &str = "alice@example.com";
/// A second calendar the user can write to.
pub const SECONDARY_CALENDAR: &str = "tasks-3f1c@group.calendar.google.com";
/// A read-only subscribed calendar (its id needs URL encoding, like Google's holiday calendars).
pub const READER_CALENDAR: &str = "en.usa#holiday@group.v.calendar.google.com";

/// Tries per notification (the first plus retries on 500/502/503/504 or an unreachable receiver).
pub const DELIVERY_ATTEMPTS: u32 = deliver::ATTEMPTS;
/// Wait before the first retry of a notification; doubles after each.
pub const DELIVERY_FIRST_BACKOFF: Duration = deliver::FIRST_BACKOFF;

const SCOPE_PREFIX: &str = "https://www.googleapis.com/auth/";

/// How the fake checks `Authorization: Bearer` tokens.
#[derive(Clone, Debug)]
pub enum FakeAuth {
    /// Only these tokens, each granted every calendar scope (add scoped ones with `accept_token`).
    StaticTokens(Vec<String>),
    /// RFC 7662 introspection at a real authorization server (`support::oidc`), with a client's
    /// Basic credentials; inactive tokens are 401, missing scopes 403.
    Introspection { url: String, client_id: String, client_secret: String },
}

#[derive(Clone, Debug)]
pub struct FakeGoogleOptions {
    /// The account e-mail: the primary calendar's id.
    pub account: String,
    pub auth: FakeAuth,
    /// IANA zone of every calendar; all-day dates are read in it for `timeMin`/`timeMax`.
    pub time_zone: String,
    /// Longest channel lifetime granted, whatever the watch asks for (default 7 days; a few
    /// seconds lets a test watch a channel expire).
    pub max_channel_lifetime: Duration,
}

impl FakeGoogleOptions {
    pub fn static_token(token: &str) -> FakeGoogleOptions {
        FakeGoogleOptions {
            account: ACCOUNT.to_string(),
            auth: FakeAuth::StaticTokens(vec![token.to_string()]),
            time_zone: "UTC".to_string(),
            max_channel_lifetime: DEFAULT_MAX_CHANNEL_LIFETIME,
        }
    }
    pub fn introspection(url: &str, client_id: &str, client_secret: &str) -> FakeGoogleOptions {
        FakeGoogleOptions {
            account: ACCOUNT.to_string(),
            auth: FakeAuth::Introspection {
                url: url.to_string(),
                client_id: client_id.to_string(),
                client_secret: client_secret.to_string(),
            },
            time_zone: "UTC".to_string(),
            max_channel_lifetime: DEFAULT_MAX_CHANNEL_LIFETIME,
        }
    }
    pub fn with_max_channel_lifetime(mut self, max: Duration) -> FakeGoogleOptions {
        self.max_channel_lifetime = max;
        self
    }
}

/// A failure the next requests answer with (after authentication).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// 403 `rateLimitExceeded` (usageLimits).
    RateLimit403,
    /// 429 `rateLimitExceeded` (usageLimits).
    RateLimit429,
    /// 403 `userRateLimitExceeded` (usageLimits).
    UserRateLimit403,
    /// 503 `backendError`.
    Backend503,
}

/// One request as the fake saw it (never the Authorization header).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// The full path, e.g. `/calendar/v3/calendars/primary/events/abc12`.
    pub path: String,
    /// The raw query string ("" when none).
    pub query: String,
    /// The `If-Match` value when one was sent.
    pub if_match: Option<String>,
    pub status: u16,
    /// Served as a part of a batch request (the batch itself is logged too, with its path).
    pub in_batch: bool,
}

struct Stored {
    resource: Value,
    /// The change counter when this event last changed (sync tokens compare against it).
    seq: u64,
}

struct Calendar {
    id: String,
    summary: String,
    description: Option<String>,
    access_role: &'static str,
    primary: bool,
    time_zone: String,
    events: BTreeMap<String, Stored>,
}

impl Calendar {
    fn writable(&self) -> bool {
        matches!(self.access_role, "owner" | "writer")
    }
}

/// A list query held open between pages: the whole answer is computed on the first page.
struct PageCursor {
    calendar: String,
    signature: String,
    items: VecDeque<Value>,
    next_sync_token: String,
}

struct State {
    account: String,
    calendars: Vec<Calendar>,
    seq: u64,
    sync_epoch: u64,
    require_if_match: bool,
    page_size: Option<usize>,
    failures: VecDeque<(Failure, Option<u64>)>,
    /// Time every authorized request spends before it is served (makes overlap certain).
    delay: Duration,
    static_tokens: HashMap<String, Vec<String>>,
    requests: Vec<RecordedRequest>,
    pages: HashMap<String, PageCursor>,
    push: push::PushState,
}

impl State {
    fn calendar_index(&self, id: &str) -> Option<usize> {
        if id == "primary" {
            return self.calendars.iter().position(|c| c.primary);
        }
        self.calendars.iter().position(|c| c.id == id)
    }
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}

struct Shared {
    state: Mutex<State>,
    auth: FakeAuth,
    http: reqwest::Client,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking handler must not take the whole fake down with a poisoned lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake Google Calendar API; stopped on drop.
pub struct FakeGoogle {
    shared: Arc<Shared>,
    base_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeGoogle {
    pub fn start(options: FakeGoogleOptions) -> FakeGoogle {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tz = options.time_zone.clone();
        let cal = |id: &str, summary: &str, role, primary| Calendar {
            id: id.to_string(),
            summary: summary.to_string(),
            description: None,
            access_role: role,
            primary,
            time_zone: tz.clone(),
            events: BTreeMap::new(),
        };
        let calendars = vec![
            cal(&options.account, &options.account, "owner", true),
            cal(SECONDARY_CALENDAR, "Tasks", "writer", false),
            cal(READER_CALENDAR, "Holidays in United States", "reader", false),
        ];
        let static_tokens = match &options.auth {
            FakeAuth::StaticTokens(tokens) => tokens.iter().map(|t| (t.clone(), all_scopes())).collect(),
            FakeAuth::Introspection { .. } => HashMap::new(),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake Google port");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let port = listener.local_addr().expect("fake Google addr").port();
        let base_url = format!("http://127.0.0.1:{port}/calendar/v3");
        let (jobs, queued) = tokio::sync::mpsc::unbounded_channel();
        let state = State {
            account: options.account.clone(),
            calendars,
            seq: 0,
            sync_epoch: 1,
            require_if_match: false,
            page_size: None,
            failures: VecDeque::new(),
            delay: Duration::ZERO,
            static_tokens,
            requests: Vec::new(),
            pages: HashMap::new(),
            push: push::PushState::new(jobs, options.max_channel_lifetime, base_url.clone()),
        };
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("fake Google introspection client");
        let shared = Arc::new(Shared { state: Mutex::new(state), auth: options.auth, http });
        let router = handlers::router(shared.clone());
        let deliveries = deliver::run(shared.clone(), queued);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-google".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("fake Google runtime");
                rt.block_on(async move {
                    tokio::spawn(deliveries);
                    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    // Dropping the runtime on stop aborts open keep-alive connections too.
                    tokio::select! {
                        r = axum::serve(listener, router) => { if let Err(e) = r { eprintln!("fake Google stopped: {e}"); } }
                        _ = stopped => {}
                    }
                });
            })
            .expect("spawn the fake Google thread");
        FakeGoogle { shared, base_url, stop: Some(stop), thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT/calendar/v3` (what calsync gets as `GOOGLE_CALENDAR_API_URL`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }
    pub fn account(&self) -> String {
        self.shared.lock().account.clone()
    }

    // ---- switches -------------------------------------------------------------------------------

    /// Writes to existing events without `If-Match` are refused with 428.
    pub fn set_require_if_match(&self, on: bool) {
        self.shared.lock().require_if_match = on;
    }
    /// Caps every list page at `n` items (forces paging); `None` honours `maxResults` alone.
    pub fn set_page_size(&self, n: Option<usize>) {
        self.shared.lock().page_size = n;
    }
    /// Every authorized request waits `delay` before it is served (after its failure check).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }
    /// The next `n` authenticated requests answer `failure` (with `Retry-After` when given).
    pub fn fail_next(&self, n: usize, failure: Failure, retry_after_secs: Option<u64>) {
        let mut s = self.shared.lock();
        s.failures.extend(std::iter::repeat_n((failure, retry_after_secs), n));
    }
    /// Every sync token issued so far answers 410 `fullSyncRequired`.
    pub fn expire_sync_tokens(&self) {
        self.shared.lock().sync_epoch += 1;
    }
    /// Accepts `token` with exactly `scopes` (full URLs, or short names like `calendar.events`).
    pub fn accept_token(&self, token: &str, scopes: &[&str]) {
        let scopes = scopes.iter().map(|s| full_scope(s)).collect();
        self.shared.lock().static_tokens.insert(token.to_string(), scopes);
    }
    pub fn forget_token(&self, token: &str) {
        self.shared.lock().static_tokens.remove(token);
    }

    // ---- request log ----------------------------------------------------------------------------

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }
    /// Writes (POST/PUT/PATCH/DELETE) seen so far.
    pub fn writes(&self) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(|r| r.method != "GET").collect()
    }

    // ---- push channels --------------------------------------------------------------------------

    /// Live channels (stopped, forgotten and expired ones are gone), ordered by channel id.
    pub fn channels(&self) -> Vec<ChannelInfo> {
        self.shared.lock().push.live()
    }
    /// Every finished delivery attempt on channel `id` (retries included), in finishing order.
    pub fn deliveries(&self, id: &str) -> Vec<DeliveryAttempt> {
        self.shared.lock().push.deliveries.iter().filter(|d| d.channel_id == id).cloned().collect()
    }
    /// How many delivery attempts channel `id` has had.
    pub fn delivery_count(&self, id: &str) -> usize {
        self.deliveries(id).len()
    }
    /// Waits up to `timeout` until channel `id` has had at least `n` attempts; returns them all.
    pub async fn wait_for_deliveries(&self, id: &str, n: usize, timeout: Duration) -> Vec<DeliveryAttempt> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let seen = self.deliveries(id);
            if seen.len() >= n || tokio::time::Instant::now() >= until {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    /// While on, notifications are dropped (Google's are "not 100% reliable"); message numbers
    /// still advance, so the receiver sees a gap afterwards.
    pub fn set_drop_notifications(&self, on: bool) {
        self.shared.lock().push.paused = on;
    }
    /// Caps the lifetime of channels opened from now on.
    pub fn set_max_channel_lifetime(&self, max: Duration) {
        self.shared.lock().push.max_lifetime = max;
    }
    /// Google silently drops channel `id` (as on expiry): no more deliveries, `channels.stop`
    /// answers 404. False when no live channel has that id.
    pub fn forget_channel(&self, id: &str) -> bool {
        self.shared.lock().push.forget(id)
    }

    // ---- raw access, bypassing calsync (as the user's calendar app) -----------------------------

    /// Every event of `calendar` (`primary` works), cancelled ones included, ordered by id.
    pub fn raw_events(&self, calendar: &str) -> Vec<Value> {
        let s = self.shared.lock();
        let i = s.calendar_index(calendar).unwrap_or_else(|| panic!("no calendar {calendar}"));
        s.calendars[i].events.values().map(|e| e.resource.clone()).collect()
    }
    /// Events that are not cancelled.
    pub fn live_events(&self, calendar: &str) -> Vec<Value> {
        self.raw_events(calendar).into_iter().filter(|e| e["status"] != "cancelled").collect()
    }
    pub fn raw_event(&self, calendar: &str, id: &str) -> Option<Value> {
        let s = self.shared.lock();
        let i = s.calendar_index(calendar)?;
        s.calendars[i].events.get(id).map(|e| e.resource.clone())
    }
    /// Inserts an event the user made in their calendar app (no extendedProperties unless given).
    /// `body` is validated like an `events.insert`; panics when Google would refuse it.
    pub fn insert_external(&self, calendar: &str, body: Value) -> Value {
        let mut s = self.shared.lock();
        handlers::insert_event(&mut s, calendar, body).unwrap_or_else(|e| panic!("insert_external: {e:?}"))
    }
    /// The user renames an event: a new etag, sequence unchanged.
    pub fn edit_title(&self, calendar: &str, id: &str, title: &str) -> Value {
        let mut s = self.shared.lock();
        let patch = serde_json::json!({ "summary": title });
        handlers::patch_event(&mut s, calendar, id, patch, None, false)
            .unwrap_or_else(|e| panic!("edit_title {id}: {e:?}"))
    }
    /// Any change as the user would make it (JSON merge patch), validated like `events.patch`.
    pub fn edit(&self, calendar: &str, id: &str, patch: Value) -> Value {
        let mut s = self.shared.lock();
        handlers::patch_event(&mut s, calendar, id, patch, None, false).unwrap_or_else(|e| panic!("edit {id}: {e:?}"))
    }
    /// The user deletes an event: it becomes `cancelled` (and keeps its id forever).
    pub fn user_delete(&self, calendar: &str, id: &str) {
        let mut s = self.shared.lock();
        handlers::delete_event(&mut s, calendar, id, None, false).unwrap_or_else(|e| panic!("user_delete {id}: {e:?}"));
    }
}

impl Drop for FakeGoogle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn full_scope(s: &str) -> String {
    if s.starts_with("https://") { s.to_string() } else { format!("{SCOPE_PREFIX}{s}") }
}

fn all_scopes() -> Vec<String> {
    ["calendar", "calendar.events", "calendar.calendarlist.readonly"].iter().map(|s| full_scope(s)).collect()
}
