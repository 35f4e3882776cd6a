//! Edges around the endpoints: OAuth callbacks, the 202 pending answer, the rate limit, CORS,
//! and the unauthenticated health/metrics endpoints plus the OpenAPI document.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use calsync::api::ApiConfig;
use serde_json::json;

use crate::support::{API_KEY, Harness, config};

#[tokio::test]
async fn oauth_callbacks_always_redirect() {
    let h = Harness::without_engine(config());
    for (uri, reason) in [
        ("/api/calendar/google/callback", "missing_code_or_state"),
        ("/api/calendar/google/callback?error=access_denied&state=x", "access_denied"),
        ("/api/calendar/outlook/callback?code=c&state=s", "provider_not_configured"),
        ("/api/calendar/outlook/callback?error=%3Cscript%3E", "provider_error"),
        ("/api/calendar/google/callback?code=%ZZ", "missing_code_or_state"),
    ] {
        let (s, headers, _) = h.raw(Method::GET, uri, None, None, &[]).await;
        assert_eq!(s, StatusCode::FOUND, "{uri}");
        let loc = headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let kind = if uri.contains("google") { "google" } else { "outlook" };
        assert_eq!(
            loc,
            format!("https://app.example/calendar-connected?type={kind}&status=error&reason={reason}"),
            "{uri}"
        );
    }
}

#[tokio::test]
async fn slow_engine_gives_202_pending() {
    let h = Harness::without_engine(ApiConfig { sync_wait: Duration::from_millis(300), ..config() });
    h.connect_apple("carol").await;
    let body = json!({"user_id": "carol", "task_data": {"id": "t", "name": "n", "scheduled_time": "2030-01-01T10:00:00+02:00"}});
    let (s, v) = h.call(Method::POST, "/api/calendar/task-to-calendar", Some(body)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v, json!({"success": true, "pending": true, "event_id": null, "event_link": null}));
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let h = Harness::without_engine(ApiConfig { rate_limit_per_minute: 3, ..config() });
    for _ in 0..3 {
        let (s, _) = h.call(Method::GET, "/api/calendar/connection-status/dave", None).await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, headers, v) = h.raw(Method::GET, "/api/calendar/connection-status/dave", Some(API_KEY), None, &[]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(v, json!({"error": "Rate limit exceeded", "code": "rate_limited"}));
    let after: u64 =
        headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!((1..=60).contains(&after), "{after}");
    // Another user is not affected.
    let (s, _) = h.call(Method::GET, "/api/calendar/connection-status/erin", None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn cors_allows_only_listed_origins() {
    let h = Harness::without_engine(config());
    let preflight = |origin: &'static str| {
        vec![
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "authorization,content-type"),
        ]
    };
    let (_, headers, _) =
        h.raw(Method::OPTIONS, "/api/calendar/task-to-calendar", None, None, &preflight("https://app.example")).await;
    assert_eq!(headers.get("access-control-allow-origin").and_then(|v| v.to_str().ok()), Some("https://app.example"));
    let (_, headers, _) =
        h.raw(Method::OPTIONS, "/api/calendar/task-to-calendar", None, None, &preflight("https://evil.example")).await;
    assert!(headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn health_and_metrics_need_no_token_openapi_lists_every_path() {
    let h = Harness::without_engine(config());
    let (s, _, v) = h.raw(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, _, v) = h.raw(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ready")));
    let (s, _, v) = h.raw(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    let text = v.as_str().expect("metrics text");
    assert!(text.contains("calsync_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1"), "{text}");
    let (s, _, _) = h.raw(Method::GET, "/api/calendar/openapi.json", None, None, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the document needs a token (DESIGN §6)");
    let (s, _, doc) = h.raw(Method::GET, "/api/calendar/openapi.json", Some(API_KEY), None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    let paths = doc["paths"].as_object().expect("paths");
    let mut names: Vec<&str> = paths.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "/api/calendar/apple/connect",
            "/api/calendar/calendar-to-tasks",
            "/api/calendar/conflicts/{user_id}",
            "/api/calendar/connect/{calendar_type}",
            "/api/calendar/connection-status/{user_id}",
            "/api/calendar/delete-event",
            "/api/calendar/disconnect/{user_id}",
            "/api/calendar/feeds/{token}.ics",
            "/api/calendar/feeds/{user_id}",
            "/api/calendar/google/callback",
            "/api/calendar/outlook/callback",
            "/api/calendar/preferences/{user_id}",
            "/api/calendar/resolve-conflict",
            "/api/calendar/suggest-times",
            "/api/calendar/sync-history/{user_id}",
            "/api/calendar/task-to-calendar",
            "/api/calendar/tasks-to-calendar",
            "/api/calendar/update-event",
        ]
    );
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // Every schema a path refers to is in the document (e.g. task_data.auto_schedule's).
    let text = doc.to_string();
    for name in text.split("\"#/components/schemas/").skip(1).filter_map(|r| r.split('"').next()) {
        assert!(doc["components"]["schemas"][name].is_object(), "{name} is referred to but not defined");
    }
    assert!(doc["components"]["schemas"]["AutoSchedule"]["properties"]["deadline"].is_object());
}
