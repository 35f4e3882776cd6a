//! HTTP side of the fake: routes, the request log, bearer-token checks (introspection or static
//! tokens) with per-call scopes, injected failures, calendarList, and events insert/get/patch/
//! update/delete. The write rules live in plain functions on `State` so the raw test helpers use
//! exactly the same rules (and queue the same push notifications). events.list lives in
//! `list.rs`, push channels in `push.rs`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State as AxState};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::errors::GoogleError;
use super::event::{self, merge_patch, stamp, valid_id, validate};
use super::{Failure, RecordedRequest, SCOPE_PREFIX, Shared, State, Stored, list, push};

pub type Params = Vec<(String, String)>;

pub fn router(shared: Arc<Shared>) -> Router {
    let api = routes(shared.clone());
    super::batch::router(api.clone()).layer(middleware::from_fn_with_state(shared, record)).merge(api)
}

fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/calendar/v3/users/me/calendarList", get(calendar_list))
        .route("/calendar/v3/calendars", post(super::calendars::insert))
        .route("/calendar/v3/calendars/{cal}", get(super::calendars::get_one).delete(super::calendars::delete))
        .route("/calendar/v3/calendars/{cal}/events", get(list::events_list).post(insert))
        .route("/calendar/v3/calendars/{cal}/events/watch", post(push::watch))
        .route("/calendar/v3/channels/stop", post(push::stop))
        .route("/calendar/v3/freeBusy", post(super::freebusy::query))
        .route("/calendar/v3/calendars/{cal}/events/{id}", get(get_one).patch(patch).put(update).delete(delete))
        .route("/calendar/v3/calendars/{cal}/events/{id}/instances", get(super::series::events_instances))
        .fallback(|| async { GoogleError::not_found() })
        .layer(middleware::from_fn_with_state(shared.clone(), record))
        .with_state(shared)
}

async fn record(AxState(shared): AxState<Arc<Shared>>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let if_match = req.headers().get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::to_string);
    let in_batch = req.headers().contains_key(super::batch::PART_HEADER);
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    shared.lock().requests.push(RecordedRequest { method, path, query, if_match, status, in_batch });
    resp
}

/// What a call needs: any one of these scopes (short names under `googleapis.com/auth/`).
pub enum Need {
    EventsRead,
    EventsWrite,
    CalendarList,
    /// calendars.insert / calendars.delete.
    CalendarsWrite,
    FreeBusy,
}

impl Need {
    fn scopes(&self) -> &'static [&'static str] {
        match self {
            Need::EventsRead => &["calendar", "calendar.readonly", "calendar.events", "calendar.events.readonly"],
            Need::EventsWrite => &["calendar", "calendar.events"],
            Need::FreeBusy => &["calendar", "calendar.readonly", "calendar.freebusy", "calendar.events.freebusy"],
            Need::CalendarList => {
                &["calendar", "calendar.readonly", "calendar.calendarlist", "calendar.calendarlist.readonly"]
            }
            Need::CalendarsWrite => &["calendar", "calendar.calendars", "calendar.app.created"],
        }
    }
}

/// Authenticates the bearer token, checks its scopes, then serves an injected failure if any.
pub async fn guard(shared: &Shared, headers: &HeaderMap, need: Need) -> Result<(), GoogleError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(GoogleError::auth)?
        .to_string();
    let known = shared.lock().static_tokens.get(&token).cloned();
    let granted: Vec<String> = match (known, &shared.auth) {
        (Some(scopes), _) => scopes,
        (None, super::FakeAuth::StaticTokens(_)) => return Err(GoogleError::auth()),
        (None, super::FakeAuth::Introspection { url, client_id, client_secret }) => {
            let resp = shared
                .http
                .post(url)
                .basic_auth(client_id, Some(client_secret))
                .form(&[("token", token.as_str())])
                .send()
                .await
                .map_err(|e| GoogleError::new(503, "global", "backendError", format!("introspection failed: {e}")))?;
            let info: Value = resp.json().await.unwrap_or(Value::Null);
            if info["active"] != true || info.get("token_type").is_some_and(|t| t != "Bearer") {
                return Err(GoogleError::auth());
            }
            info["scope"].as_str().unwrap_or_default().split(' ').map(str::to_string).collect()
        }
    };
    if !need.scopes().iter().any(|s| granted.iter().any(|g| g.strip_prefix(SCOPE_PREFIX) == Some(s))) {
        return Err(GoogleError::insufficient_permissions());
    }
    let failure = shared.lock().failures.pop_front();
    if let Some((failure, retry_after)) = failure {
        let mut e = match failure {
            Failure::RateLimit403 => GoogleError::new(403, "usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
            Failure::RateLimit429 => GoogleError::new(429, "usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
            Failure::UserRateLimit403 => {
                GoogleError::new(403, "usageLimits", "userRateLimitExceeded", "User Rate Limit Exceeded")
            }
            Failure::Backend503 => GoogleError::new(503, "global", "backendError", "Backend Error"),
        };
        e.retry_after = retry_after;
        return Err(e);
    }
    let delay = shared.lock().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    Ok(())
}

/// Refuses query parameters Google does not define for the call (stricter than Google).
pub fn check_params(params: &Params, allowed: &[&str]) -> Result<(), GoogleError> {
    const GLOBAL: &[&str] = &["fields", "prettyPrint", "quotaUser", "alt", "key", "userIp"];
    match params.iter().find(|(k, _)| !allowed.contains(&k.as_str()) && !GLOBAL.contains(&k.as_str())) {
        Some((k, _)) => Err(GoogleError::invalid_param(k, format!("Unknown parameter: {k}"))),
        None => Ok(()),
    }
}

pub fn json_response(v: &Value) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, "application/json; charset=UTF-8")], v.to_string()).into_response();
    if let Some(etag) = v["etag"].as_str().and_then(|e| e.parse().ok()) {
        resp.headers_mut().insert(header::ETAG, etag);
    }
    resp
}

async fn calendar_list(
    AxState(shared): AxState<Arc<Shared>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Result<Response, GoogleError> {
    guard(&shared, &headers, Need::CalendarList).await?;
    check_params(&params, &["maxResults", "pageToken", "minAccessRole", "showDeleted", "showHidden", "syncToken"])?;
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let max = match param("maxResults") {
        None => 100,
        Some(v) => v.parse::<usize>().ok().filter(|n| (1..=250).contains(n)).ok_or_else(|| {
            GoogleError::invalid_param(
                "maxResults",
                format!("Invalid value '{v}'. Values must be within the range: [1, 250]"),
            )
        })?,
    };
    let s = shared.lock();
    let max = s.page_size.map_or(max, |p| p.min(max));
    let offset = match param("pageToken") {
        None => 0,
        Some(t) => t
            .strip_prefix("cl")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| GoogleError::invalid_param("pageToken", "Invalid page token value."))?,
    };
    let entries: Vec<Value> = s
        .calendars
        .iter()
        .map(|c| {
            let mut e = json!({
                "kind": "calendar#calendarListEntry",
                "etag": format!("\"{}\"", 1_600_000_000_000_000u64 + c.id.len() as u64),
                "id": c.id, "summary": c.summary, "timeZone": c.time_zone, "accessRole": c.access_role,
                "defaultReminders": [], "selected": true,
            });
            if c.primary {
                e["primary"] = json!(true);
            }
            if let Some(d) = &c.description {
                e["description"] = json!(d);
            }
            e
        })
        .filter(|e| role_rank(e["accessRole"].as_str()) >= role_rank(param("minAccessRole")))
        .collect();
    let page: Vec<Value> = entries.iter().skip(offset).take(max).cloned().collect();
    let mut body = json!({ "kind": "calendar#calendarList", "etag": "\"p33c\"", "items": page });
    if offset + max < entries.len() {
        body["nextPageToken"] = json!(format!("cl{}", offset + max));
    } else {
        body["nextSyncToken"] = json!("cl-sync-1");
    }
    Ok(json_response(&body))
}

/// calendarList `minAccessRole` order (no parameter: every entry).
fn role_rank(role: Option<&str>) -> u8 {
    match role {
        None => 0,
        Some("freeBusyReader") => 1,
        Some("reader") => 2,
        Some("writer") => 3,
        Some("owner") => 4,
        Some(_) => 0,
    }
}

pub fn parse_body(body: &Bytes) -> Result<Map<String, Value>, GoogleError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(GoogleError::parse_error()),
    }
}

fn writable_calendar(s: &State, cal: &str) -> Result<usize, GoogleError> {
    let i = s.calendar_index(cal).ok_or_else(GoogleError::not_found)?;
    if !s.calendars[i].writable() {
        return Err(GoogleError::writer_access());
    }
    Ok(i)
}

/// events.insert rules (also used by the raw helper).
pub fn insert_event(s: &mut State, cal: &str, body: Value) -> Result<Value, GoogleError> {
    let Value::Object(mut body) = body else { return Err(GoogleError::parse_error()) };
    let i = writable_calendar(s, cal)?;
    let id = match body.get("id") {
        None | Some(Value::Null) => uuid::Uuid::new_v4().simple().to_string(),
        Some(Value::String(id)) if valid_id(id) => id.clone(),
        Some(_) => return Err(GoogleError::invalid("Invalid resource id value.")),
    };
    if s.calendars[i].events.contains_key(&id) {
        return Err(GoogleError::duplicate());
    }
    event::clean_client_body(&mut body);
    validate(&body)?;
    let seq = s.next_seq();
    let cal_id = s.calendars[i].id.clone();
    stamp(&mut body, &id, &cal_id, seq, None);
    let resource = Value::Object(body);
    s.calendars[i].events.insert(id, Stored { resource: resource.clone(), seq });
    s.notify_change(i);
    Ok(resource)
}

fn check_if_match(s: &State, current: &Value, if_match: Option<&str>, enforce: bool) -> Result<(), GoogleError> {
    match if_match {
        Some("*") => Ok(()),
        Some(tag) if Some(tag) == current["etag"].as_str() => Ok(()),
        Some(_) => Err(GoogleError::condition_not_met()),
        None if enforce && s.require_if_match => Err(GoogleError::if_match_required()),
        None => Ok(()),
    }
}

/// events.patch (`replace` = false) and events.update (`replace` = true) rules.
fn write_event(
    s: &mut State,
    cal: &str,
    id: &str,
    body: Value,
    if_match: Option<&str>,
    enforce: bool,
    replace: bool,
) -> Result<Value, GoogleError> {
    if !body.is_object() {
        return Err(GoogleError::parse_error());
    }
    let i = writable_calendar(s, cal)?;
    super::series::materialize(s, i, id);
    let stored = s.calendars[i].events.get(id).ok_or_else(GoogleError::not_found)?;
    let current = stored.resource.clone();
    check_if_match(s, &current, if_match, enforce)?;
    if body.get("id").and_then(Value::as_str).is_some_and(|b| b != id) {
        return Err(GoogleError::invalid("The event id in the body does not match the path."));
    }
    let mut next = if replace {
        body
    } else {
        let mut merged = current.clone();
        merge_patch(&mut merged, &body);
        merged
    };
    let Value::Object(next_map) = &mut next else { return Err(GoogleError::parse_error()) };
    event::clean_client_body(next_map);
    if replace && !next_map.contains_key("status") {
        next_map.insert("status".into(), json!("confirmed"));
    }
    let (start, end) = validate(next_map)?;
    let old =
        (event::parse_when(current.get("start"), "start").ok(), event::parse_when(current.get("end"), "end").ok());
    let seq_no = current["sequence"].as_i64().unwrap_or(0);
    let moved = old != (Some(start), Some(end)) || current.get("recurrence") != next_map.get("recurrence");
    next_map.insert("sequence".into(), json!(if moved { seq_no + 1 } else { seq_no }));
    let seq = s.next_seq();
    let cal_id = s.calendars[i].id.clone();
    stamp(next_map, id, &cal_id, seq, current.get("created").cloned());
    super::series::keep_series_fields(&current, next_map);
    s.calendars[i].events.insert(id.to_string(), Stored { resource: next.clone(), seq });
    s.notify_change(i);
    Ok(next)
}

/// events.patch rules (also used by the raw helpers, with `enforce` = false).
pub fn patch_event(
    s: &mut State,
    cal: &str,
    id: &str,
    patch: Value,
    if_match: Option<&str>,
    enforce: bool,
) -> Result<Value, GoogleError> {
    write_event(s, cal, id, patch, if_match, enforce, false)
}

/// events.delete rules: the event stays, `cancelled`.
pub fn delete_event(
    s: &mut State,
    cal: &str,
    id: &str,
    if_match: Option<&str>,
    enforce: bool,
) -> Result<(), GoogleError> {
    let i = writable_calendar(s, cal)?;
    super::series::materialize(s, i, id);
    let stored = s.calendars[i].events.get(id).ok_or_else(GoogleError::not_found)?;
    let current = stored.resource.clone();
    if current["status"] == "cancelled" {
        return Err(GoogleError::deleted());
    }
    check_if_match(s, &current, if_match, enforce)?;
    let mut next = current.clone();
    next["status"] = json!("cancelled");
    let Value::Object(map) = &mut next else { return Err(GoogleError::parse_error()) };
    let seq = s.next_seq();
    let cal_id = s.calendars[i].id.clone();
    stamp(map, id, &cal_id, seq, current.get("created").cloned());
    super::series::keep_series_fields(&current, map);
    s.calendars[i].events.insert(id.to_string(), Stored { resource: next, seq });
    s.notify_change(i);
    Ok(())
}

const WRITE_PARAMS: &[&str] =
    &["sendUpdates", "sendNotifications", "conferenceDataVersion", "maxAttendees", "supportsAttachments"];

fn if_match(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok())
}

async fn insert(
    AxState(shared): AxState<Arc<Shared>>,
    Path(cal): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GoogleError> {
    guard(&shared, &headers, Need::EventsWrite).await?;
    check_params(&params, WRITE_PARAMS)?;
    let body = parse_body(&body)?;
    let created = insert_event(&mut shared.lock(), &cal, Value::Object(body))?;
    Ok(json_response(&created))
}

async fn get_one(
    AxState(shared): AxState<Arc<Shared>>,
    Path((cal, id)): Path<(String, String)>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Result<Response, GoogleError> {
    guard(&shared, &headers, Need::EventsRead).await?;
    check_params(&params, &["timeZone", "maxAttendees", "alwaysIncludeEmail"])?;
    let s = shared.lock();
    let i = s.calendar_index(&cal).ok_or_else(GoogleError::not_found)?;
    if let Some(stored) = s.calendars[i].events.get(&id) {
        if let Some(tag) = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok())
            && Some(tag) == stored.resource["etag"].as_str()
        {
            return Ok(axum::http::StatusCode::NOT_MODIFIED.into_response());
        }
        return Ok(json_response(&stored.resource));
    }
    // An instance of a recurring event, by its derived id.
    let (master, _) = id.rsplit_once('_').ok_or_else(GoogleError::not_found)?;
    let m = s.calendars[i].events.get(master).ok_or_else(GoogleError::not_found)?;
    let tz = super::event::parse_tz(&s.calendars[i].time_zone).unwrap_or(chrono_tz::UTC);
    let Value::Object(map) = &m.resource else { return Err(GoogleError::not_found()) };
    super::expand::instances(map, tz, None, None)
        .into_iter()
        .find(|inst| inst.resource["id"] == id.as_str())
        .map(|inst| json_response(&inst.resource))
        .ok_or_else(GoogleError::not_found)
}

async fn patch(
    AxState(shared): AxState<Arc<Shared>>,
    Path((cal, id)): Path<(String, String)>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GoogleError> {
    guard(&shared, &headers, Need::EventsWrite).await?;
    check_params(&params, WRITE_PARAMS)?;
    let body = parse_body(&body)?;
    let out = write_event(&mut shared.lock(), &cal, &id, Value::Object(body), if_match(&headers), true, false)?;
    Ok(json_response(&out))
}

async fn update(
    AxState(shared): AxState<Arc<Shared>>,
    Path((cal, id)): Path<(String, String)>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GoogleError> {
    guard(&shared, &headers, Need::EventsWrite).await?;
    check_params(&params, WRITE_PARAMS)?;
    let body = parse_body(&body)?;
    let out = write_event(&mut shared.lock(), &cal, &id, Value::Object(body), if_match(&headers), true, true)?;
    Ok(json_response(&out))
}

async fn delete(
    AxState(shared): AxState<Arc<Shared>>,
    Path((cal, id)): Path<(String, String)>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Result<Response, GoogleError> {
    guard(&shared, &headers, Need::EventsWrite).await?;
    check_params(&params, &["sendUpdates", "sendNotifications"])?;
    delete_event(&mut shared.lock(), &cal, &id, if_match(&headers), true)?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}
