//! iCalendar (RFC 5545) for CalDAV resources: writing our events and reading anyone's.
//!
//! Built on the `icalendar` crate's parser tree (`icalendar::parser::{Calendar, Component,
//! Property}`), used for both directions: `ical_read` reads text into it (borrowing from the
//! text; it replaced the crate's slower reader, same tree), and the crate's writer folds lines and prints exactly the components given (the high-level builder would add
//! a UID and DTSTAMP to every component, VTIMEZONE included, which RFC 5545 forbids). Text
//! values are escaped here.
//!
//! Owns: the mapping between `EventData`/`RemoteEvent` fields and iCalendar properties,
//! including the `X-CALSYNC-MARKER` ownership property; `vevent` is also what the ICS feed
//! (`api::ics`) writes, so a task reads the same in a CalDAV calendar and in the feed. Must not
//! touch HTTP or XML.

use chrono::{DateTime, Datelike, Duration, Utc};
use chrono_tz::Tz;
use icalendar::parser::{Calendar, Component, Parameter, Property};

use super::ical_read::read_calendar;
// Reading times and zones lives apart to keep this file short.
#[path = "ical_times.rs"]
mod times;
pub(super) use times::parse_time;
use times::{add, parse_duration};

use super::vtimezone::vtimezone;
use crate::providers::{EventData, EventTime, Exception, Marker, ProviderError, event_key};

/// The property that marks an event as written by calsync (`Marker::encode`).
pub const MARKER_PROP: &str = "X-CALSYNC-MARKER";
/// PRODID of everything calsync writes.
pub const PRODID: &str = "-//Get It Done//calsync//EN";

/// An event read from a resource, before it gets an id, etag and link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedEvent {
    pub uid: Option<String>,
    pub title: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub start: EventTime,
    pub end: EventTime,
    pub zone: Option<String>,
    pub recurrence: Vec<String>,
    pub marker: Option<Marker>,
    pub cancelled: bool,
    pub created: Option<chrono::DateTime<chrono::Utc>>,
    /// Moved or cancelled occurrences: the resource's RECURRENCE-ID overrides.
    pub exceptions: Vec<Exception>,
}

/// The UID of the event for a TaskSync (the marker's uid). It depends on the task, not on the
/// resource name, so it never changes on update, even for an event adopted under another name
/// (a server refuses a PUT that changes a resource's UID). For events created by the engine it
/// is `<event key>@calsync`, so a retried create is recognised by UID as well as by name.
pub fn uid_for(ev: &EventData) -> String {
    format!("{}@calsync", event_key(&ev.marker.uid))
}

/// RFC 5545 §3.3.11 TEXT escaping.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

pub fn unescape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n' | 'N') => out.push('\n'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

/// Split a TEXT list on unescaped commas (CATEGORIES).
fn split_list(s: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            if let Some(p) = parts.last_mut() {
                p.extend(['\\', c]);
            }
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            parts.push(String::new());
        } else {
            if let Some(p) = parts.last_mut() {
                p.push(c);
            }
        }
    }
    parts.into_iter().map(|p| unescape_text(&p)).filter(|p| !p.is_empty()).collect()
}

fn prop(name: &str, val: String) -> Property<'static> {
    Property { name: name.to_string().into(), val: val.into(), params: vec![] }
}

fn prop_with(name: &str, val: String, params: &[(&str, &str)]) -> Property<'static> {
    let params =
        params.iter().map(|(k, v)| Parameter { key: k.to_string().into(), val: Some(v.to_string().into()) }).collect();
    Property { name: name.to_string().into(), val: val.into(), params }
}

fn zone_of(t: &EventTime) -> Option<Tz> {
    match t {
        EventTime::DateTime { zone: Some(z), .. } => z.parse().ok(),
        _ => None,
    }
}

fn time_prop(name: &str, t: &EventTime, zone: Option<Tz>) -> Property<'static> {
    match (t, zone) {
        (EventTime::Date(d), _) => prop_with(name, d.format("%Y%m%d").to_string(), &[("VALUE", "DATE")]),
        (EventTime::DateTime { utc, .. }, Some(tz)) => {
            // The wall-clock time in the zone is what recurrence expands from, so a 09:00 weekly
            // event stays 09:00 across DST. Derive it from the instant to keep both consistent.
            let local = utc.with_timezone(&tz).naive_local();
            prop_with(name, local.format("%Y%m%dT%H%M%S").to_string(), &[("TZID", tz.name())])
        }
        (EventTime::DateTime { utc, .. }, None) => prop(name, utc.format("%Y%m%dT%H%M%SZ").to_string()),
    }
}

/// A recurrence line (`RRULE:...`, `EXDATE;TZID=...:...`) as a property. A floating EXDATE/RDATE
/// of a zoned event gets the event's TZID, so it names the same wall-clock time as DTSTART.
fn recurrence_prop(line: &str, zone: Option<Tz>) -> Option<Property<'static>> {
    let parsed = Property::try_from(line).ok()?;
    let mut p = Property {
        name: parsed.name.to_owned(),
        val: parsed.val.to_owned(),
        params: parsed
            .params
            .iter()
            .map(|x| Parameter { key: x.key.to_owned(), val: x.val.as_ref().map(|v| v.to_owned()) })
            .collect(),
    };
    let dated = p.name == "EXDATE" || p.name == "RDATE";
    let has_param = |k: &str| p.params.iter().any(|x| x.key.as_str().eq_ignore_ascii_case(k));
    if let Some(tz) = zone
        && dated
        && !has_param("TZID")
        && !has_param("VALUE")
        && !p.val.as_str().ends_with('Z')
    {
        p.params.push(Parameter { key: "TZID".to_string().into(), val: Some(tz.name().to_string().into()) });
    }
    Some(p)
}

/// The VEVENT of `ev` (without the ownership marker) and the zone its times are written in,
/// whose VTIMEZONE the calendar must carry. Shared by CalDAV resources and the ICS feed
/// (`api::ics`), so both write a task the same way.
pub fn vevent(ev: &EventData, dtstamp: DateTime<Utc>) -> (Component<'static>, Option<Tz>) {
    let zone = zone_of(&ev.start).or_else(|| zone_of(&ev.end));
    let mut props = vec![
        prop("UID", uid_for(ev)),
        prop("DTSTAMP", dtstamp.format("%Y%m%dT%H%M%SZ").to_string()),
        time_prop("DTSTART", &ev.start, zone),
        time_prop("DTEND", &ev.end, zone),
        prop("SUMMARY", escape_text(&ev.title)),
    ];
    if let Some(d) = ev.description.as_deref().filter(|d| !d.is_empty()) {
        props.push(prop("DESCRIPTION", escape_text(d)));
    }
    if let Some(c) = ev.category.as_deref().filter(|c| !c.is_empty()) {
        props.push(prop("CATEGORIES", escape_text(c)));
    }
    if ev.transparent {
        props.push(prop("TRANSP", "TRANSPARENT".into()));
    }
    props.extend(ev.recurrence.iter().filter_map(|l| recurrence_prop(l, zone)));
    // A cancelled occurrence is an EXDATE; a moved one an override VEVENT (`overrides`).
    props.extend(ev.exceptions.iter().filter(|x| x.cancelled).map(|x| time_prop("EXDATE", &x.original_start, zone)));
    (Component { name: "VEVENT".into(), properties: props, components: vec![] }, zone)
}

/// The override VEVENTs of `ev`'s moved occurrences (same UID, `RECURRENCE-ID`), carrying the
/// master's text properties (and marker, when the master has one).
pub fn override_events(
    ev: &EventData,
    master: &Component<'static>,
    dtstamp: DateTime<Utc>,
    zone: Option<Tz>,
) -> Vec<Component<'static>> {
    ev.exceptions
        .iter()
        .filter_map(|x| match (&x.start, &x.end, x.cancelled) {
            (Some(s), Some(e), false) => {
                let mut o = vec![
                    prop("UID", uid_for(ev)),
                    prop("DTSTAMP", dtstamp.format("%Y%m%dT%H%M%SZ").to_string()),
                    time_prop("RECURRENCE-ID", &x.original_start, zone),
                    time_prop("DTSTART", s, zone),
                    time_prop("DTEND", e, zone),
                ];
                o.extend(
                    master
                        .properties
                        .iter()
                        .filter(|p| ["SUMMARY", "DESCRIPTION", "CATEGORIES", MARKER_PROP].contains(&p.name.as_str()))
                        .cloned(),
                );
                Some(Component { name: "VEVENT".into(), properties: o, components: vec![] })
            }
            _ => None,
        })
        .collect()
}

/// A VTIMEZONE for `tz` that covers `year` and the years around it.
pub fn timezone(tz: Tz, year: i32) -> Component<'static> {
    vtimezone(tz, year)
}

/// The year an event starts in (what its VTIMEZONE must cover first).
pub fn start_year(ev: &EventData) -> i32 {
    match &ev.start {
        EventTime::DateTime { utc, .. } => utc.year(),
        EventTime::Date(d) => d.year(),
    }
}

/// A property with a plain value (already escaped where it is TEXT).
pub fn property(name: &str, value: String) -> Property<'static> {
    prop(name, value)
}

/// A property with parameters.
pub fn property_with(name: &str, value: String, params: &[(&str, &str)]) -> Property<'static> {
    prop_with(name, value, params)
}

/// The iCalendar resource for our event. Always has DTEND (iCloud refuses a PUT
/// without one), a VTIMEZONE for the zone used, and the ownership marker.
pub fn to_ics(ev: &EventData, now: DateTime<Utc>) -> String {
    let (mut event, zone) = vevent(ev, now);
    event.properties.push(prop(MARKER_PROP, escape_text(&ev.marker.encode())));
    let moved = override_events(ev, &event, now, zone);
    let mut components = Vec::new();
    if let Some(tz) = zone {
        components.push(vtimezone(tz, start_year(ev)));
    }
    components.push(event);
    components.extend(moved);
    let cal = Calendar {
        properties: vec![
            prop("VERSION", "2.0".into()),
            prop("PRODID", PRODID.into()),
            prop("CALSCALE", "GREGORIAN".into()),
        ],
        components,
    };
    cal.to_string()
}

pub(super) fn param<'a>(p: &'a Property<'_>, key: &str) -> Option<&'a str> {
    p.params.iter().find(|x| x.key.as_str().eq_ignore_ascii_case(key)).and_then(|x| x.val.as_ref()).map(|v| v.as_str())
}

fn line_of(p: &Property<'_>) -> String {
    let mut s = p.name.as_str().to_string();
    for x in &p.params {
        s.push(';');
        s.push_str(x.key.as_str());
        if let Some(v) = &x.val {
            s.push('=');
            s.push_str(v.as_str());
        }
    }
    s.push(':');
    s.push_str(p.val.as_str());
    s
}

/// Read the event of a CalDAV resource. A resource holds one event (with its exceptions, which
/// share the UID and carry RECURRENCE-ID); the master is reported.
pub fn parse_ics(text: &str) -> Result<ParsedEvent, ProviderError> {
    let invalid = |m: String| ProviderError::Invalid { message: format!("unreadable iCalendar resource: {m}") };
    let cal = read_calendar(text).map_err(invalid)?;
    let events: Vec<&Component<'_>> = cal.components.iter().filter(|c| c.name == "VEVENT").collect();
    let ev = events
        .iter()
        .find(|c| c.find_prop("RECURRENCE-ID").is_none())
        .or_else(|| events.first())
        .ok_or_else(|| invalid("no VEVENT in it".into()))?;
    let get = |n: &str| ev.find_prop(n);
    // The parser already unescapes TEXT values (all but the CATEGORIES list, split below).
    let text_of = |n: &str| get(n).map(|p| p.val.as_str().to_string());
    let start =
        parse_time(get("DTSTART").ok_or_else(|| invalid("VEVENT has no DTSTART".into()))?, &cal).map_err(invalid)?;
    let end = match (get("DTEND"), get("DURATION")) {
        (Some(p), _) => parse_time(p, &cal).map_err(invalid)?,
        (None, Some(d)) => add(
            &start,
            parse_duration(d.val.as_str()).ok_or_else(|| invalid(format!("bad DURATION {:?}", d.val.as_str())))?,
        ),
        // RFC 5545 §3.6.1: a date lasts one day, a date-time has no duration.
        (None, None) => add(&start, Duration::zero()),
    };
    let zone = match &start {
        EventTime::DateTime { zone, .. } => zone.clone(),
        EventTime::Date(_) => None,
    };
    let recurrence: Vec<String> = ev
        .properties
        .iter()
        .filter(|p| ["RRULE", "EXRULE", "RDATE", "EXDATE"].contains(&p.name.as_str()))
        .map(line_of)
        .collect();
    let category =
        ev.properties.iter().filter(|p| p.name == "CATEGORIES").flat_map(|p| split_list(p.val.as_str())).next();
    let is_master = ev.find_prop("RECURRENCE-ID").is_none() && !recurrence.is_empty();
    let exceptions = if is_master { overrides(&events, &cal, &start, &end) } else { Vec::new() };
    Ok(ParsedEvent {
        uid: text_of("UID"),
        title: text_of("SUMMARY").unwrap_or_default(),
        description: text_of("DESCRIPTION").filter(|d| !d.is_empty()),
        category,
        start,
        end,
        zone,
        recurrence,
        marker: text_of(MARKER_PROP).and_then(|m| Marker::decode(&m)),
        cancelled: get("STATUS").is_some_and(|s| s.val.as_str().eq_ignore_ascii_case("CANCELLED")),
        // RFC 5545 §3.8.7.1: CREATED is always UTC.
        created: get("CREATED").and_then(|p| {
            chrono::NaiveDateTime::parse_from_str(p.val.as_str(), "%Y%m%dT%H%M%SZ").ok().map(|t| t.and_utc())
        }),
        exceptions,
    })
}

/// The master's exceptions from the override VEVENTs (same UID, RECURRENCE-ID): cancelled
/// (`STATUS:CANCELLED`) or moved (another start or length). Overrides that change only the text
/// are no exception to the times and are left out; unreadable ones are skipped.
fn overrides(events: &[&Component<'_>], cal: &Calendar<'_>, start: &EventTime, end: &EventTime) -> Vec<Exception> {
    let length = crate::providers::recurrence::instant(end) - crate::providers::recurrence::instant(start);
    let mut out = Vec::new();
    for o in events {
        let Some(rid) = o.find_prop("RECURRENCE-ID") else { continue };
        let Ok(original) = parse_time(rid, cal) else { continue };
        if o.find_prop("STATUS").is_some_and(|s| s.val.as_str().eq_ignore_ascii_case("CANCELLED")) {
            out.push(Exception::cancelled(original));
            continue;
        }
        let Some(Ok(new_start)) = o.find_prop("DTSTART").map(|p| parse_time(p, cal)) else { continue };
        let new_end = match (o.find_prop("DTEND"), o.find_prop("DURATION")) {
            (Some(p), _) => parse_time(p, cal).ok(),
            (None, Some(d)) => parse_duration(d.val.as_str()).map(|d| add(&new_start, d)),
            (None, None) => Some(add(&new_start, length)),
        };
        let Some(new_end) = new_end else { continue };
        let at = crate::providers::recurrence::instant;
        if at(&new_start) != at(&original) || at(&new_end) - at(&new_start) != length {
            out.push(Exception::moved(original, new_start, new_end));
        }
    }
    out.sort_by_key(|x| crate::providers::recurrence::instant(&x.original_start));
    out
}

#[cfg(test)]
#[path = "ical_tests.rs"]
mod tests;
