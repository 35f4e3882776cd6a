//! `ical_read` gives the tree the `icalendar` crate's reader gives, on what servers and apps
//! write, and refuses what it refuses.

use super::*;
use crate::providers::EventTime;
use chrono::{TimeZone, Utc};

/// The crate's reader, as `ical` used it before.
fn crate_read(text: &str) -> Result<(Vec<Property<'static>>, Vec<Component<'static>>), String> {
    let unfolded = icalendar::parser::unfold(text);
    let cal = icalendar::parser::read_calendar(&unfolded)?;
    Ok((cal.properties.iter().map(owned).collect(), cal.components.iter().map(owned_c).collect()))
}

fn owned(p: &Property<'_>) -> Property<'static> {
    Property {
        name: p.name.to_owned(),
        val: p.val.to_owned(),
        params: p
            .params
            .iter()
            .map(|x| Parameter { key: x.key.to_owned(), val: x.val.as_ref().map(|v| v.to_owned()) })
            .collect(),
    }
}

fn owned_c(c: &Component<'_>) -> Component<'static> {
    Component {
        name: c.name.to_owned(),
        properties: c.properties.iter().map(owned).collect(),
        components: c.components.iter().map(owned_c).collect(),
    }
}

fn ours(text: &str) -> Result<(Vec<Property<'static>>, Vec<Component<'static>>), String> {
    let cal = read_calendar(text)?;
    Ok((cal.properties.iter().map(owned).collect(), cal.components.iter().map(owned_c).collect()))
}

fn event(zone: Option<&str>, description: Option<&str>) -> crate::providers::EventData {
    let t = Utc.with_ymd_and_hms(2026, 3, 2, 14, 0, 0).single().unwrap();
    let at =
        |u: chrono::DateTime<Utc>| EventTime::DateTime { utc: u, local: u.naive_utc(), zone: zone.map(str::to_string) };
    crate::providers::EventData {
        title: "Math, chapter 3; exercises \\ all: \"quoted\"".into(),
        description: description.map(str::to_string),
        category: Some("Home,work".into()),
        start: at(t),
        end: at(t + chrono::Duration::hours(1)),
        recurrence: vec!["RRULE:FREQ=WEEKLY;COUNT=4".into(), "EXDATE:20260316T140000".into()],
        exceptions: vec![],
        transparent: false,
        marker: crate::providers::Marker {
            owner: "calsync".into(),
            uid: "uid-1".into(),
            task_id: "t;1,x".into(),
            hash: "abc".into(),
        },
    }
}

const FOREIGN: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Apple Inc.//macOS 14//EN\r\nBEGIN:VTIMEZONE\r\nTZID:W. Europe Standard Time\r\nBEGIN:STANDARD\r\nDTSTART:16010101T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\nBEGIN:VEVENT\r\nUID:abc\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;TZID=W. Europe Standard Time:20260105T100000\r\nDURATION:PT1H30M\r\nSUMMARY:Dentist\r\n  appointment\r\nDESCRIPTION:a\\nb\\, c\\; d\\\\ e\\: f \\q\r\nLOCATION;ALTREP=\"http://x/y;z:w\":Room 1\r\nATTENDEE;CN=\"Doe, J\";ROLE=REQ-PARTICIPANT:mailto:j@x\r\nATTENDEE;DELEGATED-FROM=\"mailto:a@x\",\"mailto:b@x\":mailto:c@x\r\nCATEGORIES:A\\,B,C\r\nX-CALSYNC-MARKER:calsync\\;uid\\,1\r\nX-EMPTY:\r\nSTATUS:CONFIRMED\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:abc\r\nRECURRENCE-ID:20260112T100000Z\r\nDTSTART:20260112T110000Z\r\nSUMMARY:moved\r\nBEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:-PT15M\r\nDESCRIPTION:Reminder\r\nEND:VALARM\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

#[test]
fn same_tree_as_the_crate_reader() {
    let ours_ics = [
        crate::providers::caldav::to_ics(
            &event(Some("America/New_York"), Some(&"Long notes, folded. ".repeat(12))),
            Utc::now(),
        ),
        crate::providers::caldav::to_ics(&event(None, None), Utc::now()),
    ];
    let lf = FOREIGN.replace("\r\n", "\n");
    let tabs = FOREIGN.replace("\r\n  appointment", "\r\n\t appointment");
    let mut inputs: Vec<String> = ours_ics.to_vec();
    inputs.extend([FOREIGN.to_string(), lf, tabs]);
    inputs.push("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:m\nDTSTART;TZID=/mozilla.org/20050126_1/Europe/Berlin:20260701T100000\nSUMMARY:x\nEND:VEVENT\nEND:VCALENDAR\n".into());
    inputs.push("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:d\nDTSTART;VALUE=DATE:20260301\nSUMMARY;LANGUAGE=de:Grüße\\, Welt\nDESCRIPTION;VALUE=URI:http://x\\,y\nEND:VEVENT\nEND:VCALENDAR".into());
    inputs.push("BEGIN:VCALENDAR\nBEGIN:VEVENT\nATTENDEE;CN=\"open:mailto:x\nEND:VEVENT\nEND:VCALENDAR\n".into());
    inputs.push("BEGIN:VEVENT\nUID:bare\nDTSTART:20260101T000000Z\nEND:VEVENT\n".into());
    inputs.push("BEGIN:VCALENDAR\r\n\r\nBEGIN:VEVENT\r\nUID:blank-lines\r\n\r\nDTSTART:20260101T000000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n".into());
    for text in &inputs {
        assert_eq!(ours(text), crate_read(text), "{text}");
    }
    // Nothing is copied but folded lines and unescaped TEXT.
    let cal = read_calendar(&inputs[4]).unwrap();
    let ev = &cal.components[1];
    let borrowed = |p: &ParseString<'_>| inputs[4].as_bytes().as_ptr_range().contains(&p.as_str().as_ptr());
    assert!(borrowed(&ev.find_prop("DTSTART").unwrap().val) && borrowed(&ev.find_prop("UID").unwrap().val));
    assert!(!borrowed(&ev.find_prop("DESCRIPTION").unwrap().val), "unescaped text is a new string");
}

#[test]
fn refuses_what_the_crate_refuses() {
    for bad in [
        "BEGIN:VCALENDAR\ngarbage: x\n",
        "BEGIN:VCALENDAR\r\ngarbage",
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nEND:VCALENDAR\nEND:VEVENT\n",
        "SUMMARY:outside\n",
        "BEGIN:\n",
    ] {
        assert!(crate_read(bad).is_err(), "the crate accepts {bad:?}; fix the test");
        assert!(read_calendar(bad).is_err(), "{bad:?}");
    }
    assert!(read_calendar("").is_ok_and(|c| c.components.is_empty()), "nothing in, nothing out");
}

#[test]
fn lines_unfold_and_borrow() {
    let got: Vec<Cow<'_, str>> = lines("A:1\r\nB:2\r\n 3\r\n\t4\nC:5").collect();
    assert_eq!(got, vec!["A:1", "B:234", "C:5"]);
    assert!(matches!(got[0], Cow::Borrowed(_)) && matches!(got[1], Cow::Owned(_)));
}
