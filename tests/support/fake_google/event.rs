//! The Event resource rules of the fake: id charset, `EventDateTime` parsing (exactly one of
//! `date`/`dateTime`, offset or `timeZone`), validation of a whole event as Google does on insert,
//! update and after a patch, JSON merge patch, and the read-only fields the server stamps.
//! Owns no state; callers hold the lock and decide what to store.

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};

use super::errors::GoogleError;
use super::expand;

/// One side of an event's time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum When {
    Date(NaiveDate),
    /// The instant, and the IANA zone given with it.
    DateTime(DateTime<Utc>, Option<Tz>),
}

impl When {
    /// The instant this starts at; dates begin at midnight in the calendar's zone.
    pub fn instant(&self, calendar_tz: Tz) -> DateTime<Utc> {
        match self {
            When::DateTime(t, _) => *t,
            When::Date(d) => {
                let midnight = d.and_hms_opt(0, 0, 0).unwrap_or_default();
                calendar_tz
                    .from_local_datetime(&midnight)
                    .earliest()
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or_else(|| Utc.from_utc_datetime(&midnight))
            }
        }
    }
}

/// base32hex (`a-v`, `0-9`), 5 to 1024 characters (providers.md §1.4).
pub fn valid_id(id: &str) -> bool {
    (5..=1024).contains(&id.len()) && id.bytes().all(|b| matches!(b, b'a'..=b'v' | b'0'..=b'9'))
}

pub fn parse_tz(name: &str) -> Option<Tz> {
    name.parse::<Tz>().ok()
}

/// RFC 3339 with a mandatory offset (`timeMin`, `timeMax`, `updatedMin`).
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

pub fn rfc3339_millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses `start` or `end` (`which`) like Google.
pub fn parse_when(v: Option<&Value>, which: &str) -> Result<When, GoogleError> {
    let missing = || GoogleError::required(format!("Missing {which} time.")).at("parameter", which.to_string());
    let obj = match v {
        None | Some(Value::Null) => return Err(missing()),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(GoogleError::invalid(format!("Invalid {which} time."))),
    };
    let field = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let tz = match field("timeZone") {
        None => None,
        Some(Value::String(name)) => Some(
            parse_tz(name)
                .ok_or_else(|| GoogleError::invalid(format!("Invalid time zone definition for {which} time.")))?,
        ),
        Some(_) => return Err(GoogleError::invalid(format!("Invalid time zone definition for {which} time."))),
    };
    match (field("date"), field("dateTime")) {
        (Some(Value::String(d)), None) => {
            let date = (d.len() == 10)
                .then(|| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                .flatten()
                .ok_or_else(|| GoogleError::invalid(format!("Invalid {which} time.")))?;
            Ok(When::Date(date))
        }
        (None, Some(Value::String(dt))) => {
            if let Some(t) = parse_rfc3339(dt) {
                return Ok(When::DateTime(t, tz));
            }
            let zone =
                tz.ok_or_else(|| GoogleError::invalid(format!("Missing time zone definition for {which} time.")))?;
            let local = NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S%.f")
                .map_err(|_| GoogleError::invalid(format!("Invalid {which} time.")))?;
            let t = zone
                .from_local_datetime(&local)
                .earliest()
                .ok_or_else(|| GoogleError::invalid(format!("Invalid {which} time.")))?;
            Ok(When::DateTime(t.with_timezone(&Utc), tz))
        }
        (None, None) => Err(missing()),
        _ => Err(GoogleError::invalid(format!("Invalid {which} time."))),
    }
}

/// Validates a complete event body (after a patch is applied, too). Returns (start, end).
pub fn validate(ev: &Map<String, Value>) -> Result<(When, When), GoogleError> {
    for key in ["summary", "description", "location", "colorId", "transparency", "visibility"] {
        if let Some(v) = ev.get(key).filter(|v| !v.is_null() && !v.is_string()) {
            return Err(GoogleError::invalid(format!("Invalid value for {key}: {v}")));
        }
    }
    if let Some(status) = ev.get("status").filter(|v| !v.is_null())
        && !matches!(status.as_str(), Some("confirmed" | "tentative" | "cancelled"))
    {
        return Err(GoogleError::invalid(format!("Invalid value for status: {status}")));
    }
    let start = parse_when(ev.get("start"), "start")?;
    let end = parse_when(ev.get("end"), "end")?;
    match (&start, &end) {
        (When::Date(s), When::Date(e)) if e <= s => return Err(GoogleError::time_range_empty()),
        (When::DateTime(s, _), When::DateTime(e, _)) if e < s => return Err(GoogleError::time_range_empty()),
        (When::Date(_), When::Date(_)) | (When::DateTime(..), When::DateTime(..)) => {}
        _ => return Err(GoogleError::invalid("Start and end times must either both be date or both be dateTime.")),
    }
    validate_extended_properties(ev.get("extendedProperties"))?;
    if let Some(rec) = ev.get("recurrence").filter(|v| !v.is_null()) {
        let lines = rec.as_array().ok_or_else(|| GoogleError::invalid("Invalid recurrence rule."))?;
        if !lines.is_empty() {
            for line in lines {
                let line = line.as_str().ok_or_else(|| GoogleError::invalid("Invalid recurrence rule."))?;
                let name = line.split([':', ';']).next().unwrap_or_default().to_ascii_uppercase();
                if !matches!(name.as_str(), "RRULE" | "EXRULE" | "RDATE" | "EXDATE") {
                    return Err(GoogleError::invalid("Invalid recurrence rule."));
                }
            }
            if let When::DateTime(_, None) = start {
                return Err(GoogleError::invalid("Missing time zone definition for start time."));
            }
            expand::rule_set(ev).map_err(|_| GoogleError::invalid("Invalid recurrence rule."))?;
        }
    }
    Ok((start, end))
}

fn validate_extended_properties(v: Option<&Value>) -> Result<(), GoogleError> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(()) };
    let bad = || GoogleError::invalid("Invalid extended properties value.");
    let obj = v.as_object().ok_or_else(bad)?;
    for (k, map) in obj {
        if !matches!(k.as_str(), "private" | "shared") {
            return Err(bad());
        }
        if map.is_null() {
            continue;
        }
        let map = map.as_object().ok_or_else(bad)?;
        if map.values().any(|v| !v.is_string()) {
            return Err(bad());
        }
    }
    Ok(())
}

/// RFC 7386 JSON merge patch: `null` removes a member, objects merge, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Drops members whose value is `null` (Google does not store them) and the read-only fields a
/// client may echo back, which Google ignores.
pub fn clean_client_body(body: &mut Map<String, Value>) {
    body.retain(|_, v| !v.is_null());
    for ro in ["kind", "etag", "htmlLink", "created", "updated", "creator", "organizer", "iCalUID", "recurringEventId"]
    {
        body.remove(ro);
    }
}

/// Stamps the server-managed fields on a stored event.
pub fn stamp(ev: &mut Map<String, Value>, id: &str, calendar_id: &str, seq: u64, created: Option<Value>) {
    let now = Utc::now();
    let eid = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{id} {calendar_id}"));
    ev.insert("kind".into(), json!("calendar#event"));
    // Google's etags are quoted decimal numbers that grow with every write.
    ev.insert("etag".into(), json!(format!("\"{}\"", 3_400_000_000_000_000u64 + seq * 1000)));
    ev.insert("id".into(), json!(id));
    ev.entry("status").or_insert(json!("confirmed"));
    ev.insert("htmlLink".into(), json!(format!("https://www.google.com/calendar/event?eid={eid}")));
    ev.insert("created".into(), created.unwrap_or_else(|| json!(rfc3339_millis(now))));
    ev.insert("updated".into(), json!(rfc3339_millis(now)));
    ev.insert("iCalUID".into(), json!(format!("{id}@google.com")));
    ev.entry("sequence").or_insert(json!(0));
    ev.insert("creator".into(), json!({ "email": calendar_id, "self": true }));
    ev.insert("organizer".into(), json!({ "email": calendar_id, "self": true }));
    ev.entry("reminders").or_insert(json!({ "useDefault": true }));
    ev.entry("eventType").or_insert(json!("default"));
}
