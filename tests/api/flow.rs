//! The seed's Apple flow end to end on the memory calendar, with the real engine.

use axum::http::{Method, StatusCode};
use calsync::providers::{EventTime, RemoteEvent};
use chrono::{Duration, Utc};
use serde_json::json;

use crate::support::{Harness, config};

fn external_event(id: &str, title: &str, hours_from_now: i64) -> RemoteEvent {
    let start = Utc::now() + Duration::hours(hours_from_now);
    let start = chrono::DateTime::from_timestamp(start.timestamp(), 0).expect("time");
    let end = start + Duration::minutes(30);
    RemoteEvent {
        id: id.into(),
        etag: None,
        link: Some(format!("memory://calendar/{id}")),
        title: title.into(),
        description: None,
        category: None,
        start: EventTime::DateTime { utc: start, local: start.naive_utc(), zone: Some("Europe/Berlin".into()) },
        end: EventTime::DateTime { utc: end, local: end.naive_utc(), zone: Some("Europe/Berlin".into()) },
        zone: Some("Europe/Berlin".into()),
        recurrence: vec![],
        marker: None,
        cancelled: false,
        created: None,
        exceptions: Vec::new(),
    }
}

fn ours(h: &Harness) -> Vec<RemoteEvent> {
    h.calendar.events("calendar").into_iter().filter(|e| e.marker.is_some() && !e.cancelled).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apple_flow_end_to_end() {
    let h = Harness::with_engine(config());
    let user = "test_user_123";

    // 1. connect/apple gives the instructions.
    let (s, v) = h.call(Method::POST, "/api/calendar/connect/apple", Some(json!({"user_id": user}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["calendar_type"], "apple");
    assert!(v["instructions"].as_str().unwrap().contains("appleid.apple.com"));

    // 2. A wrong password stores nothing.
    let (s, v) = h
        .call(
            Method::POST,
            "/api/calendar/apple/connect",
            Some(json!({"user_id": user, "apple_id": "user", "app_password": "wrong-pass"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["code"], "invalid_credentials");
    assert!(!v.to_string().contains("wrong-pass"));
    let (s, v) = h.call(Method::GET, &format!("/api/calendar/connection-status/{user}"), None).await;
    assert_eq!((s, v["connected"].as_bool()), (StatusCode::OK, Some(false)), "{v}");

    // 3. The right one connects and lists the calendars.
    let v = h.connect_apple(user).await;
    assert_eq!(v["success"], true);
    assert_eq!(v["message"], "Apple Calendar connected successfully");
    assert_eq!(v["calendars"], json!(["Calendar", "Holidays"]));
    assert!(!v.to_string().contains("secret"));

    // 4. Status: connected and ready.
    let (s, v) = h.call(Method::GET, &format!("/api/calendar/connection-status/{user}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["connected"], true, "{v}");
    assert_eq!(v["calendar_type"], "apple");
    assert_eq!(v["ready"], true, "{v}");
    assert_eq!(v["connections"][0]["reason"], "Connected");
    assert!(v["connected_at"].is_string());

    // 5. task-to-calendar: one event, in the right zone.
    let task = json!({"user_id": user, "task_data": {
        "id": "task_001", "name": "Test homework assignment", "scheduled_time": "2030-10-17T14:00:00",
        "category": "Homework", "timezone": "America/New_York"}});
    let (s, v) = h.call(Method::POST, "/api/calendar/task-to-calendar", Some(task.clone())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["success"], true);
    let event_id = v["event_id"].as_str().expect("event_id").to_string();
    assert!(v["event_link"].as_str().is_some_and(|l| l.contains(&event_id)));
    let events = ours(&h);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].title, "Test homework assignment");
    assert_eq!(events[0].start.to_rfc3339_or_date(), "2030-10-17T18:00:00Z");
    assert_eq!(events[0].category.as_deref(), Some("Homework"));

    // 6. Repeat: same event, still one.
    let (s, v) = h.call(Method::POST, "/api/calendar/task-to-calendar", Some(task.clone())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["event_id"], event_id.as_str());
    assert_eq!(ours(&h).len(), 1);

    // 7. update-event moves it; the zone stays.
    let (s, v) = h
        .call(
            Method::PUT,
            "/api/calendar/update-event",
            Some(
                json!({"user_id": user, "event_id": event_id, "task_data": {"scheduled_time": "2030-10-17T15:00:00"}}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"success": true}));
    let events = ours(&h);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].start.to_rfc3339_or_date(), "2030-10-17T19:00:00Z");
    assert_eq!(events[0].title, "Test homework assignment");

    // 8. An event made in the calendar app shows up; ours does not.
    h.calendar.insert_external("calendar", external_event("dentist-1", "Dentist appointment", 26));
    let (s, v) = h.call(Method::POST, "/api/calendar/calendar-to-tasks", Some(json!({"user_id": user}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["count"], 1, "{v}");
    let t = &v["tasks"][0];
    assert_eq!(t["name"], "Dentist appointment");
    assert_eq!(t["calendar_source"], "apple");
    assert_eq!(t["calendar_event_id"], "dentist-1");
    assert_eq!(t["timezone"], "Europe/Berlin");
    assert_eq!(t["all_day"], false);
    assert_eq!(t["category"], "General");
    assert!(t["scheduled_time"].as_str().unwrap().len() == 19, "{t}");
    // Cached: a second external event appears only with refresh.
    h.calendar.insert_external("calendar", external_event("gym-1", "Gym", 30));
    let (_, v) = h.call(Method::POST, "/api/calendar/calendar-to-tasks", Some(json!({"user_id": user}))).await;
    assert_eq!(v["count"], 1, "cached answer expected: {v}");
    let (_, v) =
        h.call(Method::POST, "/api/calendar/calendar-to-tasks", Some(json!({"user_id": user, "refresh": true}))).await;
    assert_eq!(v["count"], 2, "{v}");

    // 9. Events we do not own are never touched; unknown ids are 404.
    let (s, v) = h
        .call(
            Method::PUT,
            "/api/calendar/update-event",
            Some(json!({"user_id": user, "event_id": "dentist-1", "task_data": {"name": "x"}})),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::CONFLICT, Some("event_not_managed")), "{v}");
    let (s, v) = h
        .call(Method::DELETE, "/api/calendar/delete-event", Some(json!({"user_id": user, "event_id": "dentist-1"})))
        .await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::CONFLICT, Some("event_not_managed")), "{v}");
    assert!(h.calendar.events("calendar").iter().any(|e| e.id == "dentist-1"));

    // 10. delete-event removes it from the calendar.
    let (s, v) = h
        .call(Method::DELETE, "/api/calendar/delete-event", Some(json!({"user_id": user, "event_id": event_id})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"success": true}));
    assert!(ours(&h).is_empty());
    let (s, _) = h
        .call(Method::DELETE, "/api/calendar/delete-event", Some(json!({"user_id": user, "event_id": event_id})))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // 11. An edit made in the calendar app to one of our events comes back as updated_tasks.
    let task2 =
        json!({"user_id": user, "task_data": {"id": 42, "name": "Read chapter 3", "scheduled_time": "2030-01-05"}});
    let (s, v) = h.call(Method::POST, "/api/calendar/task-to-calendar", Some(task2)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id2 = v["event_id"].as_str().unwrap().to_string();
    let now = Utc::now();
    h.calendar.edit_external("calendar", &id2, |e| {
        e.title = "Read chapter 4".into();
        e.start = EventTime::Date((now + Duration::days(1)).date_naive());
        e.end = EventTime::Date((now + Duration::days(2)).date_naive());
    });
    let (_, v) =
        h.call(Method::POST, "/api/calendar/calendar-to-tasks", Some(json!({"user_id": user, "refresh": true}))).await;
    assert_eq!(v["count"], 2, "ours stays out of tasks: {v}");
    let updated = &v["updated_tasks"][0];
    assert_eq!(updated["task_id"], "42", "{v}");
    assert_eq!(updated["all_day"], true);
    assert_eq!(updated["changed"], json!(["name", "scheduled_time", "end"]));

    // 12. Sync history, newest first, with the seed's fields.
    let (s, v) = h.call(Method::GET, &format!("/api/calendar/sync-history/{user}?limit=10"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let syncs = v["syncs"].as_array().unwrap();
    assert_eq!(v["count"].as_u64(), Some(syncs.len() as u64));
    let ops: Vec<&str> = syncs.iter().map(|e| e["operation"].as_str().unwrap()).collect();
    assert_eq!(ops, ["create", "delete", "update", "create"], "{v}");
    let first = syncs.last().unwrap();
    for field in [
        "id",
        "user_id",
        "task_id",
        "calendar_event_id",
        "calendar_type",
        "sync_direction",
        "sync_status",
        "error_message",
        "created_at",
    ] {
        assert!(first.get(field).is_some(), "{field} missing in {first}");
    }
    assert_eq!(first["task_id"], "task_001");
    assert_eq!(first["sync_direction"], "to_calendar");
    assert_eq!(first["sync_status"], "success");
    assert_eq!(first["calendar_type"], "apple");
    let (_, v) = h.call(Method::GET, &format!("/api/calendar/sync-history/{user}?limit=1"), None).await;
    assert_eq!(v["count"], 1);

    // 13. Disconnect: not connected; our remaining event stays in the calendar; history kept.
    let (s, v) = h.call(Method::POST, &format!("/api/calendar/disconnect/{user}"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"success": true, "message": "Calendar disconnected"}));
    let (_, v) = h.call(Method::GET, &format!("/api/calendar/connection-status/{user}"), None).await;
    assert_eq!(v["connected"], false, "{v}");
    assert_eq!(v["connections"][0]["active"], false);
    assert!(h.calendar.events("calendar").iter().any(|e| e.id == id2), "disconnect must not delete events");
    let (_, v) = h.call(Method::GET, &format!("/api/calendar/sync-history/{user}"), None).await;
    assert!(v["count"].as_u64().unwrap() >= 4, "{v}");
    let (s, v) = h.call(Method::POST, "/api/calendar/calendar-to-tasks", Some(json!({"user_id": user}))).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::BAD_REQUEST, Some("No calendar connected")), "{v}");

    // 14. Reconnecting works again.
    h.connect_apple(user).await;
    let (_, v) = h.call(Method::GET, &format!("/api/calendar/connection-status/{user}"), None).await;
    assert_eq!(v["connected"], true, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_credentials_say_reconnect_required() {
    let h = Harness::with_engine(config());
    h.connect_apple("u1").await;
    h.calendar.revoke(true);
    let task =
        json!({"user_id": "u1", "task_data": {"id": "t", "name": "n", "scheduled_time": "2030-01-01T10:00:00Z"}});
    let (s, v) = h.call(Method::POST, "/api/calendar/task-to-calendar", Some(task)).await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::CONFLICT, Some("reconnect_required")), "{v}");
    let (_, v) = h.call(Method::GET, "/api/calendar/connection-status/u1", None).await;
    assert_eq!(v["connected"], true, "{v}");
    assert_eq!(v["ready"], false, "{v}");
    assert_eq!(v["reason"], "ReconnectRequired", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_repeats_make_one_event() {
    let h = std::sync::Arc::new(Harness::with_engine(config()));
    h.connect_apple("burst").await;
    let mut calls = Vec::new();
    for i in 0..30 {
        let h = h.clone();
        // 10 tasks, each sent three times at once.
        let id = format!("task-{}", i % 10);
        calls.push(tokio::spawn(async move {
            let body = json!({"user_id": "burst", "task_data": {"id": id, "name": id, "scheduled_time": "2030-06-01T08:00:00Z"}});
            let (s, v) = h.call(Method::POST, "/api/calendar/task-to-calendar", Some(body)).await;
            (s, v["event_id"].as_str().map(String::from), id)
        }));
    }
    let mut ids = std::collections::BTreeMap::new();
    for c in calls {
        let (s, event, task) = c.await.unwrap();
        assert_eq!(s, StatusCode::OK);
        let event = event.expect("event_id");
        assert_eq!(ids.entry(task).or_insert_with(|| event.clone()), &event, "same task, same event");
    }
    assert_eq!(ids.len(), 10);
    assert_eq!(ours(&h).len(), 10, "exactly one event per task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calendar_edit_is_reported_never_silently_overwritten() {
    // DESIGN §3 (conflictPolicy Manual, the default): an edit made in the calendar app is
    // reported, not overwritten; the API says so with 409 calendar_conflict and lists the
    // edit in calendar-to-tasks' updated_tasks.
    let h = Harness::with_engine(config());
    h.connect_apple("edit").await;
    let when = (Utc::now() + Duration::days(2)).format("%Y-%m-%dT09:00:00Z").to_string();
    let body = json!({"user_id": "edit", "task_data": {"id": "t", "name": "Original", "scheduled_time": when}});
    let (s, v) = h.call(Method::POST, "/api/calendar/task-to-calendar", Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id = v["event_id"].as_str().unwrap().to_string();
    h.calendar.edit_external("calendar", &id, |e| e.title = "Edited in the app".into());
    let (s, v) = h
        .call(
            Method::PUT,
            "/api/calendar/update-event",
            Some(json!({"user_id": "edit", "event_id": id, "task_data": {"name": "From the task"}})),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::CONFLICT, Some("calendar_conflict")), "{v}");
    assert_eq!(ours(&h)[0].title, "Edited in the app");
    let (_, v) = h.call(Method::POST, "/api/calendar/calendar-to-tasks", Some(json!({"user_id": "edit"}))).await;
    assert_eq!(v["count"], 0, "{v}");
    assert_eq!(v["updated_tasks"][0]["task_id"], "t", "{v}");
    assert_eq!(v["updated_tasks"][0]["name"], "Edited in the app", "{v}");
    assert_eq!(v["updated_tasks"][0]["changed"], json!(["name"]), "{v}");
}
