//! The field diff `calsync plan` shows for a write: what the calendar holds now against what the
//! engine would write, field by field, in the terms the engine compares (title, description,
//! category, start, end, zone, recurrence, exceptions, transparency, calendar).
//!
//! Owns: the comparison and its rendering. Must not touch: the decision (`plan`).

use serde::Serialize;

use crate::providers::{EventData, EventTime, Exception, RemoteEvent};

/// One field that would change. `old` is `None` for a field the calendar does not hold yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub field: &'static str,
    pub old: Option<String>,
    pub new: Option<String>,
}

fn time(t: &EventTime) -> String {
    t.to_rfc3339_or_date()
}

fn zone(t: &EventTime) -> Option<String> {
    match t {
        EventTime::DateTime { zone, .. } => zone.clone(),
        EventTime::Date(_) => None,
    }
}

fn text(s: &Option<String>) -> Option<String> {
    s.as_ref().filter(|s| !s.is_empty()).cloned()
}

fn lines(v: &[String]) -> Option<String> {
    (!v.is_empty()).then(|| v.join(" "))
}

fn exceptions(v: &[Exception]) -> Option<String> {
    if v.is_empty() {
        return None;
    }
    let one = |e: &Exception| match (&e.start, e.cancelled) {
        (_, true) => format!("{} cancelled", time(&e.original_start)),
        (Some(s), false) => format!("{} moved to {}", time(&e.original_start), time(s)),
        (None, false) => time(&e.original_start),
    };
    Some(v.iter().map(one).collect::<Vec<_>>().join(", "))
}

/// The fields of `new` that differ from `old` (every field `new` sets when there is no `old`:
/// a create). `calendar` is (recorded, target): a move shows it.
pub fn changes(old: Option<&RemoteEvent>, new: &EventData, calendar: (Option<&str>, &str)) -> Vec<Change> {
    let mut out = Vec::new();
    let mut push = |field: &'static str, old: Option<String>, new: Option<String>| {
        if old != new {
            out.push(Change { field, old, new });
        }
    };
    let (old_calendar, new_calendar) = calendar;
    push("calendar", old_calendar.map(str::to_string), Some(new_calendar.to_string()).filter(|c| !c.is_empty()));
    push("title", old.map(|o| o.title.clone()), Some(new.title.clone()));
    push("description", old.and_then(|o| text(&o.description)), text(&new.description));
    push("category", old.and_then(|o| text(&o.category)), text(&new.category));
    push("start", old.map(|o| time(&o.start)), Some(time(&new.start)));
    push("end", old.map(|o| time(&o.end)), Some(time(&new.end)));
    push("zone", old.and_then(|o| o.zone.clone().or_else(|| zone(&o.start))), zone(&new.start));
    push("recurrence", old.and_then(|o| lines(&o.recurrence)), lines(&new.recurrence));
    push("exceptions", old.and_then(|o| exceptions(&o.exceptions)), exceptions(&new.exceptions));
    // The calendar's transparency is not read back (the neutral model does not carry it), so it
    // is shown only for what would be written fresh.
    if old.is_none() && new.transparent {
        push("transparency", None, Some("transparent".into()));
    }
    out
}

/// `  title: "Old" → "New"` lines, one per change (`(none)` for an absent value).
pub fn render(changes: &[Change]) -> Vec<String> {
    let show = |v: &Option<String>| v.as_ref().map_or_else(|| "(none)".to_string(), |s| format!("{s:?}"));
    changes.iter().map(|c| format!("{}: {} → {}", c.field, show(&c.old), show(&c.new))).collect()
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone, Utc};

    use super::*;
    use crate::providers::Marker;

    fn at(h: u32) -> EventTime {
        let utc = Utc.with_ymd_and_hms(2026, 3, 5, h, 0, 0).unwrap();
        EventTime::DateTime { utc, local: utc.naive_utc(), zone: Some("Europe/Berlin".into()) }
    }

    fn data(title: &str, start: u32) -> EventData {
        EventData {
            title: title.into(),
            description: None,
            category: None,
            start: at(start),
            end: at(start + 1),
            transparent: false,
            recurrence: vec![],
            exceptions: vec![],
            marker: Marker { owner: "calsync".into(), uid: "u".into(), task_id: "t".into(), hash: String::new() },
        }
    }

    fn remote(d: &EventData) -> RemoteEvent {
        RemoteEvent {
            id: "e1".into(),
            etag: Some("\"1\"".into()),
            link: None,
            title: d.title.clone(),
            // CalDAV reads an absent description back as empty.
            description: d.description.clone().or(Some(String::new())),
            category: None,
            start: d.start.clone(),
            end: d.end.clone(),
            zone: Some("Europe/Berlin".into()),
            recurrence: vec![],
            marker: None,
            cancelled: false,
            created: None,
            exceptions: vec![],
        }
    }

    #[test]
    fn same_event_has_no_changes() {
        let d = data("Dentist", 9);
        assert_eq!(changes(Some(&remote(&d)), &d, (Some("cal"), "cal")), vec![]);
    }

    #[test]
    fn changed_title_and_start_show_old_and_new() {
        let old = remote(&data("Dentist", 9));
        let c = changes(Some(&old), &data("Dentist (moved)", 11), (Some("cal"), "cal"));
        let fields: Vec<_> = c.iter().map(|c| c.field).collect();
        assert_eq!(fields, ["title", "start", "end"]);
        assert_eq!(
            render(&c),
            [
                r#"title: "Dentist" → "Dentist (moved)""#,
                r#"start: "2026-03-05T09:00:00Z" → "2026-03-05T11:00:00Z""#,
                r#"end: "2026-03-05T10:00:00Z" → "2026-03-05T12:00:00Z""#,
            ]
        );
    }

    #[test]
    fn create_lists_what_it_sets() {
        let mut d = data("Gym", 7);
        d.description = Some("legs".into());
        d.transparent = true;
        let r = render(&changes(None, &d, (None, "work")));
        assert_eq!(r[0], r#"calendar: (none) → "work""#);
        assert!(r.contains(&r#"description: (none) → "legs""#.to_string()), "{r:?}");
        assert!(r.contains(&r#"zone: (none) → "Europe/Berlin""#.to_string()), "{r:?}");
        assert!(r.contains(&r#"transparency: (none) → "transparent""#.to_string()), "{r:?}");
    }

    #[test]
    fn removed_description_and_all_day_and_calendar_move() {
        let mut old_data = data("Trip", 9);
        old_data.description = Some("pack".into());
        let old = remote(&old_data);
        let mut new = data("Trip", 9);
        new.start = EventTime::Date(NaiveDate::from_ymd_opt(2026, 3, 5).unwrap());
        new.end = EventTime::Date(NaiveDate::from_ymd_opt(2026, 3, 6).unwrap());
        new.recurrence = vec!["RRULE:FREQ=WEEKLY".into()];
        let r = render(&changes(Some(&old), &new, (Some("home"), "work")));
        assert_eq!(
            r,
            [
                r#"calendar: "home" → "work""#,
                r#"description: "pack" → (none)"#,
                r#"start: "2026-03-05T09:00:00Z" → "2026-03-05""#,
                r#"end: "2026-03-05T10:00:00Z" → "2026-03-06""#,
                r#"zone: "Europe/Berlin" → (none)"#,
                r#"recurrence: (none) → "RRULE:FREQ=WEEKLY""#,
            ]
        );
    }
}
