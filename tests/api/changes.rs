//! calendar-to-tasks with a cursor on the memory calendar, with the real engine: created,
//! updated and deleted events reach the app once each, ours never do, bad cursors are refused.

use axum::http::{Method, StatusCode};
use calsync::providers::{EventTime, RemoteEvent};
use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crate::support::{Harness, config};

fn external(id: &str, title: &str, hours_from_now: i64) -> RemoteEvent {
    let start = Utc::now() + Duration::hours(hours_from_now);
    let start = chrono::DateTime::from_timestamp(start.timestamp(), 0).expect("time");
    let end = start + Duration::minutes(30);
    RemoteEvent {
        id: id.into(),
        etag: None,
        link: None,
        title: title.into(),
        description: None,
        category: None,
        start: EventTime::DateTime { utc: start, local: start.naive_utc(), zone: None },
        end: EventTime::DateTime { utc: end, local: end.naive_utc(), zone: None },
        zone: None,
        recurrence: vec![],
        marker: None,
        cancelled: false,
        created: None,
        exceptions: Vec::new(),
    }
}

async fn pull(h: &Harness, user: &str, cursor: &str) -> Value {
    let (s, v) =
        h.call(Method::POST, "/api/calendar/calendar-to-tasks", Some(json!({"user_id": user, "cursor": cursor}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["tasks"].as_array().is_some_and(|t| t.is_empty()), "{v}");
    v
}

fn changes(v: &Value) -> Vec<(String, String)> {
    v["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| (c["change"].as_str().unwrap().to_string(), c["calendar_event_id"].as_str().unwrap().to_string()))
        .collect()
}

fn cursor_of(v: &Value) -> String {
    v["cursor"].as_str().expect("cursor").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_since_a_cursor_arrive_once_and_ours_stay_out() {
    let h = Harness::with_engine(config());
    let user = "cursor_user";
    h.connect_apple(user).await;
    h.calendar.insert_external("calendar", external("before-1", "Already there", 5));

    // Without a cursor: today's answer plus a cursor.
    let (s, v) = h.call(Method::POST, "/api/calendar/calendar-to-tasks", Some(json!({"user_id": user}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["count"], 1, "{v}");
    assert!(v.get("changes").is_none(), "{v}");
    let mut cursor = cursor_of(&v);
    assert!(!cursor.contains(user), "the cursor is opaque");

    // Nothing happened: no changes.
    let v = pull(&h, user, &cursor).await;
    assert_eq!(changes(&v), vec![], "{v}");
    cursor = cursor_of(&v);

    // One of ours: created through the API, it never shows up as a change.
    let task = json!({"user_id": user, "task_data": {"id": "t-1", "name": "Essay", "scheduled_time": (Utc::now() + Duration::hours(30)).format("%Y-%m-%dT%H:00:00").to_string(), "timezone": "UTC"}});
    let (s, v) = h.call(Method::POST, "/api/calendar/task-to-calendar", Some(task)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let ours = v["event_id"].as_str().unwrap().to_string();

    // Created, then updated, then deleted in the calendar app: one change each, in order.
    h.calendar.insert_external("calendar", external("new-1", "Dentist", 26));
    let v = pull(&h, user, &cursor).await;
    assert_eq!(changes(&v), vec![("created".into(), "new-1".into())], "{v}");
    assert_eq!(v["changes"][0]["task"]["name"], "Dentist");
    assert_eq!(v["changes"][0]["calendar_source"], "apple");
    assert_eq!(v["count"], 1);
    cursor = cursor_of(&v);

    assert!(h.calendar.edit_external("calendar", "before-1", |e| e.title = "Moved".into()));
    let v = pull(&h, user, &cursor).await;
    assert_eq!(changes(&v), vec![("updated".into(), "before-1".into())], "{v}");
    assert_eq!(v["changes"][0]["task"]["name"], "Moved");
    cursor = cursor_of(&v);

    assert!(h.calendar.delete_external("calendar", "new-1"));
    let v = pull(&h, user, &cursor).await;
    assert_eq!(changes(&v), vec![("deleted".into(), "new-1".into())], "{v}");
    assert!(v["changes"][0].get("task").is_none(), "{v}");
    cursor = cursor_of(&v);

    // Our event edited in the calendar app: in updated_tasks, not in changes.
    assert!(h.calendar.edit_external("calendar", &ours, |e| e.title = "Essay (moved by hand)".into()));
    let v = pull(&h, user, &cursor).await;
    assert_eq!(changes(&v), vec![], "{v}");
    assert_eq!(v["updated_tasks"][0]["task_id"], "t-1", "{v}");
    cursor = cursor_of(&v);

    // Our event deleted through the API: not an imported event going away.
    let (s, v) =
        h.call(Method::DELETE, "/api/calendar/delete-event", Some(json!({"user_id": user, "event_id": ours}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v = pull(&h, user, &cursor).await;
    assert_eq!(changes(&v), vec![], "{v}");

    // The cursor is bound to the user and to this server.
    h.connect_apple("someone_else").await;
    let (s, v) = h
        .call(
            Method::POST,
            "/api/calendar/calendar-to-tasks",
            Some(json!({"user_id": "someone_else", "cursor": cursor_of(&v)})),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{v}");
    for bad in ["", "not-a-cursor", "AAAA", &"x".repeat(40_000)] {
        let (s, v) = h
            .call(Method::POST, "/api/calendar/calendar-to-tasks", Some(json!({"user_id": user, "cursor": bad})))
            .await;
        assert_eq!((s, v["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_cursor")), "{bad:.10}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_provider_token_is_410_and_a_fresh_pull_recovers() {
    let h = Harness::with_engine(config());
    let user = "expiry_user";
    h.connect_apple(user).await;
    let (_, v) = h.call(Method::POST, "/api/calendar/calendar-to-tasks", Some(json!({"user_id": user}))).await;
    let cursor = cursor_of(&v);
    h.calendar.insert_external("calendar", external("e-1", "Lost in the gap", 3));
    h.calendar.expire_cursors();
    let (s, v) =
        h.call(Method::POST, "/api/calendar/calendar-to-tasks", Some(json!({"user_id": user, "cursor": cursor}))).await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::GONE, Some("cursor_expired")), "{v}");
    let (s, v) =
        h.call(Method::POST, "/api/calendar/calendar-to-tasks", Some(json!({"user_id": user, "refresh": true}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["tasks"][0]["calendar_event_id"], "e-1", "{v}");
    let v = pull(&h, user, &cursor_of(&v)).await;
    assert_eq!(changes(&v), vec![], "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnected_calendar_continues_from_the_cursor() {
    let h = Harness::with_engine(config());
    let user = "late_user";
    h.connect_apple(user).await;
    let (_, v) = h.call(Method::POST, "/api/calendar/calendar-to-tasks", Some(json!({"user_id": user}))).await;
    let cursor = cursor_of(&v);
    let (s, v) = h.call(Method::POST, &format!("/api/calendar/disconnect/{user}"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) =
        h.call(Method::POST, "/api/calendar/calendar-to-tasks", Some(json!({"user_id": user, "cursor": cursor}))).await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::BAD_REQUEST, Some("not_connected")), "{v}");
    h.calendar.insert_external("calendar", external("x-1", "Seen on reconnect", 4));
    h.connect_apple(user).await;
    let v = pull(&h, user, &cursor).await;
    // Same connection name again: its old mark still holds, so the change since then shows.
    assert!(changes(&v).contains(&("created".to_string(), "x-1".to_string())), "{v}");
}
