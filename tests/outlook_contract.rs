//! The Outlook provider against the strict fake Graph (`support::fake_graph`): the shared
//! provider contract, plus what is specific to Graph: 401 → refresh → retry, throttling
//! classified with its Retry-After, never more than four requests in flight per mailbox, no
//! duplicate after a crash or a lost answer even when Graph ignores `transactionId`, paging,
//! delta listing and an expired delta token.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use calsync::credentials::Credentials;
use calsync::oauth::{AccessTokens, TokenBroker};
use calsync::providers::outlook::{OutlookConfig, OutlookConnector, key_prop, marker_prop};
use calsync::providers::{Connector, Created, Provider, ProviderError, Target, Window, event_key};
use calsync::resources::ProviderKind;
use chrono::{DateTime, TimeZone, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use support::contract::{self, ContractPeer, RawEvent};
use support::fake_graph::{DuplicatePost, FakeGraph};

/// Hands out the fake's accepted token; a refresh reads the fake's current one (as a token
/// endpoint would issue the new token). `wrong` gives tokens the fake never accepts.
struct TestTokens {
    fake_token: Arc<dyn Fn() -> String + Send + Sync>,
    current: std::sync::Mutex<String>,
    refreshes: Arc<AtomicUsize>,
    wrong: bool,
}

#[async_trait]
impl AccessTokens for TestTokens {
    async fn access_token(&self) -> Result<SecretString, ProviderError> {
        Ok(SecretString::from(self.current.lock().unwrap().clone()))
    }

    async fn refresh_after_rejection(&self, rejected: &SecretString) -> Result<SecretString, ProviderError> {
        let mut cur = self.current.lock().unwrap();
        if *cur == rejected.expose_secret() {
            self.refreshes.fetch_add(1, Ordering::SeqCst);
            *cur = if self.wrong {
                format!("still-wrong-{}", self.refreshes.load(Ordering::SeqCst))
            } else {
                (self.fake_token)()
            };
        }
        Ok(SecretString::from(cur.clone()))
    }
}

struct TestBroker {
    fake_token: Arc<dyn Fn() -> String + Send + Sync>,
    refreshes: Arc<AtomicUsize>,
    wrong: bool,
}

#[async_trait]
impl TokenBroker for TestBroker {
    async fn tokens(&self, _: &Target, _: &Credentials) -> Result<Arc<dyn AccessTokens>, ProviderError> {
        let first = if self.wrong { "wrong-token".to_string() } else { (self.fake_token)() };
        Ok(Arc::new(TestTokens {
            fake_token: self.fake_token.clone(),
            current: std::sync::Mutex::new(first),
            refreshes: self.refreshes.clone(),
            wrong: self.wrong,
        }))
    }
}

struct GraphPeer {
    fake: Arc<FakeGraph>,
    refreshes: Arc<AtomicUsize>,
    connector: OutlookConnector,
}

fn creds() -> Credentials {
    Credentials::OAuth {
        refresh_token: SecretString::from("r-1"),
        access_token: None,
        expires_at: None,
        refresh_lease: None,
    }
}

fn target() -> Target {
    Target { provider: ProviderKind::Outlook, server_url: None, connection: "test/outlook".into() }
}

impl GraphPeer {
    async fn start() -> GraphPeer {
        let fake = Arc::new(FakeGraph::start("at-1").await);
        let refreshes = Arc::new(AtomicUsize::new(0));
        let connector = Self::new_connector(&fake, &refreshes, false);
        GraphPeer { fake, refreshes, connector }
    }

    fn new_connector(fake: &Arc<FakeGraph>, refreshes: &Arc<AtomicUsize>, wrong: bool) -> OutlookConnector {
        let f = fake.clone();
        let broker = TestBroker { fake_token: Arc::new(move || f.token()), refreshes: refreshes.clone(), wrong };
        let config = OutlookConfig { api_url: fake.url.clone(), timeout: Duration::from_secs(10) };
        OutlookConnector::new(config, Arc::new(broker)).expect("connector")
    }

    /// A client sharing nothing with earlier ones (as after a process restart).
    async fn fresh_provider(&self) -> Arc<dyn Provider> {
        Self::new_connector(&self.fake, &self.refreshes, false).connect(&target(), &creds()).await.expect("connect")
    }
}

fn has_marker(v: &Value) -> bool {
    v["singleValueExtendedProperties"].as_array().into_iter().flatten().any(|p| p["id"] == marker_prop().as_str())
}

#[async_trait]
impl ContractPeer for GraphPeer {
    async fn provider(&self) -> Arc<dyn Provider> {
        self.connector.connect(&target(), &creds()).await.expect("connect")
    }

    async fn wrong_credentials(&self) -> Result<(), ProviderError> {
        let c = Self::new_connector(&self.fake, &Arc::new(AtomicUsize::new(0)), true);
        c.connect(&target(), &creds()).await?.account().await.map(|_| ())
    }

    async fn raw_get(&self, _calendar: &str, id: &str) -> Option<RawEvent> {
        let v = self.fake.get(id)?;
        Some(RawEvent { title: v["subject"].as_str().unwrap_or_default().to_string(), has_marker: has_marker(&v) })
    }

    async fn raw_insert_external(
        &self,
        calendar: &str,
        title: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> String {
        self.fake.insert_external(calendar, title, start, end)
    }

    async fn raw_edit_title(&self, _calendar: &str, id: &str, title: &str) {
        self.fake.edit_title(id, title);
    }

    async fn raw_own_calendars(&self) -> Vec<String> {
        self.fake.calendars_named(calsync::providers::dedicated::DEDICATED_NAME)
    }
}

fn at(h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2031, 6, 3, h, 0, 0).single().unwrap()
}

fn window() -> Window {
    Window { from: at(0), to: at(0) + chrono::Duration::days(1) }
}

fn with_key(fake: &FakeGraph, key: &str) -> Vec<Value> {
    fake.all()
        .into_iter()
        .filter(|e| {
            e["transactionId"] == key
                || e["singleValueExtendedProperties"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["id"] == key_prop().as_str() && p["value"] == key)
        })
        .collect()
}

#[tokio::test]
async fn graph_meets_the_provider_contract() {
    let peer = GraphPeer::start().await;
    contract::run_all(&peer, "graph").await;
    // The harsher transactionId behaviour too: a repeated create must still adopt.
    peer.fake.switches(|s| s.duplicate_post = DuplicatePost::CreateDuplicate);
    contract::create_is_stored_and_idempotent(&peer, "graph-dup").await;
    // Every request used the documented headers: If-Match on our conditional writes, UTC times.
    let log = peer.fake.requests();
    assert!(
        log.iter()
            .filter(|r| r.method == "PATCH")
            .all(|r| r.if_match.as_deref().is_some_and(|e| e.starts_with("W/\"")))
    );
    let mut event_reads = log
        .iter()
        .filter(|r| r.method == "GET" && !r.uri.starts_with("/v1.0/me/calendars?") && r.uri != "/v1.0/me/calendars");
    assert!(event_reads.clone().count() > 10);
    assert!(event_reads.all(|r| r.prefer.iter().any(|p| p.contains(r#"outlook.timezone="UTC""#))));
}

#[tokio::test]
async fn a_rejected_token_is_refreshed_once_and_the_request_retried() {
    let peer = GraphPeer::start().await;
    let p = peer.provider().await;
    p.account().await.expect("account with the first token");
    peer.fake.rotate_token("at-2");
    peer.fake.clear_requests();
    let info = p.account().await.expect("the provider refreshes and retries after a 401");
    assert!(!info.calendars.is_empty());
    assert_eq!(peer.refreshes.load(Ordering::SeqCst), 1, "exactly one refresh");
    let statuses: Vec<u16> = peer.fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![401, 200], "one rejected request, one retry");
    // A token that stays wrong after the refresh: Unauthorized, after exactly one retry.
    peer.fake.clear_requests();
    let res = peer.wrong_credentials().await;
    assert!(matches!(res, Err(ProviderError::Unauthorized { .. })), "{res:?}");
    assert_eq!(peer.fake.requests().len(), 2, "no retry loop on a second 401");
    // The message never carries a token.
    let msg = format!("{res:?}");
    assert!(!msg.contains("wrong-token") && !msg.contains("at-2"), "{msg}");
}

#[tokio::test]
async fn throttling_and_outages_are_classified() {
    let peer = GraphPeer::start().await;
    let p = peer.provider().await;
    peer.fake.switches(|s| {
        s.throttle_next = 1;
        s.throttle_retry_after = 7;
    });
    match p.account().await {
        Err(ProviderError::RateLimited { retry_after, .. }) => assert_eq!(retry_after, Some(Duration::from_secs(7))),
        other => panic!("429 must be RateLimited with its Retry-After, got {other:?}"),
    }
    peer.fake.switches(|s| s.unavailable_next = 1);
    assert!(matches!(p.account().await, Err(ProviderError::Transient { .. })));
    p.account().await.expect("works again");
    let missing = p.get("x", "no-such-event-1234").await.expect("a malformed id is simply not there");
    assert!(missing.is_none());
    // Writing to a read-only calendar is the calendar's problem, not a withdrawn consent.
    let ro = peer.fake.calendar_named("Birthdays");
    let info = p.account().await.expect("account");
    assert!(info.calendars.iter().any(|c| c.id == ro && !c.writable), "canEdit: false means not writable");
    assert_eq!(info.default_calendar().map(|c| c.name.as_str()), Some("Calendar"));
    assert_eq!(info.email.as_deref(), Some("alexw@contoso.example"), "the default calendar's owner");
    match p.create(&ro, &event_key("ro"), &contract::event("ro", "x")).await {
        Err(ProviderError::Invalid { message }) => assert!(message.contains("read-only"), "{message}"),
        other => panic!("a read-only calendar must be Invalid, got {other:?}"),
    }
    // Consent withdrawn: every call is 403 ErrorAccessDenied, so a create fails at its lookup.
    peer.fake.switches(|s| s.access_denied = true);
    assert!(matches!(p.account().await, Err(ProviderError::Revoked { .. })));
    let cal = peer.fake.default_calendar();
    let denied = p.create(&cal, &event_key("denied"), &contract::event("denied", "x")).await;
    assert!(matches!(denied, Err(ProviderError::Revoked { .. })), "{denied:?}");
}

#[tokio::test]
async fn never_more_than_four_requests_in_flight_per_mailbox() {
    let peer = GraphPeer::start().await;
    let cal = peer.fake.default_calendar();
    peer.fake.switches(|s| s.delay = Duration::from_millis(40));
    // The fake does enforce the limit: six raw requests at once get 429 MailboxConcurrency.
    let client = reqwest::Client::new();
    let raw = (0..6).map(|_| client.get(format!("{}/me/calendars", peer.fake.url)).bearer_auth("at-1").send());
    let statuses: Vec<u16> =
        futures::future::join_all(raw).await.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
    assert!(statuses.contains(&429), "the fake must answer 429 beyond four in flight: {statuses:?}");
    peer.fake.reset_max_in_flight();
    // Twenty parallel creates through two providers of the same connection.
    let (a, b) = (peer.provider().await, peer.provider().await);
    let creates = (0..20).map(|i| {
        let p = if i % 2 == 0 { a.clone() } else { b.clone() };
        let cal = cal.clone();
        async move {
            let uid = format!("par-{i}");
            p.create(&cal, &event_key(&uid), &contract::event(&uid, &format!("parallel {i}"))).await
        }
    });
    let results = futures::future::join_all(creates).await;
    let failed: Vec<String> = results.iter().filter_map(|r| r.as_ref().err().map(|e| e.to_string())).collect();
    assert!(failed.is_empty(), "{} of 20 creates failed, first: {:?}", failed.len(), failed.first());
    assert!(results.iter().all(|r| matches!(r, Ok(Created::New(_)))));
    assert_eq!(peer.fake.max_in_flight(), 4, "four at once, and never more");
    assert!(
        peer.fake.requests().iter().all(|r| r.status != 429 || r.uri.ends_with("/me/calendars")),
        "no request of ours was throttled"
    );
}

#[tokio::test]
async fn a_crash_or_a_lost_answer_between_create_and_status_write_leaves_one_event() {
    let peer = GraphPeer::start().await;
    let cal = peer.fake.default_calendar();
    peer.fake.switches(|s| s.duplicate_post = DuplicatePost::CreateDuplicate);
    // The switch is harsh: two raw POSTs with one transactionId make two events.
    let body = serde_json::json!({"subject": "raw", "transactionId": "tx-raw",
        "start": {"dateTime": "2031-06-03T10:00:00", "timeZone": "UTC"}, "end": {"dateTime": "2031-06-03T11:00:00", "timeZone": "UTC"}});
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let r = client
            .post(format!("{}/me/calendars/{cal}/events", peer.fake.url))
            .bearer_auth("at-1")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    assert_eq!(peer.fake.all().iter().filter(|e| e["transactionId"] == "tx-raw").count(), 2);

    // Crash: the first process created the event and died before recording it.
    let uid = "crash-uid";
    let key = event_key(uid);
    peer.fake.clear_requests();
    let first = peer.provider().await.create(&cal, &key, &contract::event(uid, "crash")).await.expect("create");
    assert!(matches!(first, Created::New(_)));
    let calls: Vec<String> = peer.fake.requests().iter().map(|r| r.method.clone()).collect();
    assert_eq!(calls, ["GET", "POST"], "a create is one lookup by key and one POST");
    let again = peer
        .fresh_provider()
        .await
        .create(&cal, &key, &contract::event(uid, "crash"))
        .await
        .expect("create after restart");
    match (&first, &again) {
        (Created::New(a), Created::Existing(b)) => assert_eq!(a.id, b.id),
        other => panic!("the restarted create must adopt: {other:?}"),
    }
    assert_eq!(with_key(&peer.fake, &key).len(), 1, "exactly one event for the task");

    // Lost answer: Graph stored the event but the 201 never arrived.
    let uid = "lost-uid";
    let key = event_key(uid);
    peer.fake.switches(|s| s.lose_create_answer_next = 1);
    let lost = peer.provider().await.create(&cal, &key, &contract::event(uid, "lost")).await;
    assert!(matches!(lost, Err(ProviderError::Transient { .. })), "a 504 is retryable: {lost:?}");
    let retried = peer.provider().await.create(&cal, &key, &contract::event(uid, "lost")).await.expect("retry");
    assert!(matches!(retried, Created::Existing(_)), "the retry finds the stored event: {retried:?}");
    assert_eq!(with_key(&peer.fake, &key).len(), 1, "exactly one event after a lost answer");
}

#[tokio::test]
async fn listing_pages_tracks_changes_and_resyncs_an_expired_delta_token() {
    let peer = GraphPeer::start().await;
    let cal = peer.fake.default_calendar();
    peer.fake.switches(|s| s.page_size = 2);
    let p = peer.provider().await;
    for i in 0..5 {
        peer.fake.insert_external(&cal, &format!("ext {i}"), at(8 + i), at(9 + i));
    }
    let mut weekly = contract::event("series-uid", "weekly standup");
    weekly.start = time_at(at(9));
    weekly.end = time_at(at(10));
    weekly.recurrence = vec!["RRULE:FREQ=DAILY;COUNT=5".into()];
    let (series, _) = match p.create(&cal, &event_key("series-uid"), &weekly).await.expect("create series") {
        Created::New(e) => (e.id.clone(), e),
        other => panic!("{other:?}"),
    };
    let full =
        p.list(&cal, Window { from: at(0), to: at(0) + chrono::Duration::days(3) }, None).await.expect("full listing");
    assert_eq!(full.events.iter().filter(|e| e.title.starts_with("ext ")).count(), 5, "every page is read");
    let ours: Vec<_> = full.events.iter().filter(|e| e.id == series).collect();
    assert_eq!(ours.len(), 1, "a series is listed once, as its master");
    assert_eq!(ours[0].recurrence, vec!["RRULE:FREQ=DAILY;COUNT=5".to_string()]);
    assert!(ours[0].marker.is_some());
    let cursor = full.next_cursor.clone().expect("cursor");

    // Changes since the cursor: an edit, a new external event, a deletion.
    let ext = peer.fake.insert_external(&cal, "new dentist", at(15), at(16));
    peer.fake.edit_title(&series, "renamed in Outlook");
    let gone = full.events.iter().find(|e| e.title == "ext 0").expect("ext 0").id.clone();
    peer.fake.delete(&gone);
    let d = p.list(&cal, window(), Some(&cursor)).await.expect("delta");
    assert!(!d.full_resync);
    assert!(d.events.iter().any(|e| e.id == ext && e.marker.is_none()));
    let renamed = d.events.iter().find(|e| e.id == series).expect("the edited series is reported once, by its master");
    assert_eq!(
        (renamed.title.as_str(), renamed.marker.is_some()),
        ("renamed in Outlook", true),
        "re-read with our marker"
    );
    assert_eq!(d.removed, vec![gone.clone()]);
    let cursor2 = d.next_cursor.clone().expect("next cursor");
    assert_ne!(cursor2, cursor);
    let quiet = p.list(&cal, window(), Some(&cursor2)).await.expect("no changes");
    assert!(quiet.events.is_empty() && quiet.removed.is_empty(), "{quiet:?}");

    // The token expires: a full listing flagged as such, with a working new cursor.
    peer.fake.expire_delta_tokens();
    let re = p.list(&cal, window(), quiet.next_cursor.as_deref()).await.expect("resync");
    assert!(re.full_resync);
    assert!(re.events.iter().any(|e| e.id == ext));
    let after = p.list(&cal, window(), re.next_cursor.as_deref()).await.expect("delta after resync");
    assert!(!after.full_resync);
    // `primary` names the default calendar on every path (events, calendarView, delta).
    let prim = p.list("primary", window(), None).await.expect("list primary");
    assert!(prim.events.iter().any(|e| e.id == ext));
    let made = p.create("primary", &event_key("prim"), &contract::event("prim", "p")).await.expect("create");
    let Created::New(made) = made else { panic!("a new key makes a new event: {made:?}") };
    assert!(peer.fake.get(&made.id).is_some_and(|v| v["calendarId"] == cal.as_str()));
    assert!(p.find_by_key("primary", &event_key("prim")).await.expect("find").is_some());
    let d = p.list("primary", window(), prim.next_cursor.as_deref()).await.expect("delta primary");
    assert!(!d.full_resync);
    // A cursor naming another host is never followed (the token would go there).
    let foreign = p
        .list(&cal, window(), Some("https://evil.example.com/v1.0/me/calendars/x/calendarView/delta?$deltatoken=1"))
        .await
        .expect("foreign cursor");
    assert!(foreign.full_resync);
    assert!(
        peer.fake
            .requests()
            .iter()
            .filter(|r| r.uri.contains("/delta"))
            .all(|r| !r.uri.contains("expand") && !r.uri.contains("filter"))
    );
}

fn time_at(t: DateTime<Utc>) -> calsync::providers::EventTime {
    let tz: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    calsync::providers::EventTime::DateTime {
        utc: t,
        local: t.with_timezone(&tz).naive_local(),
        zone: Some("Europe/Berlin".into()),
    }
}
