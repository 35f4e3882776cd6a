//! Google's batch endpoint, `POST /batch/calendar/v3`, as documented: a `multipart/mixed` body
//! of at most 1000 parts, each `Content-Type: application/http` holding one whole request with a
//! path-only URL; the outer request's headers (Authorization) apply to every part unless the
//! part sets its own. Each part is served by the same routes as a single request (so the same
//! rules, failures and request log), in order; the answer is `multipart/mixed` with one
//! `application/http` part per request, `Content-ID: <response-ID>` naming the request's
//! `Content-ID`. Parts are logged with `in_batch`, the batch itself with its own path.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tower::ServiceExt;

use super::errors::GoogleError;

/// Google's documented maximum of calls in one batch request.
pub const MAX_PARTS: usize = 1000;
/// Marks a part's inner request for the request log.
pub const PART_HEADER: &str = "x-fake-batch-part";

pub fn router(api: Router) -> Router {
    Router::new()
        .route("/batch/calendar/v3", post(move |headers: HeaderMap, body: Bytes| serve(api.clone(), headers, body)))
}

struct Part {
    content_id: Option<String>,
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split_head(b: &[u8]) -> Option<(&[u8], &[u8])> {
    find(b, b"\r\n\r\n").map(|i| (&b[..i], &b[i + 4..])).or_else(|| find(b, b"\n\n").map(|i| (&b[..i], &b[i + 2..])))
}

fn lines(head: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(head).lines().map(|l| l.trim_end_matches('\r').to_string()).collect()
}

fn parse(content_type: &str, body: &[u8]) -> Result<Vec<Part>, String> {
    let boundary = content_type
        .strip_prefix("multipart/mixed")
        .and_then(|rest| rest.split(';').find_map(|p| p.trim().strip_prefix("boundary=")))
        .map(|b| b.trim_matches('"').to_string())
        .ok_or("Content-Type must be multipart/mixed with a boundary")?;
    let delimiter = format!("--{boundary}");
    let text = [b"\r\n".as_slice(), body].concat();
    let needle = [b"\n", delimiter.as_bytes()].concat();
    let mut cuts = vec![];
    let mut from = 0;
    while let Some(i) = find(&text[from..], &needle) {
        cuts.push(from + i);
        from += i + needle.len();
    }
    let mut parts = vec![];
    for (n, &c) in cuts.iter().enumerate() {
        let after = c + needle.len();
        if text[after..].starts_with(b"--") {
            return Ok(parts);
        }
        let end = cuts.get(n + 1).copied().unwrap_or(text.len());
        let seg = &text[after..end];
        let seg = &seg[seg.iter().position(|b| *b == b'\n').map_or(seg.len(), |i| i + 1)..];
        let seg = seg.strip_suffix(b"\r").unwrap_or(seg);
        let (outer, inner) = split_head(seg).ok_or("a part has no blank line after its headers")?;
        let outer = lines(outer);
        let header = |name: &str| {
            outer.iter().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        if header("content-type").as_deref() != Some("application/http") {
            return Err("each part must be Content-Type: application/http".into());
        }
        let (head, body) = split_head(inner).unwrap_or((inner, b""));
        let head = lines(head);
        let request_line = head.first().ok_or("a part has no request line")?;
        let mut words = request_line.split_whitespace();
        let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
        if method.is_empty() || !target.starts_with('/') {
            return Err(format!("a part's request line must be METHOD /path: {request_line:?}"));
        }
        let headers: Vec<(String, String)> = head[1..]
            .iter()
            .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
            .collect();
        let length =
            headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")).and_then(|(_, v)| v.parse().ok());
        let body = match length {
            Some(n) if n <= body.len() => body[..n].to_vec(),
            Some(_) => return Err("a part's Content-Length is longer than its body".into()),
            None => body.strip_suffix(b"\r\n").unwrap_or(body).to_vec(),
        };
        let content_id = header("content-id").map(|v| v.trim_matches(['<', '>']).to_string());
        parts.push(Part { content_id, method: method.to_string(), target: target.to_string(), headers, body });
    }
    Err("the body ends without its closing delimiter".into())
}

async fn serve(api: Router, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let parts = match parse(content_type, &body) {
        Ok(p) if p.is_empty() => return GoogleError::invalid("a batch needs at least one part").into_response(),
        Ok(p) if p.len() > MAX_PARTS => {
            return GoogleError::invalid(format!("a batch takes at most {MAX_PARTS} calls")).into_response();
        }
        Ok(p) => p,
        Err(why) => return GoogleError::invalid(why).into_response(),
    };
    let boundary = format!("batch_fake_{}", uuid::Uuid::new_v4().simple());
    let mut out = Vec::new();
    for part in parts {
        let mut req = Request::builder().method(part.method.as_str()).uri(part.target.as_str());
        let own = |n: &str| part.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        // The outer headers apply to each part unless it sets its own (Content-* excepted).
        for (k, v) in headers.iter() {
            if !k.as_str().starts_with("content-") && !own(k.as_str()) {
                req = req.header(k, v);
            }
        }
        for (k, v) in &part.headers {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::from_str(v)) {
                req = req.header(k, v);
            }
        }
        req = req.header(PART_HEADER, "1");
        let resp = match req.body(Body::from(part.body)) {
            Ok(r) => api.clone().oneshot(r).await.unwrap_or_else(|e| match e {}),
            Err(e) => GoogleError::invalid(format!("a part is not a valid request: {e}")).into_response(),
        };
        let status = resp.status();
        let mut head = format!("HTTP/1.1 {} {}\r\n", status.as_u16(), status.canonical_reason().unwrap_or(""));
        for (k, v) in resp.headers().iter().filter(|(k, _)| *k != header::CONTENT_LENGTH) {
            head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or_default()));
        }
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap_or_default();
        head.push_str(&format!("Content-Length: {}\r\n", bytes.len()));
        out.extend_from_slice(format!("--{boundary}\r\nContent-Type: application/http\r\n").as_bytes());
        if let Some(id) = &part.content_id {
            out.extend_from_slice(format!("Content-ID: <response-{id}>\r\n").as_bytes());
        }
        out.extend_from_slice(format!("\r\n{head}\r\n").as_bytes());
        out.extend_from_slice(&bytes);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (StatusCode::OK, [(header::CONTENT_TYPE, format!("multipart/mixed; boundary={boundary}"))], out).into_response()
}
