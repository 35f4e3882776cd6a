use chrono::{DateTime, Utc};

use super::resource_busy;
use crate::providers::Window;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}
fn w(a: &str, b: &str) -> Window {
    Window { from: t(a), to: t(b) }
}
fn ics(body: &str) -> String {
    format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\n{}END:VCALENDAR\r\n", body.replace('\n', "\r\n"))
}
const NY: chrono_tz::Tz = chrono_tz::America::New_York;

#[test]
fn weekly_series_with_exdate_and_a_moved_occurrence_across_dst() {
    // Mondays 10:00–11:00 New York from 2 March 2026; 9 March cancelled by EXDATE, 16 March moved
    // to 14:00. The March 8 DST change keeps it at 10:00 local (15:00Z before, 14:00Z after).
    let text = ics("BEGIN:VEVENT
UID:weekly@t
DTSTART;TZID=America/New_York:20260302T100000
DTEND;TZID=America/New_York:20260302T110000
RRULE:FREQ=WEEKLY;COUNT=4
EXDATE;TZID=America/New_York:20260309T100000
SUMMARY:Standup
END:VEVENT
BEGIN:VEVENT
UID:weekly@t
RECURRENCE-ID;TZID=America/New_York:20260316T100000
DTSTART;TZID=America/New_York:20260316T140000
DTEND;TZID=America/New_York:20260316T150000
SUMMARY:Standup (moved)
END:VEVENT
");
    let got = resource_busy(&text, None, &w("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"), NY);
    assert_eq!(
        got,
        vec![
            w("2026-03-02T15:00:00Z", "2026-03-02T16:00:00Z"),
            w("2026-03-16T18:00:00Z", "2026-03-16T19:00:00Z"),
            w("2026-03-23T14:00:00Z", "2026-03-23T15:00:00Z"),
        ]
    );
}

#[test]
fn transparent_cancelled_and_declined_events_are_free() {
    let window = w("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z");
    let single = |extra: &str| {
        ics(&format!(
            "BEGIN:VEVENT\nUID:x@t\nDTSTART:20260303T150000Z\nDTEND:20260303T160000Z\n{extra}SUMMARY:x\nEND:VEVENT\n"
        ))
    };
    assert_eq!(resource_busy(&single(""), None, &window, NY).len(), 1);
    assert!(resource_busy(&single("TRANSP:TRANSPARENT\n"), None, &window, NY).is_empty());
    assert_eq!(resource_busy(&single("TRANSP:OPAQUE\n"), None, &window, NY).len(), 1);
    assert!(resource_busy(&single("STATUS:CANCELLED\n"), None, &window, NY).is_empty());
    let declined = single(
        "ATTENDEE;PARTSTAT=DECLINED:mailto:Alice@Example.com\nATTENDEE;PARTSTAT=ACCEPTED:mailto:bob@example.com\n",
    );
    assert!(resource_busy(&declined, Some("alice@example.com"), &window, NY).is_empty());
    // Someone else declining does not free the account's time, nor does an unknown account.
    assert_eq!(resource_busy(&declined, Some("bob@example.com"), &window, NY).len(), 1);
    assert_eq!(resource_busy(&declined, None, &window, NY).len(), 1);
}

#[test]
fn a_free_override_frees_only_its_occurrence_and_all_day_is_the_local_day() {
    let text = ics("BEGIN:VEVENT
UID:daily@t
DTSTART:20260302T150000Z
DTEND:20260302T153000Z
RRULE:FREQ=DAILY;COUNT=3
END:VEVENT
BEGIN:VEVENT
UID:daily@t
RECURRENCE-ID:20260303T150000Z
DTSTART:20260303T150000Z
DTEND:20260303T153000Z
TRANSP:TRANSPARENT
END:VEVENT
");
    let got = resource_busy(&text, None, &w("2026-03-01T00:00:00Z", "2026-03-10T00:00:00Z"), NY);
    assert_eq!(
        got,
        vec![w("2026-03-02T15:00:00Z", "2026-03-02T15:30:00Z"), w("2026-03-04T15:00:00Z", "2026-03-04T15:30:00Z")]
    );
    let all_day = ics("BEGIN:VEVENT\nUID:d@t\nDTSTART;VALUE=DATE:20260305\nDTEND;VALUE=DATE:20260306\nEND:VEVENT\n");
    assert_eq!(
        resource_busy(&all_day, None, &w("2026-03-01T00:00:00Z", "2026-03-10T00:00:00Z"), NY),
        vec![w("2026-03-05T05:00:00Z", "2026-03-06T05:00:00Z")]
    );
    assert!(resource_busy("not ical", None, &w("2026-03-01T00:00:00Z", "2026-03-10T00:00:00Z"), NY).is_empty());
}
