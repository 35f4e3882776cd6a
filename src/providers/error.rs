//! The classified error every provider returns.
//!
//! Owns: the error variants of DESIGN §5 and their mapping onto `ErrorClass` and PascalCase
//! reasons. Must not touch: HTTP details (each provider maps its own responses here).

use std::time::Duration;

use crate::error::ErrorClass;

/// A calendar call failed. Messages say what happened and what to do; never include secrets.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    #[error("rate limit exceeded at the calendar provider: {message}")]
    RateLimited { retry_after: Option<Duration>, message: String },
    /// Not sent: calsync's own limiter holds the connection's calls until a provider's
    /// Retry-After runs out, or while the provider keeps failing (`providers::limiter`,
    /// `cause`). The engine reschedules the object for `retry_after` instead of parking a
    /// worker, and counts no failed attempt: nothing failed.
    #[error("calsync holds this connection's calendar calls for now: {message}")]
    Held { retry_after: Duration, message: String, cause: HoldCause },
    #[error("the calendar provider rejected the access token: {message}")]
    Unauthorized { message: String },
    #[error("the calendar credentials were revoked or are wrong ({message}); the user must reconnect the calendar")]
    Revoked { message: String },
    #[error("not found at the calendar provider: {message}")]
    NotFound { message: String },
    #[error("the event changed in the calendar since calsync last saw it: {message}")]
    Conflict { message: String },
    #[error("the calendar provider is unavailable, will retry: {message}")]
    Transient { message: String },
    #[error("the calendar provider rejected the request: {message}")]
    Invalid { message: String },
}

/// Why the limiter holds a connection's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldCause {
    /// The provider answered 429 (or 503) with a Retry-After.
    RetryAfter,
    /// The provider failed several calls in a row (5xx, timeouts): the connection's breaker.
    Failing,
}

impl ProviderError {
    /// The same error with every occurrence of `secret` in its message replaced: provider
    /// answers may echo what was sent (a channel token, a clientState).
    pub fn redact(self, secret: &str) -> ProviderError {
        if secret.is_empty() {
            return self;
        }
        let clean = |m: String| m.replace(secret, "[redacted]");
        match self {
            ProviderError::RateLimited { retry_after, message } => {
                ProviderError::RateLimited { retry_after, message: clean(message) }
            }
            ProviderError::Held { retry_after, message, cause } => {
                ProviderError::Held { retry_after, message: clean(message), cause }
            }
            ProviderError::Unauthorized { message } => ProviderError::Unauthorized { message: clean(message) },
            ProviderError::Revoked { message } => ProviderError::Revoked { message: clean(message) },
            ProviderError::NotFound { message } => ProviderError::NotFound { message: clean(message) },
            ProviderError::Conflict { message } => ProviderError::Conflict { message: clean(message) },
            ProviderError::Transient { message } => ProviderError::Transient { message: clean(message) },
            ProviderError::Invalid { message } => ProviderError::Invalid { message: clean(message) },
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            ProviderError::RateLimited { retry_after, .. } => ErrorClass::Retry { after: *retry_after },
            ProviderError::Held { retry_after, .. } => ErrorClass::Retry { after: Some(*retry_after) },
            // Reaching the engine means the provider already refreshed once and retried.
            ProviderError::Unauthorized { .. } | ProviderError::Transient { .. } => ErrorClass::Retry { after: None },
            ProviderError::Revoked { .. } => ErrorClass::Reauthenticate,
            ProviderError::NotFound { .. } | ProviderError::Conflict { .. } | ProviderError::Invalid { .. } => {
                ErrorClass::Permanent
            }
        }
    }

    /// PascalCase reason for conditions, Events and metric labels (bounded cardinality).
    pub fn reason(&self) -> &'static str {
        match self {
            // The same reason as the 429 that began the hold: one condition, one metric label.
            ProviderError::RateLimited { .. } | ProviderError::Held { .. } => "RateLimited",
            ProviderError::Unauthorized { .. } => "Unauthorized",
            ProviderError::Revoked { .. } => "ReconnectRequired",
            ProviderError::NotFound { .. } => "NotFound",
            ProviderError::Conflict { .. } => "ConflictDetected",
            ProviderError::Transient { .. } => "ProviderUnavailable",
            ProviderError::Invalid { .. } => "ProviderRejected",
        }
    }
}
