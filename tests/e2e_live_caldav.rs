//! Live sync from a CalDAV calendar, end to end: the built `calsync standalone` binary polls a
//! real Radicale (CALSYNC_CALDAV_POLL_SECONDS=2); events of ours moved or deleted by another
//! CalDAV client show up in the TaskSync's status without any REST call, under each conflict
//! policy, and calsync's own writes are never reported as edits.

mod support;

use std::time::Duration;

use calsync::resources::{ProviderKind, connection_name};
use chrono::{Datelike, Utc};
use serde_json::json;
use support::calsync_bin::Standalone;
use support::live::{connections, metric, synced, task_sync, until};
use support::radicale::{Radicale, RawDav};

const CAL: &str = "/alice/calendar/";
const USER: &str = "live_user";
/// Acceptance bound: an edit is reported within this long of being made (poll every 2 s).
const BOUND: Duration = Duration::from_secs(5);

/// The href of our event whose SUMMARY is `title`.
async fn href_of(raw: &RawDav, event_id: &str) -> String {
    let href = format!("{CAL}{event_id}.ics");
    assert!(raw.get(&href).await.is_some(), "no resource {href}");
    href
}

/// Move the event two hours later, as another CalDAV client (the user's phone) would.
async fn move_two_hours(raw: &RawDav, href: &str) {
    let got = raw.get(href).await.expect("event");
    let moved = got.body.replace("T140000", "T160000").replace("T150000", "T170000");
    assert_ne!(moved, got.body, "the event had no 14:00 start: {}", got.body);
    let etag = got.etag.expect("etag");
    let put = raw.put(href, &moved, ("if-match", &etag)).await;
    assert!(matches!(put.status, 200 | 201 | 204), "PUT {href}: {} {}", put.status, put.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn edits_and_deletions_in_caldav_reach_the_task_syncs_by_polling() {
    let server = Radicale::start();
    let raw = server.raw();
    raw.mkcalendar(CAL, "Calendar", &["VEVENT"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [("CALSYNC_CALDAV_POLL_SECONDS", "2".to_string())];
    let cs = Standalone::start_with(dir.path(), Standalone::pick_port(), &env).await;
    let (s, body) = cs
        .call(
            "POST",
            "/apple/connect",
            Some(json!({"user_id": USER, "apple_id": server.user, "app_password": server.password, "server_url": server.url})),
        )
        .await;
    assert_eq!(s, 200, "{body}");

    // Two tasks: one through the REST API (conflictPolicy Manual, the default), one applied as
    // YAML with CalendarWins.
    let day = (Utc::now() + chrono::Duration::days(3)).date_naive();
    let when = format!("{}-{:02}-{:02}T14:00:00", day.year(), day.month(), day.day());
    let task = json!({"user_id": USER, "task_data": {"id": "manual-1", "name": "Essay draft",
        "scheduled_time": when, "timezone": "America/New_York"}});
    let (s, body) = cs.call("POST", "/task-to-calendar", Some(task)).await;
    assert_eq!(s, 200, "{body}");
    let manual_event = body["event_id"].as_str().expect("event_id").to_string();
    let yaml = format!(
        "apiVersion: calendar.getitdone.app/v1alpha1\nkind: TaskSync\nmetadata:\n  name: calwins\nspec:\n  connectionRef:\n    name: {}\n  taskId: calwins-1\n  title: Lab report\n  start: \"{when}\"\n  timeZone: America/New_York\n  duration: 1h\n  conflictPolicy: CalendarWins\n",
        connection_name(USER, ProviderKind::Apple)
    );
    let file = dir.path().join("calwins.yaml");
    std::fs::write(&file, yaml).expect("write");
    let (ok, out, err) = Standalone::cli(dir.path(), &["apply", "-f", file.to_str().expect("path")]);
    assert!(ok, "{out}{err}");
    until(dir.path(), "calwins-1", Duration::from_secs(30), |t| synced(t).is_some_and(|(s, _)| s == "True")).await;
    let calwins_event = task_sync(dir.path(), "calwins-1")["status"]["eventId"].as_str().expect("eventId").to_string();

    // The connection says it polls, and why.
    let conns = connections(dir.path());
    let conn = &conns[0];
    let push = conn["status"]["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Push")).cloned();
    assert_eq!(
        push.as_ref().map(|c| (&c["status"], &c["reason"])),
        Some((&json!("False"), &json!("Polling"))),
        "{conn:#}"
    );
    assert_eq!(conn["status"]["push"]["calendars"][0]["mode"], "Poll", "{conn:#}");

    // Let the first poll establish the calendar's baseline, then move both events as another
    // client would. No REST call is made from here on until the edits are seen.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let manual_href = href_of(&raw, &manual_event).await;
    let calwins_href = href_of(&raw, &calwins_event).await;
    move_two_hours(&raw, &manual_href).await;
    move_two_hours(&raw, &calwins_href).await;
    let took = until(dir.path(), "manual-1", BOUND, |t| !t["status"]["calendarEdit"].is_null()).await;
    eprintln!("CalDAV edit detected after {took:?} (poll every 2 s)");
    let ts = task_sync(dir.path(), "manual-1");
    let edit = &ts["status"]["calendarEdit"];
    assert_eq!(edit["resolution"], "Manual", "{ts:#}");
    assert!(edit["changed"].as_array().is_some_and(|c| c.contains(&json!("start"))), "{ts:#}");
    assert_eq!(synced(&ts).map(|s| s.1), Some("ConflictDetected".into()), "{ts:#}");
    // Held: the calendar keeps the user's edit.
    assert!(raw.get(&manual_href).await.expect("event").body.contains("T160000"));

    until(dir.path(), "calwins-1", BOUND, |t| t["status"]["calendarEdit"]["resolution"] == "CalendarWins").await;
    let ts = task_sync(dir.path(), "calwins-1");
    let start = ts["status"]["calendarEdit"]["start"].as_str().expect("start");
    let moved_utc =
        chrono::NaiveDateTime::parse_from_str(&when, "%Y-%m-%dT%H:%M:%S").expect("when") + chrono::Duration::hours(2);
    assert!(start.contains(&moved_utc.format("%Y-%m-%d").to_string()), "{ts:#}");
    assert_eq!(synced(&ts), Some(("True".into(), "CalendarWins".into())), "{ts:#}");
    // The app still pulls the accepted edit (live sync already adopted its version).
    let (s, body) = cs.call("POST", "/calendar-to-tasks", Some(json!({"user_id": USER, "refresh": true}))).await;
    assert_eq!(s, 200, "{body}");
    let updated: Vec<&str> =
        body["updated_tasks"].as_array().expect("updated_tasks").iter().filter_map(|u| u["task_id"].as_str()).collect();
    assert!(updated.contains(&"calwins-1") && updated.contains(&"manual-1"), "{body}");

    // A write of ours (the app changes the task) resolves the Manual conflict for the task and
    // is never reported back as an edit.
    let later = when.replace("T14:00", "T18:00");
    let (s, body) = cs
        .call(
            "PUT",
            "/update-event",
            Some(json!({"user_id": USER, "event_id": manual_event, "task_data": {"name": "Essay final", "scheduled_time": later}})),
        )
        .await;
    assert_eq!((s, &body["success"]), (200, &json!(true)), "{body}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ts = task_sync(dir.path(), "manual-1");
    assert!(ts["status"]["calendarEdit"].is_null(), "our own write was reported as an edit: {ts:#}");
    assert_eq!(synced(&ts).map(|s| s.0), Some("True".into()), "{ts:#}");

    // Deleted in the calendar app: reported, and not brought back.
    let del = raw.request("DELETE", &calwins_href, &[], None).await;
    assert!(matches!(del.status, 200 | 204), "DELETE: {}", del.status);
    let took = until(dir.path(), "calwins-1", BOUND, |t| t["status"]["calendarEdit"]["deleted"] == true).await;
    eprintln!("CalDAV deletion detected after {took:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(raw.get(&calwins_href).await.is_none(), "the deleted event came back");
    let ts = task_sync(dir.path(), "calwins-1");
    assert_eq!(synced(&ts).map(|s| s.1), Some("DeletedInCalendar".into()), "{ts:#}");

    // The change syncs are visible in the metrics.
    let metrics = reqwest::get(format!("{}/metrics", cs.base)).await.expect("metrics").text().await.expect("text");
    let polls = metric(&metrics, "calsync_change_syncs_total{trigger=\"poll\"}");
    assert!(polls >= 3, "{metrics}");
    assert!(metrics.contains("calsync_change_listings_total{kind=\"skipped_by_probe\"}"), "{metrics}");
    assert!(!cs.log().contains(&server.password), "the password reached the log");
}
