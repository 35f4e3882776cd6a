//! The one error type every endpoint returns: `{"error": "<message>", "code": "<machine_code>"}`
//! with a fitting HTTP status (DESIGN §6), plus the mapping of store and provider errors onto it.
//!
//! Owns: status codes, machine codes and the seed's messages. Must not touch: request parsing
//! or business rules; messages must never carry secrets (passwords, tokens, keys).

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::engine::StoreError;
use crate::providers::ProviderError;

/// Seed message: no (active) calendar for the user.
pub const NO_CALENDAR: &str = "No calendar connected";
/// Seed message: an expired bearer token.
pub const TOKEN_EXPIRED: &str = "Token has expired";
/// Seed message: bad credentials (bearer token, or calendar credentials).
pub const INVALID_CREDENTIALS: &str = "Invalid authentication credentials";
/// Seed message: too many requests.
pub const RATE_LIMITED: &str = "Rate limit exceeded";

/// JSON body of every error response.
#[derive(Serialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// Human-readable message (the seed's messages where the seed has one).
    pub error: String,
    /// Stable machine-readable code, e.g. `not_connected`, `event_not_managed`.
    pub code: String,
}

/// An error answer: status, machine code, message and an optional `Retry-After`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: None }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 400 for a field that fails validation.
    pub fn invalid_field(message: impl Into<String>) -> Self {
        Self::bad_request("invalid_field", message)
    }

    pub fn not_connected() -> Self {
        Self::bad_request("not_connected", NO_CALENDAR)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// A change cursor this server cannot use (400 `invalid_cursor`) or another user's (403).
    pub fn cursor(e: &super::cursor::CursorError) -> Self {
        match e {
            super::cursor::CursorError::OtherUser => Self::new(StatusCode::FORBIDDEN, "forbidden", e.to_string()),
            _ => Self::bad_request("invalid_cursor", e.to_string()),
        }
    }

    /// 410: the calendar no longer knows the cursor's point in time; pull again without one.
    pub fn cursor_expired() -> Self {
        Self::new(
            StatusCode::GONE,
            "cursor_expired",
            "the calendar can no longer list changes since this cursor; call calendar-to-tasks without a cursor and replace your copy of the imported events",
        )
    }

    pub fn rate_limited(retry_after: Duration) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", RATE_LIMITED)
        }
    }

    pub fn with_retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }

    /// The `{error, code}` body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: self.message.clone(), code: self.code.to_string() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), code = self.code, error = %self.message, "request failed");
        } else {
            tracing::debug!(status = self.status.as_u16(), code = self.code, error = %self.message, "request rejected");
        }
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(after) = self.retry_after {
            // Whole seconds, rounded up, at least 1: a client honouring it never comes back early.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiError::not_found("not_found", format!("{m} not found")),
            StoreError::Conflict(_) => ApiError::conflict(
                "concurrent_update",
                "the object was changed by a concurrent request; retry the request",
            )
            .with_retry_after(Some(Duration::from_secs(1))),
            StoreError::Invalid(m) => ApiError::bad_request("invalid_request", m),
            StoreError::Unreadable(m) => ApiError::conflict("credentials_unreadable", m),
            StoreError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the object store is unavailable; retry later",
            )
            .with_retry_after(Some(Duration::from_secs(5))),
        }
    }
}

/// A provider answer seen while serving a request (credential check, calendar read).
pub fn from_provider(e: &ProviderError) -> ApiError {
    match e {
        ProviderError::Revoked { .. } | ProviderError::Unauthorized { .. } => ApiError::bad_request(
            "invalid_credentials",
            format!(
                "{INVALID_CREDENTIALS}: the calendar service rejected the credentials; check them (or reconnect the calendar)"
            ),
        ),
        ProviderError::RateLimited { retry_after, .. } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "provider_rate_limited",
            format!("{RATE_LIMITED} at the calendar provider; retry later"),
        )
        .with_retry_after(Some(retry_after.unwrap_or(Duration::from_secs(30)))),
        ProviderError::Held { retry_after, cause: crate::providers::HoldCause::RetryAfter, .. } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "provider_rate_limited",
            format!("{RATE_LIMITED} at the calendar provider; retry later"),
        )
        .with_retry_after(Some(*retry_after)),
        // The connection's breaker: the server failed several calls in a row just now.
        ProviderError::Held { retry_after, cause: crate::providers::HoldCause::Failing, .. } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "calendar_unreachable",
            "the calendar server failed several requests in a row; calsync pauses calls to it for a moment: retry later"
                .to_string(),
        )
        .with_retry_after(Some(*retry_after)),
        ProviderError::NotFound { message } => ApiError::bad_request(
            "calendar_not_found",
            format!(
                "the calendar server has no such calendar or account ({message}); check server_url and calendar_id"
            ),
        ),
        ProviderError::Transient { message } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "calendar_unreachable",
            format!("the calendar server could not be reached ({message}); check server_url or retry later"),
        ),
        ProviderError::Conflict { message } | ProviderError::Invalid { message } => {
            ApiError::bad_request("calendar_rejected", format!("the calendar server rejected the request: {message}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::HoldCause;

    #[test]
    fn a_hold_says_why_with_its_time() {
        let held = |cause| ProviderError::Held { retry_after: Duration::from_secs(3), message: "held".into(), cause };
        let quota = from_provider(&held(HoldCause::RetryAfter));
        assert_eq!((quota.status, quota.code), (StatusCode::TOO_MANY_REQUESTS, "provider_rate_limited"));
        assert_eq!(quota.retry_after, Some(Duration::from_secs(3)));
        let failing = from_provider(&held(HoldCause::Failing));
        assert_eq!((failing.status, failing.code), (StatusCode::BAD_GATEWAY, "calendar_unreachable"));
        assert_eq!(failing.retry_after, Some(Duration::from_secs(3)));
    }
}
