//! A recording HTTP proxy for tests: forwards every request to one upstream (e.g. Radicale)
//! unchanged and records its method and path, so a test can prove which calls a process made
//! (e.g. that `calsync plan` never wrote to the calendar). `start_rewriting` also lets a test
//! change chosen answers of the real server into what another server may send (a refused
//! report, members without a property).

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, Response, StatusCode};

/// A running proxy.
#[derive(Clone)]
pub struct RecordingProxy {
    /// `http://127.0.0.1:PORT/`
    pub url: String,
    log: Arc<Mutex<Vec<(String, String)>>>,
}

/// Methods that change a calendar over HTTP, CalDAV or WebDAV.
pub const WRITE_METHODS: &[&str] =
    &["PUT", "POST", "DELETE", "PATCH", "MKCALENDAR", "MKCOL", "PROPPATCH", "MOVE", "COPY"];

/// One forwarded request and the upstream's answer, for a rewrite hook.
pub struct Exchange<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub request: &'a [u8],
    pub status: u16,
    pub response: &'a [u8],
}

/// Returns the status and body to send instead, or `None` to pass the answer on.
pub type Rewrite = Arc<dyn Fn(&Exchange<'_>) -> Option<(u16, Vec<u8>)> + Send + Sync>;

impl RecordingProxy {
    /// Start forwarding to `upstream` (`http://host:port/`).
    pub async fn start(upstream: &str) -> RecordingProxy {
        Self::start_rewriting(upstream, Arc::new(|_: &Exchange<'_>| None)).await
    }

    /// Start forwarding to `upstream`, passing every answer through `rewrite`.
    pub async fn start_rewriting(upstream: &str, rewrite: Rewrite) -> RecordingProxy {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let log: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let upstream = upstream.trim_end_matches('/').to_string();
        let http = reqwest::Client::new();
        let (log2, up) = (log.clone(), upstream.clone());
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let (log, upstream, http, rewrite) = (log2.clone(), up.clone(), http.clone(), rewrite.clone());
            async move { forward(req, &upstream, &http, &log, &rewrite).await }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        RecordingProxy { url: format!("http://127.0.0.1:{port}/"), log }
    }

    /// (method, path) of every request so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn clear(&self) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The requests that could have changed something.
    pub fn writes(&self) -> Vec<(String, String)> {
        self.requests().into_iter().filter(|(m, _)| WRITE_METHODS.contains(&m.as_str())).collect()
    }
}

async fn forward(
    req: Request<Body>,
    upstream: &str,
    http: &reqwest::Client,
    log: &Mutex<Vec<(String, String)>>,
    rewrite: &Rewrite,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    log.lock().unwrap_or_else(|e| e.into_inner()).push((parts.method.to_string(), parts.uri.path().to_string()));
    let bytes = axum::body::to_bytes(body, 64 << 20).await.unwrap_or_default();
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap_or(Method::GET);
    let mut headers = HeaderMap::new();
    for (k, v) in &parts.headers {
        if !matches!(k.as_str(), "host" | "content-length" | "connection" | "transfer-encoding") {
            headers.append(k.clone(), v.clone());
        }
    }
    let sent = http.request(method, format!("{upstream}{path}")).headers(headers).body(bytes.to_vec()).send().await;
    let Ok(resp) = sent else {
        let mut r = Response::new(Body::from("upstream unreachable"));
        *r.status_mut() = StatusCode::BAD_GATEWAY;
        return r;
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap_or_default().to_vec();
    let exchange =
        Exchange { method: parts.method.as_str(), path: parts.uri.path(), request: &bytes, status, response: &body };
    let (status, body) = rewrite(&exchange).unwrap_or((status, body));
    let mut out = Response::builder().status(status);
    for (k, v) in &headers {
        if !matches!(k.as_str(), "content-length" | "connection" | "transfer-encoding") {
            out = out.header(k.as_str(), v.as_bytes());
        }
    }
    out.body(Body::from(body)).unwrap_or_else(|_| Response::new(Body::empty()))
}
