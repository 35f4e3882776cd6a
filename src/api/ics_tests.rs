//! Unit tests of `ics`: what subscribers need (line folding, CRLF, escaping, VTIMEZONE per
//! zone, all-day dates, stable ETag), on TaskSyncs built in memory.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::*;
use crate::resources::{ConnectionRef, TaskSyncSpec, TaskSyncStatus};

fn task(name: &str, start: &str, zone: Option<&str>) -> TaskSync {
    TaskSync {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            generation: Some(3),
            creation_timestamp: Some(Time(k8s_openapi::jiff::Timestamp::from_second(1_767_225_600).unwrap())),
            ..ObjectMeta::default()
        },
        spec: TaskSyncSpec {
            connection_ref: ConnectionRef { name: "ics-feed".into() },
            task_id: name.into(),
            title: format!("Task {name}"),
            start: start.into(),
            time_zone: zone.map(String::from),
            duration: None,
            end: None,
            all_day: None,
            category: None,
            description: None,
            recurrence: Vec::new(),
            exceptions: Vec::new(),
            calendar_id: None,
            deletion_policy: Default::default(),
            conflict_policy: Default::default(),
            schedule: None,
        },
        status: None,
    }
}

fn unfold(body: &str) -> String {
    body.replace("\r\n ", "")
}

#[test]
fn lines_are_crlf_and_folded_to_75_octets() {
    let mut t = task("a", "2026-03-08T09:00:00", Some("America/New_York"));
    t.spec.title = "Ünïcödé 📅 ".repeat(12);
    t.spec.description = Some("word ".repeat(60));
    let feed = render(&[t.clone()], "calsync");
    assert!(feed.body.ends_with("END:VCALENDAR\r\n"), "{}", feed.body);
    assert!(!feed.body.replace("\r\n", "").contains('\n'), "a bare LF");
    assert!(!feed.body.replace("\r\n", "").contains('\r'), "a bare CR");
    for line in feed.body.split("\r\n") {
        assert!(line.len() <= 75, "{} octets: {line:?}", line.len());
    }
    let unfolded = unfold(&feed.body);
    assert!(unfolded.contains(&format!("SUMMARY:{}\r\n", t.spec.title)), "{unfolded}");
    assert!(unfolded.contains(&format!("DESCRIPTION:{}\r\n", "word ".repeat(60))), "{unfolded}");
}

#[test]
fn text_is_escaped() {
    let mut t = task("a", "2026-01-10T10:00:00Z", None);
    t.spec.title = "Read, write; repeat \\ done\nnext line".into();
    t.spec.category = Some("School, work".into());
    let body = unfold(&render(&[t], "calsync").body);
    assert!(body.contains("SUMMARY:Read\\, write\\; repeat \\\\ done\\nnext line\r\n"), "{body}");
    assert!(body.contains("CATEGORIES:School\\, work\r\n"), "{body}");
}

#[test]
fn calendar_and_events_carry_what_subscribers_need() {
    let mut ny = task("ny", "2026-03-08T09:00:00", Some("America/New_York"));
    ny.spec.recurrence = vec!["RRULE:FREQ=WEEKLY;COUNT=3".into()];
    let ny2 = task("ny2", "2026-11-01T09:00:00", Some("America/New_York"));
    let mut day = task("day", "2026-03-09", None);
    day.spec.duration = Some("48h".into());
    let mut synced = task("utc", "2026-01-10T10:00:00Z", None);
    let at = DateTime::parse_from_rfc3339("2026-02-01T12:00:00Z").unwrap().with_timezone(&Utc);
    synced.status = Some(TaskSyncStatus { last_sync_time: Some(at), ..Default::default() });
    let feed = render(&[ny, ny2, day, synced], "calsync");
    let body = unfold(&feed.body);
    assert_eq!(feed.events, 4);
    for want in [
        "BEGIN:VCALENDAR\r\n",
        "VERSION:2.0\r\n",
        "PRODID:-//Get It Done//calsync//EN\r\n",
        "CALSCALE:GREGORIAN\r\n",
        "METHOD:PUBLISH\r\n",
        "X-WR-CALNAME:Get It Done!\r\n",
        "REFRESH-INTERVAL;VALUE=DURATION:PT15M\r\n",
        "X-PUBLISHED-TTL:PT15M\r\n",
        "DTSTART;TZID=America/New_York:20260308T090000\r\n",
        "DTEND;TZID=America/New_York:20260308T100000\r\n",
        "RRULE:FREQ=WEEKLY;COUNT=3\r\n",
        "DTSTART;VALUE=DATE:20260309\r\n",
        "DTEND;VALUE=DATE:20260311\r\n",
        "DTSTART:20260110T100000Z\r\n",
        "SEQUENCE:2\r\n",
        "CREATED:20260101T000000Z\r\n",
        "LAST-MODIFIED:20260201T120000Z\r\n",
        "DTSTAMP:20260201T120000Z\r\n",
        "UID:",
    ] {
        assert!(body.contains(want), "{want:?} missing in\n{body}");
    }
    assert_eq!(body.matches("BEGIN:VTIMEZONE").count(), 1, "one VTIMEZONE per zone:\n{body}");
    assert!(body.find("BEGIN:VTIMEZONE") < body.find("BEGIN:VEVENT"));
    assert!(!body.contains("X-CALSYNC-MARKER"), "no ownership marker in a feed");
    // UIDs are the ones CalDAV resources of the same tasks get.
    assert!(body.contains(&format!("UID:{}@calsync\r\n", crate::providers::event_key("uid-ny"))), "{body}");
}

#[test]
fn etag_is_stable_and_follows_content() {
    let a = task("a", "2026-01-10T10:00:00Z", None);
    let b = task("b", "2026-01-11", None);
    let one = render(&[a.clone(), b.clone()], "calsync");
    let two = render(&[b.clone(), a.clone()], "calsync");
    assert_eq!(one, two, "order and time of rendering do not matter");
    assert!(one.etag.starts_with('"') && one.etag.ends_with('"') && one.etag.len() == 34);
    let mut changed = a.clone();
    changed.spec.title = "Renamed".into();
    assert_ne!(render(&[changed, b], "calsync").etag, one.etag);
}

#[test]
fn invalid_specs_are_left_out_and_empty_feeds_are_valid() {
    let gap = task("gap", "2026-03-08T02:30:00", Some("America/New_York"));
    let feed = render(&[gap, task("ok", "2026-01-10T10:00:00Z", None)], "calsync");
    assert_eq!(feed.events, 1);
    let empty = render(&[], "calsync");
    assert_eq!(empty.events, 0);
    assert!(empty.body.starts_with("BEGIN:VCALENDAR\r\n") && empty.body.ends_with("END:VCALENDAR\r\n"));
}

#[test]
fn if_none_match_is_compared_weakly() {
    let e = "\"abc\"";
    assert!(none_match("\"abc\"", e));
    assert!(none_match("W/\"abc\"", e));
    assert!(none_match("\"x\", \"abc\"", e));
    assert!(none_match("*", e));
    assert!(!none_match("\"abcd\"", e));
    assert!(!none_match("abc", e));
    assert!(!none_match("", e));
}
