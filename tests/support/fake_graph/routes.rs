//! The fake Graph's routes: calendars, event CRUD, extended-property lookup, calendarView,
//! calendarView/delta and subscriptions, each refusing parameters it does not support.

// Handlers return a ready Graph error response as their `Err`; boxing it buys nothing here.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};

use super::odata::{
    ValueCond, id_ok, parse_bound, parse_expand, parse_filter, prefer_page_size, prefer_timezone, same_prop,
};
use super::store::{self, Reject};
use super::{DuplicatePost, Shared, graph_error, subscriptions};

// calendarView and its delta (tests/support/fake_graph/routes/views.rs).
mod views;
use views::{delta, view};

type Q = Query<Vec<(String, String)>>;
type S = State<Arc<Shared>>;

pub fn router(s: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1.0/me/calendars", get(calendars).post(super::calendars::create))
        .route("/v1.0/me/calendars/{cal}", get(super::calendars::get_one).delete(super::calendars::delete))
        .route("/v1.0/me/calendars/{cal}/events", get(list_events).post(create))
        .route("/v1.0/me/calendar/events", get(list_default).post(create_default))
        .route("/v1.0/me/events/{id}", get(get_event).patch(patch_event).delete(delete_event))
        .route("/v1.0/me/events/{id}/instances", get(super::series::list_instances))
        .route("/v1.0/me/calendars/{cal}/calendarView", get(view))
        .route("/v1.0/me/calendars/{cal}/calendarView/delta", get(delta))
        .route("/v1.0/me/calendar/calendarView", get(view_default))
        .route("/v1.0/me/calendarView/delta", get(delta_default))
        .route("/v1.0/subscriptions", post(subscriptions::create))
        .route("/v1.0/subscriptions/{id}", patch(subscriptions::renew).delete(subscriptions::remove))
        .fallback(|| async { graph_error(400, "BadRequest", "Resource not found for the segment.") })
        .with_state(s)
}

fn rej((status, code, msg): Reject) -> Response {
    graph_error(status, code, &msg)
}

fn param<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str())
}

/// Refuse query parameters this route does not support.
fn only(q: &[(String, String)], allowed: &[&str]) -> Result<(), Response> {
    match q.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        Some((k, _)) => {
            Err(graph_error(400, "BadRequest", &format!("Query option '{k}' is not supported by this request.")))
        }
        None => Ok(()),
    }
}

fn prefer(h: &HeaderMap) -> Vec<String> {
    h.get_all("prefer").iter().filter_map(|v| v.to_str().ok().map(str::to_string)).collect()
}

fn out_zone(h: &HeaderMap) -> Result<Tz, Response> {
    match prefer_timezone(&prefer(h)) {
        None => Ok(chrono_tz::UTC),
        Some(z) => store::zone(&z).ok_or_else(|| {
            graph_error(400, "TimeZoneNotSupportedException", &format!("Time zone {z:?} is not supported."))
        }),
    }
}

fn expand_of(q: &[(String, String)]) -> Result<Option<Vec<String>>, Response> {
    param(q, "$expand")
        .map(parse_expand)
        .transpose()
        .map_err(|m| graph_error(400, "BadRequest", &format!("Invalid $expand: {m}")))
}

fn check_id(st: &super::St, id: &str) -> Result<(), Response> {
    if !id_ok(id) {
        return Err(graph_error(400, "ErrorInvalidIdMalformed", "Id is malformed."));
    }
    if !st.events.contains_key(id) {
        return Err(graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store."));
    }
    Ok(())
}

fn resolve_calendar(st: &super::St, cal: &str) -> Result<(), Response> {
    if !id_ok(cal) {
        return Err(graph_error(400, "ErrorInvalidIdMalformed", "Id is malformed."));
    }
    st.calendar(cal)
        .map(|_| ())
        .ok_or_else(|| graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store."))
}

/// A page of `items` from `skip`, with a nextLink that repeats the query with a new `$skip`.
fn page(s: &Shared, path: &str, q: &[(String, String)], items: Vec<Value>, size: usize) -> Value {
    let skip: usize = param(q, "$skip").and_then(|v| v.parse().ok()).unwrap_or(0);
    let end = (skip + size).min(items.len());
    let value: Vec<Value> = items.get(skip..end).map(<[Value]>::to_vec).unwrap_or_default();
    let mut out = json!({"@odata.context": format!("{}/$metadata#Collection(event)", s.base), "value": value});
    if end < items.len() {
        let mut pairs: Vec<(String, String)> = q.iter().filter(|(k, _)| k != "$skip").cloned().collect();
        pairs.push(("$skip".into(), end.to_string()));
        let qs: Vec<String> =
            pairs.iter().map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC))).collect();
        out["@odata.nextLink"] = json!(format!("{}{path}?{}", s.base, qs.join("&")));
    }
    out
}

fn page_size(s: &Shared, q: &[(String, String)], h: &HeaderMap) -> usize {
    let asked = param(q, "$top").and_then(|v| v.parse::<usize>().ok()).or_else(|| prefer_page_size(&prefer(h)));
    asked.unwrap_or(10).clamp(1, 1000).min(s.lock().switches.page_size)
}

async fn calendars(State(s): S, Query(q): Q) -> Response {
    if let Err(r) = only(&q, &["$skip"]) {
        return r;
    }
    let items: Vec<Value> = s.lock().calendars.iter().map(super::calendars::render).collect();
    let size = s.lock().switches.page_size.min(10);
    axum::Json(page(&s, "/me/calendars", &q, items, size)).into_response()
}

async fn list_default(st: S, q: Q, h: HeaderMap) -> Response {
    let cal = st.0.lock().default_calendar();
    list_events(st, Path(cal), q, h).await
}

async fn list_events(State(s): S, Path(cal): Path<String>, Query(q): Q, h: HeaderMap) -> Response {
    if let Err(r) = only(&q, &["$filter", "$expand", "$top", "$skip"]).and_then(|_| resolve_calendar(&s.lock(), &cal)) {
        return r;
    }
    let filter = match param(&q, "$filter").map(parse_filter).transpose() {
        Ok(f) => f,
        Err(m) => return graph_error(400, "BadRequest", &format!("Invalid filter clause: {m}")),
    };
    let (expand, tz) = match (expand_of(&q), out_zone(&h)) {
        (Ok(e), Ok(t)) => (e, t),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let items: Vec<Value> = s
        .lock()
        .events
        .values()
        .filter(|e| e.calendar == cal)
        .filter(|e| {
            filter.as_ref().is_none_or(|f| {
                e.props.iter().any(|(id, v)| {
                    same_prop(&f.id, id)
                        && match &f.value {
                            None => true,
                            // Graph: the value comparison is case-insensitive.
                            Some(ValueCond::Eq(x)) => v.eq_ignore_ascii_case(x),
                            Some(ValueCond::StartsWith(x)) => v.to_lowercase().starts_with(&x.to_lowercase()),
                        }
                })
            })
        })
        .map(|e| e.render(tz, expand.as_deref(), false))
        .collect();
    let size = page_size(&s, &q, &h);
    axum::Json(page(&s, &format!("/me/calendars/{cal}/events"), &q, items, size)).into_response()
}

async fn view_default(st: S, q: Q, h: HeaderMap) -> Response {
    let cal = st.0.lock().default_calendar();
    view(st, Path(cal), q, h).await
}

async fn delta_default(st: S, q: Q, h: HeaderMap) -> Response {
    let cal = st.0.lock().default_calendar();
    delta(st, Path(cal), q, h).await
}

async fn create_default(st: S, h: HeaderMap, body: Bytes) -> Response {
    let cal = st.0.lock().default_calendar();
    create(st, Path(cal), h, body).await
}

async fn create(State(s): S, Path(cal): Path<String>, h: HeaderMap, body: Bytes) -> Response {
    let tz = match out_zone(&h) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return graph_error(400, "RequestBodyRead", &format!("Cannot read the request body: {e}")),
    };
    if let Err(r) = store::validate(&v, true).and_then(|_| store::check_merged(v.as_object().unwrap_or(&Map::new()))) {
        return rej(r);
    }
    let mut st = s.lock();
    if let Err(r) = resolve_calendar(&st, &cal) {
        return r;
    }
    if st.calendar(&cal).is_some_and(|c| !c.can_edit) {
        return graph_error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.");
    }
    let tx = v.get("transactionId").and_then(Value::as_str);
    let existing =
        tx.and_then(|t| st.events.values().find(|e| e.transaction_id.as_deref() == Some(t)).map(|e| e.id.clone()));
    let id = match (existing, st.switches.duplicate_post) {
        (Some(id), DuplicatePost::ReturnExisting) => id,
        _ => st.insert(&cal, &v),
    };
    if st.switches.lose_create_answer_next > 0 {
        st.switches.lose_create_answer_next -= 1;
        return graph_error(504, "GatewayTimeout", "The gateway did not receive a timely response.");
    }
    let ev = &st.events[&id];
    (axum::http::StatusCode::CREATED, axum::Json(ev.render(tz, None, false))).into_response()
}

async fn get_event(State(s): S, Path(id): Path<String>, Query(q): Q, h: HeaderMap) -> Response {
    if let Some(r) = super::series::occurrence_call(&s, "GET", &id, None, None) {
        return r;
    }
    let st = s.lock();
    if let Err(r) = only(&q, &["$expand"]).and_then(|_| check_id(&st, &id)) {
        return r;
    }
    match (expand_of(&q), out_zone(&h)) {
        (Ok(e), Ok(tz)) => axum::Json(st.events[&id].render(tz, e.as_deref(), false)).into_response(),
        (Err(r), _) | (_, Err(r)) => r,
    }
}

fn stale(st: &super::St, id: &str, h: &HeaderMap) -> Option<Response> {
    let given = h.get("if-match").and_then(|v| v.to_str().ok())?;
    (given != st.events[id].etag()).then(|| {
        graph_error(412, "ErrorIrresolvableConflict", "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item.")
    })
}

async fn patch_event(State(s): S, Path(id): Path<String>, h: HeaderMap, body: Bytes) -> Response {
    if let Some(r) =
        super::series::occurrence_call(&s, "PATCH", &id, Some(&body), h.get("if-match").and_then(|v| v.to_str().ok()))
    {
        return r;
    }
    let tz = match out_zone(&h) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let mut st = s.lock();
    if let Some(r) = check_id(&st, &id).err().or_else(|| stale(&st, &id, &h)) {
        return r;
    }
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return graph_error(400, "RequestBodyRead", &format!("Cannot read the request body: {e}")),
    };
    if let Err(r) = store::validate(&v, false) {
        return rej(r);
    }
    let ev = &st.events[&id];
    let mut fields = ev.fields.clone();
    let mut props = ev.props.clone();
    for (k, val) in v.as_object().into_iter().flatten() {
        if k == "singleValueExtendedProperties" {
            for p in val.as_array().into_iter().flatten() {
                let (pid, pv) = (p["id"].as_str().unwrap_or_default(), p["value"].as_str().unwrap_or_default());
                props.retain(|(x, _)| !same_prop(x, pid));
                props.push((pid.to_string(), pv.to_string()));
            }
        } else {
            fields.insert(k.clone(), val.clone());
        }
    }
    if let Err(r) = store::check_merged(&fields) {
        return rej(r);
    }
    let (seq, ck) = st.bump();
    let Some(ev) = st.events.get_mut(&id) else {
        return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.");
    };
    (ev.fields, ev.props, ev.seq, ev.change_key, ev.modified) = (fields, props, seq, ck, Utc::now());
    let out = ev.render(tz, None, false);
    let (calendar, etag) = (ev.calendar.clone(), ev.etag());
    st.changed(&id, &calendar, "updated", &etag);
    axum::Json(out).into_response()
}

async fn delete_event(State(s): S, Path(id): Path<String>, h: HeaderMap) -> Response {
    if let Some(r) =
        super::series::occurrence_call(&s, "DELETE", &id, None, h.get("if-match").and_then(|v| v.to_str().ok()))
    {
        return r;
    }
    let mut st = s.lock();
    if let Some(r) = check_id(&st, &id).err().or_else(|| stale(&st, &id, &h)) {
        return r;
    }
    st.remove(&id);
    axum::http::StatusCode::NO_CONTENT.into_response()
}
