//! Google's batch endpoint (`POST /batch/calendar/v3`): several event requests in one
//! `multipart/mixed` body, each part a whole HTTP request (`Content-Type: application/http`,
//! `Content-ID: <item-N>`); the answer is `multipart/mixed` too, each part a whole HTTP response
//! whose `Content-ID: <response-item-N>` names the request it answers. The outer request's
//! `Authorization` applies to every part. Each part counts as one request against Google's
//! quotas, which is why the client limiter admits every part on its own.
//!
//! Owns: the request type of event calls (`GRequest`), the multipart encoding and parsing, and
//! the `Transport` the lane sends through. Must not touch: what a status means (the callers in
//! `events` judge each part's answer exactly as a single request's) or pacing.

use async_trait::async_trait;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use secrecy::SecretString;

use super::client::{GResponse, Wire, classify, still_unauthorized};
use crate::providers::ProviderError;
use crate::providers::batch::Transport;

/// Requests per batch. Google takes up to 1000 but advises against more than 50 (larger
/// batches are more likely to be rate limited as a whole).
pub const MAX_PARTS: usize = 50;

/// One event request, ready to go alone or inside a batch.
#[derive(Clone, Debug)]
pub struct GRequest {
    pub method: Method,
    pub url: Url,
    pub if_match: Option<HeaderValue>,
    /// JSON.
    pub body: Option<Vec<u8>>,
}

impl GRequest {
    pub fn new(
        method: Method,
        url: &Url,
        if_match: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<Self, ProviderError> {
        let if_match = if_match
            .map(|e| {
                HeaderValue::from_str(e).map_err(|_| ProviderError::Invalid {
                    message: "the stored event version (etag) cannot be sent as an HTTP header".into(),
                })
            })
            .transpose()?;
        let body = body
            .map(|b| {
                serde_json::to_vec(b)
                    .map_err(|e| ProviderError::Invalid { message: format!("could not encode the request body: {e}") })
            })
            .transpose()?;
        Ok(GRequest { method, url: url.clone(), if_match, body })
    }
}

/// The batch body for `reqs` under `boundary`. Parts carry only the path and query of their
/// URL, as Google requires.
pub fn encode(reqs: &[GRequest], boundary: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let target = match r.url.query() {
            Some(q) => format!("{}?{q}", r.url.path()),
            None => r.url.path().to_string(),
        };
        out.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <item-{i}>\r\n\r\n{} {target} HTTP/1.1\r\n",
                r.method
            )
            .as_bytes(),
        );
        if let Some(e) = &r.if_match {
            out.extend_from_slice(b"If-Match: ");
            out.extend_from_slice(e.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(b) = &r.body {
            out.extend_from_slice(
                format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()).as_bytes(),
            );
        }
        out.extend_from_slice(b"\r\n");
        if let Some(b) = &r.body {
            out.extend_from_slice(b);
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// The `boundary` parameter of a `multipart/mixed` content type.
pub fn boundary_of(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    params
        .split(';')
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_string())
        })
        .filter(|b| !b.is_empty())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Split `text` at its first blank line (CRLF or bare LF): (head, rest).
fn split_head(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let crlf = find(text, b"\r\n\r\n").map(|i| (i, 4));
    let lf = find(text, b"\n\n").map(|i| (i, 2));
    let (i, n) = match (crlf, lf) {
        (Some(a), Some(b)) => {
            if a.0 <= b.0 {
                a
            } else {
                b
            }
        }
        (a, b) => a.or(b)?,
    };
    Some((&text[..i], &text[i + n..]))
}

fn header_lines(head: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    head.split(|b| *b == b'\n').filter_map(|line| {
        let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
        let (k, v) = line.split_once(':')?;
        Some((k.trim(), v.trim()))
    })
}

/// Which request a response part answers: `<response-item-N>` → N.
fn answered_index(content_id: &str) -> Option<usize> {
    let id = content_id.trim().trim_start_matches('<').trim_end_matches('>');
    id.strip_prefix("response-")?.strip_prefix("item-")?.parse().ok()
}

/// One response part: the Content-ID's index (if any) and the inner HTTP response.
fn parse_part(part: &[u8]) -> Result<(Option<usize>, GResponse), String> {
    let (part_head, inner) = split_head(part).ok_or("a part has no header end")?;
    let index = header_lines(part_head)
        .find(|(k, _)| k.eq_ignore_ascii_case("content-id"))
        .and_then(|(_, v)| answered_index(v));
    let (head, body) = split_head(inner).unwrap_or((inner, &[]));
    let mut lines = head.split(|b| *b == b'\n');
    let status_line = lines.next().and_then(|l| std::str::from_utf8(l).ok()).unwrap_or_default();
    let code = status_line
        .split_whitespace()
        .nth(1)
        .filter(|_| status_line.starts_with("HTTP/"))
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or("a part has no HTTP status line")?;
    let rest_start = head.iter().position(|b| *b == b'\n').map_or(head.len(), |i| i + 1);
    let mut headers = HeaderMap::new();
    let mut length = None;
    for (k, v) in header_lines(&head[rest_start..]) {
        if k.eq_ignore_ascii_case("content-length") {
            length = v.parse::<usize>().ok();
        }
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            headers.append(name, value);
        }
    }
    let body = match length {
        Some(n) if n <= body.len() => body[..n].to_vec(),
        _ => {
            let end = body.iter().rposition(|b| !matches!(b, b'\r' | b'\n')).map_or(0, |i| i + 1);
            body[..end].to_vec()
        }
    };
    Ok((index, GResponse { status: code, headers, body }))
}

/// The answers of a batch of `count` requests, in request order. A part matched by its
/// Content-ID, else by position (Google answers in request order); a request with no answer
/// gets a retryable error. A body that is not a multipart answer at all is an `Err`.
pub fn decode(content_type: &str, body: &[u8], count: usize) -> Result<Vec<Result<GResponse, ProviderError>>, String> {
    let boundary = boundary_of(content_type).ok_or("the answer is not multipart/mixed with a boundary")?;
    let delimiter = format!("--{boundary}");
    // Each delimiter starts a line: look for it after a line break (a leading one is added so
    // the first needs none).
    let mut text = Vec::with_capacity(body.len() + 2);
    text.extend_from_slice(b"\r\n");
    text.extend_from_slice(body);
    let needle = [b"\n", delimiter.as_bytes()].concat();
    let mut starts = Vec::new();
    let mut from = 0;
    while let Some(i) = find(&text[from..], &needle) {
        starts.push(from + i);
        from += i + needle.len();
    }
    if starts.is_empty() {
        return Err("the answer has no part delimiter".into());
    }
    let mut slots: Vec<Option<GResponse>> = (0..count).map(|_| None).collect();
    let mut closed = false;
    for (n, &s) in starts.iter().enumerate() {
        let after = s + needle.len();
        if text[after..].starts_with(b"--") {
            closed = true;
            break;
        }
        let end = starts.get(n + 1).copied().unwrap_or(text.len());
        let segment = &text[after..end];
        // The rest of the delimiter line (transport padding), then the part.
        let line_end = segment.iter().position(|b| *b == b'\n').map_or(segment.len(), |i| i + 1);
        let mut part = &segment[line_end..];
        if part.last() == Some(&b'\r') {
            part = &part[..part.len() - 1];
        }
        let (index, resp) = parse_part(part)?;
        let at = index.unwrap_or(n);
        match slots.get_mut(at) {
            Some(slot @ None) => *slot = Some(resp),
            _ => return Err(format!("part {n} answers an unknown or repeated request")),
        }
    }
    if !closed {
        return Err("the answer ends without its closing delimiter".into());
    }
    Ok(slots
        .into_iter()
        .map(|s| {
            s.ok_or_else(|| ProviderError::Transient {
                message: "Google's batch answer had no part for this request; will retry".into(),
            })
        })
        .collect())
}

impl Wire {
    async fn post_batch(&self, reqs: &[GRequest], token: &SecretString) -> Result<GResponse, ProviderError> {
        let boundary = format!("batch_calsync_{}", uuid::Uuid::new_v4().simple());
        let body = encode(reqs, &boundary);
        let kind = format!("multipart/mixed; boundary={boundary}");
        self.exchange(&Method::POST, &self.batch_url, HeaderMap::new(), Some((&kind, body)), token).await
    }

    /// One batch with `token`: the parts' answers, or the batch's own failure.
    async fn batch_once(
        &self,
        reqs: &[GRequest],
        token: &SecretString,
    ) -> Result<Result<Vec<Result<GResponse, ProviderError>>, GResponse>, ProviderError> {
        let resp = self.post_batch(reqs, token).await?;
        if resp.status != StatusCode::OK {
            return Ok(Err(resp));
        }
        let kind = resp.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        match decode(kind, &resp.body, reqs.len()) {
            Ok(parts) => Ok(Ok(parts)),
            Err(why) => Err(ProviderError::Transient {
                message: format!(
                    "Google's answer to a batch of {} requests could not be read ({why}); will retry",
                    reqs.len()
                ),
            }),
        }
    }

    /// Every request alone, in turn (the batch endpoint refused the batch itself).
    async fn one_by_one(&self, reqs: &[GRequest]) -> Vec<Result<GResponse, ProviderError>> {
        let mut out = Vec::with_capacity(reqs.len());
        for r in reqs {
            out.push(self.send(r).await);
        }
        out
    }
}

#[async_trait]
impl Transport for Wire {
    type Req = GRequest;
    type Resp = GResponse;

    fn max_parts(&self) -> usize {
        MAX_PARTS
    }

    fn slots(&self, _parts: usize) -> usize {
        1
    }

    async fn single(&self, req: &GRequest) -> Result<GResponse, ProviderError> {
        self.send(req).await
    }

    async fn batch(&self, reqs: &[GRequest]) -> Result<Vec<Result<GResponse, ProviderError>>, ProviderError> {
        let token = self.token().await?;
        let mut answer = self.batch_once(reqs, &token).await?;
        let refreshed = matches!(&answer, Err(r) if r.status == StatusCode::UNAUTHORIZED);
        if refreshed {
            tracing::debug!("google answered 401 to a batch; refreshing the access token once");
            let fresh = self.refreshed(&token).await?;
            answer = self.batch_once(reqs, &fresh).await?;
        }
        let mut parts = match answer {
            Ok(parts) => parts,
            Err(resp) if resp.status == StatusCode::UNAUTHORIZED => return Err(still_unauthorized(&resp)),
            Err(resp) => {
                let e = classify(&resp, &format!("sending a batch of {} event requests", reqs.len()));
                return match e {
                    ProviderError::RateLimited { .. }
                    | ProviderError::Revoked { .. }
                    | ProviderError::Transient { .. } => Err(e),
                    // The batch itself was refused (a proxy without the batch path, a limit):
                    // nothing in it ran, so each request goes alone rather than failing for it.
                    _ => {
                        tracing::warn!(
                            status = resp.status.as_u16(),
                            "google refused a batch request; sending its parts one by one"
                        );
                        Ok(self.one_by_one(reqs).await)
                    }
                };
            }
        };
        // Parts answered 401 (the token expired between parts): refresh once, send those again.
        let rejected: Vec<usize> = parts
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p, Ok(r) if r.status == StatusCode::UNAUTHORIZED))
            .map(|(i, _)| i)
            .collect();
        if !rejected.is_empty() && !refreshed {
            let fresh = self.refreshed(&token).await?;
            for i in rejected {
                let again = self.attempt(&reqs[i], &fresh).await;
                parts[i] = match again {
                    Ok(r) if r.status == StatusCode::UNAUTHORIZED => Err(still_unauthorized(&r)),
                    other => other,
                };
            }
        } else {
            for p in parts.iter_mut() {
                if let Ok(r) = p
                    && r.status == StatusCode::UNAUTHORIZED
                {
                    *p = Err(still_unauthorized(r));
                }
            }
        }
        Ok(parts)
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
