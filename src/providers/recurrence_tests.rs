use chrono::{NaiveDate, TimeZone, Timelike};

use super::*;

fn ny(y: i32, m: u32, d: u32, h: u32) -> EventTime {
    let tz: Tz = "America/New_York".parse().unwrap();
    let local = NaiveDate::from_ymd_opt(y, m, d).unwrap().and_hms_opt(h, 0, 0).unwrap();
    let utc = tz.from_local_datetime(&local).unwrap().with_timezone(&Utc);
    EventTime::DateTime { utc, local, zone: Some("America/New_York".into()) }
}

fn window(from: &str, to: &str) -> Window {
    Window {
        from: DateTime::parse_from_rfc3339(from).unwrap().with_timezone(&Utc),
        to: DateTime::parse_from_rfc3339(to).unwrap().with_timezone(&Utc),
    }
}

fn series(lines: &[&str]) -> RemoteEvent {
    let data = crate::providers::EventData {
        title: "Standup".into(),
        description: None,
        category: None,
        start: ny(2027, 2, 24, 9),
        end: ny(2027, 2, 24, 10),
        transparent: false,
        recurrence: lines.iter().map(|l| l.to_string()).collect(),
        exceptions: Vec::new(),
        marker: crate::providers::Marker { owner: "o".into(), uid: "u".into(), task_id: "t".into(), hash: "h".into() },
    };
    let mut ev = RemoteEvent::stored("s1", "e".into(), "l".into(), &data);
    ev.marker = None;
    ev
}

#[test]
fn weekly_series_keeps_its_local_time_across_the_dst_change() {
    // New York springs forward on 2027-03-14: 09:00 is 14:00Z before and 13:00Z after.
    let ev = series(&["RRULE:FREQ=WEEKLY;BYDAY=WE;COUNT=6"]);
    let w = window("2027-02-01T00:00:00Z", "2027-05-01T00:00:00Z");
    let occ = expand(&ev.start, &ev.end, &ev.recurrence, &w).unwrap();
    let utc_hours: Vec<u32> = occ.iter().map(|(s, _)| instant(s).hour()).collect();
    assert_eq!(utc_hours, vec![14, 14, 14, 13, 13, 13]);
    for (s, e) in &occ {
        let EventTime::DateTime { local, zone, .. } = s else { panic!("timed") };
        assert_eq!((local.hour(), zone.as_deref()), (9, Some("America/New_York")));
        assert_eq!(instant(e) - instant(s), Duration::hours(1));
    }
}

#[test]
fn exceptions_apply_cancelled_gone_moved_at_their_new_time() {
    let mut ev = series(&["RRULE:FREQ=WEEKLY;BYDAY=WE"]);
    ev.exceptions = vec![
        Exception::cancelled(ny(2027, 3, 3, 9)),
        Exception::moved(ny(2027, 3, 17, 9), ny(2027, 3, 18, 15), ny(2027, 3, 18, 16)),
    ];
    let w = window("2027-02-28T00:00:00Z", "2027-03-28T00:00:00Z");
    let starts: Vec<DateTime<Utc>> = occurrences(&ev, &w).unwrap().iter().map(|(s, _)| instant(s)).collect();
    let want: Vec<DateTime<Utc>> =
        [ny(2027, 3, 10, 9), ny(2027, 3, 18, 15), ny(2027, 3, 24, 9)].iter().map(instant).collect();
    assert_eq!(starts, want);
    // A window holding only the cancelled occurrence has none; one holding only the moved
    // occurrence's new time has it.
    assert!(!occurs_in(&ev, &window("2027-03-03T00:00:00Z", "2027-03-04T00:00:00Z")));
    assert!(occurs_in(&ev, &window("2027-03-18T18:00:00Z", "2027-03-18T21:00:00Z")));
    assert!(!occurs_in(&ev, &window("2027-03-17T00:00:00Z", "2027-03-18T00:00:00Z")));
}

#[test]
fn ended_series_does_not_occur_later() {
    let ev = series(&["RRULE:FREQ=WEEKLY;BYDAY=WE;UNTIL=20270310T140000Z"]);
    assert!(!occurs_in(&ev, &window("2027-04-01T00:00:00Z", "2027-05-01T00:00:00Z")));
    assert!(occurs_in(&ev, &window("2027-03-10T00:00:00Z", "2027-03-11T00:00:00Z")));
}

#[test]
fn exdates_become_cancelled_exceptions_in_every_form() {
    let ev = series(&[
        "RRULE:FREQ=WEEKLY;BYDAY=WE",
        "EXDATE;TZID=America/New_York:20270303T090000",
        "EXDATE:20270317T130000Z,20270324T090000",
    ]);
    let got: Vec<DateTime<Utc>> =
        exdate_exceptions(&ev.start, &ev.recurrence).iter().map(|x| instant(&x.original_start)).collect();
    let want: Vec<DateTime<Utc>> =
        [ny(2027, 3, 3, 9), ny(2027, 3, 17, 9), ny(2027, 3, 24, 9)].iter().map(instant).collect();
    assert_eq!(got, want);
    // The expansion drops them too.
    let w = window("2027-03-01T00:00:00Z", "2027-03-30T00:00:00Z");
    let starts: Vec<DateTime<Utc>> =
        expand(&ev.start, &ev.end, &ev.recurrence, &w).unwrap().iter().map(|(s, _)| instant(s)).collect();
    assert_eq!(starts, vec![instant(&ny(2027, 3, 10, 9))]);
}

#[test]
fn all_day_series_and_date_exdates() {
    let start = EventTime::Date(NaiveDate::from_ymd_opt(2027, 3, 1).unwrap());
    let end = EventTime::Date(NaiveDate::from_ymd_opt(2027, 3, 2).unwrap());
    let lines = vec!["RRULE:FREQ=DAILY;COUNT=4".to_string(), "EXDATE;VALUE=DATE:20270302".to_string()];
    let w = window("2027-02-01T00:00:00Z", "2027-04-01T00:00:00Z");
    let days: Vec<EventTime> = expand(&start, &end, &lines, &w).unwrap().into_iter().map(|(s, _)| s).collect();
    let d = |n| EventTime::Date(NaiveDate::from_ymd_opt(2027, 3, n).unwrap());
    assert_eq!(days, vec![d(1), d(3), d(4)]);
    assert_eq!(exdate_exceptions(&start, &lines), vec![Exception::cancelled(d(2))]);
}

#[test]
fn merge_prefers_the_providers_exception_and_sorts() {
    let ev = series(&["RRULE:FREQ=WEEKLY;BYDAY=WE", "EXDATE;TZID=America/New_York:20270303T090000"]);
    let moved = Exception::moved(ny(2027, 3, 3, 9), ny(2027, 3, 4, 9), ny(2027, 3, 4, 10));
    let other = Exception::cancelled(ny(2027, 2, 24, 9));
    let merged = merge_exceptions(&ev.start, &ev.recurrence, vec![moved.clone(), other.clone()]);
    assert_eq!(merged, vec![other, moved]);
}

#[test]
fn unreadable_rules_are_an_error_not_a_panic() {
    let ev = series(&["RRULE:FREQ=SOMETIMES"]);
    let w = window("2027-02-01T00:00:00Z", "2027-05-01T00:00:00Z");
    assert!(expand(&ev.start, &ev.end, &ev.recurrence, &w).is_err());
    // The provider listed it for the window: trusted.
    assert!(occurs_in(&ev, &w));
}
