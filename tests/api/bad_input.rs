//! Bad input, table-driven: every case gets the fitting 4xx with a JSON `{error, code}` body,
//! nothing is stored, and the server keeps serving. Plus auth, rate limit, CORS, health,
//! metrics and the OpenAPI document.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{API_KEY, Harness, config, jwt};

struct Case {
    name: &'static str,
    method: Method,
    uri: &'static str,
    token: Option<String>,
    body: Option<String>,
    headers: Vec<(&'static str, &'static str)>,
    status: StatusCode,
    code: &'static str,
}

fn case(
    name: &'static str,
    method: Method,
    uri: &'static str,
    body: Option<Value>,
    status: StatusCode,
    code: &'static str,
) -> Case {
    Case {
        name,
        method,
        uri,
        token: Some(API_KEY.into()),
        body: body.map(|b| b.to_string()),
        headers: vec![],
        status,
        code,
    }
}

fn task(data: Value) -> Value {
    json!({"user_id": "alice", "task_data": data})
}

#[tokio::test]
async fn bad_input_gets_4xx_json_and_changes_nothing() {
    let h = Harness::with_engine(config());
    h.connect_apple("alice").await;
    // A real event of alice's, to aim other users' requests at.
    let (s, v) = h
        .call(
            Method::POST,
            "/api/calendar/task-to-calendar",
            Some(task(json!({"id": "t1", "name": "n", "scheduled_time": "2030-01-01T10:00:00Z"}))),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let alice_event = v["event_id"].as_str().unwrap().to_string();
    let alice_event: &'static str = Box::leak(alice_event.into_boxed_str());
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut cases = vec![
        case(
            "invalid json",
            Method::POST,
            "/api/calendar/task-to-calendar",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        case(
            "missing task_data",
            Method::POST,
            "/api/calendar/task-to-calendar",
            Some(json!({"user_id": "alice"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        case(
            "wrong-typed user_id",
            Method::POST,
            "/api/calendar/task-to-calendar",
            Some(json!({"user_id": true, "task_data": {}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        case(
            "wrong-typed duration",
            Method::POST,
            "/api/calendar/task-to-calendar",
            Some(task(json!({"id": "t2", "name": "n", "scheduled_time": "2030-01-01", "duration_minutes": "long"}))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        case(
            "unknown field",
            Method::POST,
            "/api/calendar/task-to-calendar",
            Some(task(json!({"id": "t2", "name": "n", "scheduled_time": "2030-01-01", "colour": "red"}))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        case(
            "empty name",
            Method::POST,
            "/api/calendar/task-to-calendar",
            Some(task(json!({"id": "t2", "name": "", "scheduled_time": "2030-01-01"}))),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        case(
            "bad date",
            Method::POST,
            "/api/calendar/task-to-calendar",
            Some(task(
                json!({"id": "t2", "name": "n", "scheduled_time": "2030-02-30T10:00:00", "timezone": "Europe/Berlin"}),
            )),
            StatusCode::BAD_REQUEST,
            "invalid_time",
        ),
        case(
            "not a date",
            Method::POST,
            "/api/calendar/task-to-calendar",
            Some(task(json!({"id": "t2", "name": "n", "scheduled_time": "next tuesday"}))),
            StatusCode::BAD_REQUEST,
            "invalid_time",
        ),
        case(
            "bad zone",
            Method::POST,
            "/api/calendar/task-to-calendar",
            Some(task(
                json!({"id": "t2", "name": "n", "scheduled_time": "2030-01-01T10:00:00", "timezone": "Mars/Olympus"}),
            )),
            StatusCode::BAD_REQUEST,
            "invalid_timezone",
        ),
        case(
            "local time without zone",
            Method::POST,
            "/api/calendar/task-to-calendar",
            Some(task(json!({"id": "t2", "name": "n", "scheduled_time": "2030-01-01T10:00:00"}))),
            StatusCode::BAD_REQUEST,
            "timezone_required",
        ),
        case(
            "DST gap",
            Method::POST,
            "/api/calendar/task-to-calendar",
            Some(task(
                json!({"id": "t2", "name": "n", "scheduled_time": "2030-03-31T02:30:00", "timezone": "Europe/Berlin"}),
            )),
            StatusCode::BAD_REQUEST,
            "invalid_task",
        ),
        case(
            "zero duration",
            Method::POST,
            "/api/calendar/task-to-calendar",
            Some(task(
                json!({"id": "t2", "name": "n", "scheduled_time": "2030-01-01T10:00:00Z", "duration_minutes": 0}),
            )),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        case(
            "unknown calendar_type in body",
            Method::POST,
            "/api/calendar/task-to-calendar",
            Some(
                json!({"user_id": "alice", "calendar_type": "yahoo", "task_data": {"id": "t2", "name": "n", "scheduled_time": "2030-01-01"}}),
            ),
            StatusCode::BAD_REQUEST,
            "unknown_calendar_type",
        ),
        case(
            "calendar not connected",
            Method::POST,
            "/api/calendar/task-to-calendar",
            Some(
                json!({"user_id": "alice", "calendar_type": "google", "task_data": {"id": "t2", "name": "n", "scheduled_time": "2030-01-01"}}),
            ),
            StatusCode::BAD_REQUEST,
            "not_connected",
        ),
        case(
            "user never connected",
            Method::POST,
            "/api/calendar/task-to-calendar",
            Some(json!({"user_id": "nobody", "task_data": {"id": "t2", "name": "n", "scheduled_time": "2030-01-01"}})),
            StatusCode::BAD_REQUEST,
            "not_connected",
        ),
        case(
            "unknown calendar type",
            Method::POST,
            "/api/calendar/connect/yahoo",
            Some(json!({"user_id": "alice"})),
            StatusCode::BAD_REQUEST,
            "unknown_calendar_type",
        ),
        case(
            "google not configured",
            Method::POST,
            "/api/calendar/connect/google",
            Some(json!({"user_id": "alice"})),
            StatusCode::BAD_REQUEST,
            "provider_not_configured",
        ),
        case(
            "apple connect bad url",
            Method::POST,
            "/api/calendar/apple/connect",
            Some(json!({"user_id": "alice", "apple_id": "user", "app_password": "secret", "server_url": "ftp://x"})),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        case(
            "apple connect wrong password",
            Method::POST,
            "/api/calendar/apple/connect",
            Some(json!({"user_id": "bob", "apple_id": "user", "app_password": "nope-nope"})),
            StatusCode::BAD_REQUEST,
            "invalid_credentials",
        ),
        case(
            "apple connect password typed",
            Method::POST,
            "/api/calendar/apple/connect",
            Some(json!({"user_id": "bob", "apple_id": "user", "app_password": 12345678})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        case(
            "unknown event id (update)",
            Method::PUT,
            "/api/calendar/update-event",
            Some(json!({"user_id": "alice", "event_id": "nope", "task_data": {"name": "x"}})),
            StatusCode::NOT_FOUND,
            "event_not_found",
        ),
        case(
            "unknown event id (delete)",
            Method::DELETE,
            "/api/calendar/delete-event",
            Some(json!({"user_id": "alice", "event_id": "nope"})),
            StatusCode::NOT_FOUND,
            "event_not_found",
        ),
        case(
            "another user's event (api key)",
            Method::DELETE,
            "/api/calendar/delete-event",
            Some(json!({"user_id": "mallory", "event_id": alice_event})),
            StatusCode::NOT_FOUND,
            "event_not_found",
        ),
        case(
            "update with a bad time",
            Method::PUT,
            "/api/calendar/update-event",
            Some(json!({"user_id": "alice", "event_id": alice_event, "task_data": {"scheduled_time": "soon"}})),
            StatusCode::BAD_REQUEST,
            "invalid_time",
        ),
        case(
            "history limit not a number",
            Method::GET,
            "/api/calendar/sync-history/alice?limit=abc",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        case(
            "history limit zero",
            Method::GET,
            "/api/calendar/sync-history/alice?limit=0",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        case(
            "disconnect unknown type",
            Method::POST,
            "/api/calendar/disconnect/alice?calendar_type=yahoo",
            None,
            StatusCode::BAD_REQUEST,
            "unknown_calendar_type",
        ),
        case(
            "window_days out of range",
            Method::POST,
            "/api/calendar/calendar-to-tasks",
            Some(json!({"user_id": "alice", "window_days": 0})),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        case("unknown path", Method::GET, "/api/calendar/nope", None, StatusCode::NOT_FOUND, "not_found"),
        case(
            "wrong method",
            Method::GET,
            "/api/calendar/task-to-calendar",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        case(
            "control characters in user id",
            Method::POST,
            "/api/calendar/connect/apple",
            Some(json!({"user_id": "a\u{7}b"})),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
    ];
    let raw =
        |name,
         method,
         uri: &'static str,
         token: Option<String>,
         body: Option<&str>,
         headers: Vec<(&'static str, &'static str)>,
         status,
         code| Case { name, method, uri, token, body: body.map(String::from), headers, status, code };
    cases[0].body = Some("{\"user_id\": \"alice\", ".into());
    cases.extend([
        raw(
            "no token",
            Method::POST,
            "/api/calendar/connect/apple",
            None,
            Some("{\"user_id\":\"alice\"}"),
            vec![],
            StatusCode::UNAUTHORIZED,
            "missing_token",
        ),
        raw(
            "wrong key",
            Method::POST,
            "/api/calendar/connect/apple",
            Some("not-a-key".into()),
            Some("{\"user_id\":\"alice\"}"),
            vec![],
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
        raw(
            "expired jwt",
            Method::POST,
            "/api/calendar/connect/apple",
            Some(jwt("alice", -3600)),
            Some("{\"user_id\":\"alice\"}"),
            vec![],
            StatusCode::UNAUTHORIZED,
            "token_expired",
        ),
        raw(
            "jwt for another user",
            Method::GET,
            "/api/calendar/sync-history/alice",
            Some(jwt("mallory", 600)),
            None,
            vec![],
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        raw(
            "jwt acting on another user's event",
            Method::DELETE,
            "/api/calendar/delete-event",
            Some(jwt("mallory", 600)),
            Some(&*Box::leak(json!({"user_id": "mallory", "event_id": alice_event}).to_string().into_boxed_str())),
            vec![],
            StatusCode::NOT_FOUND,
            "event_not_found",
        ),
        raw(
            "jwt with user_id of another",
            Method::DELETE,
            "/api/calendar/delete-event",
            Some(jwt("mallory", 600)),
            Some(&*Box::leak(json!({"user_id": "alice", "event_id": alice_event}).to_string().into_boxed_str())),
            vec![],
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        raw(
            "no content type",
            Method::POST,
            "/api/calendar/connect/apple",
            Some(API_KEY.into()),
            Some("{\"user_id\":\"alice\"}"),
            vec![("content-type", "text/plain")],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
    ]);
    let big = json!({"user_id": "alice", "task_data": {"id": "t3", "name": "x".repeat(70 * 1024), "scheduled_time": "2030-01-01"}}).to_string();
    cases.push(Case {
        name: "oversized body",
        method: Method::POST,
        uri: "/api/calendar/task-to-calendar",
        token: Some(API_KEY.into()),
        body: Some(big),
        headers: vec![],
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: "payload_too_large",
    });

    let events_before = h.calendar.events("calendar");
    h.objects.clear_writes();
    for c in cases {
        let (status, _, body) = h.raw(c.method.clone(), c.uri, c.token.as_deref(), c.body.clone(), &c.headers).await;
        assert_eq!(status, c.status, "{}: {body}", c.name);
        assert_eq!(body["code"], c.code, "{}: {body}", c.name);
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{}: {body}", c.name);
        let text = body.to_string();
        for secret in ["secret", "nope-nope", "12345678", API_KEY, crate::support::JWT_SECRET] {
            assert!(!text.contains(secret), "{}: response leaks a secret: {text}", c.name);
        }
    }
    assert_eq!(h.objects.writes(), vec![], "bad input must store nothing");
    assert_eq!(h.calendar.events("calendar"), events_before, "bad input must not touch the calendar");
    // Still serving.
    let (s, _, _) = h.raw(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    // Seed messages are kept.
    let (_, _, v) = h.raw(Method::GET, "/api/calendar/sync-history/alice", Some(&jwt("alice", -3600)), None, &[]).await;
    assert_eq!(v["error"], "Token has expired");
    let (_, _, v) = h.raw(Method::GET, "/api/calendar/sync-history/alice", Some("garbage"), None, &[]).await;
    assert_eq!(v["error"], "Invalid authentication credentials");
    // A JWT acting for its own user works.
    let (s, _, v) = h.raw(Method::GET, "/api/calendar/sync-history/alice", Some(&jwt("alice", 600)), None, &[]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn unknown_fields_are_named_on_every_endpoint() {
    let h = Harness::without_engine(config());
    let task = json!({"id": "t", "name": "n", "scheduled_time": "2030-01-01"});
    for (method, uri, mut body) in [
        (
            Method::POST,
            "/api/calendar/apple/connect",
            json!({"user_id": "u", "apple_id": "a", "app_password": "p-secret-1"}),
        ),
        (Method::POST, "/api/calendar/task-to-calendar", json!({"user_id": "u", "task_data": task.clone()})),
        (Method::POST, "/api/calendar/tasks-to-calendar", json!({"user_id": "u", "tasks": [task.clone()]})),
        (Method::POST, "/api/calendar/calendar-to-tasks", json!({"user_id": "u"})),
        (Method::PUT, "/api/calendar/update-event", json!({"user_id": "u", "event_id": "e", "task_data": {}})),
        (Method::DELETE, "/api/calendar/delete-event", json!({"user_id": "u", "event_id": "e"})),
        (Method::POST, "/api/calendar/resolve-conflict", json!({"user_id": "u", "task_id": "t", "keep": "task"})),
    ] {
        // (`dedicated_calendar`, the example, is a field of /apple/connect now.)
        body["dedicated_calendars"] = json!(true);
        let (s, v) = h.call(method.clone(), uri, Some(body)).await;
        assert!(s.is_client_error(), "{uri}: {s}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(msg.contains("unknown field `dedicated_calendars`"), "{uri}: {v}");
        assert!(!msg.contains("p-secret-1"), "{uri}: {v}");
    }
}
