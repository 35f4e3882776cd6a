//! Tests of error classification, URLs and cursors, and of request shapes against a tiny
//! scripted HTTP double (it only replays answers and records requests; the contract suite
//! against the strict fake checks behaviour).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use chrono::{TimeZone, Utc};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use secrecy::SecretString;
use serde_json::json;

use super::client::GResponse;
use super::*;
use crate::providers::{EventTime, Marker};

fn resp(code: u16, headers: &[(&'static str, &str)], body: serde_json::Value) -> GResponse {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(*k, v.parse().unwrap());
    }
    GResponse { status: StatusCode::from_u16(code).unwrap(), headers: h, body: serde_json::to_vec(&body).unwrap() }
}

fn google_error(code: u16, reason: &str, message: &str) -> serde_json::Value {
    json!({"error": {"errors": [{"domain": "global", "reason": reason, "message": message}], "code": code, "message": message}})
}

#[test]
fn errors_are_classified_by_status_and_reason() {
    use ProviderError as E;
    let c = |code, reason, headers: &[(&'static str, &str)]| {
        classify(&resp(code, headers, google_error(code, reason, "Some message.")), "doing x")
    };
    assert!(matches!(c(403, "rateLimitExceeded", &[]), E::RateLimited { retry_after: None, .. }));
    assert!(matches!(c(429, "rateLimitExceeded", &[]), E::RateLimited { retry_after: None, .. }));
    assert!(
        matches!(c(403, "userRateLimitExceeded", &[("retry-after", "17")]), E::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(17))
    );
    assert!(matches!(c(429, "", &[]), E::RateLimited { .. }), "any 429 is a rate limit");
    assert!(
        matches!(c(403, "quotaExceeded", &[("retry-after", "5")]), E::RateLimited { retry_after: Some(d), .. } if d >= client::QUOTA_RETRY)
    );
    assert!(
        matches!(c(403, "insufficientPermissions", &[]), E::Revoked { message } if message.contains("reconnect and grant calendar access"))
    );
    let scope = classify(
        &resp(403, &[("www-authenticate", "Bearer error=\"insufficient_scope\"")], google_error(403, "forbidden", "x")),
        "x",
    );
    assert!(matches!(scope, E::Revoked { .. }));
    assert!(
        matches!(c(403, "forbidden", &[]), E::Invalid { message } if message.contains("403 forbidden") && message.contains("Some message.")),
        "a read-only calendar is not a grant problem"
    );
    assert!(matches!(c(403, "forbiddenForNonOrganizer", &[]), E::Invalid { .. }));
    assert!(matches!(c(400, "timeRangeEmpty", &[]), E::Invalid { .. }));
    assert!(matches!(c(401, "authError", &[]), E::Unauthorized { .. }));
    assert!(matches!(c(404, "notFound", &[]), E::NotFound { .. }));
    assert!(matches!(c(410, "deleted", &[]), E::NotFound { .. }));
    assert!(matches!(c(412, "conditionNotMet", &[]), E::Conflict { .. }));
    assert!(matches!(c(500, "backendError", &[]), E::Transient { .. }));
    assert!(matches!(c(503, "", &[]), E::Transient { .. }));
    let html = GResponse { status: StatusCode::BAD_GATEWAY, headers: HeaderMap::new(), body: b"<html>".to_vec() };
    assert!(matches!(classify(&html, "x"), E::Transient { message } if message == "Google answered 502 while x"));
}

#[test]
fn awkward_calendar_ids_are_percent_encoded() {
    let base = api_base("https://www.googleapis.com/calendar/v3").unwrap();
    let url =
        api_url(&base, &["calendars", "en.usa#holiday@group.v.calendar.google.com", "events", "cs01/../x?y"]).unwrap();
    assert_eq!(
        url.as_str(),
        "https://www.googleapis.com/calendar/v3/calendars/en.usa%23holiday@group.v.calendar.google.com/events/cs01%2F..%2Fx%3Fy"
    );
    let base = api_base("http://127.0.0.1:9/prefix/v3/?q=1").unwrap();
    assert_eq!(
        api_url(&base, &["users", "me", "calendarList"]).unwrap().as_str(),
        "http://127.0.0.1:9/prefix/v3/users/me/calendarList"
    );
    assert!(api_base("not a url").is_err());
    assert!(api_base("ftp://example.com/").is_err());
}

#[test]
fn cursors_are_recognised_per_calendar() {
    let c = encode_cursor("primary", "CPDAlvWDx70CEPDAlvWDx70CGAU=");
    assert_eq!(decode_cursor("primary", &c).as_deref(), Some("CPDAlvWDx70CEPDAlvWDx70CGAU="));
    assert_eq!(decode_cursor("other@example.com", &c), None, "a cursor of another calendar is not ours");
    assert_eq!(decode_cursor("primary", "CPDAlvWDx70CEPDAlvWDx70CGAU="), None, "a bare token is foreign");
    assert_eq!(decode_cursor("primary", "gcal1:"), None);
    assert_eq!(decode_cursor("primary", &encode_cursor("primary", "")), None);
    assert_eq!(decode_cursor("p", &encode_cursor("p", "a:b")).as_deref(), Some("a:b"));
}

// ---- the scripted double ----

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    auth: Option<String>,
    if_match: Option<String>,
    body: serde_json::Value,
}

impl Seen {
    fn q(&self, k: &str) -> Option<&str> {
        self.query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Script {
    answers: Mutex<VecDeque<(u16, serde_json::Value)>>,
    seen: Mutex<Vec<Seen>>,
}

async fn replay(State(s): State<Arc<Script>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let query = Url::parse(&format!("http://x/?{}", parts.uri.query().unwrap_or("")))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default();
    s.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query,
        auth: header("authorization"),
        if_match: header("if-match"),
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    });
    let (code, body) = s.answers.lock().unwrap().pop_front().unwrap_or((599, json!({"unscripted": true})));
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

struct Tokens {
    refreshed: AtomicUsize,
    rejected: Mutex<Vec<String>>,
}

#[async_trait]
impl AccessTokens for Tokens {
    async fn access_token(&self) -> Result<SecretString, ProviderError> {
        Ok(SecretString::from(format!("tok-{}", self.refreshed.load(Ordering::SeqCst))))
    }
    async fn refresh_after_rejection(&self, rejected: &SecretString) -> Result<SecretString, ProviderError> {
        use secrecy::ExposeSecret;
        self.rejected.lock().unwrap().push(rejected.expose_secret().to_string());
        let n = self.refreshed.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(SecretString::from(format!("tok-{n}")))
    }
}

async fn double(answers: Vec<(u16, serde_json::Value)>) -> (GoogleProvider, Arc<Script>, Arc<Tokens>) {
    let script = Arc::new(Script { answers: Mutex::new(answers.into()), seen: Mutex::default() });
    let app = axum::Router::new().fallback(replay).with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let tokens = Arc::new(Tokens { refreshed: AtomicUsize::new(0), rejected: Mutex::default() });
    let config = GoogleConfig { api_url: format!("http://{addr}/calendar/v3"), timeout: Duration::from_secs(5) };
    (GoogleProvider::new(&config, tokens.clone()).unwrap(), script, tokens)
}

fn g_event(id: &str, status: &str, etag: &str) -> serde_json::Value {
    json!({
        "kind": "calendar#event", "id": id, "status": status, "etag": etag, "htmlLink": format!("https://g/{id}"),
        "summary": id, "start": {"dateTime": "2031-05-14T10:00:00Z"}, "end": {"dateTime": "2031-05-14T11:00:00Z"},
    })
}

fn data() -> EventData {
    let utc = Utc.with_ymd_and_hms(2031, 5, 14, 10, 0, 0).unwrap();
    EventData {
        title: "t".into(),
        description: None,
        category: None,
        start: EventTime::DateTime { utc, local: utc.naive_utc(), zone: None },
        end: EventTime::DateTime { utc: utc + chrono::Duration::hours(1), local: utc.naive_utc(), zone: None },
        transparent: false,
        recurrence: vec![],
        exceptions: Vec::new(),
        marker: Marker { owner: "calsync".into(), uid: "u".into(), task_id: "t".into(), hash: "h".into() },
    }
}

fn window() -> Window {
    Window {
        from: Utc.with_ymd_and_hms(2031, 5, 14, 0, 0, 0).unwrap(),
        to: Utc.with_ymd_and_hms(2031, 5, 16, 0, 0, 0).unwrap(),
    }
}

#[tokio::test]
async fn a_401_refreshes_once_and_retries_with_the_new_token() {
    let (p, script, tokens) = double(vec![
        (401, google_error(401, "authError", "Invalid Credentials")),
        (200, g_event("abcde", "confirmed", "\"1\"")),
    ])
    .await;
    let ev = p.get("me@example.com", "abcde").await.unwrap().unwrap();
    assert_eq!(ev.id, "abcde");
    let seen = script.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].auth.as_deref(), Some("Bearer tok-0"));
    assert_eq!(seen[1].auth.as_deref(), Some("Bearer tok-1"));
    assert_eq!(seen[0].path, "/calendar/v3/calendars/me@example.com/events/abcde");
    assert_eq!(*tokens.rejected.lock().unwrap(), vec!["tok-0".to_string()], "the rejected token is named");
}

#[tokio::test]
async fn a_second_401_is_unauthorized_without_the_token_in_the_message() {
    let err = google_error(401, "authError", "Invalid Credentials");
    let (p, script, tokens) = double(vec![(401, err.clone()), (401, err)]).await;
    match p.account().await {
        Err(e @ ProviderError::Unauthorized { .. }) => {
            let text = format!("{e} {e:?}");
            assert!(!text.contains("tok-"), "{text}");
            assert!(text.contains("authError"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(script.seen.lock().unwrap().len(), 2, "exactly one retry");
    assert_eq!(tokens.refreshed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn update_sends_if_match_and_a_stale_etag_is_a_conflict() {
    let (p, script, _) = double(vec![
        (412, google_error(412, "conditionNotMet", "Precondition Failed")),
        (200, g_event("abcde", "confirmed", "\"2\"")),
    ])
    .await;
    let r = p.update("primary", "abcde", Some("\"1\""), &data()).await;
    assert!(matches!(r, Err(ProviderError::Conflict { .. })), "{r:?}");
    let seen = script.seen.lock().unwrap().clone();
    assert_eq!((seen[0].method.as_str(), seen[0].if_match.as_deref()), ("PATCH", Some("\"1\"")));
    assert_eq!(seen[0].body["description"], json!(null), "patch clears the absent description");
    assert_eq!(seen[1].method, "GET");
}

#[tokio::test]
async fn delete_of_a_gone_event_is_success_and_sends_if_match() {
    let (p, script, _) =
        double(vec![(410, google_error(410, "deleted", "Resource has been deleted")), (404, json!({}))]).await;
    p.delete("primary", "abcde", Some("\"7\"")).await.unwrap();
    p.delete("primary", "abcde", None).await.unwrap();
    let seen = script.seen.lock().unwrap().clone();
    assert_eq!((seen[0].method.as_str(), seen[0].if_match.as_deref()), ("DELETE", Some("\"7\"")));
    assert_eq!(seen[1].if_match, None);
}

#[tokio::test]
async fn create_adopts_a_duplicate_and_restores_a_cancelled_one() {
    let (p, script, _) = double(vec![
        (409, google_error(409, "duplicate", "The requested identifier already exists.")),
        (200, g_event("csabcde", "cancelled", "\"3\"")),
        (200, g_event("csabcde", "confirmed", "\"4\"")),
    ])
    .await;
    match p.create("primary", "csabcde", &data()).await.unwrap() {
        Created::Existing(ev) => assert_eq!((ev.etag.as_deref(), ev.cancelled), (Some("\"4\""), false)),
        other => panic!("{other:?}"),
    }
    let seen = script.seen.lock().unwrap().clone();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].body["id"], "csabcde");
    assert_eq!(seen[2].method, "PATCH");
    assert_eq!(seen[2].body["status"], "confirmed");
    assert_eq!(seen[2].if_match.as_deref(), Some("\"3\""));
}

#[tokio::test]
async fn listing_follows_pages_and_resyncs_on_410() {
    let page = |items: Vec<serde_json::Value>, next: Option<&str>, sync: Option<&str>| json!({"kind": "calendar#events", "items": items, "nextPageToken": next, "nextSyncToken": sync});
    let far = json!({"id": "far01", "status": "confirmed", "summary": "far",
        "start": {"dateTime": "2032-01-01T10:00:00Z"}, "end": {"dateTime": "2032-01-01T11:00:00Z"}});
    let (p, script, _) = double(vec![
        (200, page(vec![g_event("aaaaa", "confirmed", "\"1\"")], Some("p2"), None)),
        (200, page(vec![g_event("bbbbb", "confirmed", "\"1\"")], None, Some("sync-1"))),
        (200, page(vec![far, json!({"id": "ccccc", "status": "cancelled"})], None, Some("sync-2"))),
        (410, google_error(410, "fullSyncRequired", "Sync token is no longer valid, a full sync is required.")),
        (200, page(vec![], None, Some("sync-3"))),
    ])
    .await;
    let full = p.list("primary", window(), None).await.unwrap();
    assert_eq!(full.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), vec!["aaaaa", "bbbbb"]);
    assert_eq!(full.next_cursor, Some(encode_cursor("primary", "sync-1")));
    let delta = p.list("primary", window(), full.next_cursor.as_deref()).await.unwrap();
    assert!(delta.events.is_empty(), "changes outside the window are filtered out");
    assert_eq!(delta.removed, vec!["ccccc".to_string()]);
    assert!(!delta.full_resync);
    let resync = p.list("primary", window(), delta.next_cursor.as_deref()).await.unwrap();
    assert!(resync.full_resync);
    assert_eq!(resync.next_cursor, Some(encode_cursor("primary", "sync-3")));
    let seen = script.seen.lock().unwrap().clone();
    assert_eq!(seen[0].q("timeMin"), Some("2031-05-14T00:00:00Z"));
    assert_eq!(seen[0].q("timeMax"), Some("2031-05-16T00:00:00Z"));
    // Series come back as masters, once (their exceptions are read per series).
    assert_eq!(seen[0].q("singleEvents"), Some("false"));
    assert_eq!((seen[1].q("pageToken"), seen[1].q("timeMin")), (Some("p2"), Some("2031-05-14T00:00:00Z")));
    assert_eq!(seen[2].q("syncToken"), Some("sync-1"));
    assert_eq!((seen[2].q("timeMin"), seen[2].q("timeMax")), (None, None), "Google rejects time bounds with syncToken");
    assert_eq!(seen[4].q("syncToken"), None);
}

#[tokio::test]
async fn a_foreign_cursor_is_a_full_resync_without_asking_google() {
    let (p, script, _) = double(vec![(200, json!({"items": [], "nextSyncToken": "s"}))]).await;
    let page = p.list("primary", window(), Some("bogus-cursor-value")).await.unwrap();
    assert!(page.full_resync);
    assert_eq!(script.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn account_follows_pages_and_names_the_primary_calendar() {
    let (p, script, _) = double(vec![
        (200, json!({"items": [{"id": "team@group.calendar.google.com", "summary": "Team", "accessRole": "reader"}], "nextPageToken": "n"})),
        (200, json!({"items": [{"id": "me@example.com", "summary": "me", "primary": true, "accessRole": "owner"}]})),
    ])
    .await;
    let info = p.account().await.unwrap();
    assert_eq!(info.email.as_deref(), Some("me@example.com"));
    assert_eq!(info.default_calendar().map(|c| c.id.as_str()), Some("me@example.com"));
    let seen = script.seen.lock().unwrap().clone();
    assert_eq!(seen[0].path, "/calendar/v3/users/me/calendarList");
    assert_eq!(seen[1].q("pageToken"), Some("n"));
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let (mut p, _, _) = double(vec![(200, json!({"items": [], "padding": "x".repeat(4096)}))]).await;
    p.client = std::mem::replace(&mut p.client, dummy_client()).with_max_body(1024);
    match p.list("primary", window(), None).await {
        Err(ProviderError::Invalid { message }) => assert!(message.contains("larger than"), "{message}"),
        other => panic!("{other:?}"),
    }
}

fn dummy_client() -> client::GoogleClient {
    let tokens = Arc::new(Tokens { refreshed: AtomicUsize::new(0), rejected: Mutex::default() });
    client::GoogleClient::new(
        reqwest::Client::new(),
        tokens,
        Arc::new(tokio::sync::Semaphore::new(1)),
        Url::parse("http://127.0.0.1:9/batch/calendar/v3").unwrap(),
        crate::providers::batch::Batching::OFF,
    )
}

struct Broker;

#[async_trait]
impl TokenBroker for Broker {
    async fn tokens(&self, _: &Target, _: &Credentials) -> Result<Arc<dyn AccessTokens>, ProviderError> {
        Ok(Arc::new(Tokens { refreshed: AtomicUsize::new(0), rejected: Mutex::default() }))
    }
}

#[tokio::test]
async fn the_connector_needs_oauth_credentials() {
    let c = GoogleConnector::new(GoogleConfig::default(), Arc::new(Broker)).unwrap();
    let t = Target { provider: ProviderKind::Google, server_url: None, connection: "ns/c".into() };
    let basic = Credentials::Basic { username: "u".into(), password: SecretString::from("hunter2") };
    match c.connect(&t, &basic).await {
        Err(ProviderError::Invalid { message }) => assert!(message.contains("OAuth") && !message.contains("hunter2")),
        other => panic!("{:?}", other.err()),
    }
    let oauth = Credentials::OAuth {
        refresh_token: SecretString::from("r"),
        access_token: None,
        expires_at: None,
        refresh_lease: None,
    };
    assert!(c.connect(&t, &oauth).await.is_ok());
    let apple = Target { provider: ProviderKind::Apple, ..t };
    assert!(matches!(c.connect(&apple, &oauth).await, Err(ProviderError::Invalid { .. })));
}
