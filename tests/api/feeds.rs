//! The ICS subscription feed end to end on the in-process API with the real engine: a user with
//! no calendar gets a feed URL, declares tasks (`feed: true`), and the feed, parsed by the PyPI
//! reference parsers (`icalendar` + `recurring-ical-events`), has them at the right instants
//! across the March DST change; ETag/304; revocation 404s at once; unknown tokens say nothing;
//! the token never reaches the logs.

#[path = "../support/artifacts.rs"]
mod artifacts;
#[path = "../support/pyvenv.rs"]
mod pyvenv;

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode, header};
use calsync::credentials::envelope::{Key, Keyring};
use calsync::engine::Objects;
use calsync::resources::task_sync_name;
use serde_json::{Value, json};

use super::support::*;

const PARSERS: &[&str] = &["icalendar==7.3.2", "recurring-ical-events==3.8.2"];

/// Parse the feed with the reference parsers; events of March 2026 expanded, sorted, in UTC.
const PARSE: &str = r#"
import sys, json, datetime
import icalendar, recurring_ical_events
cal = icalendar.Calendar.from_ical(sys.stdin.read())
def fmt(v):
    if isinstance(v, datetime.datetime):
        assert v.tzinfo is not None, "floating time"
        return v.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return v.isoformat()
events = []
for ev in recurring_ical_events.of(cal).between(datetime.date(2026, 3, 1), datetime.date(2026, 12, 1)):
    events.append([str(ev.get("SUMMARY")), fmt(ev.decoded("DTSTART")), fmt(ev.decoded("DTEND"))])
events.sort()
# The VTIMEZONE calsync wrote, read on its own (not the parser's tz database): 09:00 local on
# either side of both changes.
offsets = {}
for vtz in cal.walk("VTIMEZONE"):
    tz = vtz.to_tz(lookup_tzid=False)
    for day in (datetime.date(2026, 3, 7), datetime.date(2026, 3, 9), datetime.date(2026, 10, 31), datetime.date(2026, 11, 2)):
        local = datetime.datetime(day.year, day.month, day.day, 9, 0, tzinfo=tz)
        offsets[f"{vtz['TZID']} {day}"] = local.utcoffset().total_seconds() / 3600
uids = [str(e.get("UID")) for e in cal.walk("VEVENT")]
print(json.dumps({"events": events, "offsets": offsets, "method": str(cal.get("METHOD")),
    "name": str(cal.get("X-WR-CALNAME")), "uids": uids}))
"#;

/// Every log line of this test binary (all tests, all threads, every level), so a test can show
/// that no feed token is ever logged. A global subscriber: a thread-scoped one misses events
/// whose callsites other tests' threads registered first (tracing caches callsite interest).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured_logs() -> &'static Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other test sets a global subscriber");
        logs
    })
}

fn task(user: &str, id: &str, name: &str, time: &str, extra: Value) -> Value {
    let mut data = json!({"id": id, "name": name, "scheduled_time": time});
    if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    json!({"user_id": user, "task_data": data})
}

fn path_of(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    format!("/{}", rest.split_once('/').unwrap().1)
}

async fn get_feed(h: &Harness, path: &str, headers: &[(&str, &str)]) -> (StatusCode, axum::http::HeaderMap, String) {
    let (s, hd, v) = h.raw(Method::GET, path, None, None, headers).await;
    let body = match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    };
    (s, hd, body)
}

#[tokio::test]
async fn a_user_without_a_calendar_subscribes_to_a_feed() {
    let logs = captured_logs();

    let keys = Keyring::new(Key::generate().0).push_keys();
    let h = Harness::with_engine_and_keys(config(), keys);

    // No calendar and no feed yet: the seed's answer.
    let (s, v) = h
        .call(Method::POST, "/api/calendar/task-to-calendar", Some(task("alice", "t0", "x", "2026-03-07", json!({}))))
        .await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::BAD_REQUEST, Some("not_connected")), "{v}");

    // Only alice (or a trusted backend) may make alice's feed.
    let (s, _, v) = h.raw(Method::POST, "/api/calendar/feeds/alice", Some(&jwt("bob", 600)), None, &[]).await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{v}");
    let (s, _, v) = h.raw(Method::POST, "/api/calendar/feeds/alice", None, None, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");

    let (s, hd, v) = h
        .raw(
            Method::POST,
            "/api/calendar/feeds/alice",
            Some(&jwt("alice", 600)),
            None,
            &[("host", "cal.example:8443"), ("x-forwarded-proto", "https")],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(hd[header::CACHE_CONTROL], "no-store");
    let url = v["feed_url"].as_str().unwrap().to_string();
    let token = url.rsplit('/').next().unwrap().strip_suffix(".ics").unwrap().to_string();
    artifacts::record_secret("ics-feed-token", &token);
    assert!(url.starts_with("https://cal.example:8443/api/calendar/feeds/"), "from Host and X-Forwarded-Proto: {url}");
    assert_eq!(v["webcal_url"].as_str().unwrap(), url.replacen("https://", "webcal://", 1));
    assert_eq!(v["created"], true);
    assert!(token.len() >= 60, "a long random value");
    // Creating again returns the same URL.
    let (s, v) = h.call(Method::POST, "/api/calendar/feeds/alice", None).await;
    assert_eq!((s, v["created"].clone()), (StatusCode::OK, json!(false)), "{v}");
    assert_eq!(path_of(v["feed_url"].as_str().unwrap()), path_of(&url));
    let feed = path_of(&url);

    // Tasks for the feed alone: one each side of the March change in New York, an all-day
    // one, and a UTC one.
    for (id, name, time, extra) in [
        ("t1", "Before the change", "2026-03-07T09:00:00", json!({"timezone": "America/New_York"})),
        (
            "t2",
            "After the change",
            "2026-03-09T09:00:00",
            json!({"timezone": "America/New_York", "duration_minutes": 30}),
        ),
        ("t3", "All day, two days", "2026-03-08", json!({"duration_minutes": 2880})),
        ("t4", "In UTC; with, commas", "2026-03-20T18:15:00Z", json!({"description": "line 1\nline 2"})),
        ("t7", "Before fall back", "2026-10-31T09:00:00", json!({"timezone": "America/New_York"})),
        ("t8", "After fall back", "2026-11-02T09:00:00", json!({"timezone": "America/New_York"})),
    ] {
        let (s, v) =
            h.call(Method::POST, "/api/calendar/task-to-calendar", Some(task("alice", id, name, time, extra))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v, json!({"success": true, "event_id": null, "event_link": null, "feed": true}));
    }
    // A daily task through the change, declared as YAML would (recurrence is not a REST field).
    let mut daily = h.objects.get_task_sync(NS, &task_sync_name("alice", "t1")).await.unwrap().unwrap();
    daily.metadata.name = Some(task_sync_name("alice", "t5"));
    daily.metadata.uid = None;
    daily.metadata.resource_version = None;
    daily.metadata.generation = None;
    daily.metadata.labels.as_mut().unwrap().insert("calendar.getitdone.app/task".into(), "t5".into());
    daily.spec.task_id = "t5".into();
    daily.spec.title = "Daily standup".into();
    daily.spec.start = "2026-03-06T09:00:00".into();
    daily.spec.recurrence = vec!["RRULE:FREQ=DAILY;COUNT=4".into()];
    daily.status = None;
    h.objects.apply_task_sync(&daily).await.unwrap();

    // Bob has a calendar: his tasks are events there, and his feed lists them too.
    h.connect_apple("bob").await;
    let (s, v) = h
        .call(
            Method::POST,
            "/api/calendar/task-to-calendar",
            Some(task("bob", "b1", "Bob's task", "2026-03-10T10:00:00Z", json!({}))),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["event_id"].is_string() && v.get("feed").is_none(), "{v}");

    // The feed, without any bearer token.
    let (s, hd, body) = get_feed(&h, &feed, &[]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(hd[header::CONTENT_TYPE], "text/calendar; charset=utf-8");
    assert!(hd[header::CACHE_CONTROL].to_str().unwrap().starts_with("private, max-age="));
    let etag = hd[header::ETAG].to_str().unwrap().to_string();
    assert!(etag.starts_with('"'), "a strong ETag: {etag}");
    assert!(!body.contains("Bob's task"), "only alice's tasks");

    let py = pyvenv::venv("icalendar", PARSERS);
    let parsed: Value = serde_json::from_str(&pyvenv::run_python(&py, PARSE, &body)).expect("parser output");
    assert_eq!(parsed["method"], "PUBLISH");
    assert_eq!(parsed["name"], "Get It Done!");
    assert_eq!(
        parsed["events"],
        json!([
            // 09:00 EST is 14:00Z, 09:00 EDT is 13:00Z.
            ["After fall back", "2026-11-02T14:00:00Z", "2026-11-02T15:00:00Z"],
            ["After the change", "2026-03-09T13:00:00Z", "2026-03-09T13:30:00Z"],
            ["All day, two days", "2026-03-08", "2026-03-10"],
            ["Before fall back", "2026-10-31T13:00:00Z", "2026-10-31T14:00:00Z"],
            ["Before the change", "2026-03-07T14:00:00Z", "2026-03-07T15:00:00Z"],
            ["Daily standup", "2026-03-06T14:00:00Z", "2026-03-06T15:00:00Z"],
            ["Daily standup", "2026-03-07T14:00:00Z", "2026-03-07T15:00:00Z"],
            ["Daily standup", "2026-03-08T13:00:00Z", "2026-03-08T14:00:00Z"],
            ["Daily standup", "2026-03-09T13:00:00Z", "2026-03-09T14:00:00Z"],
            ["In UTC; with, commas", "2026-03-20T18:15:00Z", "2026-03-20T19:15:00Z"],
        ]),
        "{body}"
    );
    assert_eq!(
        parsed["offsets"],
        json!({"America/New_York 2026-03-07": -5.0, "America/New_York 2026-03-09": -4.0,
               "America/New_York 2026-10-31": -4.0, "America/New_York 2026-11-02": -5.0}),
        "calsync's VTIMEZONE, read on its own"
    );
    let uids: Vec<String> = serde_json::from_value(parsed["uids"].clone()).unwrap();
    assert_eq!(uids.len(), 7);
    assert_eq!(uids.iter().collect::<std::collections::BTreeSet<_>>().len(), 7, "one UID per task");

    // Unchanged: 304 (also for a weak or listed validator); the UIDs stay on the next fetch.
    for inm in [etag.clone(), format!("W/{etag}"), format!("\"other\", {etag}")] {
        let (s, hd, body) = get_feed(&h, &feed, &[("if-none-match", &inm)]).await;
        assert_eq!(s, StatusCode::NOT_MODIFIED, "{inm}");
        assert!(body.is_empty());
        assert_eq!(hd[header::ETAG].to_str().unwrap(), etag);
    }
    let (s, _, _) = get_feed(&h, &feed, &[("if-none-match", "\"stale\"")]).await;
    assert_eq!(s, StatusCode::OK);
    // Some calendar apps probe with HEAD first.
    let (s, hd, body) = h.raw(Method::HEAD, &feed, None, None, &[]).await;
    assert_eq!((s, body), (StatusCode::OK, Value::Null));
    assert_eq!(hd[header::ETAG].to_str().unwrap(), etag);

    // Feed-only tasks have no event id: update and delete them by task id.
    let (s, v) = h
        .call(
            Method::PUT,
            "/api/calendar/update-event",
            Some(json!({"user_id": "alice", "task_id": "t4", "task_data": {"name": "Renamed"}})),
        )
        .await;
    assert_eq!((s, v.clone()), (StatusCode::OK, json!({"success": true})), "{v}");
    let (s, v) =
        h.call(Method::DELETE, "/api/calendar/delete-event", Some(json!({"user_id": "alice", "task_id": "t3"}))).await;
    assert_eq!((s, v.clone()), (StatusCode::OK, json!({"success": true})), "{v}");
    let (s, v) = h
        .call(
            Method::DELETE,
            "/api/calendar/delete-event",
            Some(json!({"user_id": "alice", "task_id": "t3", "event_id": "x"})),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_field")), "{v}");
    let (s, hd, body) = get_feed(&h, &feed, &[("if-none-match", &etag)]).await;
    assert_eq!(s, StatusCode::OK, "the content changed");
    assert_ne!(hd[header::ETAG].to_str().unwrap(), etag);
    assert!(body.contains("SUMMARY:Renamed") && !body.contains("All day"), "{body}");

    // Unknown, wrong and malformed tokens: the router's own 404, nothing more.
    let (_, _, unknown_path) = h.raw(Method::GET, "/api/calendar/no-such-endpoint", None, None, &[]).await;
    let (id, secret) = token.split_once('.').unwrap();
    let wrong = format!("{id}.{}", secret.chars().rev().collect::<String>());
    for path in [
        format!("/api/calendar/feeds/{wrong}.ics"),
        format!("/api/calendar/feeds/{}.{secret}.ics", "0".repeat(24)),
        format!("/api/calendar/feeds/{token}"),
        format!("/api/calendar/feeds/{token}.ics.ics"),
        "/api/calendar/feeds/nonsense.ics".to_string(),
        "/api/calendar/feeds/%FF%FE.ics".to_string(),
        "/api/calendar/feeds/alice".to_string(),
    ] {
        let (s, _, v) = h.raw(Method::GET, &path, None, None, &[]).await;
        assert_eq!((s, &v), (StatusCode::NOT_FOUND, &unknown_path), "{path}");
    }

    // Revoked: the old URL is dead at once; a new one differs; tasks need a calendar again.
    let (s, v) = h.call(Method::DELETE, "/api/calendar/feeds/alice", None).await;
    assert_eq!((s, v.clone()), (StatusCode::OK, json!({"success": true, "revoked": true})), "{v}");
    let (s, _, v) = h.raw(Method::GET, &feed, None, None, &[]).await;
    assert_eq!((s, &v), (StatusCode::NOT_FOUND, &unknown_path));
    let (s, v) = h.call(Method::DELETE, "/api/calendar/feeds/alice", None).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"success": true, "revoked": false})));
    let (s, v) = h
        .call(Method::POST, "/api/calendar/task-to-calendar", Some(task("alice", "t6", "x", "2026-03-07", json!({}))))
        .await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::BAD_REQUEST, Some("not_connected")), "{v}");
    let (s, v) = h.call(Method::POST, "/api/calendar/feeds/alice", None).await;
    assert_eq!((s, v["created"].clone()), (StatusCode::OK, json!(true)), "{v}");
    let new_url = v["feed_url"].as_str().unwrap().to_string();
    artifacts::record_secret("ics-feed-token", new_url.rsplit('/').next().unwrap().trim_end_matches(".ics"));
    assert_ne!(path_of(&new_url), feed);
    let (s, _, _) = h.raw(Method::GET, &feed, None, None, &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, body) = get_feed(&h, &path_of(&new_url), &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("Renamed"), "the tasks outlive the URL: {body}");

    // Bob's feed lists his calendar's task (whichever connection holds it).
    let (_, v) = h.call(Method::POST, "/api/calendar/feeds/bob", None).await;
    let bob_url = v["feed_url"].as_str().unwrap().to_string();
    artifacts::record_secret("ics-feed-token", bob_url.rsplit('/').next().unwrap().trim_end_matches(".ics"));
    let (_, _, body) = get_feed(&h, &path_of(&bob_url), &[]).await;
    assert!(body.contains("SUMMARY:Bob's task") && !body.contains("Renamed"), "{body}");

    // The logs saw all of this and none of the tokens.
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    let alice = calsync::credentials::feed::feed_id("alice");
    assert!(text.contains(&format!("ICS feed URL issued feed={alice}")), "logging was captured");
    for t in [&token, &new_url, &bob_url] {
        let secret = t.rsplit('/').next().unwrap().trim_end_matches(".ics");
        let secret = secret.split_once('.').unwrap().1;
        assert!(!text.contains(secret), "a feed token reached the logs");
    }
    std::fs::write(artifacts::path("api-feeds", "log"), text).unwrap();
}

#[tokio::test]
async fn feed_reads_are_rate_limited_per_feed() {
    let keys = Keyring::new(Key::generate().0).push_keys();
    let config = calsync::api::ApiConfig {
        rate_limit_per_minute: 2,
        public_url: Some("https://cal.example.com".into()),
        ..config()
    };
    let h = Harness::with_engine_and_keys(config, keys);
    let (_, v) = h.call(Method::POST, "/api/calendar/feeds/carol", None).await;
    let url = v["feed_url"].as_str().unwrap().to_string();
    assert!(url.starts_with("https://cal.example.com/api/calendar/feeds/"), "CALSYNC_PUBLIC_URL wins: {url}");
    artifacts::record_secret("ics-feed-token", url.rsplit('/').next().unwrap().trim_end_matches(".ics"));
    let (_, v) = h.call(Method::POST, "/api/calendar/feeds/dave", None).await;
    let other = v["feed_url"].as_str().unwrap().to_string();
    artifacts::record_secret("ics-feed-token", other.rsplit('/').next().unwrap().trim_end_matches(".ics"));
    for _ in 0..2 {
        assert_eq!(get_feed(&h, &path_of(&url), &[]).await.0, StatusCode::OK);
    }
    let (s, hd, v) = h.raw(Method::GET, &path_of(&url), None, None, &[]).await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")), "{v}");
    assert!(hd.contains_key(header::RETRY_AFTER));
    // Bad tokens for carol's feed id use up nothing of hers, and other feeds are unaffected.
    assert_eq!(get_feed(&h, &path_of(&other), &[]).await.0, StatusCode::OK);
    let token = url.rsplit('/').next().unwrap().trim_end_matches(".ics");
    let forged = format!("/api/calendar/feeds/{}.{}.ics", token.split_once('.').unwrap().0, "A".repeat(43));
    for _ in 0..5 {
        assert_eq!(get_feed(&h, &forged, &[]).await.0, StatusCode::NOT_FOUND);
    }
}

/// One request to a router (the harness's own helper is tied to its router).
async fn send(router: &axum::Router, method: Method, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut req = axum::http::Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = router.clone().oneshot(req.body(axum::body::Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn rotating_the_encryption_key_keeps_feed_urls_working() {
    let (old, _) = Key::generate();
    let (new, _) = Key::generate();
    let h = Harness::with_engine_and_keys(config(), Keyring::new(old.clone()).push_keys());
    let (_, v) = h.call(Method::POST, "/api/calendar/feeds/erin", None).await;
    let url = v["feed_url"].as_str().unwrap().to_string();
    artifacts::record_secret("ics-feed-token", url.rsplit('/').next().unwrap().trim_end_matches(".ics"));
    let feed = path_of(&url);

    // Another process on the same store with the rotated keyring (old key still configured).
    let replica = |keys: Keyring| {
        let connector = Arc::new(calsync::providers::memory::MemoryConnector { service: h.calendar.clone() });
        let state = calsync::api::AppState::new(
            Arc::new(h.objects.clone()),
            connector,
            NS,
            config(),
            Arc::new(calsync::api::Metrics::new()),
        )
        .with_push_keys(keys.push_keys());
        calsync::api::router(state)
    };
    let rotated = replica(Keyring::new(new.clone()).with_old_key(old));
    let (s, v) = send(&rotated, Method::POST, "/api/calendar/feeds/erin", Some(API_KEY)).await;
    assert_eq!((s, v["created"].clone()), (StatusCode::OK, json!(false)), "{v}");
    assert_eq!(path_of(v["feed_url"].as_str().unwrap()), feed, "the same URL after a rotation");

    // The old key dropped: the URL still serves, but cannot be shown again; POST says so
    // instead of silently cutting subscribed calendars off.
    let dropped = replica(Keyring::new(new));
    assert_eq!(send(&dropped, Method::GET, &feed, None).await.0, StatusCode::OK);
    let (s, v) = send(&dropped, Method::POST, "/api/calendar/feeds/erin", Some(API_KEY)).await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::CONFLICT, Some("feed_url_unrecoverable")), "{v}");
    assert_eq!(send(&dropped, Method::GET, &feed, None).await.0, StatusCode::OK, "still there");
    let (s, v) = send(&dropped, Method::DELETE, "/api/calendar/feeds/erin", Some(API_KEY)).await;
    assert_eq!((s, v["revoked"].clone()), (StatusCode::OK, json!(true)));
    let (s, v) = send(&dropped, Method::POST, "/api/calendar/feeds/erin", Some(API_KEY)).await;
    assert_eq!((s, v["created"].clone()), (StatusCode::OK, json!(true)), "{v}");
    artifacts::record_secret(
        "ics-feed-token",
        v["feed_url"].as_str().unwrap().rsplit('/').next().unwrap().trim_end_matches(".ics"),
    );
    assert_eq!(send(&dropped, Method::GET, &feed, None).await.0, StatusCode::NOT_FOUND);
}
