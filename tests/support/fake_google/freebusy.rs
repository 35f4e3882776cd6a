//! `freeBusy.query` (POST /calendar/v3/freeBusy) for the fake, written from Google's reference
//! (developers.google.com/workspace/calendar/api/v3/reference/freebusy/query): body `timeMin`,
//! `timeMax` (RFC 3339), optional `timeZone`, `calendarExpansionMax` (≤ 50), `items[{id}]`;
//! answer `{kind: "calendar#freeBusy", timeMin, timeMax, calendars: {id: {busy: [{start, end}],
//! errors?: [{domain, reason}]}}}`, busy spans merged, in UTC. Busy: live events and instances
//! that are not `transparency: transparent` and not declined by the account (`attendees[]` entry
//! with `self: true` and `responseStatus: declined`). Unknown calendars get a `notFound` error;
//! calendars past `calendarExpansionMax` get `tooManyCalendarsRequested`. Ranges over 90 days are
//! refused (Google's limit as Cal.com reports it; Google does not document it).
//! Owns no state.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State as AxState};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};

use super::errors::GoogleError;
use super::event::{parse_rfc3339, parse_tz, parse_when};
use super::handlers::{Need, Params, check_params, guard, parse_body};
use super::{Shared, list};

const MAX_CALENDARS: usize = 50;
const MAX_RANGE_DAYS: i64 = 90;

fn time(body: &Map<String, Value>, key: &str) -> Result<DateTime<Utc>, GoogleError> {
    let v = body.get(key).and_then(Value::as_str).ok_or_else(|| GoogleError::required(format!("Missing {key}.")))?;
    parse_rfc3339(v).ok_or_else(|| GoogleError::invalid(format!("Invalid value for {key}: {v}")))
}

fn utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn is_busy(ev: &Value) -> bool {
    let declined = ev["attendees"]
        .as_array()
        .is_some_and(|a| a.iter().any(|p| p["self"] == true && p["responseStatus"] == "declined"));
    ev["status"] != "cancelled" && ev["transparency"] != "transparent" && !declined
}

pub async fn query(
    AxState(shared): AxState<Arc<Shared>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GoogleError> {
    guard(&shared, &headers, Need::FreeBusy).await?;
    check_params(&params, &[])?;
    let body = parse_body(&body)?;
    let (from, to) = (time(&body, "timeMin")?, time(&body, "timeMax")?);
    if to <= from {
        return Err(GoogleError::time_range_empty());
    }
    if to - from > Duration::days(MAX_RANGE_DAYS) {
        return Err(GoogleError::new(400, "calendar", "timeRangeTooLong", "The requested time range is too long."));
    }
    if let Some(tz) = body.get("timeZone").and_then(Value::as_str) {
        parse_tz(tz).ok_or_else(|| GoogleError::invalid_param("timeZone", "Invalid time zone definition."))?;
    }
    let max = body.get("calendarExpansionMax").and_then(Value::as_u64).map_or(MAX_CALENDARS, |n| n as usize);
    if max > MAX_CALENDARS {
        return Err(GoogleError::invalid(format!("Invalid value for calendarExpansionMax: {max}")));
    }
    let items: Vec<String> = body
        .get("items")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|i| i["id"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let s = shared.lock();
    let mut calendars = Map::new();
    for (n, id) in items.iter().enumerate() {
        let error = |reason: &str| json!({"busy": [], "errors": [{"domain": "global", "reason": reason}]});
        if n >= max {
            calendars.insert(id.clone(), error("tooManyCalendarsRequested"));
            continue;
        }
        let Some(i) = s.calendar_index(id) else {
            calendars.insert(id.clone(), error("notFound"));
            continue;
        };
        let tz = parse_tz(&s.calendars[i].time_zone).unwrap_or(chrono_tz::UTC);
        let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = list::single_events(&s, i, from, to)?
            .iter()
            .filter(|ev| is_busy(ev))
            .filter_map(|ev| {
                let a = parse_when(ev.get("start"), "start").ok()?.instant(tz).max(from);
                let b = parse_when(ev.get("end"), "end").ok()?.instant(tz).min(to);
                (a < b).then_some((a, b))
            })
            .collect();
        spans.sort();
        let mut merged: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
        for (a, b) in spans {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        let busy: Vec<Value> = merged.iter().map(|(a, b)| json!({"start": utc(*a), "end": utc(*b)})).collect();
        calendars.insert(id.clone(), json!({ "busy": busy }));
    }
    let answer = json!({"kind": "calendar#freeBusy", "timeMin": utc(from), "timeMax": utc(to), "calendars": calendars});
    Ok(([(header::CONTENT_TYPE, "application/json; charset=UTF-8")], answer.to_string()).into_response())
}
