//! Push channels of the fake (`providers.md` §1.8, `push.md` §1): `events.watch` with Google's
//! Channel body and answer, `channels.stop`, channel lifetimes capped by
//! `FakeGoogleOptions::max_channel_lifetime`, and the notifications a change in a watched
//! calendar queues (delivered over HTTP by `deliver.rs`).
//!
//! Strict where Google is: the address must be HTTPS (plus loopback http, so tests can
//! receive), channel ids are ≤64 chars of `[A-Za-z0-9-_/+=]` and unique among live channels,
//! tokens ≤256 chars. Stricter than Google: unknown body fields and `params` keys are 400.
//! Owns the channel table; callers hold the lock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc::UnboundedSender;

use super::deliver::Job;
use super::errors::GoogleError;
use super::handlers::{Need, Params, check_params, guard, parse_body};
use super::{Shared, State};

/// Google's default (and the fake's default cap): 7 days.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

const CHANNEL_FIELDS: &[&str] =
    &["id", "type", "address", "token", "expiration", "params", "payload", "kind", "resourceId", "resourceUri"];

/// A live channel as a test sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelInfo {
    pub id: String,
    pub resource_id: String,
    pub resource_uri: String,
    pub address: String,
    /// The calendar's real id (`primary` resolved).
    pub calendar: String,
    pub expiration: DateTime<Utc>,
}

/// One delivery attempt, in the order they finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryAttempt {
    pub channel_id: String,
    pub message_number: u64,
    /// `sync`, `exists` or `not_exists`.
    pub resource_state: String,
    /// 1 for the first try of a message, 2.. for retries.
    pub attempt: u32,
    /// The receiver's status; `None` when it could not be reached.
    pub status: Option<u16>,
}

struct Channel {
    info: ChannelInfo,
    calendar_index: usize,
    token: Option<String>,
    last_message: u64,
}

pub struct PushState {
    channels: BTreeMap<String, Channel>,
    /// Google's resourceId names the watched collection: stable across channels.
    resource_ids: BTreeMap<String, String>,
    pub max_lifetime: Duration,
    /// Drops every notification (simulates Google losing them); message numbers still advance.
    pub paused: bool,
    pub deliveries: Vec<DeliveryAttempt>,
    base_url: String,
    jobs: UnboundedSender<Job>,
}

impl PushState {
    pub fn new(jobs: UnboundedSender<Job>, max_lifetime: Duration, base_url: String) -> PushState {
        PushState {
            channels: BTreeMap::new(),
            resource_ids: BTreeMap::new(),
            max_lifetime,
            paused: false,
            deliveries: Vec::new(),
            base_url,
            jobs,
        }
    }

    /// Google forgets expired channels: they neither deliver nor can be stopped.
    fn prune(&mut self, now: DateTime<Utc>) {
        self.channels.retain(|_, c| c.info.expiration > now);
    }

    pub fn live(&mut self) -> Vec<ChannelInfo> {
        self.prune(Utc::now());
        self.channels.values().map(|c| c.info.clone()).collect()
    }

    pub fn forget(&mut self, id: &str) -> bool {
        self.channels.remove(id).is_some()
    }

    /// Is this exact channel still delivering (not stopped, forgotten, replaced or expired)?
    pub fn is_live(&self, id: &str, resource_id: &str, now: DateTime<Utc>) -> bool {
        self.channels.get(id).is_some_and(|c| c.info.resource_id == resource_id && c.info.expiration > now)
    }

    /// Queues message `state` on one channel. Numbers increase but skip, like Google's, so a
    /// receiver cannot read a gap as a lost message.
    fn queue(&mut self, id: &str, state: &'static str) {
        let paused = self.paused;
        let Some(c) = self.channels.get_mut(id) else { return };
        let number = if c.last_message == 0 { 1 } else { c.last_message + 1 + c.last_message % 3 };
        c.last_message = number;
        if paused {
            return;
        }
        let mut headers = vec![
            ("X-Goog-Channel-ID", c.info.id.clone()),
            ("X-Goog-Message-Number", number.to_string()),
            ("X-Goog-Resource-ID", c.info.resource_id.clone()),
            ("X-Goog-Resource-State", state.to_string()),
            ("X-Goog-Resource-URI", c.info.resource_uri.clone()),
            ("X-Goog-Channel-Expiration", c.info.expiration.format("%a, %d %b %Y %H:%M:%S GMT").to_string()),
        ];
        if let Some(t) = &c.token {
            headers.push(("X-Goog-Channel-Token", t.clone()));
        }
        let job = Job {
            channel_id: c.info.id.clone(),
            resource_id: c.info.resource_id.clone(),
            message_number: number,
            state,
            address: c.info.address.clone(),
            headers,
        };
        // Only fails once the fake is shutting down, when nobody listens anyway.
        let _ = self.jobs.send(job);
    }
}

impl State {
    /// An event of calendar `index` was created, changed or deleted: `exists` to its channels.
    pub fn notify_change(&mut self, index: usize) {
        self.push.prune(Utc::now());
        let ids: Vec<String> =
            self.push.channels.values().filter(|c| c.calendar_index == index).map(|c| c.info.id.clone()).collect();
        for id in ids {
            self.push.queue(&id, "exists");
        }
    }
}

/// The checked fields of a watch body.
struct Requested {
    id: String,
    address: String,
    token: Option<String>,
    /// The earliest of `params.ttl` and `expiration`, when either was given.
    lifetime: Option<Duration>,
}

fn push_error(reason: &'static str, message: impl Into<String>) -> GoogleError {
    GoogleError::new(400, "push", reason, message)
}

fn valid_channel_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/' | b'+' | b'='))
}

/// HTTPS as Google demands, or plain http to loopback so tests can listen without TLS.
fn acceptable_address(address: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(address) else { return false };
    match (url.scheme(), url.host_str()) {
        ("https", Some(h)) => !h.is_empty(),
        ("http", Some("127.0.0.1" | "localhost" | "[::1]")) => true,
        _ => false,
    }
}

/// Google writes int64 as a string; a number is accepted too.
fn int64(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn requested(body: &Map<String, Value>, now: DateTime<Utc>) -> Result<Requested, GoogleError> {
    if let Some(k) = body.keys().find(|k| !CHANNEL_FIELDS.contains(&k.as_str())) {
        return Err(GoogleError::invalid(format!("Invalid JSON payload received. Unknown name \"{k}\"")));
    }
    let id = match body.get("id") {
        Some(Value::String(id)) if valid_channel_id(id) => id.clone(),
        Some(Value::String(_)) => return Err(GoogleError::invalid("Invalid channel id.")),
        _ => return Err(GoogleError::required("Required channel id.")),
    };
    match body.get("type").and_then(Value::as_str) {
        Some("web_hook" | "webhook") => {}
        Some(t) => return Err(push_error("invalidType", format!("Unsupported channel type: {t}"))),
        None => return Err(GoogleError::required("Required channel type.")),
    }
    let address = match body.get("address") {
        Some(Value::String(a)) if acceptable_address(a) => a.clone(),
        Some(Value::String(a)) => {
            return Err(push_error("webhookUrlNotHttps", format!("WebHook callback must be HTTPS: {a}")));
        }
        _ => return Err(GoogleError::required("Required channel address.")),
    };
    let token = match body.get("token") {
        None | Some(Value::Null) => None,
        // Never echo the token: it is the receiver's secret.
        Some(Value::String(t)) if t.chars().count() <= 256 => Some(t.clone()),
        Some(_) => return Err(GoogleError::invalid("Invalid channel token: at most 256 characters.")),
    };
    let mut lifetime: Option<Duration> = None;
    match body.get("params") {
        None | Some(Value::Null) => {}
        Some(Value::Object(params)) => {
            for (k, v) in params {
                let (Some(v), "ttl") = (v.as_str(), k.as_str()) else {
                    return Err(GoogleError::invalid(format!("Invalid channel parameter {k}.")));
                };
                let secs = v.parse::<u64>().ok().filter(|s| *s > 0).ok_or_else(|| {
                    GoogleError::invalid(format!(
                        "Invalid value for ttl: {v}. It must be a positive number of seconds."
                    ))
                })?;
                lifetime = Some(Duration::from_secs(secs));
            }
        }
        Some(_) => return Err(GoogleError::invalid("Invalid channel params.")),
    }
    match body.get("expiration") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let ms = int64(v).ok_or_else(|| GoogleError::invalid("Invalid channel expiration."))?;
            let left = ms.saturating_sub(now.timestamp_millis());
            if left <= 0 {
                return Err(GoogleError::invalid("Channel expiration is in the past."));
            }
            let left = Duration::from_millis(left.unsigned_abs());
            lifetime = Some(lifetime.map_or(left, |l| l.min(left)));
        }
    }
    Ok(Requested { id, address, token, lifetime })
}

fn resource_uri(base: &str, calendar: &str) -> String {
    match reqwest::Url::parse(base) {
        Ok(mut url) => {
            if let Ok(mut path) = url.path_segments_mut() {
                path.pop_if_empty().extend(["calendars", calendar, "events"]);
            }
            url.set_query(Some("alt=json"));
            url.to_string()
        }
        Err(_) => format!("{base}/calendars/{calendar}/events?alt=json"),
    }
}

/// `POST /calendars/{cal}/events/watch`.
pub async fn watch(
    AxState(shared): AxState<Arc<Shared>>,
    Path(cal): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GoogleError> {
    guard(&shared, &headers, Need::EventsRead).await?;
    check_params(&params, &["eventTypes"])?;
    let body = parse_body(&body)?;
    let now = Utc::now();
    let req = requested(&body, now)?;
    let mut s = shared.lock();
    let index = s.calendar_index(&cal).ok_or_else(GoogleError::not_found)?;
    let calendar = s.calendars[index].id.clone();
    let push = &mut s.push;
    push.prune(now);
    if push.channels.contains_key(&req.id) {
        return Err(push_error("channelIdNotUnique", format!("Channel id {} not unique", req.id)));
    }
    let lifetime = req.lifetime.unwrap_or(DEFAULT_MAX_LIFETIME).min(push.max_lifetime);
    let expiration = now + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::days(7));
    let resource_id = push
        .resource_ids
        .entry(calendar.clone())
        .or_insert_with(|| uuid::Uuid::new_v4().simple().to_string()[..27].to_string())
        .clone();
    let info = ChannelInfo {
        id: req.id.clone(),
        resource_id,
        resource_uri: resource_uri(&push.base_url, &cal),
        address: req.address,
        calendar,
        expiration,
    };
    let mut answer = json!({
        "kind": "api#channel", "id": info.id, "resourceId": info.resource_id, "resourceUri": info.resource_uri,
        "expiration": expiration.timestamp_millis().to_string(),
    });
    if let Some(t) = &req.token {
        answer["token"] = json!(t);
    }
    push.channels.insert(req.id.clone(), Channel { info, calendar_index: index, token: req.token, last_message: 0 });
    // Queued before the answer is written: the receiver may see `sync` before the caller
    // learns the resourceId, as with Google.
    push.queue(&req.id, "sync");
    Ok(([(header::CONTENT_TYPE, "application/json; charset=UTF-8")], answer.to_string()).into_response())
}

/// `POST /channels/stop`: 204, or 404 when no live channel has that id and resourceId.
pub async fn stop(
    AxState(shared): AxState<Arc<Shared>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GoogleError> {
    guard(&shared, &headers, Need::EventsRead).await?;
    check_params(&params, &[])?;
    let body = parse_body(&body)?;
    if let Some(k) = body.keys().find(|k| !CHANNEL_FIELDS.contains(&k.as_str())) {
        return Err(GoogleError::invalid(format!("Invalid JSON payload received. Unknown name \"{k}\"")));
    }
    let field = |k: &str| body.get(k).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_string);
    let id = field("id").ok_or_else(|| GoogleError::required("Required channel id."))?;
    let resource_id = field("resourceId").ok_or_else(|| GoogleError::required("Required resourceId."))?;
    let mut s = shared.lock();
    s.push.prune(Utc::now());
    if !s.push.is_live(&id, &resource_id, Utc::now()) {
        return Err(GoogleError::new(404, "global", "notFound", format!("Channel '{id}' not found for project")));
    }
    s.push.forget(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}
