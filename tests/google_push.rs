//! Google push channels end to end: calsync's `GoogleProvider::watch`/`stop_watch` against the
//! strict fake (`support::fake_google`), whose notifications arrive over real HTTP at a tiny axum
//! receiver on 127.0.0.1 that records each delivery's headers and answers scripted statuses.

mod support;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use calsync::oauth::AccessTokens;
use calsync::providers::google::{GoogleConfig, GoogleProvider};
use calsync::providers::{
    EventData, EventTime, Marker, Provider, ProviderError, PushSupport, Watch, WatchRequest, event_key,
};
use chrono::{TimeZone, Utc};
use secrecy::SecretString;
use serde_json::{Value, json};
use support::fake_google::{ACCOUNT, FakeGoogle, FakeGoogleOptions, SECONDARY_CALENDAR};

const TOKEN: &str = "static-test-token";
const SECRET: &str = "chan-secret-7f3e9a1c";
const WAIT: Duration = Duration::from_secs(5);

struct Tokens;

#[async_trait]
impl AccessTokens for Tokens {
    async fn access_token(&self) -> Result<SecretString, ProviderError> {
        Ok(SecretString::from(TOKEN))
    }
    async fn refresh_after_rejection(&self, _: &SecretString) -> Result<SecretString, ProviderError> {
        Ok(SecretString::from(TOKEN))
    }
}

/// One notification as the receiver saw it (header names lowercase).
#[derive(Clone, Debug)]
struct Seen {
    headers: HashMap<String, String>,
    body_len: usize,
}

impl Seen {
    fn h(&self, name: &str) -> &str {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str).unwrap_or("")
    }
    fn number(&self) -> u64 {
        self.h("X-Goog-Message-Number").parse().expect("numeric message number")
    }
}

#[derive(Default)]
struct Inbox {
    seen: Mutex<Vec<Seen>>,
    answers: Mutex<VecDeque<u16>>,
}

async fn receive(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let headers = headers.iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect();
    inbox.seen.lock().unwrap().push(Seen { headers, body_len: body.len() });
    let code = inbox.answers.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(code).unwrap()
}

struct Receiver {
    address: String,
    inbox: Arc<Inbox>,
}

impl Receiver {
    async fn start() -> Receiver {
        let inbox = Arc::new(Inbox::default());
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(inbox.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { address: format!("http://{addr}/hook"), inbox }
    }
    fn answer(&self, codes: &[u16]) {
        self.inbox.answers.lock().unwrap().extend(codes);
    }
    fn seen(&self) -> Vec<Seen> {
        self.inbox.seen.lock().unwrap().clone()
    }
    async fn wait(&self, n: usize) -> Vec<Seen> {
        let until = tokio::time::Instant::now() + WAIT;
        while self.seen().len() < n && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.seen()
    }
    /// Nothing more arrives within `quiet` (longer than the fake's whole retry schedule).
    async fn assert_quiet(&self, count: usize, quiet: Duration) {
        tokio::time::sleep(quiet).await;
        assert_eq!(
            self.seen().len(),
            count,
            "unexpected deliveries: {:#?}",
            &self.seen()[count.min(self.seen().len())..]
        );
    }
}

fn provider(fake: &FakeGoogle) -> GoogleProvider {
    let config = GoogleConfig { api_url: fake.base_url().to_string(), timeout: Duration::from_secs(10) };
    GoogleProvider::new(&config, Arc::new(Tokens)).unwrap()
}

fn request(id: &str, address: &str) -> WatchRequest {
    WatchRequest {
        id: id.to_string(),
        address: address.to_string(),
        lifecycle_address: None,
        secret: SecretString::from(SECRET),
        ttl: Duration::from_secs(3600),
    }
}

fn data(title: &str) -> EventData {
    let utc = Utc.with_ymd_and_hms(2031, 5, 14, 10, 0, 0).unwrap();
    let end = utc + chrono::Duration::hours(1);
    EventData {
        title: title.into(),
        description: None,
        category: None,
        start: EventTime::DateTime { utc, local: utc.naive_utc(), zone: None },
        end: EventTime::DateTime { utc: end, local: end.naive_utc(), zone: None },
        transparent: false,
        recurrence: vec![],
        exceptions: Vec::new(),
        marker: Marker { owner: "calsync".into(), uid: "u1".into(), task_id: "t1".into(), hash: "h".into() },
    }
}

fn external_event(summary: &str) -> Value {
    json!({"summary": summary, "start": {"dateTime": "2031-05-15T09:00:00Z"}, "end": {"dateTime": "2031-05-15T10:00:00Z"}})
}

async fn setup(options: FakeGoogleOptions) -> (FakeGoogle, GoogleProvider, Receiver) {
    let fake = FakeGoogle::start(options);
    let p = provider(&fake);
    (fake, p, Receiver::start().await)
}

#[tokio::test]
async fn watch_returns_the_channel_and_sync_arrives_with_number_one_and_the_token() {
    let (fake, p, rx) = setup(FakeGoogleOptions::static_token(TOKEN)).await;
    assert_eq!(p.push_support(), PushSupport::Recreate);
    let before = Utc::now();
    let w = p.watch("primary", &request("ch-sync-1", &rx.address)).await.unwrap();
    assert_eq!(w.id, "ch-sync-1");
    let live = fake.channels();
    assert_eq!(live.len(), 1);
    assert_eq!((live[0].id.as_str(), live[0].resource_id.as_str()), ("ch-sync-1", w.provider_id.as_str()));
    assert_eq!((live[0].address.as_str(), live[0].calendar.as_str()), (rx.address.as_str(), ACCOUNT));
    assert!(!w.provider_id.is_empty());
    // Google answers whole milliseconds: compare at that precision.
    assert_eq!(w.expiration.timestamp_millis(), live[0].expiration.timestamp_millis());
    let granted = w.expiration - before;
    assert!(granted > chrono::Duration::seconds(3590) && granted <= chrono::Duration::seconds(3605), "{granted}");

    let seen = rx.wait(1).await;
    assert_eq!(seen.len(), 1, "exactly the sync message");
    let sync = &seen[0];
    assert_eq!(sync.h("X-Goog-Resource-State"), "sync");
    assert_eq!(sync.number(), 1);
    assert_eq!(sync.h("X-Goog-Channel-ID"), "ch-sync-1");
    assert_eq!(sync.h("X-Goog-Channel-Token"), SECRET);
    assert_eq!(sync.h("X-Goog-Resource-ID"), w.provider_id);
    assert_eq!(sync.h("X-Goog-Resource-URI"), live[0].resource_uri);
    assert!(sync.h("X-Goog-Resource-URI").contains("/calendars/primary/events"), "{}", sync.h("X-Goog-Resource-URI"));
    assert!(sync.h("X-Goog-Channel-Expiration").ends_with(" GMT"), "{}", sync.h("X-Goog-Channel-Expiration"));
    assert_eq!(sync.body_len, 0, "Google's notifications have no body");

    // The resourceId names the calendar's events, whichever channel watches it.
    let again = p.watch(ACCOUNT, &request("ch-sync-2", &rx.address)).await.unwrap();
    assert_eq!(again.provider_id, w.provider_id);
    let other = p.watch(SECONDARY_CALENDAR, &request("ch-sync-3", &rx.address)).await.unwrap();
    assert_ne!(other.provider_id, w.provider_id);
}

#[tokio::test]
async fn changes_through_the_api_and_the_raw_helpers_send_exists_with_increasing_numbers() {
    let (fake, p, rx) = setup(FakeGoogleOptions::static_token(TOKEN)).await;
    p.watch("primary", &request("ch-exists", &rx.address)).await.unwrap();
    rx.wait(1).await;

    let key = event_key("u1");
    let created = match p.create("primary", &key, &data("first")).await.unwrap() {
        calsync::providers::Created::New(e) => e,
        other => panic!("{other:?}"),
    };
    rx.wait(2).await;
    p.update("primary", &key, created.etag.as_deref(), &data("patched through the API")).await.unwrap();
    rx.wait(3).await;
    fake.edit_title(ACCOUNT, &key, "renamed in the calendar app");
    rx.wait(4).await;
    let external = fake.insert_external(ACCOUNT, external_event("made in the app"));
    rx.wait(5).await;
    fake.user_delete(ACCOUNT, external["id"].as_str().unwrap());
    let seen = rx.wait(6).await;

    assert_eq!(seen.len(), 6, "{seen:#?}");
    assert!(seen[1..].iter().all(|s| s.h("X-Goog-Resource-State") == "exists"), "{seen:#?}");
    let numbers: Vec<u64> = seen.iter().map(Seen::number).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "message numbers must increase: {numbers:?}");
    // A change in another calendar is not this channel's business.
    fake.insert_external(SECONDARY_CALENDAR, external_event("elsewhere"));
    rx.assert_quiet(6, Duration::from_millis(300)).await;
    assert!(fake.deliveries("ch-exists").iter().all(|d| d.status == Some(200) && d.attempt == 1));
}

#[tokio::test]
async fn server_errors_are_retried_and_client_errors_are_not() {
    let (fake, p, rx) = setup(FakeGoogleOptions::static_token(TOKEN)).await;
    rx.answer(&[503, 200]);
    p.watch("primary", &request("ch-retry", &rx.address)).await.unwrap();
    let seen = rx.wait(2).await;
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].number(), seen[1].number(), "a retry repeats the same message");
    let attempts = fake.wait_for_deliveries("ch-retry", 2, WAIT).await;
    let statuses: Vec<(u32, Option<u16>)> = attempts.iter().map(|d| (d.attempt, d.status)).collect();
    assert_eq!(statuses, vec![(1, Some(503)), (2, Some(200))]);

    rx.answer(&[400]);
    fake.insert_external(ACCOUNT, external_event("x"));
    rx.wait(3).await;
    rx.assert_quiet(3, Duration::from_millis(600)).await;
    assert_eq!(fake.deliveries("ch-retry").last().map(|d| (d.attempt, d.status)), Some((1, Some(400))));

    // A receiver that keeps failing gets a bounded number of tries.
    rx.answer(&[500, 502, 504, 503, 503, 503, 503]);
    fake.insert_external(ACCOUNT, external_event("y"));
    rx.assert_quiet(3 + support::fake_google::DELIVERY_ATTEMPTS as usize, Duration::from_millis(1200)).await;
}

#[tokio::test]
async fn a_short_max_lifetime_caps_the_expiration_and_an_expired_channel_stops_delivering() {
    let options = FakeGoogleOptions::static_token(TOKEN).with_max_channel_lifetime(Duration::from_secs(2));
    let (fake, p, rx) = setup(options).await;
    let before = Utc::now();
    let w = p.watch("primary", &request("ch-short", &rx.address)).await.unwrap();
    let granted = w.expiration - before;
    assert!(granted <= chrono::Duration::milliseconds(2100), "asked 1 h, got {granted}");
    rx.wait(1).await;
    fake.insert_external(ACCOUNT, external_event("while alive"));
    rx.wait(2).await;

    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(fake.channels().is_empty(), "{:?}", fake.channels());
    fake.insert_external(ACCOUNT, external_event("after expiry"));
    rx.assert_quiet(2, Duration::from_millis(400)).await;
    p.stop_watch("primary", &w).await.expect("stopping an expired channel is success");
    assert_eq!(fake.requests().last().map(|r| r.status), Some(404));
}

#[tokio::test]
async fn channels_stop_ends_deliveries_and_a_second_stop_is_success() {
    let (fake, p, rx) = setup(FakeGoogleOptions::static_token(TOKEN)).await;
    let w = p.watch("primary", &request("ch-stop", &rx.address)).await.unwrap();
    rx.wait(1).await;
    p.stop_watch("primary", &w).await.unwrap();
    assert_eq!(
        fake.requests().last().map(|r| (r.path.clone(), r.status)),
        Some(("/calendar/v3/channels/stop".into(), 204))
    );
    assert!(fake.channels().is_empty());
    fake.insert_external(ACCOUNT, external_event("after stop"));
    rx.assert_quiet(1, Duration::from_millis(300)).await;
    p.stop_watch("primary", &w).await.expect("a second stop is success");
    assert_eq!(fake.requests().last().map(|r| r.status), Some(404));
    // A wrong resourceId does not stop someone else's channel.
    let live = p.watch("primary", &request("ch-stop-2", &rx.address)).await.unwrap();
    let wrong = Watch { provider_id: "not-the-resource".into(), ..live.clone() };
    p.stop_watch("primary", &wrong).await.unwrap();
    assert_eq!(fake.channels().len(), 1);
}

#[tokio::test]
async fn dropped_notifications_and_forgotten_channels() {
    let (fake, p, rx) = setup(FakeGoogleOptions::static_token(TOKEN)).await;
    let w = p.watch("primary", &request("ch-drop", &rx.address)).await.unwrap();
    rx.wait(1).await;
    fake.set_drop_notifications(true);
    fake.insert_external(ACCOUNT, external_event("lost"));
    rx.assert_quiet(1, Duration::from_millis(200)).await;
    fake.set_drop_notifications(false);
    fake.insert_external(ACCOUNT, external_event("seen"));
    let seen = rx.wait(2).await;
    assert!(seen[1].number() > seen[0].number());
    assert_eq!(fake.delivery_count("ch-drop"), 2, "a dropped message is never attempted");

    assert!(fake.forget_channel("ch-drop"));
    assert!(!fake.forget_channel("ch-drop"));
    fake.insert_external(ACCOUNT, external_event("after forget"));
    rx.assert_quiet(2, Duration::from_millis(300)).await;
    p.stop_watch("primary", &w).await.expect("a channel Google forgot stops as success");
    // Its id is free again once Google forgot it.
    p.watch("primary", &request("ch-drop", &rx.address)).await.unwrap();
}

#[tokio::test]
async fn refused_watches_are_classified_and_never_carry_the_secret() {
    let (fake, p, rx) = setup(FakeGoogleOptions::static_token(TOKEN)).await;
    let plain = p.watch("primary", &request("ch-plain", "http://calsync.example.com/hook")).await.unwrap_err();
    assert!(
        matches!(&plain, ProviderError::Invalid { message } if message.contains("webhookUrlNotHttps")),
        "{plain:?}"
    );

    p.watch("primary", &request("ch-dup", &rx.address)).await.unwrap();
    let dup = p.watch("primary", &request("ch-dup", &rx.address)).await.unwrap_err();
    assert!(matches!(&dup, ProviderError::Invalid { message } if message.contains("channelIdNotUnique")), "{dup:?}");

    let bad_id = p.watch("primary", &request("no spaces allowed", &rx.address)).await.unwrap_err();
    assert!(matches!(bad_id, ProviderError::Invalid { .. }));
    let gone = p.watch("nobody@example.com", &request("ch-404", &rx.address)).await.unwrap_err();
    assert!(matches!(gone, ProviderError::NotFound { .. }), "{gone:?}");

    let mut long = request("ch-long", &rx.address);
    long.secret = SecretString::from(format!("{SECRET}{}", "x".repeat(300)));
    let too_long = p.watch("primary", &long).await.unwrap_err();
    assert!(matches!(too_long, ProviderError::Invalid { .. }));

    for e in [&plain, &dup, &too_long] {
        assert!(!e.to_string().contains(SECRET) && !format!("{e:?}").contains(SECRET), "{e:?}");
    }
    let w = p.watch("primary", &request("ch-debug", &rx.address)).await.unwrap();
    assert!(!format!("{w:?}").contains(SECRET));
    assert!(!format!("{:?}", request("x", &rx.address)).contains(SECRET));
    assert_eq!(fake.channels().len(), 2, "only ch-dup and ch-debug are live");
}

/// The fake's watch rules, with raw requests (what calsync never sends).
#[tokio::test]
async fn the_fake_validates_watch_bodies_like_google() {
    let (fake, _, rx) = setup(FakeGoogleOptions::static_token(TOKEN)).await;
    let http = reqwest::Client::new();
    let url = format!("{}/calendars/primary/events/watch", fake.base_url());
    let post = |body: Value| http.post(&url).bearer_auth(TOKEN).json(&body).send();
    let good = json!({"id": "a-Z_0/+=", "type": "webhook", "address": rx.address, "params": {"ttl": "60"}});
    let reason = |v: &Value| v["error"]["errors"][0]["reason"].as_str().unwrap_or("").to_string();
    let cases = [
        (json!({"id": "x".repeat(65)}), "invalid"),
        (json!({"id": "bad id"}), "invalid"),
        (json!({"type": "email"}), "invalidType"),
        (json!({"address": "https://"}), "webhookUrlNotHttps"),
        (json!({"address": "http://10.0.0.1/hook"}), "webhookUrlNotHttps"),
        (json!({"token": "t".repeat(257)}), "invalid"),
        (json!({"params": {"ttl": "soon"}}), "invalid"),
        (json!({"params": {"ttl": 60}}), "invalid"),
        (json!({"surprise": true}), "invalid"),
    ];
    for (change, want) in cases {
        let mut body = good.clone();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let resp = post(body.clone()).await.unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(reason(&err), want, "{body} → {err}");
        assert!(!err.to_string().contains(&"t".repeat(257)), "the token is never echoed");
    }
    assert!(fake.channels().is_empty());
    let ok = post(good).await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let channel: Value = ok.json().await.unwrap();
    assert_eq!(channel["kind"], "api#channel");
    assert!(channel.get("token").is_none(), "no token asked, none echoed");
    let ms: i64 = channel["expiration"].as_str().unwrap().parse().unwrap();
    assert!(ms - Utc::now().timestamp_millis() <= 60_000);
    let seen = rx.wait(1).await;
    assert_eq!(seen[0].h("X-Goog-Channel-Token"), "", "no token header without a token");
    let stop = format!("{}/channels/stop", fake.base_url());
    let missing = http.post(&stop).bearer_auth(TOKEN).json(&json!({"id": "a-Z_0/+="})).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 400);
    let stopped = http
        .post(&stop)
        .bearer_auth(TOKEN)
        .json(&json!({"id": "a-Z_0/+=", "resourceId": channel["resourceId"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status().as_u16(), 204);
}
