//! The HTTP layer of the Graph client: bearer tokens with one refresh-and-retry on 401, the
//! per-mailbox concurrency limit, timeouts, size-capped bodies, and the mapping of Graph's
//! error answers onto `ProviderError`.
//!
//! Owns: `Graph` (one per connection, sharing the connector's `reqwest::Client`, the
//! connection's semaphore and its batching lane), URL building and `classify`. Must not touch event JSON or what a
//! request means; callers decide which statuses they expect. Tokens never reach a message or
//! a log line: they live in a sensitive header value only.

use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument as _;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::oauth::AccessTokens;
use crate::providers::batch::{Batching, Lane};
use crate::providers::{ProviderError, http};

/// Largest response body we read (a calendarView page is far smaller).
pub const MAX_BODY: usize = 10 * 1024 * 1024;
/// Graph allows four concurrent requests per app and mailbox; more only earns 429s.
pub const MAX_IN_FLIGHT: usize = 4;

/// Everything but RFC 3986 unreserved characters; spaces become `%20` (OData wants that, not
/// the `+` of form encoding).
const QUERY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A Graph answer with its body read (bounded).
#[derive(Debug)]
pub struct GraphResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl GraphResponse {
    pub fn parse<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| ProviderError::Invalid {
            message: format!("Microsoft Graph's answer to {what} is not the documented shape: {e}"),
        })
    }

    /// Graph's `{"error":{"code","message"}}`.
    pub fn error(&self) -> (String, String) {
        let v: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        let text = |k: &str| v["error"][k].as_str().unwrap_or_default().chars().take(300).collect::<String>();
        (text("code"), text("message"))
    }
}

/// One connection's view of Graph.
pub struct Graph {
    wire: Arc<GraphWire>,
    limiter: Arc<tokio::sync::Semaphore>,
    /// Event requests go through the connection's lane, which batches concurrent ones.
    lane: Arc<Lane<GraphWire>>,
}

/// What sends requests: the HTTP client, Graph's base URL and the connection's tokens. The
/// lane's dispatcher uses the `GraphWire` of whichever client takes a batch.
pub struct GraphWire {
    http: reqwest::Client,
    pub(super) base: Url,
    tokens: Arc<dyn AccessTokens>,
}

/// One request to Graph, ready to go alone or inside a `$batch`.
#[derive(Clone, Debug)]
pub struct GraphRequest {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl Graph {
    /// A client with a lane of its own (see `with_lane` for the connection's shared one).
    pub fn new(
        http: reqwest::Client,
        base: Url,
        tokens: Arc<dyn AccessTokens>,
        limiter: Arc<tokio::sync::Semaphore>,
    ) -> Self {
        let lane = Arc::new(Lane::new(limiter.clone(), MAX_IN_FLIGHT, Batching::default()));
        Graph { wire: Arc::new(GraphWire { http, base, tokens }), limiter, lane }
    }

    /// Use the connection's shared lane (so concurrent reconciles batch together).
    pub fn with_lane(mut self, lane: Arc<Lane<GraphWire>>) -> Self {
        self.lane = lane;
        self
    }

    /// `base/segments...?query`, every segment and value percent-encoded.
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.wire.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, QUERY))).collect();
            url.set_query(Some(&q.join("&")));
        }
        url
    }

    /// A link Graph gave us (`@odata.nextLink`, `@odata.deltaLink`, a stored cursor), if it points
    /// at our Graph endpoint: the bearer token must never go anywhere else.
    pub fn own_link(&self, link: &str) -> Option<Url> {
        let base = &self.wire.base;
        let url = Url::parse(link).ok()?;
        (url.origin() == base.origin() && url.path().starts_with(base.path())).then_some(url)
    }

    /// Send one request with the connection's token; after a 401, refresh once and retry. Every
    /// status comes back for the caller to judge; only transport failures are errors here.
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<GraphResponse, ProviderError> {
        let req = GraphRequest::new(method, url, headers, body);
        // Held until the body is read: a request is in flight until its answer is complete.
        // The semaphore is never closed, so acquiring cannot fail; if it ever were, go on unthrottled.
        let _permit = self.limiter.acquire().await.ok();
        self.wire.send(&req).await
    }

    /// `send` for a single-event request (get, lookup by key, create, patch, delete): it may
    /// travel inside a `$batch` with other requests of this mailbox. The answer, and so its
    /// judgement, is the same either way.
    pub async fn send_event(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<GraphResponse, ProviderError> {
        self.lane.call(&self.wire, GraphRequest::new(method, url, headers, body)).await
    }
}

impl GraphRequest {
    pub fn new(method: Method, url: &Url, headers: &[(&str, &str)], body: Option<&Value>) -> Self {
        GraphRequest {
            method,
            url: url.clone(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: body.cloned(),
        }
    }
}

impl GraphWire {
    pub(super) async fn token(&self) -> Result<SecretString, ProviderError> {
        self.tokens.access_token().await
    }

    pub(super) async fn refreshed(&self, rejected: &SecretString) -> Result<SecretString, ProviderError> {
        self.tokens.refresh_after_rejection(rejected).await
    }

    /// One request, refreshing a rejected token once.
    pub(super) async fn send(&self, req: &GraphRequest) -> Result<GraphResponse, ProviderError> {
        let token = self.token().await?;
        let first = self.once(req, &token).await?;
        if first.status != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        tracing::debug!(url = %redacted(&req.url), "graph rejected the access token; refreshing once");
        let fresh = self.refreshed(&token).await?;
        self.once(req, &fresh).await
    }

    /// One HTTP exchange with `token`; the body is read (bounded) whatever the status.
    pub(super) async fn once(&self, req: &GraphRequest, token: &SecretString) -> Result<GraphResponse, ProviderError> {
        let (method, url) = (&req.method, &req.url);
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret())).map_err(|_| {
            ProviderError::Unauthorized { message: "the access token contains characters HTTP cannot carry".into() }
        })?;
        auth.set_sensitive(true);
        let mut builder = self.http.request(method.clone(), url.clone()).header(AUTHORIZATION, auth);
        for (k, v) in &req.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        if let Some(b) = &req.body {
            let bytes = serde_json::to_vec(b).unwrap_or_default();
            builder = builder.header("content-type", "application/json").body(bytes);
        }
        let call = crate::telemetry::spans::ClientCall::start("graph", method, url);
        if let Some(tp) = call.traceparent() {
            builder = builder.header("traceparent", tp);
        }
        let started = Instant::now();
        let resp = builder.send().instrument(call.span().clone()).await.map_err(|e| {
            call.failed(&e);
            http::transport_error(&redacted(url), &e)
        })?;
        let status = resp.status();
        call.status(status.as_u16());
        let headers = resp.headers().clone();
        let body = http::read_capped(resp, MAX_BODY, "Microsoft Graph", &redacted(url)).await?;
        tracing::debug!(method = %method, url = %redacted(url), status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "graph request");
        Ok(GraphResponse { status, headers, body })
    }
}

/// The URL without its query (delta and skip tokens are opaque and long; not for logs).
pub(super) fn redacted(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

/// Map an answer the caller did not expect onto the classified error; `what` says what was
/// being done ("creating an event in calendar X").
pub fn classify(resp: &GraphResponse, what: &str) -> ProviderError {
    let (code, msg) = resp.error();
    let status = resp.status;
    let detail = if code.is_empty() { format!("{status}") } else { format!("{status} {code}: {msg}") };
    let message = format!("Microsoft Graph answered {detail} while {what}");
    match status.as_u16() {
        // `send` already refreshed once and retried.
        401 => ProviderError::Unauthorized {
            message: format!("{message}; the refreshed token was rejected too, will retry later"),
        },
        // Consent withdrawn, or the account lost access to the mailbox: only a reconnect helps.
        403 if code == "ErrorAccessDenied" || code == "Authorization_RequestDenied" => ProviderError::Revoked {
            message: format!("{message}; the user must reconnect Outlook (consent to Calendars.ReadWrite)"),
        },
        429 => ProviderError::RateLimited { retry_after: http::retry_after(&resp.headers), message },
        503 | 504 if resp.headers.contains_key(RETRY_AFTER) => {
            ProviderError::RateLimited { retry_after: http::retry_after(&resp.headers), message }
        }
        404 | 410 => ProviderError::NotFound { message },
        // An id Graph cannot parse names no event: as good as not found.
        400 if code == "ErrorInvalidIdMalformed" => ProviderError::NotFound { message },
        409 | 412 => ProviderError::Conflict { message },
        500..=599 => ProviderError::Transient { message },
        _ => ProviderError::Invalid { message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(code: u16, headers: &[(&'static str, &str)], body: &str) -> GraphResponse {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        GraphResponse { status: StatusCode::from_u16(code).unwrap(), headers: h, body: body.as_bytes().to_vec() }
    }

    fn err(code: &str) -> String {
        format!(r#"{{"error":{{"code":"{code}","message":"m","innerError":{{"request-id":"r"}}}}}}"#)
    }

    #[test]
    fn graph_errors_are_classified() {
        let c = |code: u16, h: &[(&'static str, &str)], b: &str| classify(&resp(code, h, b), "testing");
        assert!(matches!(c(401, &[], &err("InvalidAuthenticationToken")), ProviderError::Unauthorized { .. }));
        match c(403, &[], &err("ErrorAccessDenied")) {
            ProviderError::Revoked { message } => {
                assert!(message.contains("ErrorAccessDenied") && message.contains("reconnect"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(c(403, &[], &err("ErrorQuotaExceeded")), ProviderError::Invalid { .. }));
        assert!(matches!(
            c(429, &[("retry-after", "7")], &err("ApplicationThrottled")),
            ProviderError::RateLimited { retry_after: Some(d), .. } if d == std::time::Duration::from_secs(7)
        ));
        assert!(matches!(c(429, &[], ""), ProviderError::RateLimited { retry_after: None, .. }));
        assert!(matches!(c(503, &[("retry-after", "3")], ""), ProviderError::RateLimited { .. }));
        assert!(matches!(c(503, &[], ""), ProviderError::Transient { .. }));
        assert!(matches!(c(500, &[], "<html>"), ProviderError::Transient { .. }));
        assert!(matches!(c(404, &[], &err("ErrorItemNotFound")), ProviderError::NotFound { .. }));
        assert!(matches!(c(400, &[], &err("ErrorInvalidIdMalformed")), ProviderError::NotFound { .. }));
        assert!(matches!(c(400, &[], &err("ErrorInvalidRequest")), ProviderError::Invalid { .. }));
        assert!(matches!(c(412, &[], &err("ErrorIrresolvableConflict")), ProviderError::Conflict { .. }));
    }

    #[test]
    fn urls_are_encoded_and_links_stay_on_our_host() {
        struct NoTokens;
        #[async_trait::async_trait]
        impl AccessTokens for NoTokens {
            async fn access_token(&self) -> Result<SecretString, ProviderError> {
                Err(ProviderError::Revoked { message: "none".into() })
            }
            async fn refresh_after_rejection(&self, _: &SecretString) -> Result<SecretString, ProviderError> {
                Err(ProviderError::Revoked { message: "none".into() })
            }
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let g = Graph::new(
            reqwest::Client::new(),
            Url::parse("https://graph.example.com/v1.0").unwrap(),
            Arc::new(NoTokens),
            Arc::new(tokio::sync::Semaphore::new(1)),
        );
        let u = g.url(&["me", "calendars", "AAMk/a=b", "events"], &[("$filter", "id eq 'a b'")]);
        assert_eq!(
            u.as_str(),
            "https://graph.example.com/v1.0/me/calendars/AAMk%2Fa=b/events?$filter=id%20eq%20%27a%20b%27"
        );
        assert!(g.own_link("https://graph.example.com/v1.0/me/calendarView/delta?$deltatoken=x").is_some());
        assert!(g.own_link("https://evil.example.com/v1.0/me/x").is_none());
        assert!(g.own_link("https://graph.example.com/beta/me/x").is_none());
        assert!(g.own_link("bogus-cursor-value").is_none());
    }
}
