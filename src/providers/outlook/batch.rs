//! Graph's JSON batching (`POST /v1.0/$batch`): up to 20 requests as
//! `{"requests": [{id, method, url, headers, body}]}` with URLs relative to the version root; the
//! answer `{"responses": [{id, status, headers, body}]}` may list them in any order. Each request
//! is throttled on its own (a part can be 429 with its own Retry-After), and Graph runs up to
//! four parts of a batch at once against the mailbox, so a batch takes as many of the mailbox's
//! four in-flight slots as it has parts (at most four).
//!
//! Owns: the JSON encoding and decoding of batches and the `Transport` the lane sends through.
//! Must not touch: what a status means (the callers in `events` judge each part's answer as a
//! single request's) or pacing.

use async_trait::async_trait;
use base64::Engine;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::MAX_IN_FLIGHT;
use super::client::{GraphRequest, GraphResponse, GraphWire, classify};
use crate::providers::ProviderError;
use crate::providers::batch::Transport;

/// Graph's documented maximum of requests in one `$batch`.
pub const MAX_PARTS: usize = 20;

/// `url` relative to the version root `base` (`/me/events/x?$expand=…`), as `$batch` wants it.
pub fn relative(base: &Url, url: &Url) -> Option<String> {
    if url.origin() != base.origin() {
        return None;
    }
    let root = base.path().trim_end_matches('/');
    let rest = url.path().strip_prefix(root).filter(|r| r.starts_with('/'))?;
    Some(match url.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    })
}

/// The `$batch` body: part ids are the request's position.
pub fn encode(base: &Url, reqs: &[GraphRequest]) -> Option<Value> {
    let mut requests = Vec::with_capacity(reqs.len());
    for (i, r) in reqs.iter().enumerate() {
        let mut headers = Map::new();
        for (k, v) in &r.headers {
            headers.insert(k.to_ascii_lowercase(), Value::String(v.clone()));
        }
        let mut part = json!({"id": i.to_string(), "method": r.method.as_str(), "url": relative(base, &r.url)?});
        if let Some(b) = &r.body {
            // Graph requires the part's Content-Type whenever it has a body.
            headers.insert("content-type".into(), json!("application/json"));
            part["body"] = b.clone();
        }
        if !headers.is_empty() {
            part["headers"] = Value::Object(headers);
        }
        requests.push(part);
    }
    Some(json!({ "requests": requests }))
}

#[derive(Deserialize)]
struct BatchAnswer {
    responses: Vec<PartAnswer>,
}

#[derive(Deserialize)]
struct PartAnswer {
    id: String,
    status: u16,
    #[serde(default)]
    headers: Map<String, Value>,
    #[serde(default)]
    body: Option<Value>,
}

fn part_response(p: PartAnswer) -> Result<GraphResponse, String> {
    let status = StatusCode::from_u16(p.status).map_err(|_| format!("part {} has status {}", p.id, p.status))?;
    let mut headers = HeaderMap::new();
    for (k, v) in &p.headers {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&text)) {
            headers.append(name, value);
        }
    }
    let json_body = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| ct.to_ascii_lowercase().contains("json"));
    let body = match p.body {
        None | Some(Value::Null) => Vec::new(),
        // A body that is not JSON comes base64-encoded.
        Some(Value::String(s)) if !json_body => {
            base64::engine::general_purpose::STANDARD.decode(s.as_bytes()).unwrap_or_else(|_| s.into_bytes())
        }
        Some(v) => serde_json::to_vec(&v).map_err(|e| e.to_string())?,
    };
    Ok(GraphResponse { status, headers, body })
}

/// The answers of a batch of `count` requests, in request order, matched by id. A request with
/// no answer gets a retryable error; an answer that is not a batch answer at all is an `Err`.
pub fn decode(body: &[u8], count: usize) -> Result<Vec<Result<GraphResponse, ProviderError>>, String> {
    let answer: BatchAnswer = serde_json::from_slice(body).map_err(|e| format!("not a batch answer: {e}"))?;
    let mut slots: Vec<Option<GraphResponse>> = (0..count).map(|_| None).collect();
    for p in answer.responses {
        let i: usize = p.id.parse().map_err(|_| format!("an answer has the unknown id {:?}", p.id))?;
        let resp = part_response(p)?;
        match slots.get_mut(i) {
            Some(slot @ None) => *slot = Some(resp),
            _ => return Err(format!("an answer has the unknown or repeated id {i}")),
        }
    }
    Ok(slots
        .into_iter()
        .map(|s| {
            s.ok_or_else(|| ProviderError::Transient {
                message: "Microsoft Graph's $batch answer had no response for this request; will retry".into(),
            })
        })
        .collect())
}

impl GraphWire {
    fn batch_url(&self) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}/$batch", self.base.path().trim_end_matches('/')));
        url.set_query(None);
        url
    }

    /// One `$batch` with `token`: the parts' answers, or the batch's own failure.
    async fn batch_once(
        &self,
        body: &Value,
        count: usize,
        token: &SecretString,
    ) -> Result<Result<Vec<Result<GraphResponse, ProviderError>>, GraphResponse>, ProviderError> {
        let req = GraphRequest {
            method: Method::POST,
            url: self.batch_url(),
            headers: vec![("accept".into(), "application/json".into())],
            body: Some(body.clone()),
        };
        let resp = self.once(&req, token).await?;
        if resp.status != StatusCode::OK {
            return Ok(Err(resp));
        }
        decode(&resp.body, count).map(Ok).map_err(|why| ProviderError::Transient {
            message: format!(
                "Microsoft Graph's answer to a $batch of {count} requests could not be read ({why}); will retry"
            ),
        })
    }

    async fn one_by_one(&self, reqs: &[GraphRequest]) -> Vec<Result<GraphResponse, ProviderError>> {
        let mut out = Vec::with_capacity(reqs.len());
        for r in reqs {
            out.push(self.send(r).await);
        }
        out
    }
}

#[async_trait]
impl Transport for GraphWire {
    type Req = GraphRequest;
    type Resp = GraphResponse;

    fn max_parts(&self) -> usize {
        MAX_PARTS
    }

    fn slots(&self, parts: usize) -> usize {
        parts.min(MAX_IN_FLIGHT)
    }

    async fn single(&self, req: &GraphRequest) -> Result<GraphResponse, ProviderError> {
        self.send(req).await
    }

    async fn batch(&self, reqs: &[GraphRequest]) -> Result<Vec<Result<GraphResponse, ProviderError>>, ProviderError> {
        let Some(body) = encode(&self.base, reqs) else {
            // Only URLs outside our Graph root could get here; they go alone, as before.
            return Ok(self.one_by_one(reqs).await);
        };
        let token = self.token().await?;
        let mut answer = self.batch_once(&body, reqs.len(), &token).await?;
        let refreshed = matches!(&answer, Err(r) if r.status == StatusCode::UNAUTHORIZED);
        if refreshed {
            tracing::debug!("graph rejected the access token of a $batch; refreshing once");
            let fresh = self.refreshed(&token).await?;
            answer = self.batch_once(&body, reqs.len(), &fresh).await?;
        }
        let mut parts = match answer {
            Ok(parts) => parts,
            Err(resp) => {
                let e = classify(&resp, &format!("sending a $batch of {} event requests", reqs.len()));
                return match e {
                    ProviderError::RateLimited { .. }
                    | ProviderError::Revoked { .. }
                    | ProviderError::Transient { .. }
                    | ProviderError::Unauthorized { .. } => Err(e),
                    // The batch itself was refused: nothing in it ran, so each request goes
                    // alone rather than failing for it.
                    _ => {
                        tracing::warn!(
                            status = resp.status.as_u16(),
                            "graph refused a $batch; sending its parts one by one"
                        );
                        Ok(self.one_by_one(reqs).await)
                    }
                };
            }
        };
        // Parts answered 401: refresh once (unless the batch already did) and send those again,
        // as a single request would be.
        if !refreshed && parts.iter().any(|p| matches!(p, Ok(r) if r.status == StatusCode::UNAUTHORIZED)) {
            let fresh = self.refreshed(&token).await?;
            for (i, p) in parts.iter_mut().enumerate() {
                if matches!(p, Ok(r) if r.status == StatusCode::UNAUTHORIZED) {
                    *p = self.once(&reqs[i], &fresh).await;
                }
            }
        }
        Ok(parts)
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
