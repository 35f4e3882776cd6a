//! Single instances of recurring events in the fake: changing or deleting one instance (by its
//! derived id `<masterId>_<start>`) stores it as an exception event of its own, with
//! `recurringEventId` and `originalStartTime` (deleted ones `cancelled`), as Google does; and
//! `events.instances`, the series' instances in a window with those exceptions in place.
//!
//! Owns no state of its own; list.rs leaves out generated instances that have an exception.

use std::sync::Arc;

use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::errors::GoogleError;
use super::event::{parse_tz, parse_when};
use super::expand::{instances as expand, is_recurring};
use super::handlers::{Need, Params, check_params, guard};
use super::{Shared, State, Stored};

/// Store instance `id` of a live recurring master in calendar `i` as an exception event (a no-op
/// when `id` is stored already or names no instance).
pub fn materialize(s: &mut State, i: usize, id: &str) {
    if s.calendars[i].events.contains_key(id) {
        return;
    }
    let Some((master_id, _)) = id.rsplit_once('_') else { return };
    let Some(master) = s.calendars[i].events.get(master_id) else { return };
    if master.resource["status"] == "cancelled" {
        return;
    }
    let tz = parse_tz(&s.calendars[i].time_zone).unwrap_or(chrono_tz::UTC);
    let Value::Object(map) = &master.resource else { return };
    let Some(instance) = expand(map, tz, None, None).into_iter().find(|x| x.resource["id"] == id) else { return };
    let seq = s.next_seq();
    s.calendars[i].events.insert(id.to_string(), Stored { resource: instance.resource, seq });
}

/// Keep an exception's link to its series across a write (the write path drops read-only
/// fields a client may echo, and stamps a fresh iCalUID).
pub fn keep_series_fields(before: &Value, after: &mut Map<String, Value>) {
    for k in ["recurringEventId", "originalStartTime", "iCalUID"] {
        if before.get("recurringEventId").is_some()
            && let Some(v) = before.get(k)
        {
            after.insert(k.into(), v.clone());
        }
    }
}

fn time(v: Option<&str>, k: &str) -> Result<Option<DateTime<Utc>>, GoogleError> {
    match v {
        None => Ok(None),
        Some(v) => DateTime::parse_from_rfc3339(v)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| GoogleError::invalid_param(k, "Bad Request")),
    }
}

/// `GET calendars/{cal}/events/{id}/instances` (no paging: every instance in one page).
pub async fn events_instances(
    AxState(shared): AxState<Arc<Shared>>,
    Path((cal, id)): Path<(String, String)>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Result<Response, GoogleError> {
    guard(&shared, &headers, Need::EventsRead).await?;
    check_params(
        &params,
        &[
            "timeMin",
            "timeMax",
            "showDeleted",
            "maxResults",
            "pageToken",
            "originalStart",
            "timeZone",
            "maxAttendees",
            "alwaysIncludeEmail",
        ],
    )?;
    let one = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let (time_min, time_max) = (time(one("timeMin"), "timeMin")?, time(one("timeMax"), "timeMax")?);
    let show_deleted = one("showDeleted") == Some("true");
    let s = shared.lock();
    let i = s.calendar_index(&cal).ok_or_else(GoogleError::not_found)?;
    let calendar = &s.calendars[i];
    let master = calendar.events.get(&id).ok_or_else(GoogleError::not_found)?;
    if master.resource["status"] == "cancelled" {
        return Err(GoogleError::deleted());
    }
    let Value::Object(map) = &master.resource else { return Err(GoogleError::not_found()) };
    if !is_recurring(map) {
        return Err(GoogleError::invalid("The event is not a recurring event."));
    }
    let tz = parse_tz(&calendar.time_zone).unwrap_or(chrono_tz::UTC);
    let in_window =
        |a: DateTime<Utc>, b: DateTime<Utc>| time_min.is_none_or(|m| b > m) && time_max.is_none_or(|m| a < m);
    let mut out: Vec<(DateTime<Utc>, Value)> = expand(map, tz, time_min, time_max)
        .into_iter()
        .filter(|x| in_window(x.start, x.end))
        .filter(|x| x.resource["id"].as_str().is_none_or(|i| !calendar.events.contains_key(i)))
        .map(|x| (x.start, x.resource))
        .collect();
    for stored in calendar.events.values().filter(|e| e.resource["recurringEventId"] == id.as_str()) {
        let ev = &stored.resource;
        if ev["status"] == "cancelled" && !show_deleted {
            continue;
        }
        let start = parse_when(ev.get("start"), "start").map(|w| w.instant(tz));
        let end = parse_when(ev.get("end"), "end").map(|w| w.instant(tz));
        if let (Ok(a), Ok(b)) = (start, end)
            && in_window(a, b)
        {
            out.push((a, ev.clone()));
        }
    }
    // `originalStart`: only the instance that starts there by the rule.
    if let Some(os) = one("originalStart") {
        let want = parse_when(Some(&json!({ "dateTime": os })), "originalStart")
            .or_else(|_| parse_when(Some(&json!({ "date": os })), "originalStart"))
            .map_err(|_| GoogleError::invalid_param("originalStart", "Invalid value for originalStart."))?
            .instant(tz);
        out.retain(|(_, v)| {
            parse_when(v.get("originalStartTime"), "originalStartTime").is_ok_and(|w| w.instant(tz) == want)
        });
    }
    out.sort_by_key(|x| x.0);
    let items: Vec<Value> = out.into_iter().map(|(_, v)| v).collect();
    let body = json!({ "kind": "calendar#events", "timeZone": calendar.time_zone, "items": items });
    Ok(([(header::CONTENT_TYPE, "application/json; charset=UTF-8")], body.to_string()).into_response())
}
