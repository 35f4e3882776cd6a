//! Tests of the JSON ↔ neutral model mapping.

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use serde_json::json;

use super::*;

fn marker() -> Marker {
    Marker { owner: "calsync".into(), uid: "uid-1".into(), task_id: "task;1".into(), hash: "abc123".into() }
}

fn zoned(h: u32, zone: &str) -> EventTime {
    let tz: Tz = zone.parse().unwrap();
    let utc = Utc.with_ymd_and_hms(2031, 3, 14, h, 0, 0).unwrap();
    EventTime::DateTime { utc, local: utc.with_timezone(&tz).naive_local(), zone: Some(zone.into()) }
}

fn data() -> EventData {
    EventData {
        title: "Complete assignment".into(),
        description: Some("chapter 3".into()),
        category: Some("Homework".into()),
        start: zoned(14, "America/New_York"),
        end: zoned(15, "America/New_York"),
        transparent: false,
        recurrence: vec![],
        exceptions: Vec::new(),
        marker: marker(),
    }
}

fn parse_event(v: serde_json::Value) -> RemoteEvent {
    to_remote(serde_json::from_value::<GEvent>(v).unwrap()).unwrap()
}

#[test]
fn timed_event_with_zone_is_read() {
    let ev = parse_event(json!({
        "kind": "calendar#event", "id": "cs0123456789", "etag": "\"3181161784712000\"", "status": "confirmed",
        "htmlLink": "https://www.google.com/calendar/event?eid=abc",
        "summary": "Dentist", "description": "",
        "start": {"dateTime": "2031-03-14T10:00:00-04:00", "timeZone": "America/New_York"},
        "end": {"dateTime": "2031-03-14T11:00:00-04:00", "timeZone": "America/New_York"},
    }));
    assert_eq!(ev.id, "cs0123456789");
    assert_eq!(ev.etag.as_deref(), Some("\"3181161784712000\""));
    assert_eq!(ev.link.as_deref(), Some("https://www.google.com/calendar/event?eid=abc"));
    assert_eq!(ev.title, "Dentist");
    assert_eq!(ev.description, None, "an empty description is no description");
    assert_eq!(ev.start, zoned(14, "America/New_York"));
    assert_eq!(ev.zone.as_deref(), Some("America/New_York"));
    assert_eq!((ev.marker, ev.category, ev.cancelled), (None, None, false));
}

#[test]
fn local_time_follows_time_zone_not_the_offset_given() {
    // Google may answer in the calendar's offset while the event's zone is another one.
    let ev = parse_event(json!({
        "id": "abcde", "start": {"dateTime": "2031-03-14T18:00:00Z", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2031-03-14T19:00:00Z", "timeZone": "not/a-zone"},
    }));
    match (&ev.start, &ev.end) {
        (
            EventTime::DateTime { local, zone: Some(z), utc },
            EventTime::DateTime { zone: None, local: end_local, .. },
        ) => {
            assert_eq!(local.to_string(), "2031-03-14 19:00:00");
            assert_eq!(z, "Europe/Berlin");
            assert_eq!(*utc, Utc.with_ymd_and_hms(2031, 3, 14, 18, 0, 0).unwrap());
            assert_eq!(end_local.to_string(), "2031-03-14 19:00:00", "an invalid zone keeps the offset's wall time");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ev.zone.as_deref(), Some("Europe/Berlin"));
}

#[test]
fn date_time_without_offset_is_read_in_its_zone() {
    let t = read_time(&GEventDateTime {
        date: None,
        date_time: Some("2031-07-01T09:00:00".into()),
        time_zone: Some("Europe/Berlin".into()),
    })
    .unwrap();
    assert!(matches!(t, EventTime::DateTime { utc, .. } if utc == Utc.with_ymd_and_hms(2031, 7, 1, 7, 0, 0).unwrap()));
    assert!(
        read_time(&GEventDateTime { date_time: Some("2031-07-01T09:00:00".into()), ..Default::default() }).is_err()
    );
    assert!(read_time(&GEventDateTime::default()).is_err());
}

#[test]
fn all_day_is_written_and_read_as_dates() {
    let day = NaiveDate::from_ymd_opt(2031, 5, 14).unwrap();
    let mut e = data();
    e.start = EventTime::Date(day);
    e.end = EventTime::Date(day + Duration::days(1));
    let body = to_body(&e, Some("cskey"), Mode::Insert);
    assert_eq!(body["start"], json!({"date": "2031-05-14"}));
    assert_eq!(body["end"], json!({"date": "2031-05-15"}), "the end date is exclusive, as given");
    let patch = to_body(&e, None, Mode::Patch);
    assert_eq!(patch["start"], json!({"date": "2031-05-14", "dateTime": null, "timeZone": null}));
    let ev = parse_event(json!({"id": "abcde", "start": {"date": "2031-05-14"}, "end": {"date": "2031-05-15"}}));
    assert_eq!((ev.start, ev.end, ev.zone), (EventTime::Date(day), EventTime::Date(day + Duration::days(1)), None));
}

#[test]
fn insert_body_carries_id_zone_marker_and_category() {
    let body = to_body(&data(), Some("cs0123456789abcdef"), Mode::Insert);
    assert_eq!(body["id"], "cs0123456789abcdef");
    assert_eq!(body["summary"], "Complete assignment");
    assert_eq!(body["description"], "chapter 3");
    assert_eq!(body["start"], json!({"dateTime": "2031-03-14T10:00:00-04:00", "timeZone": "America/New_York"}));
    assert_eq!(body["end"], json!({"dateTime": "2031-03-14T11:00:00-04:00", "timeZone": "America/New_York"}));
    assert_eq!(
        body["extendedProperties"],
        json!({"private": {"calsync": "v1;calsync;uid-1;task;1;abc123", "calsyncCategory": "Homework"}})
    );
    assert!(body.get("recurrence").is_none(), "insert omits what is unset");
}

#[test]
fn marker_and_category_round_trip() {
    let body = to_body(&data(), Some("cs0123456789"), Mode::Insert);
    // What Google stores and sends back is the body plus its own fields.
    let mut stored = body.clone();
    stored["etag"] = json!("\"1\"");
    stored["status"] = json!("confirmed");
    let ev = parse_event(stored);
    assert_eq!(ev.marker, Some(marker()));
    assert_eq!(ev.category.as_deref(), Some("Homework"));
    assert_eq!(ev.description.as_deref(), Some("chapter 3"));
    assert_eq!((ev.start, ev.end), (data().start, data().end));
}

#[test]
fn foreign_private_properties_are_not_a_marker() {
    let ev = parse_event(json!({
        "id": "abcde", "start": {"date": "2031-05-14"}, "end": {"date": "2031-05-15"},
        "extendedProperties": {"private": {"calsync": "not ours", "other": "x"}, "shared": {"calsync": "v1;a;b;c;d"}},
    }));
    assert_eq!(ev.marker, None);
}

#[test]
fn patch_clears_what_is_now_absent() {
    let mut e = data();
    e.description = None;
    e.category = None;
    let body = to_body(&e, None, Mode::Patch);
    assert!(body.get("id").is_none(), "a patch never changes the id");
    assert_eq!(body["description"], json!(null));
    assert_eq!(body["recurrence"], json!(null));
    assert_eq!(body["extendedProperties"]["private"]["calsyncCategory"], json!(null));
    assert_eq!(body["extendedProperties"]["private"]["calsync"], json!(e.marker.encode()));
    assert_eq!(body["start"]["date"], json!(null), "an all-day event becoming timed loses its date");
    let insert = to_body(&e, Some("abcde"), Mode::Insert);
    assert!(insert.get("description").is_none() && insert["extendedProperties"]["private"].get(CATEGORY_KEY).is_none());
}

#[test]
fn recurring_events_always_have_a_time_zone() {
    let mut e = data();
    e.recurrence = vec!["RRULE:FREQ=WEEKLY;COUNT=4".into(), "EXDATE:20310321T100000".into(), "DTSTART:x".into()];
    let body = to_body(&e, Some("abcde"), Mode::Insert);
    assert_eq!(
        body["recurrence"],
        json!(["RRULE:FREQ=WEEKLY;COUNT=4", "EXDATE;TZID=America/New_York:20310321T100000"]),
        "DTSTART is not allowed there; a floating EXDATE takes the event's zone"
    );
    let utc = Utc.with_ymd_and_hms(2031, 3, 14, 14, 0, 0).unwrap();
    e.start = EventTime::DateTime { utc, local: utc.naive_utc(), zone: None };
    e.end = EventTime::DateTime { utc: utc + Duration::hours(1), local: utc.naive_utc(), zone: None };
    let body = to_body(&e, Some("abcde"), Mode::Insert);
    assert_eq!(body["start"], json!({"dateTime": "2031-03-14T14:00:00Z", "timeZone": "UTC"}));
    assert_eq!(body["end"]["timeZone"], "UTC");
    assert_eq!(body["recurrence"][1], "EXDATE:20310321T100000", "UTC needs no TZID");
    e.recurrence.clear();
    let body = to_body(&e, Some("abcde"), Mode::Insert);
    assert_eq!(body["start"], json!({"dateTime": "2031-03-14T14:00:00Z"}), "a single event needs no zone");
    let read = parse_event(json!({
        "id": "abcde", "recurrence": ["RRULE:FREQ=DAILY"],
        "start": {"dateTime": "2031-03-14T14:00:00Z", "timeZone": "UTC"}, "end": {"dateTime": "2031-03-14T15:00:00Z"},
    }));
    assert_eq!(read.recurrence, vec!["RRULE:FREQ=DAILY".to_string()]);
}

#[test]
fn cancelled_events_need_only_an_id() {
    let ev = parse_event(json!({"id": "abcde", "status": "cancelled"}));
    assert!(ev.cancelled);
    let live = serde_json::from_value::<GEvent>(json!({"id": "abcde", "status": "confirmed"})).unwrap();
    assert!(matches!(to_remote(live), Err(ProviderError::Invalid { message }) if message.contains("abcde")));
}

#[test]
fn calendar_list_entries_map_to_calendar_info() {
    let list: GCalendarList = serde_json::from_value(json!({
        "items": [
            {"id": "me@example.com", "summary": "me@example.com", "summaryOverride": "Mine", "primary": true, "accessRole": "owner"},
            {"id": "abc#holiday@group.v.calendar.google.com", "summary": "Holidays", "accessRole": "reader"},
            {"id": "team@group.calendar.google.com", "summary": "Team", "accessRole": "writer"},
            {"id": "busy@example.com", "accessRole": "freeBusyReader"},
        ]
    }))
    .unwrap();
    let infos: Vec<CalendarInfo> = list.items.iter().map(|c| c.to_info()).collect();
    assert_eq!(
        infos.iter().map(|c| (c.name.as_str(), c.primary, c.writable)).collect::<Vec<_>>(),
        vec![
            ("Mine", true, true),
            ("Holidays", false, false),
            ("Team", false, true),
            ("busy@example.com", false, false)
        ]
    );
}

#[test]
fn a_free_block_is_transparent_and_a_patch_back_to_busy_clears_it() {
    let mut ev = data();
    assert!(to_body(&ev, Some("abc"), Mode::Insert).get("transparency").is_none(), "busy: Google's default");
    ev.transparent = true;
    assert_eq!(to_body(&ev, Some("abc"), Mode::Insert)["transparency"], "transparent");
    ev.transparent = false;
    assert!(to_body(&ev, None, Mode::Patch)["transparency"].is_null());
}
