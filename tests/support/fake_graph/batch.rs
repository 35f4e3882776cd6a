//! Graph's JSON batching, `POST /v1.0/$batch`, as documented: `{"requests": [{id, method, url,
//! headers?, body?}]}` with 1 to 20 requests (more is 400), ids unique (else 400), a body only
//! with a `Content-Type` header (else 400), URLs relative to the version root. Each request is
//! served by the same routes and guard as a single one (auth from the outer request, the
//! mailbox's four-in-flight limit, failure switches, the request log), and, like Graph, at most
//! four of a batch run at once. The answer lists `{id, status, headers, body}` in an order of
//! its own (reversed here) so clients must match by id. `dependsOn` is refused (not modelled).

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use futures::StreamExt;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

use super::graph_error;

/// Graph's documented maximum of requests in one batch.
pub const MAX_PARTS: usize = 20;
/// Marks a part's inner request for the request log.
pub const PART_HEADER: &str = "x-fake-batch-part";

pub fn router(api: Router) -> Router {
    Router::new().route("/v1.0/$batch", post(move |headers: HeaderMap, body: Bytes| serve(api.clone(), headers, body)))
}

struct Part {
    id: String,
    method: String,
    url: String,
    headers: Map<String, Value>,
    body: Option<Value>,
}

fn bad(msg: &str) -> Response {
    graph_error(400, "BadRequest", msg)
}

fn parse(body: &[u8]) -> Result<Vec<Part>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "Invalid batch payload format.".to_string())?;
    let reqs = v["requests"].as_array().ok_or("Invalid batch payload format.")?;
    if reqs.is_empty() || reqs.len() > MAX_PARTS {
        return Err(format!("Batch request must have between 1 and {MAX_PARTS} requests."));
    }
    let mut parts: Vec<Part> = vec![];
    for r in reqs {
        let text = |k: &str| r[k].as_str().map(str::to_string);
        let (Some(id), Some(method), Some(url)) = (text("id"), text("method"), text("url")) else {
            return Err("Each request needs an id, a method and a url.".into());
        };
        if r.get("dependsOn").is_some() {
            return Err("dependsOn is not supported by this fake.".into());
        }
        if parts.iter().any(|p| p.id.eq_ignore_ascii_case(&id)) {
            return Err("Request ids must be unique in a batch.".into());
        }
        let headers = r.get("headers").and_then(Value::as_object).cloned().unwrap_or_default();
        let body = r.get("body").cloned().filter(|b| !b.is_null());
        if body.is_some() && !headers.keys().any(|k| k.eq_ignore_ascii_case("content-type")) {
            return Err("Content-Type header is required when a request has a body.".into());
        }
        if url.starts_with("http:") || url.starts_with("https:") {
            return Err("Request urls in a batch must be relative.".into());
        }
        parts.push(Part { id, method, url, headers, body });
    }
    Ok(parts)
}

async fn run(api: Router, outer: &HeaderMap, part: Part) -> Value {
    let path = if part.url.starts_with('/') { part.url.clone() } else { format!("/{}", part.url) };
    let mut req = Request::builder().method(part.method.as_str()).uri(format!("/v1.0{path}"));
    if let Some(auth) = outer.get(header::AUTHORIZATION) {
        req = req.header(header::AUTHORIZATION, auth);
    }
    for (k, v) in &part.headers {
        if let Some(v) = v.as_str() {
            req = req.header(k.as_str(), v);
        }
    }
    req = req.header(PART_HEADER, "1");
    let body = part.body.map(|b| Body::from(serde_json::to_vec(&b).unwrap_or_default())).unwrap_or_else(Body::empty);
    let resp = match req.body(body) {
        Ok(r) => api.oneshot(r).await.unwrap_or_else(|e| match e {}),
        Err(_) => bad("A request in the batch is not a valid request."),
    };
    let status = resp.status().as_u16();
    let mut headers = Map::new();
    for (k, v) in resp.headers().iter().filter(|(k, _)| *k != header::CONTENT_LENGTH) {
        headers.insert(k.to_string(), json!(v.to_str().unwrap_or_default()));
    }
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap_or_default();
    let mut out = json!({"id": part.id, "status": status, "headers": headers});
    if !bytes.is_empty() {
        out["body"] = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!(base64::engine::general_purpose::STANDARD.encode(&bytes)));
    }
    out
}

async fn serve(api: Router, headers: HeaderMap, body: Bytes) -> Response {
    let parts = match parse(&body) {
        Ok(p) => p,
        Err(why) => return bad(&why),
    };
    // Graph dispatches up to four requests of a batch at once.
    let mut responses: Vec<Value> =
        futures::stream::iter(parts).map(|p| run(api.clone(), &headers, p)).buffer_unordered(4).collect().await;
    responses.reverse();
    axum::Json(json!({ "responses": responses })).into_response()
}
