//! `POST /suggest-times` on the memory calendar: slots avoid meetings (a recurring one
//! included) plus the buffer, stay in working hours across the March DST change in New York,
//! "no room" is an explicit 200 answer, a calendar that cannot be read is an error rather than
//! free time, and bad input is a 400/422 naming the field.

use axum::http::{Method, StatusCode};
use calsync::providers::memory::Op;
use calsync::providers::{EventTime, ProviderError, RemoteEvent};
use chrono::{DateTime, Timelike, Utc};
use serde_json::{Value, json};

use crate::support::{Harness, config};

const NY: chrono_tz::Tz = chrono_tz::America::New_York;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn at(s: &str) -> EventTime {
    let utc = t(s);
    EventTime::DateTime { utc, local: utc.with_timezone(&NY).naive_local(), zone: Some("America/New_York".into()) }
}

fn meeting(id: &str, start: &str, end: &str, rule: Option<&str>) -> RemoteEvent {
    RemoteEvent {
        id: id.into(),
        etag: None,
        link: None,
        title: id.into(),
        description: None,
        category: None,
        start: at(start),
        end: at(end),
        zone: Some("America/New_York".into()),
        recurrence: rule.map(|r| vec![r.to_string()]).unwrap_or_default(),
        marker: None,
        cancelled: false,
        created: None,
        exceptions: Vec::new(),
    }
}

async fn suggest(h: &Harness, body: Value) -> (StatusCode, Value) {
    h.call(Method::POST, "/api/calendar/suggest-times", Some(body)).await
}

async fn connected(user: &str) -> Harness {
    let h = Harness::with_engine(config());
    h.connect_apple(user).await;
    // The engine records the default calendar; busy time is read from it.
    for _ in 0..100 {
        let (_, v) = h.call(Method::GET, &format!("/api/calendar/connection-status/{user}"), None).await;
        if v.to_string().contains("\"connected\":true") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_avoid_meetings_and_buffers_and_keep_working_hours_across_dst() {
    let user = "sched";
    let h = connected(user).await;
    // Friday 8 March 2030 09:00–12:00 EST; a daily 13:00–14:00 (wall clock) series; the US
    // changes to EDT on Sunday 10 March.
    h.calendar
        .insert_external("calendar", meeting("m1", "2030-03-08T09:00:00-05:00", "2030-03-08T12:00:00-05:00", None));
    h.calendar.insert_external(
        "calendar",
        meeting("lunch", "2030-03-01T13:00:00-05:00", "2030-03-01T14:00:00-05:00", Some("RRULE:FREQ=DAILY;COUNT=30")),
    );
    let (s, v) = suggest(
        &h,
        json!({"user_id": user, "duration_minutes": 60, "timezone": "America/New_York", "buffer_minutes": 15, "count": 20,
               "window": {"start": "2030-03-08T00:00:00-05:00", "end": "2030-03-13T00:00:00-04:00"}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["partial"], false);
    let slots = v["slots"].as_array().unwrap();
    // Every distinct hour left: Friday 14:15–17:00 (12:15–12:45 is too short before the series'
    // buffer), and Monday and Tuesday 09:00–12:45 and 14:15–17:00; Wednesday is outside the window.
    assert_eq!(slots.len(), 12, "{v}");
    assert_eq!(slots[0]["start"], "2030-03-08T14:15:00-05:00", "right after lunch and its buffer: {v}");
    assert!(slots[0]["why"].as_str().unwrap().contains("right after busy time"), "{v}");
    let busy: Vec<(DateTime<Utc>, DateTime<Utc>)> =
        std::iter::once((t("2030-03-08T09:00:00-05:00"), t("2030-03-08T12:00:00-05:00")))
            .chain((0..30).map(|d| {
                let day = chrono::NaiveDate::from_ymd_opt(2030, 3, 1).unwrap() + chrono::Duration::days(d);
                let s = day.and_hms_opt(13, 0, 0).unwrap().and_local_timezone(NY).unwrap().with_timezone(&Utc);
                (s, s + chrono::Duration::hours(1))
            }))
            .collect();
    let pad = chrono::Duration::minutes(15);
    for slot in slots {
        let (a, b) = (t(slot["start"].as_str().unwrap()), t(slot["end"].as_str().unwrap()));
        assert_eq!(b - a, chrono::Duration::minutes(60));
        for (s, e) in &busy {
            assert!(b <= *s - pad || a >= *e + pad, "{slot} overlaps {s}–{e} + buffer");
        }
        let (la, lb) = (a.with_timezone(&NY), b.with_timezone(&NY));
        assert!(la.hour() >= 9 && (lb.hour() < 17 || (lb.hour() == 17 && lb.minute() == 0)), "{slot} outside 9–17");
        assert!(!matches!(la.format("%a").to_string().as_str(), "Sat" | "Sun"), "{slot} on a weekend");
    }
    // Monday after the change: 09:00 EDT is -04:00.
    assert!(slots.iter().any(|s| s["start"] == "2030-03-11T09:00:00-04:00"), "{v}");

    // Asked again within the cache's minute, with another duration: no calendar read, and the
    // meetings are still avoided.
    h.calendar.clear_calls();
    let (s, again) = suggest(
        &h,
        json!({"user_id": user, "duration_minutes": 30, "timezone": "America/New_York", "buffer_minutes": 15, "count": 1,
               "window": {"start": "2030-03-08T00:00:00-05:00", "end": "2030-03-13T00:00:00-04:00"}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{again}");
    // Half an hour fits between the morning meeting and lunch, buffers kept.
    assert_eq!(again["slots"][0]["start"], "2030-03-08T12:15:00-05:00", "{again}");
    assert_eq!(h.calendar.count(Op::List), 0, "served from the busy cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_room_before_the_deadline_is_an_explicit_answer() {
    let user = "sched-full";
    let h = connected(user).await;
    h.calendar
        .insert_external("calendar", meeting("allday", "2030-03-08T08:00:00-05:00", "2030-03-08T18:00:00-05:00", None));
    let (s, v) = suggest(
        &h,
        json!({"user_id": user, "duration_minutes": 30, "timezone": "America/New_York",
               "window": {"start": "2030-03-08T00:00:00-05:00", "end": "2030-03-13T00:00:00-04:00"},
               "deadline": "2030-03-09T00:00:00-05:00", "category": "work"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["slots"], json!([]));
    assert_eq!(v["reason"], "no_room");
    assert!(v["message"].as_str().unwrap().contains("deadline"), "{v}");
    assert_eq!(v["category"], "work");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calendar_that_cannot_be_read_is_not_free_time() {
    let user = "sched-down";
    let h = connected(user).await;
    h.calendar.inject(Op::List, ProviderError::Transient { message: "down".into() });
    let (s, v) =
        suggest(&h, json!({"user_id": user, "duration_minutes": 30, "timezone": "UTC", "window_days": 3})).await;
    // The only connection could not be read: its error is the answer, not slots on an empty
    // calendar.
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    assert_eq!(v["code"], "calendar_unreachable", "{v}");
    // The fault was one-shot: the next request reads the calendar again (nothing failed was cached).
    let (s, v) =
        suggest(&h, json!({"user_id": user, "duration_minutes": 30, "timezone": "UTC", "window_days": 3})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["partial"], false, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_field() {
    let h = Harness::without_engine(config());
    let base = json!({"user_id": "u", "duration_minutes": 30, "timezone": "America/New_York"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("timezone", json!("Mars/Olympus")), StatusCode::BAD_REQUEST, "timezone"),
        (with("duration_minutes", json!(0)), StatusCode::BAD_REQUEST, "duration_minutes"),
        (with("duration_minutes", json!("thirty")), StatusCode::UNPROCESSABLE_ENTITY, "duration_minutes"),
        (with("colour", json!("red")), StatusCode::UNPROCESSABLE_ENTITY, "colour"),
        (with("window_days", json!(91)), StatusCode::BAD_REQUEST, "window_days"),
        (
            with("window", json!({"start": "2030-01-01T00:00:00Z", "end": "2030-06-01T00:00:00Z"})),
            StatusCode::BAD_REQUEST,
            "window",
        ),
        (
            with("window", json!({"start": "2030-01-01T00:00:00", "end": "2030-01-02T00:00:00Z"})),
            StatusCode::BAD_REQUEST,
            "window.start",
        ),
        (
            with("window", json!({"start": "2030-01-01T00:00:00Z", "end": "2030-01-01T00:10:00Z"})),
            StatusCode::BAD_REQUEST,
            "duration_minutes",
        ),
        (with("buffer_minutes", json!(-1)), StatusCode::BAD_REQUEST, "buffer_minutes"),
        (with("count", json!(0)), StatusCode::BAD_REQUEST, "count"),
        (
            json!({"user_id": "u", "duration_minutes": 30, "timezone": "UTC", "window_days": 3,
                   "window": {"start": "2030-01-01T00:00:00Z", "end": "2030-01-02T00:00:00Z"}}),
            StatusCode::BAD_REQUEST,
            "window",
        ),
        (
            with("earliest_start", json!("2030-01-02T00:00:00Z"))
                .as_object()
                .cloned()
                .map(|mut o| {
                    o.insert("deadline".into(), json!("2030-01-01T00:00:00Z"));
                    Value::Object(o)
                })
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "deadline",
        ),
        (with("working_hours", json!({})), StatusCode::BAD_REQUEST, "working_hours"),
        (
            with(
                "working_hours",
                json!({"monday": [{"start": "09:00", "end": "12:00"}, {"start": "11:00", "end": "13:00"}]}),
            ),
            StatusCode::BAD_REQUEST,
            "working_hours",
        ),
        (
            with("working_hours", json!({"monday": [{"start": "17:00", "end": "09:00"}]})),
            StatusCode::BAD_REQUEST,
            "working_hours.monday[0]",
        ),
        (with("working_hours", json!({"caturday": []})), StatusCode::UNPROCESSABLE_ENTITY, "caturday"),
    ];
    for (body, status, field) in cases {
        let (s, v) = suggest(&h, body.clone()).await;
        assert_eq!(s, status, "{body} → {v}");
        assert!(v["error"].as_str().unwrap().contains(field), "{body} → {v} should name {field}");
        assert!(v["code"].is_string(), "{v}");
    }
}

async fn task(h: &Harness, body: Value) -> (StatusCode, Value) {
    h.call(Method::POST, "/api/calendar/task-to-calendar", Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_can_ask_for_a_place_instead_of_a_time() {
    let user = "auto";
    let h = connected(user).await;
    // Monday 11 March 2030 (EDT since the day before): a meeting 09:00–11:00.
    h.calendar
        .insert_external("calendar", meeting("m1", "2030-03-11T09:00:00-04:00", "2030-03-11T11:00:00-04:00", None));
    let auto = |id: &str, extra: Value| {
        let mut a = json!({"duration_minutes": 60, "earliest_start": "2030-03-11T09:00:00",
            "deadline": "2030-03-12T17:00:00", "buffer_minutes": 15, "timezone": "America/New_York"});
        if let (Some(a), Some(e)) = (a.as_object_mut(), extra.as_object()) {
            a.extend(e.clone());
        }
        json!({"user_id": user, "task_data": {"id": id, "name": "Essay", "auto_schedule": a}})
    };
    let (s, v) = task(&h, auto("a1", json!({}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["scheduled_start"], "2030-03-11T11:15:00-04:00", "after the meeting and its buffer: {v}");
    assert_eq!(v["scheduled_end"], "2030-03-11T12:15:00-04:00", "{v}");
    assert!(v["event_id"].is_string() && v["reason"].is_null(), "{v}");
    // The block is written free: suggest-times does not count it.
    let (_, free) = suggest(
        &h,
        json!({"user_id": user, "duration_minutes": 60, "timezone": "America/New_York", "buffer_minutes": 15,
               "window": {"start": "2030-03-11T11:00:00-04:00", "end": "2030-03-11T12:30:00-04:00"}}),
    )
    .await;
    assert_eq!(free["slots"][0]["start"], "2030-03-11T11:15:00-04:00", "{free}");
    // A second task never takes the first one's time.
    let (s, v) = task(&h, auto("a2", json!({}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["scheduled_start"], "2030-03-11T12:30:00-04:00", "{v}");

    // Nothing fits between 09:00 and 11:00 (the meeting): no_room, no event, a 200.
    let (s, v) = task(&h, auto("a3", json!({"deadline": "2030-03-11T11:00:00"}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["reason"], "no_room", "{v}");
    assert!(v["event_id"].is_null() && v["message"].as_str().is_some_and(|m| m.contains("deadline")), "{v}");

    // Bad input: 400 naming the field.
    let with_time = json!({"user_id": user, "task_data": {"id": "b", "name": "B", "scheduled_time": "2030-03-11T09:00:00",
        "timezone": "America/New_York", "auto_schedule": {"duration_minutes": 30}}});
    let neither = json!({"user_id": user, "task_data": {"id": "b", "name": "B"}});
    let cases = [
        (with_time, "auto_schedule"),
        (neither, "scheduled_time"),
        (auto("b", json!({"duration_minutes": 0})), "auto_schedule.duration_minutes"),
        (auto("b", json!({"buffer_minutes": 300})), "auto_schedule.buffer_minutes"),
        (auto("b", json!({"timezone": "Mars/Olympus"})), "auto_schedule.timezone"),
        (auto("b", json!({"deadline": "2030-03-10T17:00:00"})), "auto_schedule.deadline"),
        (auto("b", json!({"deadline": "2030-03-12"})), "auto_schedule.deadline"),
        (auto("b", json!({"earliest_start": "2030-03-10T02:30:00"})), "auto_schedule.earliest_start"),
        (
            auto(
                "b",
                json!({"working_hours": {"monday": [{"start": "09:00", "end": "12:00"}, {"start": "11:00", "end": "13:00"}]}}),
            ),
            "auto_schedule.working_hours",
        ),
        (auto("b", json!({"working_hours": {}})), "auto_schedule.working_hours"),
        (
            auto("b", json!({"working_hours": {"friday": [{"start": "9", "end": "17:00"}]}})),
            "auto_schedule.working_hours.friday[0]",
        ),
    ];
    for (body, field) in cases {
        let (s, v) = task(&h, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} → {v}");
        assert!(v["error"].as_str().is_some_and(|e| e.contains(field)), "{field}: {v}");
    }
    let (s, v) = task(&h, auto("b", json!({"colour": "red"}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "an unknown field: {v}");
}
