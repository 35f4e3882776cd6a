//! The HTTP layer of the CalDAV client: preemptive Basic auth, timeouts, bounded redirects,
//! size-capped bodies, and the mapping of HTTP failures onto `ProviderError`.
//!
//! Owns: `DavClient` (one per connection and credentials) and `classify`. Must not touch: XML,
//! iCalendar or what a request means; callers decide which statuses are expected.

use std::time::{Duration, Instant};
use tracing::Instrument as _;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};

use crate::providers::ProviderError;

/// Largest response body we read (a calendar-query over years of events stays well below).
pub const MAX_BODY: usize = 10 * 1024 * 1024;
/// Redirects followed per request before we call it a loop.
pub const MAX_REDIRECTS: usize = 5;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests in flight per connection: enough to overlap latency, few enough that one user's
/// burst stays under undocumented server limits (iCloud) instead of bouncing off them.
pub const MAX_IN_FLIGHT: usize = 4;

/// An HTTP response with its body read (bounded).
#[derive(Debug)]
pub struct DavResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The URL that answered (after redirects).
    pub url: Url,
}

impl DavResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The ETag, if it is a strong one (RFC 4791 §5.3.4: a weak or missing ETag means the server
    /// changed what we sent, so the caller must read the version back).
    pub fn strong_etag(&self) -> Option<String> {
        self.header("etag").filter(|e| !e.starts_with("W/")).map(str::to_string)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One account's HTTP client. The password lives only in the prepared `Authorization` header
/// value (marked sensitive, so hyper never logs it) and is never formatted anywhere.
pub struct DavClient {
    http: reqwest::Client,
    policy: std::sync::Arc<super::guard::AddressPolicy>,
    auth: HeaderValue,
    username: String,
    max_body: usize,
    limiter: tokio::sync::Semaphore,
}

impl std::fmt::Debug for DavClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DavClient").field("username", &self.username).field("password", &"[redacted]").finish()
    }
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl DavClient {
    pub fn new(username: &str, password: &SecretString) -> Result<Self, ProviderError> {
        Self::with_limit(username, password, MAX_BODY)
    }

    pub fn with_limit(username: &str, password: &SecretString, max_body: usize) -> Result<Self, ProviderError> {
        Self::guarded(username, password, max_body, std::sync::Arc::new(super::guard::AddressPolicy::local()))
    }

    /// A client that reaches only the addresses `policy` allows (checked after DNS resolution,
    /// on every request and redirect hop).
    pub fn guarded(
        username: &str,
        password: &SecretString,
        max_body: usize,
        policy: std::sync::Arc<super::guard::AddressPolicy>,
    ) -> Result<Self, ProviderError> {
        // reqwest is built without a bundled crypto provider; the binary installs ring at start-up.
        // Library users (tests, benches) may not have, so install it here too: `Err` only means one
        // is already installed, which is what we need.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // Redirects are followed by hand: method, body and auth must survive them, and a loop
            // must become a classified error rather than a generic one.
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(std::sync::Arc::new(super::guard::GuardedResolver { policy: policy.clone() }))
            .user_agent(concat!("calsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Transient { message: format!("could not build the HTTP client: {e}") })?;
        // Basic is sent preemptively: iCloud answers an unauthenticated request with a 401 that
        // advertises only its own scheme (X-MobileMe-AuthToken), which confuses challenge logic.
        let token = base64(format!("{username}:{}", password.expose_secret()).as_bytes());
        let mut auth = HeaderValue::from_str(&format!("Basic {token}")).map_err(|_| ProviderError::Invalid {
            message: "the user name contains characters HTTP cannot carry".into(),
        })?;
        auth.set_sensitive(true);
        Ok(DavClient {
            http,
            policy,
            auth,
            username: username.to_string(),
            max_body,
            limiter: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
        })
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    /// Send one request, following up to `MAX_REDIRECTS` redirects, and read the body (capped).
    /// Only transport problems, redirect loops and oversized bodies are errors here; every
    /// status is returned for the caller to judge.
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<DavResponse, ProviderError> {
        // The semaphore is never closed, so acquiring only fails if it were; then go unthrottled.
        let _permit = self.limiter.acquire().await.ok();
        let mut url = url.clone();
        let mut visited: Vec<Url> = Vec::new();
        let mut with_auth = true;
        loop {
            let started = Instant::now();
            // A name is checked by the resolver; an address in the URL never reaches it.
            self.policy.check_literal(&url).map_err(|r| ProviderError::Invalid { message: r.to_string() })?;
            let mut req = self.http.request(method.clone(), url.clone());
            if with_auth {
                req = req.header(AUTHORIZATION, self.auth.clone());
            }
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(b) = body {
                req = req.body(b.to_string());
            }
            let call = crate::telemetry::spans::ClientCall::start("caldav", &method, &url);
            if let Some(tp) = call.traceparent() {
                req = req.header("traceparent", tp);
            }
            let resp = req.send().instrument(call.span().clone()).await.map_err(|e| {
                call.failed(&e);
                match super::guard::refusal_in(&e) {
                    Some(r) => ProviderError::Invalid { message: r.to_string() },
                    None => crate::providers::http::transport_error(url.as_str(), &e),
                }
            })?;
            let status = resp.status();
            call.status(status.as_u16());
            tracing::debug!(method = %method, url = %url, status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "caldav request");
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let next = resp
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                    .ok_or_else(|| ProviderError::Invalid {
                        message: format!("the CalDAV server answered {status} at {url} without a usable Location"),
                    })?;
                visited.push(url.clone());
                if visited.len() > MAX_REDIRECTS || visited.contains(&next) {
                    return Err(ProviderError::Invalid {
                        message: format!(
                            "the CalDAV server redirected {} times starting at {} (a redirect loop?); check the server URL",
                            visited.len(),
                            visited[0]
                        ),
                    });
                }
                // Credentials follow a redirect on the same host, or to HTTPS; never downgraded to
                // plain HTTP on another host.
                with_auth = with_auth && (next.host_str() == url.host_str() || next.scheme() == "https");
                url = next;
                continue;
            }
            let headers = resp.headers().clone();
            let body =
                crate::providers::http::read_capped(resp, self.max_body, "the CalDAV server", url.as_str()).await?;
            return Ok(DavResponse { status, headers, body, url });
        }
    }
}

/// Map a status the caller did not expect onto the classified error. `what` says what was being
/// done ("creating event x"), for the message.
pub fn classify(resp: &DavResponse, what: &str, username: &str) -> ProviderError {
    let status = resp.status;
    let code = status.as_u16();
    let host = resp.url.host_str().unwrap_or("?");
    let after = crate::providers::http::retry_after(&resp.headers);
    match code {
        401 => ProviderError::Revoked {
            message: format!(
                "the CalDAV server {host} rejected the password of {username:?} (401) while {what}; an app-specific password cannot be refreshed: reconnect with a new app-specific password"
            ),
        },
        403 | 429 | 503 if after.is_some() || code == 429 => {
            ProviderError::RateLimited { retry_after: after, message: format!("{host} answered {status} while {what}") }
        }
        404 | 410 => ProviderError::NotFound { message: format!("{host} answered {status} while {what}") },
        412 => ProviderError::Conflict { message: format!("{host} answered {status} while {what}") },
        500..=599 => ProviderError::Transient { message: format!("{host} answered {status} while {what}") },
        _ => {
            let detail = body_summary(&resp.body);
            ProviderError::Invalid { message: format!("{host} answered {status} while {what}{detail}") }
        }
    }
}

/// A short, single-line excerpt of an error body for messages (servers explain 4xx there).
fn body_summary(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.is_empty() {
        return String::new();
    }
    let cut: String = flat.chars().take(200).collect();
    format!(": {cut}")
}

/// `Content-Type` values we send.
pub const XML: &str = "application/xml; charset=utf-8";
pub const ICS: &str = "text/calendar; charset=utf-8";

/// The header name as a `&str` for `send`.
pub const CT: &str = "content-type";

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(code: u16, headers: &[(&'static str, &str)]) -> DavResponse {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        DavResponse {
            status: StatusCode::from_u16(code).unwrap(),
            headers: h,
            body: b"<oops/>".to_vec(),
            url: Url::parse("https://p01-caldav.example.com/x/").unwrap(),
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn statuses_are_classified() {
        let r = classify(&resp(401, &[]), "listing", "me@icloud.com");
        assert!(matches!(&r, ProviderError::Revoked { message } if message.contains("app-specific password")));
        let r = classify(&resp(403, &[("retry-after", "7")]), "x", "u");
        assert!(matches!(r, ProviderError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(7)));
        assert!(matches!(classify(&resp(429, &[]), "x", "u"), ProviderError::RateLimited { retry_after: None, .. }));
        assert!(
            matches!(classify(&resp(503, &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]), "x", "u"), ProviderError::RateLimited { retry_after: Some(d), .. } if d.is_zero())
        );
        assert!(matches!(classify(&resp(503, &[]), "x", "u"), ProviderError::Transient { .. }));
        assert!(matches!(classify(&resp(502, &[]), "x", "u"), ProviderError::Transient { .. }));
        assert!(matches!(classify(&resp(403, &[]), "x", "u"), ProviderError::Invalid { .. }));
        assert!(matches!(classify(&resp(404, &[]), "x", "u"), ProviderError::NotFound { .. }));
        assert!(matches!(classify(&resp(412, &[]), "x", "u"), ProviderError::Conflict { .. }));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = DavClient::new("u", &SecretString::from("hunter2-secret")).unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2") && !d.contains(&base64(b"u:hunter2-secret")), "{d}");
    }
}
