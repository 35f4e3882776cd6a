//! `POST /api/calendar/webhooks/google`, `POST /api/calendar/webhooks/outlook` and
//! `POST /api/calendar/webhooks/outlook/lifecycle`: provider notifications. No bearer auth: a
//! notification proves itself with its watch's secret (Google `X-Goog-Channel-Token`, Graph
//! `clientState`), checked in constant time before anything else is read.
//!
//! Answers follow what the providers retry: Google retries only 5xx, Graph retries 5xx and
//! slow answers and throttles endpoints slower than 3 s, so Graph notifications are answered
//! 202 at once and routed afterwards. Nothing here answers 5xx.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::api::errors::ApiError;
use crate::api::extract::ApiQuery;
use crate::api::state::AppState;
use crate::api::webhooks::Outcome;

/// Graph's validation tokens are short opaque strings; anything longer is not Graph.
const MAX_VALIDATION_TOKEN: usize = 1024;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// Google channel messages: headers only (`X-Goog-*`), no body.
pub async fn google(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let count = |o: Outcome| state.metrics.record_notification("google", o.label());
    let Some(channel) = header(&headers, "x-goog-channel-id") else {
        count(Outcome::Malformed);
        return ApiError::bad_request(
            "invalid_notification",
            "not a Google Calendar notification: X-Goog-Channel-ID is missing",
        )
        .into_response();
    };
    let token = header(&headers, "x-goog-channel-token").unwrap_or_default();
    if !state.webhooks.authentic(channel, token) {
        count(Outcome::Forged);
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_channel_token",
            "the channel token does not match this channel; the notification was ignored",
        )
        .into_response();
    }
    let outcome = if header(&headers, "x-goog-resource-state") == Some("sync") {
        // The first message of a new channel: nothing changed yet.
        Outcome::Sync
    } else {
        state.webhooks.notify(channel, None).await
    };
    count(outcome);
    // Unknown (stopped, replaced) channels get 200 too: Google would only retry a 5xx.
    StatusCode::OK.into_response()
}

#[derive(Deserialize)]
pub struct ValidationQuery {
    #[serde(rename = "validationToken")]
    validation_token: Option<String>,
}

/// Graph's subscription validation: echo the (decoded) token as plain text within 10 s.
fn validation_echo(token: String) -> Response {
    if token.len() > MAX_VALIDATION_TOKEN {
        return ApiError::bad_request("invalid_notification", "validationToken is too long").into_response();
    }
    let mut response = (StatusCode::OK, token).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    // Never rendered as HTML, whatever the token holds.
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'"));
    response
}

#[derive(Deserialize)]
struct GraphBatch {
    value: Vec<GraphItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphItem {
    #[serde(default)]
    client_state: Option<String>,
    #[serde(default)]
    lifecycle_event: Option<String>,
}

/// The watch id and secret inside a `clientState` (`<watch id>.<secret>`).
fn split_client_state(cs: &str) -> Option<(&str, &str)> {
    cs.split_once('.').filter(|(id, secret)| !id.is_empty() && !secret.is_empty())
}

async fn graph(
    state: AppState,
    query: ValidationQuery,
    body: Result<Bytes, BytesRejection>,
    lifecycle: bool,
) -> Response {
    if let Some(token) = query.validation_token {
        return validation_echo(token);
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            state.metrics.record_notification("outlook", Outcome::Malformed.label());
            let status = if e.status().is_client_error() { e.status() } else { StatusCode::BAD_REQUEST };
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "payload_too_large" } else { "invalid_body" };
            return ApiError::new(status, code, "the notification body could not be read").into_response();
        }
    };
    let batch: GraphBatch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(_) => {
            state.metrics.record_notification("outlook", Outcome::Malformed.label());
            return ApiError::bad_request(
                "invalid_notification",
                "not a Microsoft Graph notification: the body must be JSON with a \"value\" array",
            )
            .into_response();
        }
    };
    // Authentic items, one signal per watch (a batch often repeats one subscription).
    let mut watches: HashMap<String, Option<&'static str>> = HashMap::new();
    for item in &batch.value {
        let Some((id, secret)) = item.client_state.as_deref().and_then(split_client_state) else {
            state.metrics.record_notification("outlook", Outcome::Forged.label());
            continue;
        };
        if !state.webhooks.authentic(id, secret) {
            state.metrics.record_notification("outlook", Outcome::Forged.label());
            continue;
        }
        let action = match (lifecycle, item.lifecycle_event.as_deref()) {
            (true, Some("reauthorizationRequired")) => Some("renew"),
            (true, Some("subscriptionRemoved" | "missed")) => Some("resync"),
            (true, _) => Some("resync"),
            (false, _) => None,
        };
        let slot = watches.entry(id.to_string()).or_insert(action);
        if slot.is_none() {
            *slot = action;
        }
    }
    // Acknowledge now; routing reads the store, and Graph throttles endpoints slower than 3 s.
    tokio::spawn(async move {
        for (id, action) in watches {
            let outcome = state.webhooks.notify(&id, action).await;
            state.metrics.record_notification("outlook", outcome.label());
        }
    });
    StatusCode::ACCEPTED.into_response()
}

/// Graph change notifications (and the validation handshake of a new subscription).
pub async fn outlook(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ValidationQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    graph(state, query, body, false).await
}

/// Graph lifecycle notifications (`reauthorizationRequired`, `subscriptionRemoved`,
/// `missed`), and their validation handshake.
pub async fn outlook_lifecycle(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ValidationQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    graph(state, query, body, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_state_splits_at_the_first_dot() {
        assert_eq!(split_client_state("w-1.abc.def"), Some(("w-1", "abc.def")));
        assert_eq!(split_client_state(".abc"), None);
        assert_eq!(split_client_state("abc."), None);
        assert_eq!(split_client_state("nodot"), None);
    }
}
