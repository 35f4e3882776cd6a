//! The fake Graph itself is strict where calsync relies on Graph being strict: these tests
//! speak raw HTTP to it (no calsync code), so a lax fake cannot make the Outlook tests pass.

mod support;

use std::sync::Arc;

use serde_json::{Value, json};
use support::fake_graph::odata::{
    PropFilter, ValueCond, id_ok, parse_bound, parse_expand, parse_filter, parse_local, same_prop,
};
use support::fake_graph::{DuplicatePost, FakeGraph, TokenValidator};

const ID: &str = "String {6A8B3C1E-94D2-4F0B-B7A5-2C9E1D4F8A63} Name calsyncKey";

#[test]
fn filter_syntax_is_parsed_strictly() {
    let f = parse_filter(&format!("singleValueExtendedProperties/Any(ep: ep/id eq '{ID}' and ep/value eq 'cs''1')"))
        .unwrap();
    assert_eq!(f, PropFilter { id: ID.into(), value: Some(ValueCond::Eq("cs'1".into())) });
    let f = parse_filter(&format!(
        "singleValueExtendedProperties/any(x:x/id eq '{ID}' and startswith(x/value, 'v1;o;u;'))"
    ))
    .unwrap();
    assert_eq!(f.value, Some(ValueCond::StartsWith("v1;o;u;".into())));
    assert!(parse_filter(&format!("singleValueExtendedProperties/Any(ep: ep/id eq '{ID}')")).unwrap().value.is_none());
    for bad in [
        "subject eq 'x'".to_string(),
        "singleValueExtendedProperties/Any(ep: ep/value eq 'x')".to_string(),
        format!("singleValueExtendedProperties/Any(ep: ep/id eq '{ID}' and ep/value gt 'x')"),
        "singleValueExtendedProperties/Any(ep: ep/id eq 'TestProperty' and ep/value eq 'x')".to_string(),
        format!("singleValueExtendedProperties/Any(ep: ep/id eq '{ID}' and ep/value eq 'x') and true"),
        format!("singleValueExtendedProperties/Any(ep: ep/id eq '{ID}' and ep/value eq 'x"),
    ] {
        assert!(parse_filter(&bad).is_err(), "{bad}");
    }
}

#[test]
fn expand_ids_bounds_and_ids() {
    let e = parse_expand(&format!("singleValueExtendedProperties($filter=id eq '{ID}' or id eq '{ID}')")).unwrap();
    assert_eq!(e.len(), 2);
    assert!(parse_expand("extensions").is_err());
    assert!(same_prop(ID, &ID.to_lowercase().replace("name calsynckey", "Name calsyncKey")));
    assert!(!same_prop(ID, &ID.replace("calsyncKey", "CalsyncKey")));
    assert_eq!(parse_bound("2031-05-14T00:00:00Z"), parse_bound("2031-05-14T00:00:00"));
    assert_eq!(parse_bound("2031-05-14T02:00:00+02:00"), parse_bound("2031-05-14T00:00:00.000"));
    assert!(parse_bound("tomorrow").is_none());
    assert!(parse_local("2031-05-14T00:00:00Z").is_none(), "an offset in a Graph dateTime is refused");
    assert!(id_ok("AAMkAGI2THVSAAA=") && !id_ok("no-such-event-1234"));
}

struct Raw {
    fake: FakeGraph,
    http: reqwest::Client,
}

impl Raw {
    async fn start() -> Raw {
        Raw { fake: FakeGraph::start("tok").await, http: reqwest::Client::new() }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.http.request(m, format!("{}{path}", self.fake.url)).bearer_auth("tok");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b.to_string());
        }
        let resp = r.send().await.expect("fake Graph answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null), headers)
    }

    async fn code(&self, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        let (s, v, _) = self.send(method, path, &[], body).await;
        (s, v["error"]["code"].as_str().unwrap_or_default().to_string())
    }
}

fn event_body() -> Value {
    json!({"subject": "x", "start": {"dateTime": "2031-06-03T10:00:00", "timeZone": "Europe/Berlin"},
           "end": {"dateTime": "2031-06-03T11:00:00", "timeZone": "Europe/Berlin"}})
}

#[tokio::test]
async fn event_bodies_are_checked_like_graph_does() {
    let raw = Raw::start().await;
    let cal = raw.fake.default_calendar();
    let post = format!("/me/calendars/{cal}/events");
    let with = |k: &str, v: Value| {
        let mut b = event_body();
        b[k] = v;
        b
    };
    for (body, code) in [
        (with("colour", json!("red")), "RequestBodyRead"),
        (with("start", json!({"dateTime": "2031-06-03T10:00:00Z", "timeZone": "UTC"})), "ErrorInvalidRequest"),
        (
            with("start", json!({"dateTime": "2031-06-03T10:00:00", "timeZone": "Mars/Olympus"})),
            "TimeZoneNotSupportedException",
        ),
        (with("isAllDay", json!(true)), "ErrorPropertyValidationFailure"),
        (with("singleValueExtendedProperties", json!([{"id": "TestProperty", "value": "v"}])), "ErrorInvalidProperty"),
        (
            with(
                "recurrence",
                json!({"pattern": {"type": "weekly", "interval": 1}, "range": {"type": "noEnd", "startDate": "2031-06-03"}}),
            ),
            "ErrorInvalidRequest",
        ),
        (json!({"subject": "no times"}), "ErrorInvalidRequest"),
    ] {
        assert_eq!(raw.code("POST", &post, Some(body.clone())).await, (400, code.to_string()), "{body}");
    }
    let ro = raw.fake.calendar_named("Birthdays");
    assert_eq!(raw.code("POST", &format!("/me/calendars/{ro}/events"), Some(event_body())).await.0, 403);
    assert!(raw.fake.all().is_empty(), "nothing refused was stored");

    let (s, created, _) = raw.send("POST", &post, &[], Some(with("transactionId", json!("tx1")))).await;
    assert_eq!(s, 201);
    let id = created["id"].as_str().unwrap().to_string();
    let etag = created["@odata.etag"].as_str().unwrap().to_string();
    assert!(etag.starts_with("W/\""), "{etag}");
    assert_eq!(
        created["start"],
        json!({"dateTime": "2031-06-03T08:00:00.0000000", "timeZone": "UTC"}),
        "UTC unless asked otherwise"
    );
    assert_eq!(created["originalStartTimeZone"], "Europe/Berlin");
    // A repeated transactionId under the default switch: the same event, 201.
    let (s, again, _) = raw.send("POST", &post, &[], Some(with("transactionId", json!("tx1")))).await;
    assert_eq!((s, again["id"].as_str()), (201, Some(id.as_str())));
    raw.fake.switches(|s| s.duplicate_post = DuplicatePost::CreateDuplicate);
    let (_, dup, _) = raw.send("POST", &post, &[], Some(with("transactionId", json!("tx1")))).await;
    assert_ne!(dup["id"], created["id"], "the harsh switch makes a second event");

    let path = format!("/me/events/{id}");
    assert_eq!(
        raw.code("PATCH", &path, Some(json!({"transactionId": "other"}))).await,
        (400, "ErrorInvalidRequest".into())
    );
    let (s, patched, _) = raw.send("PATCH", &path, &[("if-match", &etag)], Some(json!({"subject": "y"}))).await;
    assert_eq!(s, 200);
    assert_ne!(patched["@odata.etag"].as_str(), Some(etag.as_str()), "every write changes the etag");
    let (s, v, _) = raw.send("PATCH", &path, &[("if-match", &etag)], Some(json!({"subject": "z"}))).await;
    assert_eq!((s, v["error"]["code"].as_str()), (412, Some("ErrorIrresolvableConflict")));
    assert_eq!(raw.send("DELETE", &path, &[("if-match", &etag)], None).await.0, 412);
    assert_eq!(raw.code("GET", "/me/events/not-an-id", None).await, (400, "ErrorInvalidIdMalformed".into()));
    assert_eq!(raw.send("DELETE", &path, &[], None).await.0, 204);
    assert_eq!(raw.code("GET", &path, None).await, (404, "ErrorItemNotFound".into()));
}

#[tokio::test]
async fn queries_are_checked_like_graph_does() {
    let raw = Raw::start().await;
    let cal = raw.fake.default_calendar();
    let view = format!("/me/calendars/{cal}/calendarView");
    assert_eq!(raw.code("GET", &view, None).await, (400, "ErrorInvalidParameter".into()), "a window is required");
    let w = "startDateTime=2031-06-01T00:00:00Z&endDateTime=2031-06-10T00:00:00Z";
    assert_eq!(raw.send("GET", &format!("{view}?{w}"), &[], None).await.0, 200);
    let delta = format!("/me/calendars/{cal}/calendarView/delta?{w}");
    for extra in
        ["$expand=singleValueExtendedProperties", "$filter=subject%20eq%20%27x%27", "$select=subject", "$top=5"]
    {
        assert_eq!(
            raw.code("GET", &format!("{delta}&{extra}"), None).await,
            (400, "ErrorInvalidUrlQuery".into()),
            "{extra}"
        );
    }
    assert_eq!(raw.code("GET", &format!("{view}?{w}&$search=x"), None).await.0, 400, "unsupported options are refused");
    let events = format!("/me/calendars/{cal}/events");
    assert_eq!(raw.code("GET", &format!("{events}?$filter=subject%20eq%20%27x%27"), None).await.0, 400);
    let (s, _, _) = raw.send("GET", &format!("{view}?{w}"), &[("prefer", "outlook.timezone=\"Nowhere\"")], None).await;
    assert_eq!(s, 400);
    // Delta: a round ends in a deltaLink; an expired one is 410 syncStateNotFound.
    let (_, first, _) = raw.send("GET", &delta, &[], None).await;
    let link = first["@odata.deltaLink"].as_str().expect("deltaLink").to_string();
    let path = link.strip_prefix(&raw.fake.url).unwrap().to_string();
    assert_eq!(raw.send("GET", &path, &[], None).await.0, 200);
    raw.fake.expire_delta_tokens();
    assert_eq!(raw.code("GET", &path, None).await, (410, "syncStateNotFound".into()));
}

#[tokio::test]
async fn auth_throttling_and_the_validator_hook() {
    let raw = Raw::start().await;
    let r = raw.http.get(format!("{}/me/calendars", raw.fake.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    raw.fake.rotate_token("tok2");
    assert_eq!(raw.code("GET", "/me/calendars", None).await, (401, "InvalidAuthenticationToken".into()));
    raw.fake.rotate_token("tok");
    raw.fake.switches(|s| {
        s.throttle_next = 2;
        s.throttle_retry_after = 9;
    });
    for _ in 0..2 {
        let (s, _, h) = raw.send("GET", "/me/calendars", &[], None).await;
        assert_eq!((s, h.get("retry-after").and_then(|v| v.to_str().ok())), (429, Some("9")));
    }
    assert_eq!(raw.send("GET", "/me/calendars", &[], None).await.0, 200);
    // An async validator (e.g. token introspection) decides instead of the static token.
    let validator: TokenValidator = Arc::new(|t: String| Box::pin(async move { t.starts_with("introspected-") }));
    let fake = FakeGraph::start_with("unused", Some(validator)).await;
    let get = |t: &'static str| reqwest::Client::new().get(format!("{}/me/calendars", fake.url)).bearer_auth(t).send();
    assert_eq!(get("introspected-1").await.unwrap().status(), 200);
    assert_eq!(get("unused").await.unwrap().status(), 401);
}
