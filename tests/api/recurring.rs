//! Recurring tasks through the REST API on the memory calendar: a series in the calendar is one
//! imported task with `recurrence`, `series_start` and `exceptions`; `task_data` takes
//! `recurrence` and `exceptions` and refuses what is not an occurrence of the rule.

use axum::http::{Method, StatusCode};
use calsync::providers::{EventTime, Exception, RemoteEvent};
use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::support::{Harness, config};

const ZONE: &str = "Europe/Berlin";

fn at(t: DateTime<Utc>) -> EventTime {
    let tz: chrono_tz::Tz = ZONE.parse().unwrap();
    EventTime::DateTime { utc: t, local: t.with_timezone(&tz).naive_local(), zone: Some(ZONE.into()) }
}

fn local(t: DateTime<Utc>) -> String {
    let tz: chrono_tz::Tz = ZONE.parse().unwrap();
    t.with_timezone(&tz).format("%Y-%m-%dT%H:%M:%S").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_in_the_calendar_is_one_task_with_its_rule_and_exceptions() {
    let h = Harness::with_engine(config());
    let user = "recur";
    h.connect_apple(user).await;
    // Daily at a whole hour, started four days ago; tomorrow's occurrence is cancelled.
    let now = DateTime::from_timestamp(Utc::now().timestamp() / 3600 * 3600, 0).unwrap();
    let first = now - Duration::days(4) + Duration::hours(2);
    let series = RemoteEvent {
        id: "standup-1".into(),
        etag: None,
        link: None,
        title: "Standup".into(),
        description: None,
        category: None,
        start: at(first),
        end: at(first + Duration::minutes(15)),
        zone: Some(ZONE.into()),
        recurrence: vec!["RRULE:FREQ=DAILY;COUNT=30".into()],
        marker: None,
        cancelled: false,
        created: None,
        exceptions: vec![Exception::cancelled(at(first + Duration::days(5)))],
    };
    h.calendar.insert_external("calendar", series);
    let (s, v) = h.call(Method::POST, "/api/calendar/calendar-to-tasks", Some(json!({"user_id": user}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let tasks: Vec<_> =
        v["tasks"].as_array().unwrap().iter().filter(|t| t["calendar_event_id"] == "standup-1").collect();
    assert_eq!(tasks.len(), 1, "the series once: {v}");
    let t = tasks[0];
    assert_eq!(t["recurrence"], json!(["RRULE:FREQ=DAILY;COUNT=30"]));
    assert_eq!(t["series_start"], local(first));
    assert_eq!(t["scheduled_time"], local(first + Duration::days(4)), "the next occurrence");
    assert_eq!(t["timezone"], ZONE);
    assert_eq!(t["duration_minutes"], 15);
    assert_eq!(t["exceptions"], json!([{"original_start": local(first + Duration::days(5)), "cancelled": true}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_data_takes_recurrence_and_exceptions_and_refuses_bad_ones() {
    let h = Harness::with_engine(config());
    let user = "recur-w";
    h.connect_apple(user).await;
    let task = |exceptions: serde_json::Value, recurrence: serde_json::Value| {
        json!({"user_id": user, "task_data": {
            "id": "t-recur", "name": "Piano", "scheduled_time": "2030-03-06T17:00:00", "timezone": "America/New_York",
            "recurrence": recurrence, "exceptions": exceptions}})
    };
    let weekly = json!(["RRULE:FREQ=WEEKLY;COUNT=5"]);
    // 13 March 2030 is after the DST change (10 March): still 17:00 local.
    let good = json!([{"original_start": "2030-03-13T17:00:00", "cancelled": true},
                      {"original_start": "2030-03-20T17:00:00", "start": "2030-03-21T18:00:00"}]);
    let (s, v) = h.call(Method::POST, "/api/calendar/task-to-calendar", Some(task(good, weekly.clone()))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let ev = h.calendar.events("calendar").into_iter().find(|e| e.marker.is_some()).unwrap();
    assert_eq!(ev.recurrence, vec!["RRULE:FREQ=WEEKLY;COUNT=5".to_string()]);
    let starts: Vec<String> = ev.exceptions.iter().map(|x| x.original_start.to_rfc3339_or_date()).collect();
    assert_eq!(starts, vec!["2030-03-13T21:00:00Z".to_string(), "2030-03-20T21:00:00Z".to_string()]);
    assert_eq!(
        ev.exceptions[1].start.as_ref().map(|t| t.to_rfc3339_or_date()).as_deref(),
        Some("2030-03-21T22:00:00Z")
    );

    let not_an_occurrence = json!([{"original_start": "2030-03-14T17:00:00", "cancelled": true}]);
    let (s, v) =
        h.call(Method::POST, "/api/calendar/task-to-calendar", Some(task(not_an_occurrence, weekly.clone()))).await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_task")), "{v}");
    assert!(v["error"].as_str().unwrap().contains("exceptions[0]"), "{v}");
    let (s, v) =
        h.call(Method::POST, "/api/calendar/task-to-calendar", Some(task(json!([]), json!(["FREQ=WEEKLY"])))).await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_recurrence")), "{v}");
    let both = json!([{"original_start": "2030-03-13T17:00:00", "cancelled": true, "bogus": 1}]);
    let (s, _) = h.call(Method::POST, "/api/calendar/task-to-calendar", Some(task(both, weekly))).await;
    assert!(s.is_client_error(), "{s}");
}
