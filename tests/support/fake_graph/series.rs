//! Single occurrences of a series in the fake Graph: an occurrence id (`<master>OCC<yyyymmdd>`,
//! as calendarView lists them) can be read, PATCHed (start/end: it becomes an `exception`) and
//! DELETEd (it disappears from every listing, as Graph v1.0 shows a deleted occurrence: not at
//! all). Occurrences and exceptions carry `originalStart`. `GET /me/events/{id}/instances`
//! lists one series' occurrences and exceptions in a window.
//!
//! Owns: `St::occurrences` (what was done to single occurrences). Must not touch the masters.

#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use super::store::{self, Event};
use super::{Shared, St, graph_error};

/// What was done to one occurrence.
#[derive(Clone, Debug)]
pub struct Occurrence {
    pub master: String,
    pub cancelled: bool,
    /// The moved times (dateTimeTimeZone, as sent).
    pub start: Option<Value>,
    pub end: Option<Value>,
    pub change_key: String,
}

/// How far around a window occurrences are looked for, so one moved into it is found.
const MARGIN_DAYS: i64 = 62;

/// One instance after the occurrences' changes: (occurrence id, start, end, original start,
/// is an exception). Single events: no id, their own times.
pub type Applied = (Option<String>, DateTime<Utc>, DateTime<Utc>, DateTime<Utc>, bool);

/// `ev`'s instances overlapping `[from, to)`, cancelled ones left out and moved ones at their new
/// times.
pub fn applied(st: &St, ev: &Event, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Applied> {
    let overlaps = |a: DateTime<Utc>, b: DateTime<Utc>| a < to && (b > from || (a == b && a >= from));
    let margin = Duration::days(MARGIN_DAYS);
    let mut out = Vec::new();
    for (occ, a, b) in ev.instances(from - margin, to + margin) {
        let Some(id) = occ else {
            if overlaps(a, b) {
                out.push((None, a, b, a, false));
            }
            continue;
        };
        let (s, e, exception) = match st.occurrences.get(&id) {
            Some(o) if o.cancelled => continue,
            Some(o) => (
                o.start.as_ref().and_then(store::instant).unwrap_or(a),
                o.end.as_ref().and_then(store::instant).unwrap_or(b),
                true,
            ),
            None => (a, b, false),
        };
        if overlaps(s, e) {
            out.push((Some(id), s, e, a, exception));
        }
    }
    out
}

/// The master and original times of occurrence `id`, if it is one of a stored series.
fn resolve(st: &St, id: &str) -> Option<(String, DateTime<Utc>, DateTime<Utc>)> {
    let (master, day) = id.rsplit_once("OCC")?;
    let ev = st.events.values().find(|e| e.id.trim_end_matches('=') == master)?;
    let day = chrono::NaiveDate::parse_from_str(day, "%Y%m%d").ok()?.and_hms_opt(0, 0, 0)?.and_utc();
    let (s, _) = ev.span();
    ev.instances(s.min(day) - Duration::days(2), day + Duration::days(2))
        .into_iter()
        .find(|(o, ..)| o.as_deref() == Some(id))
        .map(|(_, a, b)| (ev.id.clone(), a, b))
}

/// The occurrence as Graph returns it, times in UTC.
fn render(st: &St, id: &str, master: &str, original: DateTime<Utc>, len: (DateTime<Utc>, DateTime<Utc>)) -> Value {
    let ev = &st.events[master];
    let o = st.occurrences.get(id);
    let s = o.and_then(|o| o.start.as_ref()).and_then(store::instant).unwrap_or(len.0);
    let e = o.and_then(|o| o.end.as_ref()).and_then(store::instant).unwrap_or(len.1);
    let mut v = ev.render_occurrence(id, s, e, chrono_tz::UTC, None);
    decorate(st, &mut v, original, o.is_some());
    v
}

/// `originalStart` on every instance of a series; `type: exception` and the exception's own
/// version on changed ones.
pub fn decorate(st: &St, v: &mut Value, original: DateTime<Utc>, exception: bool) {
    v["originalStart"] = json!(original.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    if exception {
        v["type"] = json!("exception");
    }
    if let Some(o) = v["id"].as_str().and_then(|id| st.occurrences.get(id)) {
        v["@odata.etag"] = json!(format!("W/\"{}\"", o.change_key));
        v["changeKey"] = json!(o.change_key);
    }
}

/// GET / PATCH / DELETE on an occurrence id; `None` when `id` is not one (the caller goes on).
pub fn occurrence_call(
    s: &Shared,
    method: &str,
    id: &str,
    body: Option<&Bytes>,
    if_match: Option<&str>,
) -> Option<Response> {
    let mut st = s.lock();
    if st.events.contains_key(id) {
        return None;
    }
    let (master, a, b) = resolve(&st, id)?;
    let gone = || graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.");
    if st.occurrences.get(id).is_some_and(|o| o.cancelled) {
        return Some(gone());
    }
    let calendar = st.events[&master].calendar.clone();
    match method {
        "GET" => Some(axum::Json(render(&st, id, &master, a, (a, b))).into_response()),
        "DELETE" | "PATCH" => {
            let current = match st.occurrences.get(id) {
                Some(o) => format!("W/\"{}\"", o.change_key),
                None => st.events[&master].etag(),
            };
            if if_match.is_some_and(|m| m != current) {
                return Some(graph_error(
                    412,
                    "ErrorIrresolvableConflict",
                    "The change key passed in the request does not match the current change key for the item.",
                ));
            }
            let mut occ = st.occurrences.get(id).cloned().unwrap_or(Occurrence {
                master: master.clone(),
                cancelled: false,
                start: None,
                end: None,
                change_key: String::new(),
            });
            if method == "DELETE" {
                occ.cancelled = true;
            } else {
                let v: Value = match body.map(|b| serde_json::from_slice(b)) {
                    Some(Ok(v)) => v,
                    _ => return Some(graph_error(400, "RequestBodyRead", "Cannot read the request body.")),
                };
                if let Some((k, _)) =
                    v.as_object().into_iter().flatten().find(|(k, _)| !["start", "end"].contains(&k.as_str()))
                {
                    return Some(graph_error(
                        400,
                        "ErrorInvalidRequest",
                        &format!("The fake changes only start and end of an occurrence, not {k}"),
                    ));
                }
                occ.start = v.get("start").cloned().or(occ.start);
                occ.end = v.get("end").cloned().or(occ.end);
                let (ns, ne) = (occ.start.as_ref().and_then(store::instant), occ.end.as_ref().and_then(store::instant));
                if ns.zip(ne).is_none_or(|(x, y)| y < x) {
                    return Some(graph_error(
                        400,
                        "ErrorInvalidRequest",
                        "start and end must be valid, end not before start",
                    ));
                }
            }
            let (seq, ck) = st.bump();
            occ.change_key = ck;
            st.occurrences.insert(id.to_string(), occ);
            // The series changed: delta reports its instances again (the master's changeKey stays).
            if let Some(m) = st.events.get_mut(&master) {
                m.seq = seq;
            }
            let etag = st.events[&master].etag();
            st.changed(&master, &calendar, "updated", &etag);
            if method == "DELETE" {
                Some(axum::http::StatusCode::NO_CONTENT.into_response())
            } else {
                Some(axum::Json(render(&st, id, &master, a, (a, b))).into_response())
            }
        }
        _ => None,
    }
}

/// `GET /me/events/{id}/instances?startDateTime&endDateTime`: the series' occurrences and
/// exceptions in the window, by start (cancelled ones are not listed).
pub async fn list_instances(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
    _h: HeaderMap,
) -> Response {
    if let Some((k, _)) =
        q.iter().find(|(k, _)| !["startDateTime", "endDateTime", "$top", "$skip"].contains(&k.as_str()))
    {
        return graph_error(400, "BadRequest", &format!("Query option '{k}' is not supported by this request."));
    }
    let get = |k: &str| q.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
    let (Some(from), Some(to)) =
        (get("startDateTime").and_then(super::parse_bound), get("endDateTime").and_then(super::parse_bound))
    else {
        return graph_error(
            400,
            "ErrorInvalidParameter",
            "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
        );
    };
    let st = s.lock();
    let Some(ev) = st.events.get(&id) else {
        return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.");
    };
    let mut items: Vec<(DateTime<Utc>, Value)> = Vec::new();
    for (occ, a, b, original, exception) in applied(&st, ev, from, to) {
        let Some(oid) = occ else { continue };
        let mut v = ev.render_occurrence(&oid, a, b, chrono_tz::UTC, None);
        decorate(&st, &mut v, original, exception);
        items.push((a, v));
    }
    items.sort_by_key(|(a, _)| *a);
    let value: Vec<Value> = items.into_iter().map(|(_, v)| v).collect();
    axum::Json(json!({"@odata.context": format!("{}/$metadata#Collection(event)", s.base), "value": value}))
        .into_response()
}
