//! events.list of the fake: parameter validation (RFC 3339 bounds with offsets, `orderBy` only with
//! `singleEvents`, `syncToken` alone), `timeMin` on the END and `timeMax` on the START (both
//! exclusive), `singleEvents` expansion, `showDeleted`, extended-property filters (AND, as the
//! reference says), paging over a snapshot taken on the first page, `nextSyncToken` only on the
//! last page, and sync tokens that return only changes (410 once expired).

use std::collections::VecDeque;
use std::sync::Arc;

use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::errors::GoogleError;
use super::event::{parse_rfc3339, parse_tz, parse_when, rfc3339_millis};
use super::expand::{instances, is_recurring};
use super::handlers::{Need, Params, check_params, guard};
use super::{PageCursor, Shared, State};

const LIST_PARAMS: &[&str] = &[
    "alwaysIncludeEmail",
    "eventTypes",
    "iCalUID",
    "maxAttendees",
    "maxResults",
    "orderBy",
    "pageToken",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "showDeleted",
    "showHiddenInvitations",
    "singleEvents",
    "syncToken",
    "timeMax",
    "timeMin",
    "timeZone",
    "updatedMin",
];

/// Parameters a sync token cannot be combined with (providers.md §1.2).
const NOT_WITH_SYNC: &[&str] = &[
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
];

struct Query1<'a>(&'a Params);

impl Query1<'_> {
    fn one(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
    fn all(&self, k: &str) -> Vec<&str> {
        self.0.iter().filter(|(n, _)| n == k).map(|(_, v)| v.as_str()).collect()
    }
    fn flag(&self, k: &str) -> Result<bool, GoogleError> {
        match self.one(k) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(v) => Err(GoogleError::invalid_param(k, format!("Invalid boolean value: '{v}'"))),
        }
    }
    fn time(&self, k: &str) -> Result<Option<DateTime<Utc>>, GoogleError> {
        match self.one(k) {
            None => Ok(None),
            Some(v) => parse_rfc3339(v).map(Some).ok_or_else(|| GoogleError::invalid_param(k, "Bad Request")),
        }
    }
}

fn sync_token(cal: usize, epoch: u64, seq: u64) -> String {
    format!("CP{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{cal}:{epoch}:{seq}")))
}

/// The change counter a token was issued at.
fn read_sync_token(s: &State, cal: usize, token: &str) -> Result<u64, GoogleError> {
    let bad = || GoogleError::invalid_param("syncToken", "Invalid sync token value.");
    let raw = token.strip_prefix("CP").ok_or_else(bad)?;
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
    let text = String::from_utf8(text).map_err(|_| bad())?;
    let parts: Vec<u64> = text.split(':').map(|p| p.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
    let [c, epoch, seq] = parts[..] else { return Err(bad()) };
    if c != cal as u64 {
        return Err(bad());
    }
    if epoch != s.sync_epoch {
        return Err(GoogleError::full_sync_required());
    }
    Ok(seq)
}

fn matches_properties(ev: &Value, kind: &str, filters: &[(String, String)]) -> bool {
    filters.iter().all(|(k, v)| ev["extendedProperties"][kind][k].as_str() == Some(v.as_str()))
}

fn property_filters(q: &Query1<'_>, param: &str) -> Result<Vec<(String, String)>, GoogleError> {
    q.all(param)
        .into_iter()
        .map(|f| {
            f.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| GoogleError::invalid_param(param, format!("Invalid {param} value: '{f}'")))
        })
        .collect()
}

fn text_matches(ev: &Value, needle: &str) -> bool {
    let needle = needle.to_lowercase();
    ["summary", "description", "location"]
        .iter()
        .any(|k| ev[*k].as_str().is_some_and(|t| t.to_lowercase().contains(&needle)))
}

/// Every item of the answer, in order.
fn compute(s: &State, cal: usize, q: &Query1<'_>) -> Result<Vec<Value>, GoogleError> {
    let sync_since = match q.one("syncToken") {
        None => None,
        Some(token) => {
            if let Some(k) = NOT_WITH_SYNC.iter().find(|k| q.one(k).is_some()) {
                return Err(GoogleError::invalid_param("syncToken", format!("Sync token cannot be used with {k}.")));
            }
            if q.one("showDeleted") == Some("false") {
                return Err(GoogleError::invalid_param(
                    "showDeleted",
                    "showDeleted=false cannot be used with syncToken.",
                ));
            }
            Some(read_sync_token(s, cal, token)?)
        }
    };
    let time_min = q.time("timeMin")?;
    let time_max = q.time("timeMax")?;
    let updated_min = q.time("updatedMin")?;
    if let (Some(a), Some(b)) = (time_min, time_max)
        && b < a
    {
        return Err(GoogleError::time_range_empty());
    }
    let single = q.flag("singleEvents")?;
    let show_deleted = q.flag("showDeleted")?;
    match q.one("orderBy") {
        None | Some("updated") => {}
        Some("startTime") if single => {}
        Some("startTime") => {
            return Err(GoogleError::invalid_param(
                "orderBy",
                "The requested ordering is not available for the particular query.",
            ));
        }
        Some(v) => return Err(GoogleError::invalid_param("orderBy", format!("Invalid value for orderBy: '{v}'"))),
    }
    if let Some(tz) = q.one("timeZone") {
        parse_tz(tz).ok_or_else(|| GoogleError::invalid_param("timeZone", "Invalid time zone definition."))?;
    }
    let private = property_filters(q, "privateExtendedProperty")?;
    let shared = property_filters(q, "sharedExtendedProperty")?;
    let include_cancelled = sync_since.is_some() || show_deleted || updated_min.is_some();
    let calendar = &s.calendars[cal];
    let tz = parse_tz(&calendar.time_zone).unwrap_or(chrono_tz::UTC);
    let in_window = |start: DateTime<Utc>, end: DateTime<Utc>| {
        time_min.is_none_or(|m| end > m) && time_max.is_none_or(|m| start < m)
    };

    // (start, change counter, resource)
    let mut out: Vec<(DateTime<Utc>, u64, Value)> = Vec::new();
    for stored in calendar.events.values() {
        let ev = &stored.resource;
        let Value::Object(map) = ev else { continue };
        if sync_since.is_some_and(|since| stored.seq <= since) {
            continue;
        }
        if let Some(min) = updated_min
            && ev["updated"].as_str().and_then(parse_rfc3339).is_some_and(|u| u < min)
        {
            continue;
        }
        let cancelled = ev["status"] == "cancelled";
        // Google: "Cancelled instances of recurring events ... will still be included if
        // showDeleted and singleEvents are both False."
        let exception = ev.get("recurringEventId").is_some();
        let listed_anyway = exception && !single;
        if cancelled && !include_cancelled && !listed_anyway {
            continue;
        }
        if q.one("iCalUID").is_some_and(|u| ev["iCalUID"].as_str() != Some(u))
            || q.one("q").is_some_and(|t| !text_matches(ev, t))
            || !matches_properties(ev, "private", &private)
            || !matches_properties(ev, "shared", &shared)
        {
            continue;
        }
        let start = parse_when(map.get("start"), "start").map(|w| w.instant(tz)).unwrap_or_default();
        let end = parse_when(map.get("end"), "end").map(|w| w.instant(tz)).unwrap_or_default();
        if is_recurring(map) && !cancelled {
            // An instance with an exception of its own is listed as that exception.
            let expanded: Vec<_> = instances(map, tz, time_min, time_max)
                .into_iter()
                .filter(|i| in_window(i.start, i.end))
                .filter(|i| i.resource["id"].as_str().is_none_or(|id| !calendar.events.contains_key(id)))
                .collect();
            if single {
                out.extend(expanded.into_iter().map(|i| (i.start, stored.seq, i.resource)));
            } else if !expanded.is_empty() || (time_min.is_none() && time_max.is_none()) {
                out.push((start, stored.seq, ev.clone()));
            }
            continue;
        }
        if sync_since.is_some() || in_window(start, end) {
            out.push((start, stored.seq, ev.clone()));
        }
    }
    match q.one("orderBy") {
        Some("startTime") => out.sort_by(|a, b| (a.0, a.2["id"].as_str()).cmp(&(b.0, b.2["id"].as_str()))),
        Some("updated") => out.sort_by_key(|e| e.1),
        _ => {}
    }
    Ok(out.into_iter().map(|(_, _, v)| v).collect())
}

/// The live events and instances of calendar `cal` overlapping `[from, to)`, as `events.list`
/// with `singleEvents=true` returns them (freeBusy reads the same view).
pub fn single_events(s: &State, cal: usize, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<Value>, GoogleError> {
    let t = |x: DateTime<Utc>| x.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let params: Params =
        vec![("singleEvents".into(), "true".into()), ("timeMin".into(), t(from)), ("timeMax".into(), t(to))];
    compute(s, cal, &Query1(&params))
}

fn signature(params: &Params) -> String {
    let mut p: Vec<String> =
        params.iter().filter(|(k, _)| k != "pageToken" && k != "maxResults").map(|(k, v)| format!("{k}={v}")).collect();
    p.sort();
    p.join("&")
}

pub async fn events_list(
    AxState(shared): AxState<Arc<Shared>>,
    Path(cal): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Result<Response, GoogleError> {
    guard(&shared, &headers, Need::EventsRead).await?;
    check_params(&params, LIST_PARAMS)?;
    let q = Query1(&params);
    let max = match q.one("maxResults") {
        None => 250,
        Some(v) => v.parse::<usize>().ok().filter(|n| (1..=2500).contains(n)).ok_or_else(|| {
            GoogleError::invalid_param(
                "maxResults",
                format!("Invalid value '{v}'. Values must be within the range: [1, 2500]"),
            )
        })?,
    };
    let mut s = shared.lock();
    let i = s.calendar_index(&cal).ok_or_else(GoogleError::not_found)?;
    let page_size = s.page_size.map_or(max, |p| p.min(max));
    let sig = signature(&params);
    // Page tokens are `<snapshot id>.<offset>`: reusable (a page can be retried after a 429)
    // and consistent (the snapshot was taken on the first page).
    let (snapshot, offset) = match q.one("pageToken") {
        Some(t) => {
            let bad = || GoogleError::invalid_param("pageToken", "Invalid page token.");
            let (id, offset) = t.split_once('.').ok_or_else(bad)?;
            let offset: usize = offset.parse().map_err(|_| bad())?;
            let cursor = s.pages.get(id).ok_or_else(bad)?;
            if cursor.signature != sig || cursor.calendar != s.calendars[i].id || offset > cursor.items.len() {
                return Err(GoogleError::invalid_param("pageToken", "The page token belongs to another query."));
            }
            (id.to_string(), offset)
        }
        None => {
            let items = compute(&s, i, &q)?;
            let next_sync_token = sync_token(i, s.sync_epoch, s.seq);
            let id = format!("pg{}", uuid::Uuid::new_v4().simple());
            let calendar = s.calendars[i].id.clone();
            s.pages.insert(
                id.clone(),
                PageCursor { calendar, signature: sig, items: VecDeque::from(items), next_sync_token },
            );
            (id, 0)
        }
    };
    let Some(cursor) = s.pages.get(&snapshot) else {
        return Err(GoogleError::invalid_param("pageToken", "Invalid page token."));
    };
    let items: Vec<Value> = cursor.items.iter().skip(offset).take(page_size).cloned().collect();
    let next_offset = offset + items.len();
    let last = next_offset >= cursor.items.len();
    let next_sync_token = cursor.next_sync_token.clone();
    let calendar = &s.calendars[i];
    let mut body = Map::new();
    body.insert("kind".into(), json!("calendar#events"));
    body.insert("etag".into(), json!(format!("\"{}\"", 3_400_000_000_000_000u64 + s.seq * 1000)));
    body.insert("summary".into(), json!(calendar.summary));
    body.insert("updated".into(), json!(rfc3339_millis(Utc::now())));
    body.insert("timeZone".into(), json!(calendar.time_zone));
    body.insert("accessRole".into(), json!(calendar.access_role));
    body.insert("defaultReminders".into(), json!([]));
    body.insert("items".into(), json!(items));
    if last {
        body.insert("nextSyncToken".into(), json!(next_sync_token));
    } else {
        body.insert("nextPageToken".into(), json!(format!("{snapshot}.{next_offset}")));
    }
    Ok(([(header::CONTENT_TYPE, "application/json; charset=UTF-8")], Value::Object(body).to_string()).into_response())
}
