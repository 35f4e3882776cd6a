//! Microsoft Graph event JSON ↔ the neutral event model.
//!
//! Owns: the request bodies we send (create, PATCH), the event shape we read, our two
//! single-value extended properties (the marker and the creation key) and the OData `$filter` /
//! `$expand` strings that find and read them. Must not touch HTTP, retries or paging.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::recurrence::{self, PatternedRecurrence};
use crate::providers::{EventData, EventTime, Marker, ProviderError, RemoteEvent};

/// Our property set. A fixed GUID: every calsync installation reads and writes the same
/// properties (the marker's `owner` tells installations apart).
const PROP_SET: &str = "{6A8B3C1E-94D2-4F0B-B7A5-2C9E1D4F8A63}";

/// The ownership marker (`Marker::encode`).
pub fn marker_prop() -> String {
    format!("String {PROP_SET} Name calsyncMarker")
}

/// The deterministic creation key (`event_key`): what `find_by_key` filters on, exactly. The
/// marker cannot serve there, since a key cannot be turned back into the TaskSync uid.
pub fn key_prop() -> String {
    format!("String {PROP_SET} Name calsyncKey")
}

/// `$expand` that reads both of our properties (Graph returns extended properties only when
/// asked, and only the ones named).
pub fn expand() -> String {
    format!("singleValueExtendedProperties($filter=id eq '{}' or id eq '{}')", marker_prop(), key_prop())
}

/// OData string literal: single quotes doubled.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `$filter` for the event created under `key`.
pub fn key_filter(key: &str) -> String {
    format!("singleValueExtendedProperties/Any(ep: ep/id eq {} and ep/value eq {})", literal(&key_prop()), literal(key))
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DateTimeTimeZone {
    pub date_time: String,
    pub time_zone: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemBody {
    /// Text, as `Prefer: outlook.body-content-type="text"` asks.
    #[serde(default)]
    pub content: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ExtProp {
    pub id: String,
    #[serde(default)]
    pub value: Option<String>,
}

/// An event as Graph returns it (a full item, or a partial delta item).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphEvent {
    pub id: String,
    #[serde(rename = "@odata.etag")]
    pub etag: Option<String>,
    #[serde(rename = "@removed")]
    pub removed: Option<Value>,
    pub subject: Option<String>,
    pub body: Option<ItemBody>,
    pub categories: Option<Vec<String>>,
    pub start: Option<DateTimeTimeZone>,
    pub end: Option<DateTimeTimeZone>,
    pub original_start_time_zone: Option<String>,
    pub is_all_day: Option<bool>,
    pub is_cancelled: Option<bool>,
    pub recurrence: Option<PatternedRecurrence>,
    pub web_link: Option<String>,
    pub transaction_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub series_master_id: Option<String>,
    pub single_value_extended_properties: Option<Vec<ExtProp>>,
    /// ISO 8601 UTC creation time.
    pub created_date_time: Option<String>,
    /// On an occurrence or exception: when it starts by the series' pattern (ISO 8601).
    pub original_start: Option<String>,
}

impl GraphEvent {
    /// A delta item may carry only the changed fields; these are needed to build an event.
    pub fn is_complete(&self) -> bool {
        self.subject.is_some() && self.start.is_some() && self.end.is_some()
    }

    /// An instance of a series (`occurrence` / `exception`): the engine works on series.
    pub fn series(&self) -> Option<&str> {
        match self.kind.as_deref() {
            Some("occurrence" | "exception") => self.series_master_id.as_deref(),
            _ => None,
        }
    }

    fn prop(&self, id: &str) -> Option<&str> {
        // Graph may echo the id with another GUID case; the Name part is case-sensitive.
        let name = |s: &str| s.rsplit(" Name ").next().map(str::to_string);
        self.single_value_extended_properties
            .iter()
            .flatten()
            .find(|p| p.id.eq_ignore_ascii_case(id) && name(&p.id) == name(id))
            .and_then(|p| p.value.as_deref())
    }
}

fn invalid(message: String) -> ProviderError {
    ProviderError::Invalid { message }
}

/// Graph `dateTimeTimeZone` for one boundary.
fn graph_time(t: &EventTime) -> Value {
    match t {
        EventTime::Date(d) => json!({"dateTime": format!("{}T00:00:00", d.format("%Y-%m-%d")), "timeZone": "UTC"}),
        EventTime::DateTime { utc, zone, .. } => match zone.as_deref().and_then(|z| z.parse::<chrono_tz::Tz>().ok()) {
            // The wall-clock time in the event's zone, so recurrences stay at that local time
            // across DST; derived from the instant so both always agree.
            Some(tz) => json!({
                "dateTime": utc.with_timezone(&tz).naive_local().format("%Y-%m-%dT%H:%M:%S").to_string(),
                "timeZone": tz.name(),
            }),
            None => json!({"dateTime": utc.format("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": "UTC"}),
        },
    }
}

/// Every content field, with explicit empties for what the event no longer has, so a PATCH
/// clears a removed description, category or recurrence instead of leaving the old one.
fn content(ev: &EventData) -> Result<serde_json::Map<String, Value>, ProviderError> {
    let all_day = match (&ev.start, &ev.end) {
        (EventTime::Date(_), EventTime::Date(_)) => true,
        (EventTime::DateTime { .. }, EventTime::DateTime { .. }) => false,
        _ => return Err(invalid("an event's start and end must both be dates or both be times".into())),
    };
    let recurrence = recurrence::to_graph(&ev.recurrence, &ev.start)?;
    let mut m = serde_json::Map::new();
    m.insert("subject".into(), json!(ev.title));
    m.insert("body".into(), json!({"contentType": "text", "content": ev.description.clone().unwrap_or_default()}));
    m.insert("categories".into(), json!(ev.category.iter().collect::<Vec<_>>()));
    m.insert("isAllDay".into(), json!(all_day));
    m.insert("start".into(), graph_time(&ev.start));
    m.insert("end".into(), graph_time(&ev.end));
    m.insert("recurrence".into(), serde_json::to_value(recurrence).unwrap_or(Value::Null));
    // Graph's default for a new event is busy; a patch says it explicitly so a block that
    // becomes opaque (or free) follows.
    m.insert("showAs".into(), json!(if ev.transparent { "free" } else { "busy" }));
    m.insert("singleValueExtendedProperties".into(), json!([{"id": marker_prop(), "value": ev.marker.encode()}]));
    Ok(m)
}

/// The POST body of a create under `key` (`transactionId` and both properties set at once:
/// adding properties after the create is a second write that can fail on its own).
pub fn create_body(ev: &EventData, key: &str) -> Result<Value, ProviderError> {
    let mut m = content(ev)?;
    m.insert("transactionId".into(), json!(key));
    m.insert(
        "singleValueExtendedProperties".into(),
        json!([{"id": marker_prop(), "value": ev.marker.encode()}, {"id": key_prop(), "value": key}]),
    );
    Ok(Value::Object(m))
}

/// The PATCH body of an update (`transactionId` cannot change; the key property stays).
pub fn patch_body(ev: &EventData) -> Result<Value, ProviderError> {
    content(ev).map(Value::Object)
}

/// The PATCH body that moves one occurrence to `start`–`end`.
pub fn occurrence_move(start: &EventTime, end: &EventTime) -> Value {
    json!({ "start": graph_time(start), "end": graph_time(end) })
}

/// IANA name for a zone Graph reports (IANA as we sent it, or a Windows name from Outlook).
pub fn iana_zone(name: &str) -> Option<String> {
    const WINDOWS: [(&str, &str); 16] = [
        ("UTC", "UTC"),
        ("GMT Standard Time", "Europe/London"),
        ("W. Europe Standard Time", "Europe/Berlin"),
        ("Romance Standard Time", "Europe/Paris"),
        ("Central Europe Standard Time", "Europe/Budapest"),
        ("E. Europe Standard Time", "Europe/Chisinau"),
        ("Eastern Standard Time", "America/New_York"),
        ("Central Standard Time", "America/Chicago"),
        ("Mountain Standard Time", "America/Denver"),
        ("Pacific Standard Time", "America/Los_Angeles"),
        ("India Standard Time", "Asia/Kolkata"),
        ("China Standard Time", "Asia/Shanghai"),
        ("Tokyo Standard Time", "Asia/Tokyo"),
        ("AUS Eastern Standard Time", "Australia/Sydney"),
        ("E. South America Standard Time", "America/Sao_Paulo"),
        ("tzone://Microsoft/Utc", "UTC"),
    ];
    if let Ok(tz) = name.parse::<chrono_tz::Tz>() {
        return Some(tz.name().to_string());
    }
    WINDOWS.iter().find(|(w, _)| w.eq_ignore_ascii_case(name)).map(|(_, i)| i.to_string())
}

fn parse_local(s: &str) -> Result<NaiveDateTime, ProviderError> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
        .map_err(|_| invalid(format!("Graph returned an unreadable dateTime {s:?}")))
}

/// The instant a Graph `dateTimeTimeZone` names.
fn instant(t: &DateTimeTimeZone) -> Result<DateTime<Utc>, ProviderError> {
    let local = parse_local(&t.date_time)?;
    let tz = iana_zone(&t.time_zone)
        .and_then(|z| z.parse::<chrono_tz::Tz>().ok())
        .ok_or_else(|| invalid(format!("Graph returned an unknown time zone {:?}", t.time_zone)))?;
    tz.from_local_datetime(&local)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| invalid(format!("{} does not exist in {}", t.date_time, t.time_zone)))
}

pub(super) fn event_time(t: &DateTimeTimeZone, all_day: bool, zone: Option<&str>) -> Result<EventTime, ProviderError> {
    if all_day {
        // All-day boundaries are floating midnights; the date is what they mean.
        let d: NaiveDate = parse_local(&t.date_time)?.date();
        return Ok(EventTime::Date(d));
    }
    let utc = instant(t)?;
    let tz = zone.and_then(|z| z.parse::<chrono_tz::Tz>().ok());
    let local = match tz {
        Some(tz) => utc.with_timezone(&tz).naive_local(),
        None => utc.naive_utc(),
    };
    Ok(EventTime::DateTime { utc, local, zone: tz.map(|t| t.name().to_string()) })
}

/// The neutral event for a Graph item. `marker` stands in when the item carries no properties
/// (a create or PATCH answer, which Graph sends without extended properties).
pub fn to_remote(g: &GraphEvent, marker: Option<&Marker>) -> Result<RemoteEvent, ProviderError> {
    let (Some(start), Some(end)) = (&g.start, &g.end) else {
        return Err(invalid(format!("Graph returned event {} without start or end", g.id)));
    };
    let all_day = g.is_all_day.unwrap_or(false);
    // UTC means "no zone" to us, as for an event written without one.
    let zone = g.original_start_time_zone.as_deref().and_then(iana_zone).filter(|z| z != "UTC");
    let start = event_time(start, all_day, zone.as_deref())?;
    let end = event_time(end, all_day, zone.as_deref())?;
    let recurrence = match &g.recurrence {
        Some(r) => recurrence::from_graph(r, &start)?,
        None => vec![],
    };
    let marker = g.prop(&marker_prop()).and_then(Marker::decode).or_else(|| marker.cloned());
    let description = g.body.as_ref().map(|b| b.content.trim_end().to_string()).filter(|c| !c.is_empty());
    Ok(RemoteEvent {
        id: g.id.clone(),
        etag: g.etag.clone(),
        link: g.web_link.clone(),
        title: g.subject.clone().unwrap_or_default(),
        description,
        category: g.categories.as_ref().and_then(|c| c.first().cloned()),
        start,
        end,
        zone: if all_day { None } else { zone },
        recurrence,
        marker,
        cancelled: g.is_cancelled.unwrap_or(false),
        created: g
            .created_date_time
            .as_deref()
            .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
            .map(|c| c.with_timezone(&Utc)),
        exceptions: Vec::new(),
    })
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
