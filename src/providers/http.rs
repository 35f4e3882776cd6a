//! HTTP pieces every provider client shares: a response body read with a size cap, transport
//! errors classified without echoing URLs' queries, `Retry-After` parsing, and the
//! per-connection in-flight limit.
//!
//! Owns: those helpers. Must not touch: any provider's wire format or error mapping of statuses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::ProviderError;

/// How the error of an oversized body ends (`is_too_large` recognises it).
const TOO_LARGE: &str = "; refusing to read it";

/// Was this error a body larger than the cap? (A caller with a narrower request to fall back
/// on, such as a windowed listing instead of a whole calendar, tries that instead.)
pub fn is_too_large(e: &ProviderError) -> bool {
    matches!(e, ProviderError::Invalid { message } if message.ends_with(TOO_LARGE))
}

/// Read a response body, refusing more than `max` bytes (checked against Content-Length first,
/// then while streaming, so a lying or absent header cannot make us buffer without bound).
/// `service` and `shown_url` name the peer in the error ("the CalDAV server at https://…").
pub async fn read_capped(
    mut resp: reqwest::Response,
    max: usize,
    service: &str,
    shown_url: &str,
) -> Result<Vec<u8>, ProviderError> {
    let size = if max >= 1 << 20 { format!("{} MiB", max >> 20) } else { format!("{} KiB", max >> 10) };
    let too_big = || ProviderError::Invalid {
        message: format!("{service} sent a response larger than {size} for {shown_url}{TOO_LARGE}"),
    };
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport_error(shown_url, &e))? {
        if body.len() + chunk.len() > max {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A request that never got an answer: retried later. Not reqwest's own text, which names the
/// whole URL (paging links carry opaque tokens in their query).
pub fn transport_error(shown_url: &str, e: &reqwest::Error) -> ProviderError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    ProviderError::Transient { message: format!("request to {shown_url} {what}") }
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let secs = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds().max(0);
    Some(Duration::from_secs(secs as u64))
}

/// One semaphore per connection (`Target::connection`), shared by every client a connector hands
/// out for it, so a provider's per-user/per-mailbox concurrency limit holds across reconciles.
pub struct InFlight {
    limit: usize,
    by_connection: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl InFlight {
    pub fn new(limit: usize) -> Self {
        InFlight { limit, by_connection: Mutex::new(HashMap::new()) }
    }

    pub fn for_connection(&self, connection: &str) -> Arc<tokio::sync::Semaphore> {
        let mut map = self.by_connection.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(connection.to_string()).or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.limit))).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a date in the past means now");
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn in_flight_is_per_connection() {
        let f = InFlight::new(4);
        assert!(Arc::ptr_eq(&f.for_connection("a/b"), &f.for_connection("a/b")));
        assert!(!Arc::ptr_eq(&f.for_connection("a/b"), &f.for_connection("a/c")));
        assert_eq!(f.for_connection("x/y").available_permits(), 4);
    }
}
