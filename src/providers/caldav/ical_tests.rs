//! Unit tests of `ical`: round trips of our events and reading events other apps wrote.

use super::*;
use chrono::{NaiveDate, TimeZone};

fn dt(y: i32, mo: u32, d: u32, h: u32, zone: &str) -> EventTime {
    let tz: Tz = zone.parse().unwrap();
    let local = NaiveDate::from_ymd_opt(y, mo, d).unwrap().and_hms_opt(h, 0, 0).unwrap();
    let utc = tz.from_local_datetime(&local).single().unwrap().with_timezone(&Utc);
    EventTime::DateTime { utc, local, zone: Some(zone.into()) }
}

fn data() -> EventData {
    EventData {
        title: "Math, chapter 3; exercises \\ all".into(),
        description: Some("line one\nline two, with comma".into()),
        category: Some("Home,work".into()),
        start: dt(2026, 3, 2, 9, "America/New_York"),
        end: dt(2026, 3, 2, 10, "America/New_York"),
        transparent: false,
        recurrence: vec!["RRULE:FREQ=WEEKLY;COUNT=4".into(), "EXDATE:20260316T090000".into()],
        exceptions: Vec::new(),
        marker: Marker { owner: "calsync".into(), uid: "uid-1".into(), task_id: "t;1,x".into(), hash: "abc".into() },
    }
}

#[test]
fn round_trip_keeps_every_field() {
    let ics = to_ics(&data(), Utc::now());
    assert!(ics.contains("DTSTART;TZID=America/New_York:20260302T090000"), "{ics}");
    assert!(ics.contains("DTEND;TZID=America/New_York:20260302T100000"), "{ics}");
    assert!(
        ics.contains("BEGIN:VTIMEZONE")
            && ics.contains(&format!("UID:{}@calsync", crate::providers::event_key("uid-1"))),
        "{ics}"
    );
    assert!(ics.contains("EXDATE;TZID=America/New_York:20260316T090000"), "{ics}");
    assert_eq!(ics.matches("UID:").count(), 1, "no UID in VTIMEZONE: {ics}");
    assert!(ics.lines().all(|l| l.len() <= 75), "lines are folded");
    let p = parse_ics(&ics).unwrap();
    let d = data();
    assert_eq!(p.title, d.title);
    assert_eq!(p.description, d.description);
    assert_eq!(p.category, d.category);
    assert_eq!(p.start, d.start);
    assert_eq!(p.end, d.end);
    assert_eq!(p.zone.as_deref(), Some("America/New_York"));
    assert_eq!(p.marker, Some(d.marker));
    assert_eq!(
        p.recurrence,
        vec!["RRULE:FREQ=WEEKLY;COUNT=4".to_string(), "EXDATE;TZID=America/New_York:20260316T090000".to_string()]
    );
    assert_eq!(p.uid, Some(format!("{}@calsync", crate::providers::event_key("uid-1"))));
}

#[test]
fn all_day_is_a_date() {
    let mut d = data();
    d.start = EventTime::Date(NaiveDate::from_ymd_opt(2026, 12, 31).unwrap());
    d.end = EventTime::Date(NaiveDate::from_ymd_opt(2027, 1, 1).unwrap());
    d.recurrence.clear();
    let ics = to_ics(&d, Utc::now());
    assert!(ics.contains("DTSTART;VALUE=DATE:20261231") && ics.contains("DTEND;VALUE=DATE:20270101"), "{ics}");
    assert!(!ics.contains("VTIMEZONE"));
    let p = parse_ics(&ics).unwrap();
    assert_eq!((p.start, p.end), (d.start, d.end));
}

#[test]
fn foreign_events_parse() {
    let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VTIMEZONE\r\nTZID:W. Europe Standard Time\r\nBEGIN:STANDARD\r\nDTSTART:16010101T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\nBEGIN:VEVENT\r\nUID:abc\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;TZID=W. Europe Standard Time:20260105T100000\r\nDURATION:PT1H30M\r\nSUMMARY:Dentist\r\n  appointment\r\nCATEGORIES:A\\,B,C\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:abc\r\nRECURRENCE-ID:20260112T100000Z\r\nDTSTART:20260112T110000Z\r\nSUMMARY:moved\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let p = parse_ics(ics).unwrap();
    assert_eq!(p.title, "Dentist appointment");
    assert!(p.marker.is_none());
    assert_eq!(p.category.as_deref(), Some("A,B"));
    assert_eq!(p.zone.as_deref(), Some("Europe/Berlin"), "Windows zone names map to IANA");
    match (&p.start, &p.end) {
        (EventTime::DateTime { utc: s, .. }, EventTime::DateTime { utc: e, .. }) => {
            assert_eq!(s.to_rfc3339(), "2026-01-05T09:00:00+00:00");
            assert_eq!(*e - *s, Duration::minutes(90));
        }
        other => panic!("{other:?}"),
    }
    let moz = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:m\nDTSTART;TZID=/mozilla.org/20050126_1/Europe/Berlin:20260701T100000\nSUMMARY:x\nEND:VEVENT\nEND:VCALENDAR\n";
    assert_eq!(parse_ics(moz).unwrap().zone.as_deref(), Some("Europe/Berlin"));
    let date_only =
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:d\nDTSTART;VALUE=DATE:20260301\nSUMMARY:x\nEND:VEVENT\nEND:VCALENDAR\n";
    assert_eq!(parse_ics(date_only).unwrap().end, EventTime::Date(NaiveDate::from_ymd_opt(2026, 3, 2).unwrap()));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for bad in [
        "",
        "hello",
        "BEGIN:VCALENDAR\nEND:VCALENDAR\n",
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY:x\nEND:VEVENT\nEND:VCALENDAR\n",
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART:2026-13-45\nEND:VEVENT\nEND:VCALENDAR\n",
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART:20260101T000000Z\nDURATION:PXYZ\nEND:VEVENT\nEND:VCALENDAR\n",
    ] {
        assert!(matches!(parse_ics(bad), Err(ProviderError::Invalid { .. })), "{bad:?}");
    }
}

#[test]
fn recurrence_id_overrides_become_exceptions_of_the_master() {
    let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\n\
BEGIN:VEVENT\r\nUID:s1\r\nDTSTART;TZID=America/New_York:20270224T090000\r\n\
DTEND;TZID=America/New_York:20270224T100000\r\nSUMMARY:Standup\r\n\
RRULE:FREQ=WEEKLY;BYDAY=WE\r\nEXDATE;TZID=America/New_York:20270310T090000\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:s1\r\nRECURRENCE-ID;TZID=America/New_York:20270303T090000\r\n\
DTSTART;TZID=America/New_York:20270304T150000\r\nDTEND;TZID=America/New_York:20270304T160000\r\n\
SUMMARY:Standup (moved)\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:s1\r\nRECURRENCE-ID;TZID=America/New_York:20270317T090000\r\n\
DTSTART;TZID=America/New_York:20270317T090000\r\nDTEND;TZID=America/New_York:20270317T100000\r\n\
STATUS:CANCELLED\r\nSUMMARY:Standup\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:s1\r\nRECURRENCE-ID;TZID=America/New_York:20270324T090000\r\n\
DTSTART;TZID=America/New_York:20270324T090000\r\nDTEND;TZID=America/New_York:20270324T100000\r\n\
SUMMARY:Only the title changed\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    // The overrides come first in some servers' output; the master is found anyway.
    let p = parse_ics(ics).unwrap();
    assert_eq!(p.title, "Standup");
    assert_eq!(p.recurrence.len(), 2);
    let ny = "America/New_York";
    assert_eq!(
        p.exceptions,
        vec![
            Exception::moved(dt(2027, 3, 3, 9, ny), dt(2027, 3, 4, 15, ny), dt(2027, 3, 4, 16, ny)),
            Exception::cancelled(dt(2027, 3, 17, 9, ny)),
        ]
    );
    // A single event has none.
    assert!(parse_ics(&to_ics(&data(), chrono::Utc::now())).unwrap().exceptions.is_empty());
}

#[test]
fn written_exceptions_read_back_as_exdate_and_override() {
    let ny = "America/New_York";
    let mut ev = data();
    ev.recurrence = vec!["RRULE:FREQ=WEEKLY;COUNT=6".into()];
    ev.exceptions = vec![
        Exception::cancelled(dt(2026, 3, 9, 9, ny)),
        Exception::moved(dt(2026, 3, 16, 9, ny), dt(2026, 3, 17, 15, ny), dt(2026, 3, 17, 16, ny)),
    ];
    let ics = to_ics(&ev, chrono::Utc::now());
    assert!(ics.contains("EXDATE;TZID=America/New_York:20260309T090000"), "{ics}");
    assert!(ics.contains("RECURRENCE-ID;TZID=America/New_York:20260316T090000"), "{ics}");
    let p = parse_ics(&ics).unwrap();
    assert_eq!(p.title, ev.title);
    let all = crate::providers::recurrence::merge_exceptions(&p.start, &p.recurrence, p.exceptions);
    assert_eq!(all, ev.exceptions);
}

#[test]
fn a_free_block_is_transp_transparent() {
    let mut d = data();
    assert!(!to_ics(&d, Utc::now()).contains("TRANSP"));
    d.transparent = true;
    assert!(to_ics(&d, Utc::now()).contains("TRANSP:TRANSPARENT"));
    assert_ne!(d.content_hash("c"), data().content_hash("c"), "a change of transparency is a change");
}
