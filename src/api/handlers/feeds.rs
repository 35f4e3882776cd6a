//! The ICS subscription feed: `POST /feeds/{user_id}` makes (or returns) the user's secret feed
//! URL, `DELETE /feeds/{user_id}` revokes it, and `GET /feeds/<token>.ics` serves the user's
//! tasks as iCalendar to calendar apps (Apple Calendar, Google "From URL", Outlook).
//!
//! The GET is unauthenticated (calendar apps cannot send a bearer header): the token is the
//! credential. A malformed, unknown, revoked or wrong token gets exactly the router's own 404,
//! so nothing tells them apart. Tokens are never logged (the request log names the route
//! template only).
//!
//! Owns: the three endpoints. Must not touch: how tokens are made (`credentials::feed`) or
//! written (`api::ics`); calendars.

use std::collections::BTreeSet;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use kube::ResourceExt;
use secrecy::{ExposeSecret, SecretString};

use super::user_connections;
use crate::api::auth::Caller;
use crate::api::dto::{FeedResponse, FeedRevokedResponse, Id};
use crate::api::errors::{ApiError, ErrorBody};
use crate::api::extract::ApiPath;
use crate::api::state::AppState;
use crate::api::{ics, mapping};
use crate::credentials::feed::{FeedKeys, FeedRecord, feed_id, parse_token};
use crate::engine::{Labels, StoreError};
use crate::resources::{TaskSync, USER_LABEL, is_feed_only, user_label_value};

/// Where feed URLs live under the public base URL.
const FEED_PATH: &str = "/api/calendar/feeds/";

/// The router's own 404: an unknown token looks like any unknown path.
fn not_found() -> Response {
    ApiError::not_found("not_found", "no such endpoint; see /api/calendar/openapi.json").into_response()
}

fn feeds_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "feeds_unavailable",
        "ICS feeds need the credentials encryption key (ENCRYPTION_KEY), which this process does not have",
    )
}

fn valid_host(h: &str) -> bool {
    !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

/// The public base URL: `CALSYNC_PUBLIC_URL`, else the scheme (`X-Forwarded-Proto`) and host of
/// this request, which reached us, so it reaches us.
fn base_url(state: &AppState, headers: &HeaderMap, uri: &Uri) -> String {
    if let Some(u) = &state.config.public_url {
        return u.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .filter(|h| valid_host(h))
        .unwrap_or("localhost");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| p == "https" || p == "http")
        .unwrap_or_else(|| "http".into());
    format!("{proto}://{host}")
}

/// The user's feed record, if there is one that is theirs. A record the store cannot open
/// (sealed with a key no longer configured) is dropped: a new URL replaces it.
async fn record_of(state: &AppState, user: &str) -> Result<Option<FeedRecord>, ApiError> {
    let id = feed_id(user);
    match state.objects.get_feed(&state.namespace, &id).await {
        Ok(Some(r)) if r.user_id == user => Ok(Some(r)),
        Ok(Some(_)) => Err(ApiError::conflict(
            "feed_unavailable",
            "this user's feed id is taken by another user id; contact the operator",
        )),
        Ok(None) => Ok(None),
        Err(StoreError::Unreadable(_)) => {
            state.objects.delete_feed(&state.namespace, &id).await?;
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// A new feed for `user`, or the one another request made first.
async fn issue(state: &AppState, keys: &FeedKeys, user: &str) -> Result<(SecretString, bool), ApiError> {
    let (record, token) = keys.issue(user, chrono::Utc::now()).ok_or_else(feeds_unavailable)?;
    let stored = state.objects.create_feed(&state.namespace, &record).await?;
    if stored == record {
        return Ok((token, true));
    }
    let token = keys.token_of(&stored).ok_or_else(|| {
        ApiError::conflict("concurrent_update", "the feed was changed by a concurrent request; retry the request")
    })?;
    Ok((token, false))
}

/// Create the user's ICS feed, or return the one they have.
#[utoipa::path(post, path = "/api/calendar/feeds/{user_id}", tag = "feeds",
    params(("user_id" = String, Path)),
    responses((status = 200, body = FeedResponse, description = "The feed URL (the same on every call until revoked)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "feed_url_unrecoverable: made with a key no longer configured; DELETE it first"), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let user = mapping::user_id(&Id(user_id))?.to_string();
    caller.authorize(&state, &user)?;
    let keys = state.feed_keys.clone().ok_or_else(feeds_unavailable)?;
    let (token, created) = match record_of(&state, &user).await? {
        Some(record) => match keys.token_of(&record) {
            Some(token) => (token, false),
            // Made with a key dropped after a rotation: the URL still works for the calendars
            // subscribed to it but cannot be shown again. Replacing it here would silently cut
            // them off, so the caller decides (DELETE, then POST, makes a new one).
            None => {
                return Err(ApiError::conflict(
                    "feed_url_unrecoverable",
                    "this user's feed URL was made with an encryption key that is no longer configured: it still works, but cannot be shown again; revoke it (DELETE) to make a new one",
                ));
            }
        },
        None => issue(&state, &keys, &user).await?,
    };
    tracing::info!(feed = %feed_id(&user), created, "ICS feed URL issued");
    let base = base_url(&state, &headers, &uri);
    let feed_url = format!("{base}{FEED_PATH}{}.ics", token.expose_secret());
    let webcal_url = format!("webcal://{}", feed_url.split_once("://").map(|(_, rest)| rest).unwrap_or(&feed_url));
    let mut response = axum::Json(FeedResponse { success: true, feed_url, webcal_url, created }).into_response();
    // The body is a credential: never cached anywhere.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Revoke the user's ICS feed: its URL answers 404 at once.
#[utoipa::path(delete, path = "/api/calendar/feeds/{user_id}", tag = "feeds",
    params(("user_id" = String, Path)),
    responses((status = 200, body = FeedRevokedResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<String>,
) -> Result<axum::Json<FeedRevokedResponse>, ApiError> {
    let user = mapping::user_id(&Id(user_id))?.to_string();
    caller.authorize(&state, &user)?;
    let revoked = match record_of(&state, &user).await? {
        Some(record) => state.objects.delete_feed(&state.namespace, &record.id).await?,
        None => false,
    };
    tracing::info!(feed = %feed_id(&user), revoked, "ICS feed revoked");
    Ok(axum::Json(FeedRevokedResponse { success: true, revoked }))
}

/// Whether `user` has a feed (task-to-calendar's fallback when no calendar is connected).
pub async fn has_feed(state: &AppState, user: &str) -> Result<bool, ApiError> {
    match state.objects.get_feed(&state.namespace, &feed_id(user)).await {
        Ok(r) => Ok(r.is_some_and(|r| r.user_id == user)),
        Err(StoreError::Unreadable(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The TaskSyncs the user's feed lists: on any of their connections, or feed-only.
async fn user_tasks(state: &AppState, user: &str) -> Result<Vec<TaskSync>, ApiError> {
    let selector = Labels::from([(USER_LABEL.to_string(), user_label_value(user))]);
    let connections: BTreeSet<String> = user_connections(state, user).await?.iter().map(|c| c.name_any()).collect();
    Ok(state
        .objects
        .list_task_syncs(Some(&state.namespace), &selector)
        .await?
        .into_iter()
        .filter(|t| t.metadata.deletion_timestamp.is_none())
        // The label is a hash: the connection's user id is the real check.
        .filter(|t| is_feed_only(t) || connections.contains(&t.spec.connection_ref.name))
        .collect())
}

/// A user's tasks as an iCalendar feed.
#[utoipa::path(get, path = "/api/calendar/feeds/{token}.ics", tag = "feeds",
    params(("token" = String, Path, description = "The secret from the feed URL")),
    responses((status = 200, content_type = "text/calendar", body = String, description = "RFC 5545 VCALENDAR"),
        (status = 304, description = "Unchanged since the ETag sent in If-None-Match"),
        (status = 404, body = ErrorBody, description = "No such feed (unknown, revoked or malformed token)"),
        (status = 429, body = ErrorBody)))]
pub async fn serve(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(Path(file)) = path else { return not_found() };
    let Some(id) = file.strip_suffix(".ics").and_then(parse_token) else { return not_found() };
    let token = &file[..file.len() - ".ics".len()];
    let record = match state.objects.get_feed(&state.namespace, id).await {
        Ok(Some(r)) if r.admits(token) => r,
        Ok(_) | Err(StoreError::NotFound(_) | StoreError::Invalid(_) | StoreError::Unreadable(_)) => {
            return not_found();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    // Per feed, at the per-user rate: a calendar app polls every few minutes at most.
    if let Err(e) = state.caches.check_rate(&format!("ics-feed:{}", record.id)) {
        return e.into_response();
    }
    let tasks = match user_tasks(&state, &record.user_id).await {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let feed = ics::render(&tasks, &state.config.owner);
    let mut response_headers = HeaderMap::new();
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(ics::CACHE_CONTROL));
    if let Ok(v) = HeaderValue::from_str(&feed.etag) {
        response_headers.insert(header::ETAG, v);
    }
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| ics::none_match(v, &feed.etag));
    tracing::debug!(feed = %record.id, events = feed.events, unchanged, "ICS feed served");
    if unchanged {
        return (StatusCode::NOT_MODIFIED, response_headers).into_response();
    }
    response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/calendar; charset=utf-8"));
    response_headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("inline; filename=\"tasks.ics\""));
    (StatusCode::OK, response_headers, feed.body).into_response()
}
