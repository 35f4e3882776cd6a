//! Secondary calendars in the fake (what `calendarId: auto` uses): `calendars.insert`
//! (POST /calendars; `summary` required; the server picks the id, so two inserts make two
//! calendars, as on Google), `calendars.get`, `calendars.delete` (owner only; the primary
//! calendar cannot be deleted), and the raw helpers a test uses to look at them.
//! Scopes per Google's reference: insert and delete need `calendar`, `calendar.calendars` or
//! `calendar.app.created`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::errors::GoogleError;
use super::handlers::{Need, Params, check_params, guard, json_response, parse_body};
use super::{Calendar, FakeGoogle, Shared, State};

fn resource(c: &Calendar) -> Value {
    let mut v = json!({
        "kind": "calendar#calendar",
        "etag": format!("\"{}\"", 1_700_000_000_000_000u64 + c.id.len() as u64),
        "id": c.id, "summary": c.summary, "timeZone": c.time_zone,
        "conferenceProperties": { "allowedConferenceSolutionTypes": ["hangoutsMeet"] },
    });
    if let Some(d) = &c.description {
        v["description"] = json!(d);
    }
    v
}

/// calendars.insert rules (also used by the raw helper): a new owned calendar, added to the
/// user's calendar list.
pub fn insert_calendar(s: &mut State, body: &serde_json::Map<String, Value>) -> Result<Value, GoogleError> {
    let summary = match body.get("summary") {
        Some(Value::String(t)) if !t.trim().is_empty() => t.clone(),
        _ => return Err(GoogleError::required("Missing title.")),
    };
    let description = body.get("description").and_then(Value::as_str).map(str::to_string);
    let time_zone = body.get("timeZone").and_then(Value::as_str).map(str::to_string);
    let n = s.next_seq();
    // Server-chosen and unordered, like Google's `c_<hash>@group.calendar.google.com`.
    let id = format!("c_{:016x}{:04x}@group.calendar.google.com", n.wrapping_mul(0x9E37_79B9_7F4A_7C15), n);
    let tz = time_zone.unwrap_or_else(|| s.calendars[0].time_zone.clone());
    let cal = Calendar {
        id,
        summary,
        description,
        access_role: "owner",
        primary: false,
        time_zone: tz,
        events: BTreeMap::new(),
    };
    let v = resource(&cal);
    s.calendars.push(cal);
    Ok(v)
}

pub async fn insert(
    AxState(shared): AxState<Arc<Shared>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GoogleError> {
    guard(&shared, &headers, Need::CalendarsWrite).await?;
    check_params(&params, &[])?;
    let body = parse_body(&body)?;
    let v = insert_calendar(&mut shared.lock(), &body)?;
    Ok(json_response(&v))
}

pub async fn get_one(
    AxState(shared): AxState<Arc<Shared>>,
    Path(cal): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Result<Response, GoogleError> {
    guard(&shared, &headers, Need::CalendarList).await?;
    check_params(&params, &[])?;
    let s = shared.lock();
    let i = s.calendar_index(&cal).ok_or_else(GoogleError::not_found)?;
    Ok(json_response(&resource(&s.calendars[i])))
}

pub async fn delete(
    AxState(shared): AxState<Arc<Shared>>,
    Path(cal): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Result<Response, GoogleError> {
    guard(&shared, &headers, Need::CalendarsWrite).await?;
    check_params(&params, &[])?;
    let mut s = shared.lock();
    let i = s.calendar_index(&cal).ok_or_else(GoogleError::not_found)?;
    if s.calendars[i].primary {
        return Err(GoogleError::new(400, "global", "cannotDeletePrimaryCalendar", "Cannot delete primary calendar."));
    }
    if s.calendars[i].access_role != "owner" {
        return Err(GoogleError::new(403, "global", "forbidden", "Forbidden"));
    }
    s.calendars.remove(i);
    Ok(StatusCode::NO_CONTENT.into_response())
}

impl FakeGoogle {
    /// Secondary calendars as `calendars.get` shows them, in list order.
    pub fn raw_calendars(&self) -> Vec<Value> {
        self.shared.lock().calendars.iter().filter(|c| !c.primary).map(resource).collect()
    }
    /// A calendar made as another client would (e.g. a racing replica), returned as created.
    pub fn raw_insert_calendar(&self, summary: &str, description: Option<&str>) -> Value {
        let mut body = serde_json::Map::new();
        body.insert("summary".into(), json!(summary));
        if let Some(d) = description {
            body.insert("description".into(), json!(d));
        }
        insert_calendar(&mut self.shared.lock(), &body).unwrap_or_else(|e| panic!("raw_insert_calendar: {e:?}"))
    }
}
