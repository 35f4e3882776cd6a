//! The one-answer listing's reading of a sync-collection answer and its window filter.

use super::*;
use chrono::{TimeZone, Utc};

fn ics(uid: &str, start: &str, end: &str, extra: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20300101T000000Z\r\n\
         DTSTART:{start}\r\nDTEND:{end}\r\nSUMMARY:{uid}\r\n{extra}END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

fn event(text: &str) -> RemoteEvent {
    let url = Url::parse("http://h/u/cal/x.ics").unwrap();
    remote("x".into(), &url, None, parse_ics(text).unwrap())
}

fn june() -> Window {
    Window {
        from: Utc.with_ymd_and_hms(2031, 6, 1, 0, 0, 0).unwrap(),
        to: Utc.with_ymd_and_hms(2031, 7, 1, 0, 0, 0).unwrap(),
    }
}

#[test]
fn a_sync_answer_gives_events_members_without_data_removals_and_truncation() {
    let with = ics("a", "20310601T090000Z", "20310601T100000Z", "");
    let body = format!(
        r#"<?xml version="1.0"?><d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
<d:response><d:href>/u/cal/</d:href><d:status>HTTP/1.1 507 Insufficient Storage</d:status></d:response>
<d:response><d:href>/u/cal/a.ics</d:href><d:propstat><d:prop><d:getetag>"1"</d:getetag><c:calendar-data>{with}</c:calendar-data></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>
<d:response><d:href>/u/cal/b.ics</d:href><d:propstat><d:prop><d:getetag>"2"</d:getetag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>
 <d:propstat><d:prop><c:calendar-data/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat></d:response>
<d:response><d:href>/u/cal/c.ics</d:href><d:propstat><d:prop><c:calendar-data>BEGIN:VCALENDAR
BEGIN:VTODO
UID:t
END:VTODO
END:VCALENDAR</c:calendar-data></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>
<d:response><d:href>/u/cal/gone.ics</d:href><d:status>HTTP/1.1 404 Not Found</d:status></d:response>
<d:sync-token>tok-1</d:sync-token></d:multistatus>"#
    );
    let url = Url::parse("http://h/u/cal/").unwrap();
    let mut got = Gathered::default();
    let mut truncated = false;
    let token = each_member(body.as_bytes(), |m| got.member(&url, m, &mut truncated)).unwrap();
    assert_eq!(token.as_deref(), Some("tok-1"));
    assert!(truncated, "507 on the collection is a truncated answer");
    assert_eq!(got.without_data, vec!["/u/cal/b.ics".to_string()]);
    let events: Vec<_> = got.order.iter().flatten().collect();
    assert_eq!(events.len(), 1, "the VTODO and the removed member give no event");
    assert_eq!((events[0].id.as_str(), events[0].etag.as_deref()), ("a", Some("\"1\"")));

    // A later round removes b and changes a: b is no longer fetched, a is replaced in place.
    let newer = ics("a", "20310602T090000Z", "20310602T100000Z", "");
    let later = format!(
        r#"<multistatus xmlns="DAV:"><response><href>/u/cal/b.ics</href><status>HTTP/1.1 404 Not Found</status></response>
<response><href>/u/cal/a.ics</href><propstat><prop><getetag>"3"</getetag><calendar-data xmlns="urn:ietf:params:xml:ns:caldav">{newer}</calendar-data></prop><status>HTTP/1.1 200 OK</status></propstat></response>
<sync-token>tok-2</sync-token></multistatus>"#
    );
    let mut truncated = false;
    let token = each_member(later.as_bytes(), |m| got.member(&url, m, &mut truncated)).unwrap();
    assert_eq!((token.as_deref(), truncated), (Some("tok-2"), false));
    assert!(got.without_data.is_empty());
    let events: Vec<_> = got.order.iter().flatten().collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].etag.as_deref(), Some("\"3\""));
}

#[test]
fn single_events_are_filtered_as_a_time_range_query_does() {
    let w = june();
    let inside = event(&ics("in", "20310615T090000Z", "20310615T100000Z", ""));
    let before = event(&ics("before", "20310531T090000Z", "20310601T000000Z", ""));
    let across = event(&ics("across", "20310531T230000Z", "20310601T010000Z", ""));
    let after = event(&ics("after", "20310701T000000Z", "20310701T010000Z", ""));
    let zero_at_start = event(&ics("zero", "20310601T000000Z", "20310601T000000Z", ""));
    assert!(in_window(&inside, &w) && in_window(&across, &w) && in_window(&zero_at_start, &w));
    assert!(!in_window(&before, &w), "an event ending at the window's start is not in it");
    assert!(!in_window(&after, &w), "an event starting at the window's end is not in it");
}

#[test]
fn series_count_when_an_occurrence_overlaps() {
    let w = june();
    let weekly = |start: &str, end: &str, extra: &str| event(&ics("s", start, end, extra));
    // Starts long before, still running: in.
    assert!(in_window(&weekly("20310105T090000Z", "20310105T100000Z", "RRULE:FREQ=WEEKLY\r\n"), &w));
    // Ended before the window (a series that starts before its end is not enough).
    assert!(!in_window(&weekly("20310105T090000Z", "20310105T100000Z", "RRULE:FREQ=WEEKLY;COUNT=3\r\n"), &w));
    // Starts after the window.
    assert!(!in_window(&weekly("20310705T090000Z", "20310705T100000Z", "RRULE:FREQ=WEEKLY\r\n"), &w));
    // The only occurrence in the window is excluded.
    let last_in_june = "RRULE:FREQ=WEEKLY;COUNT=2\r\nEXDATE:20310604T090000Z\r\n";
    assert!(!in_window(&weekly("20310528T090000Z", "20310528T100000Z", last_in_june), &w));
    assert!(in_window(&weekly("20310528T090000Z", "20310528T100000Z", "RRULE:FREQ=WEEKLY;COUNT=2\r\n"), &w));
}
