//! Google Calendar v3 JSON: the serde types of what Google sends (Event, Events,
//! CalendarList) and the mapping between them and the neutral model (`RemoteEvent`,
//! `EventData`, `CalendarInfo`).
//!
//! Owns: how our marker and category live in `extendedProperties.private`, how times are
//! written (`date` for all-day, `dateTime` + `timeZone` otherwise) and read back. Must not
//! touch HTTP or decide what a request means.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::providers::recurrence::exdate_line;
use crate::providers::{EventData, EventTime, Marker, ProviderError, RemoteEvent};
use crate::resources::CalendarInfo;

/// Private extended property holding `Marker::encode()`.
pub const MARKER_KEY: &str = "calsync";
/// Private extended property holding the category (Google events have no categories).
pub const CATEGORY_KEY: &str = "calsyncCategory";

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GEventDateTime {
    #[serde(default)]
    pub date: Option<String>,
    #[serde(default)]
    pub date_time: Option<String>,
    #[serde(default)]
    pub time_zone: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct GExtendedProperties {
    #[serde(default)]
    pub private: Option<HashMap<String, String>>,
}

/// The fields of Google's Event resource we read.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GEvent {
    pub id: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub html_link: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub start: Option<GEventDateTime>,
    #[serde(default)]
    pub end: Option<GEventDateTime>,
    #[serde(default)]
    pub recurrence: Option<Vec<String>>,
    #[serde(default)]
    pub extended_properties: Option<GExtendedProperties>,
    /// RFC 3339 creation time.
    #[serde(default)]
    pub created: Option<String>,
    /// On an instance or exception of a recurring event: its master's id.
    #[serde(default)]
    pub recurring_event_id: Option<String>,
    /// On an instance or exception: when it starts by the rule (what identifies it if moved).
    #[serde(default)]
    pub original_start_time: Option<GEventDateTime>,
}

impl GEvent {
    pub fn is_cancelled(&self) -> bool {
        self.status.as_deref() == Some("cancelled")
    }
}

/// One page of `events.list`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GEvents {
    #[serde(default)]
    pub items: Vec<GEvent>,
    #[serde(default)]
    pub next_page_token: Option<String>,
    #[serde(default)]
    pub next_sync_token: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GCalendarListEntry {
    pub id: String,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub summary_override: Option<String>,
    #[serde(default)]
    pub primary: Option<bool>,
    #[serde(default)]
    pub access_role: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GCalendarList {
    #[serde(default)]
    pub items: Vec<GCalendarListEntry>,
    #[serde(default)]
    pub next_page_token: Option<String>,
}

impl GCalendarListEntry {
    pub fn to_info(&self) -> CalendarInfo {
        let name = self
            .summary_override
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| self.summary.clone())
            .unwrap_or_else(|| self.id.clone());
        CalendarInfo {
            id: self.id.clone(),
            name,
            primary: self.primary.unwrap_or(false),
            writable: matches!(self.access_role.as_deref(), Some("owner" | "writer")),
        }
    }
}

fn valid_zone(z: Option<&str>) -> Option<Tz> {
    z.and_then(|z| z.parse::<Tz>().ok())
}

/// Read one `start`/`end`. `dateTime` carries an offset (Google always sends one); `local` is
/// the wall time in `timeZone` when that is a valid IANA zone, else at the given offset.
pub fn read_time(t: &GEventDateTime) -> Result<EventTime, String> {
    if let Some(d) = t.date.as_deref().filter(|d| !d.is_empty()) {
        return NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map(EventTime::Date)
            .map_err(|_| format!("date {d:?} is not YYYY-MM-DD"));
    }
    let raw = t.date_time.as_deref().ok_or("neither date nor dateTime is set")?;
    let tz = valid_zone(t.time_zone.as_deref());
    let zone = tz.map(|z| z.name().to_string());
    match DateTime::parse_from_rfc3339(raw) {
        Ok(at) => {
            let utc = at.with_timezone(&Utc);
            let local = tz.map(|z| utc.with_timezone(&z).naive_local()).unwrap_or_else(|| at.naive_local());
            Ok(EventTime::DateTime { utc, local, zone })
        }
        // The docs allow a dateTime without offset when timeZone says where it is.
        Err(_) => {
            let local = NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S")
                .map_err(|_| format!("dateTime {raw:?} is not RFC 3339"))?;
            let tz = tz.ok_or_else(|| format!("dateTime {raw:?} has no offset and no valid timeZone"))?;
            let utc = tz
                .from_local_datetime(&local)
                .earliest()
                // A wall time in a DST gap: the instant an hour later is what clocks show.
                .or_else(|| tz.from_local_datetime(&(local + chrono::Duration::hours(1))).earliest())
                .map(|d| d.with_timezone(&Utc))
                .ok_or_else(|| format!("dateTime {raw:?} does not exist in {}", tz.name()))?;
            Ok(EventTime::DateTime { utc, local, zone })
        }
    }
}

/// Stand-in times for a cancelled event, which Google may send with only its id.
fn placeholder() -> EventTime {
    EventTime::Date(NaiveDate::default())
}

/// Google's event as ours. A live event without readable times is an error (the caller decides
/// whether to skip it); a cancelled one may have none.
pub fn to_remote(g: GEvent) -> Result<RemoteEvent, ProviderError> {
    let cancelled = g.is_cancelled();
    let bad = |what: &str, e: String| ProviderError::Invalid {
        message: format!("Google event {} has an unreadable {what}: {e}", g.id),
    };
    let times = (g.start.as_ref().map(read_time), g.end.as_ref().map(read_time));
    let (start, end) = match times {
        (Some(Ok(s)), Some(Ok(e))) => (s, e),
        _ if cancelled => (placeholder(), placeholder()),
        (Some(Err(e)), _) => return Err(bad("start", e)),
        (_, Some(Err(e))) => return Err(bad("end", e)),
        (None, _) => return Err(bad("start", "missing".into())),
        (_, None) => return Err(bad("end", "missing".into())),
    };
    let zone = g.start.as_ref().and_then(|s| valid_zone(s.time_zone.as_deref())).map(|z| z.name().to_string());
    let private = g.extended_properties.and_then(|p| p.private).unwrap_or_default();
    Ok(RemoteEvent {
        id: g.id,
        etag: g.etag,
        link: g.html_link,
        title: g.summary.unwrap_or_default(),
        description: g.description.filter(|d| !d.is_empty()),
        category: private.get(CATEGORY_KEY).filter(|c| !c.is_empty()).cloned(),
        start,
        end,
        zone,
        recurrence: g.recurrence.unwrap_or_default(),
        marker: private.get(MARKER_KEY).and_then(|m| Marker::decode(m)),
        cancelled,
        created: g.created.as_deref().and_then(|c| DateTime::parse_from_rfc3339(c).ok()).map(|c| c.with_timezone(&Utc)),
        exceptions: Vec::new(),
    })
}

/// Insert omits what is unset; patch must say `null` for it (patch keeps what is omitted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Insert,
    Patch,
}

fn set_or_clear(map: &mut Map<String, Value>, mode: Mode, key: &str, value: Option<Value>) {
    match (value, mode) {
        (Some(v), _) => {
            map.insert(key.into(), v);
        }
        (None, Mode::Patch) => {
            map.insert(key.into(), Value::Null);
        }
        (None, Mode::Insert) => {}
    }
}

/// The zone a timed event is written in: its own when valid, else `UTC` for recurring events
/// (Google requires a zone to expand a recurrence in).
fn write_zone(ev: &EventData) -> Option<Tz> {
    let own = match &ev.start {
        EventTime::DateTime { zone, .. } => valid_zone(zone.as_deref()),
        EventTime::Date(_) => None,
    };
    own.or_else(|| (!ev.recurrence.is_empty()).then_some(chrono_tz::UTC))
}

fn write_time(t: &EventTime, zone: Option<Tz>, mode: Mode) -> Value {
    let mut m = Map::new();
    match t {
        EventTime::Date(d) => {
            m.insert("date".into(), json!(d.format("%Y-%m-%d").to_string()));
            // Patch merges nested objects: a timed event becoming all-day must lose its dateTime.
            set_or_clear(&mut m, mode, "dateTime", None);
            set_or_clear(&mut m, mode, "timeZone", None);
        }
        EventTime::DateTime { utc, .. } => {
            let text = match zone {
                // The wall time with its offset reads naturally in Google's UI and API explorer.
                Some(tz) => utc.with_timezone(&tz).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                None => utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            };
            m.insert("dateTime".into(), json!(text));
            set_or_clear(&mut m, mode, "timeZone", zone.map(|z| json!(z.name())));
            set_or_clear(&mut m, mode, "date", None);
        }
    }
    Value::Object(m)
}

/// A recurrence line as Google wants it: DTSTART/DTEND are not allowed there, and a floating
/// EXDATE/RDATE of a zoned event gets the event's TZID so it names the same wall time.
fn recurrence_line(line: &str, zone: Option<Tz>) -> Option<String> {
    let line = line.trim();
    let (head, value) = line.split_once(':')?;
    let name = head.split(';').next().unwrap_or(head).to_ascii_uppercase();
    if !matches!(name.as_str(), "RRULE" | "EXRULE" | "RDATE" | "EXDATE") {
        return None;
    }
    let params = head.to_ascii_uppercase();
    if let Some(tz) = zone
        && matches!(name.as_str(), "RDATE" | "EXDATE")
        && !params.contains(";TZID=")
        && !params.contains(";VALUE=")
        && !value.ends_with('Z')
        && tz != chrono_tz::UTC
    {
        return Some(format!("{head};TZID={}:{value}", tz.name()));
    }
    Some(line.to_string())
}

/// The JSON body for our event. `id` is set on insert. In `Mode::Patch` every field we own is
/// sent, with `null` for what is now absent, so nothing from an older version survives.
pub fn to_body(ev: &EventData, id: Option<&str>, mode: Mode) -> Value {
    let zone = write_zone(ev);
    let mut m = Map::new();
    if let Some(id) = id {
        m.insert("id".into(), json!(id));
    }
    m.insert("summary".into(), json!(ev.title));
    set_or_clear(&mut m, mode, "description", ev.description.clone().filter(|d| !d.is_empty()).map(Value::String));
    // All-day events carry no zone; a zone on the start would only confuse other clients.
    let time_zone = if ev.start.is_date() { None } else { zone };
    m.insert("start".into(), write_time(&ev.start, time_zone, mode));
    m.insert("end".into(), write_time(&ev.end, time_zone, mode));
    let mut lines: Vec<String> = ev.recurrence.iter().filter_map(|l| recurrence_line(l, time_zone)).collect();
    // Cancelled occurrences are EXDATEs of the series; moved ones are instance patches.
    lines.extend(ev.exceptions.iter().filter(|x| x.cancelled).map(|x| exdate_line(&x.original_start)));
    set_or_clear(&mut m, mode, "recurrence", (!lines.is_empty()).then(|| json!(lines)));
    // Absent (or null on a patch) is Google's default, opaque: busy.
    set_or_clear(&mut m, mode, "transparency", ev.transparent.then(|| json!("transparent")));
    let mut private = Map::new();
    private.insert(MARKER_KEY.into(), json!(ev.marker.encode()));
    set_or_clear(&mut private, mode, CATEGORY_KEY, ev.category.clone().filter(|c| !c.is_empty()).map(Value::String));
    m.insert("extendedProperties".into(), json!({ "private": Value::Object(private) }));
    Value::Object(m)
}

/// The PATCH body that moves one instance of our series `ev` to `start`–`end`.
pub fn instance_move(ev: &EventData, start: &EventTime, end: &EventTime) -> Value {
    let zone = if ev.start.is_date() { None } else { write_zone(ev) };
    json!({ "start": write_time(start, zone, Mode::Patch), "end": write_time(end, zone, Mode::Patch) })
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
