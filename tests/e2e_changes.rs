//! Changes reach the app, end to end with the built `calsync standalone` binary: an event the
//! user creates, moves and deletes in their calendar app is announced to the open tab
//! (`calendar.changed` on the event stream) within 5 s of a push (Google, strict fake) or one
//! poll interval (CalDAV, a real Radicale), and `calendar-to-tasks` with the cursor then
//! returns exactly that change; an unchanged calendar costs no provider request under push and
//! one small one when polled. An edit of our own event arrives as `task.conflict`; on Radicale a
//! held conflict is listed with its diff and resolved both ways (`/conflicts`,
//! `/resolve-conflict`), the calendar and the task agreeing afterwards.

mod support;

use std::time::Duration;

use chrono::{Datelike, Utc};
use serde_json::json;
use support::app_receiver::{EventStream, first_pull, pull};
use support::calsync_bin::Standalone;
use support::google_world::{reason, world_with};
use support::radicale::Radicale;

fn when(days: i64, hour: u32) -> chrono::DateTime<Utc> {
    let d = (Utc::now() + chrono::Duration::days(days)).date_naive();
    d.and_hms_opt(hour, 0, 0).expect("time").and_utc()
}

fn google_time(t: chrono::DateTime<Utc>) -> serde_json::Value {
    json!({"dateTime": t.to_rfc3339(), "timeZone": "Europe/Berlin"})
}

#[tokio::test(flavor = "multi_thread")]
async fn google_changes_reach_the_app_by_push_then_by_cursor() {
    // Polling is off in effect (10 min): what is seen within seconds came by push.
    let slow_poll =
        [("CALSYNC_POLL_SECONDS", "600".to_string()), ("CALSYNC_PUSH_SAFETY_POLL_SECONDS", "600".to_string())];
    let w = world_with(3600, Some(Duration::from_secs(3600)), &slow_poll).await;
    let user = "changes_user";
    assert_eq!(reason(&w.connect_user(user).await), None);
    support::live::until_connection(w.dir.path(), Duration::from_secs(20), |c| {
        c["status"]["push"]["calendars"][0]["mode"] == "Push"
    })
    .await;
    let stream = EventStream::open(&w.cs, user).await;
    let (_, mut cursor) = first_pull(&w.cs, user).await;

    // Created in the calendar app.
    let seen = stream.count();
    let ev = w.fake.insert_external(
        "primary",
        json!({"summary": "Dentist", "start": google_time(when(2, 9)), "end": google_time(when(2, 10))}),
    );
    let id = ev["id"].as_str().expect("id").to_string();
    let (_, took) = stream.wait("calendar.changed", seen, Duration::from_secs(5)).await;
    eprintln!("calendar.changed {took:?} after the event was created");
    let (changes, body, next) = pull(&w.cs, user, &cursor).await;
    assert_eq!(changes, vec![("created".to_string(), id.clone())], "{body}");
    assert_eq!(body["changes"][0]["task"]["name"], "Dentist");
    cursor = next;

    // Moved.
    let seen = stream.count();
    w.fake.edit("primary", &id, json!({"start": google_time(when(3, 9)), "end": google_time(when(3, 10))}));
    stream.wait("calendar.changed", seen, Duration::from_secs(5)).await;
    let (changes, body, next) = pull(&w.cs, user, &cursor).await;
    assert_eq!(changes, vec![("updated".to_string(), id.clone())], "{body}");
    cursor = next;

    // Deleted.
    let seen = stream.count();
    w.fake.user_delete("primary", &id);
    stream.wait("calendar.changed", seen, Duration::from_secs(5)).await;
    let (changes, body, next) = pull(&w.cs, user, &cursor).await;
    assert_eq!(changes, vec![("deleted".to_string(), id.clone())], "{body}");
    cursor = next;

    // Nothing changed since: no change, and no request to Google at all (push vouches).
    w.fake.clear_requests();
    let (changes, body, _) = pull(&w.cs, user, &cursor).await;
    assert_eq!(changes, vec![], "{body}");
    assert!(w.fake.requests().is_empty(), "an unchanged calendar cost requests: {:#?}", w.fake.requests());

    // An edit of our own event: task.conflict on the stream, with the diff; not a change.
    let task = json!({"user_id": user, "task_data": {"id": "own-1", "name": "Essay",
        "scheduled_time": when(4, 14).format("%Y-%m-%dT%H:%M:%S").to_string(), "timezone": "UTC"}});
    let (s, v) = w.cs.call("POST", "/task-to-calendar", Some(task)).await;
    assert_eq!(s, 200, "{v}");
    let own = v["event_id"].as_str().expect("event_id").to_string();
    let seen = stream.count();
    w.fake.edit_title("primary", &own, "Essay (renamed on the phone)");
    let (conflict, _) = stream.wait("task.conflict", seen, Duration::from_secs(5)).await;
    assert_eq!(conflict["data"]["task_id"], "own-1", "{conflict}");
    assert!(conflict["data"]["diff"].as_array().is_some_and(|d| d.iter().any(|f| f["field"] == "title")), "{conflict}");
    let (changes, body, _) = pull(&w.cs, user, &cursor).await;
    assert_eq!(changes, vec![], "our own event is never an imported change: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn caldav_changes_reach_the_app_within_a_poll_then_by_cursor() {
    const CAL: &str = "/alice/calendar/";
    let server = Radicale::start();
    let raw = server.raw();
    raw.mkcalendar(CAL, "Calendar", &["VEVENT"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [("CALSYNC_CALDAV_POLL_SECONDS", "2".to_string())];
    let cs = Standalone::start_with(dir.path(), Standalone::pick_port(), &env).await;
    let user = "caldav_changes";
    let (s, body) = cs
        .call(
            "POST",
            "/apple/connect",
            Some(json!({"user_id": user, "apple_id": server.user, "app_password": server.password, "server_url": server.url})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let stream = EventStream::open(&cs, user).await;
    let (_, mut cursor) = first_pull(&cs, user).await;
    // The engine's first poll lists in full (its baseline); changes after it are announced.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let day = when(2, 9).date_naive();
    let ics = |hour: u32| {
        format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Phone//EN\r\nBEGIN:VEVENT\r\nUID:phone-1@example\r\nDTSTAMP:20260101T000000Z\r\nCREATED:{}\r\nDTSTART:{}{:02}{:02}T{hour:02}0000Z\r\nDURATION:PT1H\r\nSUMMARY:Piano lesson\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
            Utc::now().format("%Y%m%dT%H%M%SZ"),
            day.year(),
            day.month(),
            day.day()
        )
    };
    let href = format!("{CAL}phone-1.ics");
    let seen = stream.count();
    let put = raw.put(&href, &ics(9), ("if-none-match", "*")).await;
    assert!(matches!(put.status, 201 | 204), "PUT: {} {}", put.status, put.body);
    let (_, took) = stream.wait("calendar.changed", seen, Duration::from_secs(5)).await;
    eprintln!("calendar.changed {took:?} after the CalDAV PUT (poll every 2 s)");
    let (changes, body, next) = pull(&cs, user, &cursor).await;
    assert_eq!(changes, vec![("created".to_string(), "phone-1".to_string())], "{body}");
    assert_eq!(body["changes"][0]["task"]["name"], "Piano lesson");
    cursor = next;

    let seen = stream.count();
    let etag = raw.get(&href).await.expect("event").etag.expect("etag");
    let put = raw.put(&href, &ics(11), ("if-match", &etag)).await;
    assert!(matches!(put.status, 200 | 201 | 204), "PUT: {} {}", put.status, put.body);
    stream.wait("calendar.changed", seen, Duration::from_secs(5)).await;
    let (changes, body, next) = pull(&cs, user, &cursor).await;
    assert_eq!(changes, vec![("updated".to_string(), "phone-1".to_string())], "{body}");
    assert!(body["changes"][0]["task"]["scheduled_time"].as_str().is_some_and(|t| t.ends_with("T11:00:00")), "{body}");
    cursor = next;

    let seen = stream.count();
    let del = raw.request("DELETE", &href, &[], None).await;
    assert!(matches!(del.status, 200 | 204), "DELETE: {}", del.status);
    stream.wait("calendar.changed", seen, Duration::from_secs(5)).await;
    let (changes, body, next) = pull(&cs, user, &cursor).await;
    assert_eq!(changes, vec![("deleted".to_string(), "phone-1".to_string())], "{body}");

    let (changes, body, _) = pull(&cs, user, &next).await;
    assert_eq!(changes, vec![], "{body}");
    assert!(!cs.log().contains(&server.password), "the password reached the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caldav_conflict_is_shown_and_resolved_both_ways() {
    const CAL: &str = "/alice/calendar/";
    let server = Radicale::start();
    let raw = server.raw();
    raw.mkcalendar(CAL, "Calendar", &["VEVENT"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [("CALSYNC_CALDAV_POLL_SECONDS", "1".to_string())];
    let cs = Standalone::start_with(dir.path(), Standalone::pick_port(), &env).await;
    let user = "resolver";
    let body =
        json!({"user_id": user, "apple_id": server.user, "app_password": server.password, "server_url": server.url});
    assert_eq!(cs.call("POST", "/apple/connect", Some(body)).await.0, 200);
    let day = when(3, 0).date_naive();
    let at = |h: u32| format!("{}-{:02}-{:02}T{h:02}:00:00", day.year(), day.month(), day.day());
    let task = json!({"user_id": user, "task_data": {"id": "c-1", "name": "Essay", "scheduled_time": at(14), "timezone": "America/New_York"}});
    let (s, v) = cs.call("POST", "/task-to-calendar", Some(task)).await;
    assert_eq!(s, 200, "{v}");
    let href = format!("{CAL}{}.ics", v["event_id"].as_str().expect("event_id"));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Moved on the phone (+2 h, as another CalDAV client would).
    let move_by_two = |body: &str, from: &str, to: &str| body.replace(from, to);
    let got = raw.get(&href).await.expect("event");
    let moved = move_by_two(&got.body, "T140000", "T160000").replace("T150000", "T170000");
    let put = raw.put(&href, &moved, ("if-match", &got.etag.expect("etag"))).await;
    assert!(matches!(put.status, 200 | 201 | 204), "PUT: {}", put.status);
    let conflict = wait_conflict(&cs, user).await;
    let start =
        conflict["diff"].as_array().expect("diff").iter().find(|d| d["field"] == "start").cloned().expect("start");
    assert_eq!(
        (start["task"].as_str(), start["calendar"].as_str()),
        (Some(at(14).as_str()), Some(at(16).as_str())),
        "{conflict}"
    );

    // Keep the calendar: the task follows, Radicale is not written.
    let etag = raw.get(&href).await.expect("event").etag;
    let req = json!({"user_id": user, "task_id": "c-1", "keep": "calendar", "version": conflict["version"]});
    let (s, v) = cs.call("POST", "/resolve-conflict", Some(req)).await;
    assert_eq!((s, v["task"]["scheduled_time"].as_str()), (200, Some(at(16).as_str())), "{v}");
    assert_eq!(raw.get(&href).await.expect("event").etag, etag, "the calendar was not written");

    // Moved again; keep the task this time: Radicale gets the task's time back.
    let got = raw.get(&href).await.expect("event");
    let moved = move_by_two(&got.body, "T160000", "T190000").replace("T170000", "T200000");
    let put = raw.put(&href, &moved, ("if-match", &got.etag.expect("etag"))).await;
    assert!(matches!(put.status, 200 | 201 | 204), "PUT: {}", put.status);
    let conflict = wait_conflict(&cs, user).await;
    let req = json!({"user_id": user, "task_id": "c-1", "keep": "task", "version": conflict["version"]});
    let (s, v) = cs.call("POST", "/resolve-conflict", Some(req)).await;
    assert_eq!(s, 200, "{v}");
    let body = raw.get(&href).await.expect("event").body;
    assert!(body.contains("T160000") && !body.contains("T190000"), "the task's version is back: {body}");
    let (s, v) = cs.call("GET", &format!("/conflicts/{user}"), None).await;
    assert_eq!((s, v["count"].as_u64()), (200, Some(0)), "{v}");
}

/// The first conflict of `user`, once the poll has found it.
async fn wait_conflict(cs: &Standalone, user: &str) -> serde_json::Value {
    let started = std::time::Instant::now();
    loop {
        let (s, v) = cs.call("GET", &format!("/conflicts/{user}"), None).await;
        assert_eq!(s, 200, "{v}");
        if v["count"] == 1 {
            return v["conflicts"][0].clone();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no conflict listed: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
