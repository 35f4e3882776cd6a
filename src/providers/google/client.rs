//! The HTTP layer of the Google Calendar client: bearer auth with one refresh-and-retry on 401,
//! timeouts, size-capped bodies, and the mapping of Google's error responses onto
//! `ProviderError`.
//!
//! Owns: `GoogleClient` (one per connection: the shared `reqwest::Client`, the connection's
//! `AccessTokens` and in-flight limiter) and `classify`. Must not touch: event JSON or what a
//! request means; callers decide which statuses are expected.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, IF_MATCH, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::batch::GRequest;
use crate::oauth::AccessTokens;
use crate::providers::batch::{Batching, Lane};
use crate::providers::{ProviderError, http};

/// Largest response body we read (a 2500-event page stays far below).
pub const MAX_BODY: usize = 10 * 1024 * 1024;
/// Requests in flight per connection: enough to overlap latency, few enough that one user's
/// burst stays well under Google's 600 requests/minute/user instead of bouncing off it.
pub const MAX_IN_FLIGHT: usize = 4;
/// `quotaExceeded`/`dailyLimitExceeded` are abuse or daily limits, not a per-minute window:
/// retrying within seconds only extends them.
pub const QUOTA_RETRY: Duration = Duration::from_secs(15 * 60);

/// A response with its body read (bounded).
#[derive(Debug)]
pub struct GResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Google's error body: `{"error": {"code", "message", "errors": [{"domain", "reason", "message"}]}}`.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorDetail,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Vec<ErrorItem>,
    /// Newer Google APIs also send a gRPC-style status (`PERMISSION_DENIED`).
    #[serde(default)]
    status: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorItem {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl GResponse {
    /// `(reason, message)` of Google's error body, as far as it has them.
    pub fn error_reason(&self) -> (Option<String>, Option<String>) {
        let parsed: ErrorBody = serde_json::from_slice(&self.body).unwrap_or_default();
        let first = parsed.error.errors.into_iter().next().unwrap_or_default();
        let reason = first.reason.or(parsed.error.status);
        let message = first.message.or(parsed.error.message);
        (reason, message)
    }
}

/// One connection's client. Tokens are fetched per request and only ever put into a header
/// value marked sensitive; they are never formatted anywhere.
pub struct GoogleClient {
    wire: Arc<Wire>,
    limiter: Arc<tokio::sync::Semaphore>,
    /// Event requests go through the connection's lane, which batches concurrent ones.
    lane: Arc<Lane<Wire>>,
}

/// What sends requests: the HTTP client, the connection's tokens and the batch endpoint. The
/// lane's dispatcher uses the `Wire` of whichever client takes a batch (all of one connection).
pub struct Wire {
    http: reqwest::Client,
    tokens: Arc<dyn AccessTokens>,
    max_body: usize,
    /// `…/batch/calendar/v3`: Google's batch path for this API root.
    pub(super) batch_url: Url,
}

impl std::fmt::Debug for GoogleClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleClient").field("tokens", &"[redacted]").finish()
    }
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire").field("tokens", &"[redacted]").finish()
    }
}

/// The shared HTTP client (one connection pool for every Google connection).
pub fn build_http(timeout: Duration) -> Result<reqwest::Client, ProviderError> {
    // reqwest is built without a bundled crypto provider; the binary installs ring at start-up.
    // Library users (tests, benches) may not have, so install it here too: `Err` only means one
    // is already installed, which is what we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        // Google's API does not redirect; a redirect would carry the bearer token elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("calsync/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ProviderError::Transient { message: format!("could not build the HTTP client: {e}") })
}

fn bearer(token: &SecretString) -> Result<HeaderValue, ProviderError> {
    let mut v =
        HeaderValue::from_str(&format!("Bearer {}", token.expose_secret())).map_err(|_| ProviderError::Revoked {
            message: "the stored access token is not a valid HTTP header value; reconnect the calendar".into(),
        })?;
    v.set_sensitive(true);
    Ok(v)
}

impl GoogleClient {
    /// A client with a lane of its own (one `MAX_IN_FLIGHT` semaphore per connection is the
    /// connector's job: see `with_lane`).
    pub fn new(
        http: reqwest::Client,
        tokens: Arc<dyn AccessTokens>,
        limiter: Arc<tokio::sync::Semaphore>,
        batch_url: Url,
        batching: Batching,
    ) -> Self {
        let lane = Arc::new(Lane::new(limiter.clone(), MAX_IN_FLIGHT, batching));
        GoogleClient { wire: Arc::new(Wire { http, tokens, max_body: MAX_BODY, batch_url }), limiter, lane }
    }

    /// Use the connection's shared lane (so concurrent reconciles batch together).
    pub fn with_lane(mut self, lane: Arc<Lane<Wire>>) -> Self {
        self.lane = lane;
        self
    }

    #[cfg(test)]
    pub fn with_max_body(mut self, max: usize) -> Self {
        if let Some(w) = Arc::get_mut(&mut self.wire) {
            w.max_body = max;
        }
        self
    }

    /// Send one request with the connection's bearer token. A 401 refreshes the token once
    /// (`refresh_after_rejection`) and repeats the request; a second 401 is `Unauthorized`.
    /// Every other status is returned for the caller to judge.
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        if_match: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<GResponse, ProviderError> {
        let req = GRequest::new(method, url, if_match, body)?;
        // The semaphore is never closed, so acquiring only fails if it were; then go unthrottled.
        let _permit = self.limiter.acquire().await.ok();
        self.wire.send(&req).await
    }

    /// `send` for a single-event request (insert, get, patch, delete): it may travel inside a
    /// batch with other requests of this connection. The answer, and so its judgement, is the
    /// same either way.
    pub async fn send_event(
        &self,
        method: Method,
        url: &Url,
        if_match: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<GResponse, ProviderError> {
        let req = GRequest::new(method, url, if_match, body)?;
        self.lane.call(&self.wire, req).await
    }
}

impl Wire {
    pub(super) async fn token(&self) -> Result<SecretString, ProviderError> {
        self.tokens.access_token().await
    }

    pub(super) async fn refreshed(&self, rejected: &SecretString) -> Result<SecretString, ProviderError> {
        self.tokens.refresh_after_rejection(rejected).await
    }

    /// One request, refreshing a rejected token once.
    pub(super) async fn send(&self, req: &GRequest) -> Result<GResponse, ProviderError> {
        let token = self.token().await?;
        let first = self.attempt(req, &token).await?;
        if first.status != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        tracing::debug!(method = %req.method, url = %req.url, "google answered 401; refreshing the access token once");
        let fresh = self.refreshed(&token).await?;
        let second = self.attempt(req, &fresh).await?;
        if second.status == StatusCode::UNAUTHORIZED {
            return Err(still_unauthorized(&second));
        }
        Ok(second)
    }

    pub(super) async fn attempt(&self, req: &GRequest, token: &SecretString) -> Result<GResponse, ProviderError> {
        let (method, url) = (&req.method, &req.url);
        let mut headers = HeaderMap::new();
        if let Some(e) = &req.if_match {
            headers.insert(IF_MATCH, e.clone());
        }
        let body = req.body.as_ref().map(|b| ("application/json", b.clone()));
        self.exchange(method, url, headers, body, token).await
    }

    /// One HTTP exchange with `token`; the body is read (bounded) whatever the status.
    pub(super) async fn exchange(
        &self,
        method: &Method,
        url: &Url,
        headers: HeaderMap,
        body: Option<(&str, Vec<u8>)>,
        token: &SecretString,
    ) -> Result<GResponse, ProviderError> {
        let started = Instant::now();
        let mut req =
            self.http.request(method.clone(), url.clone()).header(AUTHORIZATION, bearer(token)?).headers(headers);
        if let Some((kind, b)) = body {
            req = req.header(CONTENT_TYPE, kind).body(b);
        }
        let call = crate::telemetry::spans::ClientCall::start("google", method, url);
        if let Some(tp) = call.traceparent() {
            req = req.header("traceparent", tp);
        }
        let resp = req.send().instrument(call.span().clone()).await.map_err(|e| {
            call.failed(&e);
            http::transport_error(url.path(), &e)
        })?;
        let status = resp.status();
        call.status(status.as_u16());
        let headers = resp.headers().clone();
        let body = http::read_capped(resp, self.max_body, "Google Calendar", url.path()).await?;
        tracing::debug!(method = %method, url = %url, status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "google request");
        Ok(GResponse { status, headers, body })
    }
}

/// The error for a 401 to a freshly refreshed token.
pub(super) fn still_unauthorized(resp: &GResponse) -> ProviderError {
    let (reason, message) = resp.error_reason();
    ProviderError::Unauthorized {
        message: format!(
            "Google rejected a freshly refreshed access token (401{}){}",
            reason.map(|r| format!(" {r}")).unwrap_or_default(),
            message.map(|m| format!(": {}", short(&m))).unwrap_or_default()
        ),
    }
}

/// Google's messages are one sentence; cap them anyway so a proxy's HTML page stays out.
pub(super) fn short(s: &str) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.chars().take(200).collect()
}

/// Does a 403 mean the grant lacks a Calendar scope (the user must reconnect and tick the box)?
fn lacks_scope(resp: &GResponse, reason: Option<&str>, message: Option<&str>) -> bool {
    let challenge = resp
        .headers
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("insufficient_scope"));
    let scope_msg = message.is_some_and(|m| m.to_ascii_lowercase().contains("scope"));
    match reason {
        Some("insufficientPermissions" | "ACCESS_TOKEN_SCOPE_INSUFFICIENT") => true,
        Some("forbidden" | "PERMISSION_DENIED") | None => challenge || scope_msg,
        _ => challenge,
    }
}

/// Map a status the caller did not expect onto the classified error. `what` says what was
/// being done ("creating event x in y"), for the message.
pub fn classify(resp: &GResponse, what: &str) -> ProviderError {
    let status = resp.status;
    let (reason, message) = resp.error_reason();
    let detail = format!(
        "Google answered {}{} while {what}{}",
        status.as_u16(),
        reason.as_deref().map(|r| format!(" {r}")).unwrap_or_default(),
        message.as_deref().map(|m| format!(": {}", short(m))).unwrap_or_default()
    );
    let after = http::retry_after(&resp.headers);
    match (status.as_u16(), reason.as_deref()) {
        (403 | 429, Some("rateLimitExceeded" | "userRateLimitExceeded" | "RESOURCE_EXHAUSTED")) | (429, _) => {
            ProviderError::RateLimited { retry_after: after, message: detail }
        }
        (403, Some("quotaExceeded" | "dailyLimitExceeded")) => ProviderError::RateLimited {
            retry_after: Some(after.unwrap_or(QUOTA_RETRY).max(QUOTA_RETRY)),
            message: detail,
        },
        (403, r) if lacks_scope(resp, r, message.as_deref()) => ProviderError::Revoked {
            message: format!("{detail}; the grant lacks calendar access: reconnect and grant calendar access"),
        },
        (401, _) => ProviderError::Unauthorized { message: detail },
        (404 | 410, _) => ProviderError::NotFound { message: detail },
        (409 | 412, _) => ProviderError::Conflict { message: detail },
        (500..=599, _) => ProviderError::Transient { message: detail },
        _ => ProviderError::Invalid { message: detail },
    }
}

/// Parse a 2xx body as `T`; an unreadable one (a proxy's page, a truncated answer) is transient.
pub fn parse<T: serde::de::DeserializeOwned>(resp: &GResponse, what: &str) -> Result<T, ProviderError> {
    serde_json::from_slice(&resp.body).map_err(|e| ProviderError::Transient {
        message: format!("Google's answer while {what} is not the expected JSON ({e}); will retry"),
    })
}
