//! The HTTP-level calendar service of the batch benchmark: just enough of Google Calendar
//! (events insert/get, `POST /batch/calendar/v3`) and Graph (the lookup by key, events create,
//! `POST /v1.0/$batch`) for the real Google and Outlook clients to create events, with a fixed
//! latency per HTTP request (the network round trip) plus a service time per request or part.
//! Google's batch parts are served at once (Google documents no order); Graph's four at a time
//! (as Graph dispatches a batch), and more than four Graph requests at once are answered 429
//! MailboxConcurrency and counted, so a client that overloads the mailbox shows.
//!
//! Owns: its event map and counters. Must not touch: the clients it serves (it only speaks
//! HTTP) or the test fakes (`tests/support`, which are stricter and test-only).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde_json::{Value, json};

/// What the service counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub http_requests: u64,
    pub batches: u64,
    /// Requests served, inside batches or not.
    pub requests: u64,
    pub throttled: u64,
}

struct Svc {
    rtt: Duration,
    service: Duration,
    events: Mutex<HashMap<String, Value>>,
    next_id: AtomicU64,
    http: AtomicU64,
    batches: AtomicU64,
    requests: AtomicU64,
    throttled: AtomicU64,
    graph_in_flight: AtomicU64,
}

/// A running service; stops when dropped.
pub struct BatchService {
    svc: Arc<Svc>,
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BatchService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BatchService {
    pub async fn start(rtt: Duration, service: Duration) -> anyhow::Result<Self> {
        let svc = Arc::new(Svc {
            rtt,
            service,
            events: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            http: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            graph_in_flight: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/calendar/v3/calendars/{cal}/events", post(google_insert))
            .route("/calendar/v3/calendars/{cal}/events/{id}", get(google_get))
            .route("/batch/calendar/v3", post(google_batch))
            .route("/v1.0/me/calendars/{cal}/events", get(graph_lookup).post(graph_create))
            .route("/v1.0/$batch", post(graph_batch))
            .with_state(svc.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(BatchService { svc, addr, task })
    }

    pub fn counts(&self) -> Counts {
        let s = &self.svc;
        Counts {
            http_requests: s.http.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            requests: s.requests.load(Ordering::Relaxed),
            throttled: s.throttled.load(Ordering::Relaxed),
        }
    }
}

type S = State<Arc<Svc>>;
type Answer = (StatusCode, Value);

fn json_response((status, body): Answer) -> Response {
    (status, axum::Json(body)).into_response()
}

impl Svc {
    async fn round_trip(&self) {
        self.http.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.rtt).await;
    }

    /// One request's service: the time it takes, then its answer.
    async fn serve(&self, method: &str, path: &str, body: &[u8]) -> Answer {
        self.requests.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.service).await;
        let segments: Vec<&str> = path.split('?').next().unwrap_or_default().split('/').collect();
        match (method, segments.as_slice()) {
            ("POST", ["", "calendar", "v3", "calendars", _, "events"]) => {
                let mut ev: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                let id = ev["id"].as_str().unwrap_or_default().to_string();
                let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
                if events.contains_key(&id) {
                    return (StatusCode::CONFLICT, json!({"error": {"code": 409, "message": "duplicate"}}));
                }
                ev["etag"] = json!("\"1\"");
                ev["status"] = json!("confirmed");
                events.insert(id, ev.clone());
                (StatusCode::OK, ev)
            }
            ("GET", ["", "calendar", "v3", "calendars", _, "events", id]) => {
                match self.events.lock().unwrap_or_else(|e| e.into_inner()).get(*id) {
                    Some(ev) => (StatusCode::OK, ev.clone()),
                    None => (StatusCode::NOT_FOUND, json!({"error": {"code": 404, "message": "Not Found"}})),
                }
            }
            // The lookup by our key: nothing is created twice in this benchmark.
            ("GET", ["", "v1.0", "me", "calendars", _, "events"]) => (StatusCode::OK, json!({"value": []})),
            ("POST", ["", "v1.0", "me", "calendars", _, "events"]) => {
                let n = self.next_id.fetch_add(1, Ordering::Relaxed);
                let id = format!("AAMkBENCH{n}");
                let ev = json!({
                    "id": id, "@odata.etag": "W/\"1\"", "subject": "bench",
                    "start": {"dateTime": "2030-01-01T10:00:00.0000000", "timeZone": "UTC"},
                    "end": {"dateTime": "2030-01-01T11:00:00.0000000", "timeZone": "UTC"},
                });
                self.events.lock().unwrap_or_else(|e| e.into_inner()).insert(id, ev.clone());
                (StatusCode::CREATED, ev)
            }
            _ => (StatusCode::NOT_FOUND, json!({"error": {"code": 404, "message": format!("{method} {path}")}})),
        }
    }

    /// A Graph request against the mailbox: over four at once is 429, as Graph does.
    async fn serve_graph(&self, method: &str, path: &str, body: &[u8]) -> (Answer, bool) {
        let now = self.graph_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let out = if now > 4 {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            ((StatusCode::TOO_MANY_REQUESTS, json!({"error": {"code": "ApplicationThrottled"}})), true)
        } else {
            (self.serve(method, path, body).await, false)
        };
        self.graph_in_flight.fetch_sub(1, Ordering::SeqCst);
        out
    }
}

async fn google_insert(State(s): S, Path(cal): Path<String>, body: Bytes) -> Response {
    s.round_trip().await;
    json_response(s.serve("POST", &format!("/calendar/v3/calendars/{cal}/events"), &body).await)
}

async fn google_get(State(s): S, Path((cal, id)): Path<(String, String)>) -> Response {
    s.round_trip().await;
    json_response(s.serve("GET", &format!("/calendar/v3/calendars/{cal}/events/{id}"), b"").await)
}

fn graph_response((answer, throttled): (Answer, bool)) -> Response {
    let mut r = json_response(answer);
    if throttled && let Ok(v) = "1".parse() {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

async fn graph_lookup(State(s): S, Path(cal): Path<String>) -> Response {
    s.round_trip().await;
    graph_response(s.serve_graph("GET", &format!("/v1.0/me/calendars/{cal}/events"), b"").await)
}

async fn graph_create(State(s): S, Path(cal): Path<String>, body: Bytes) -> Response {
    s.round_trip().await;
    graph_response(s.serve_graph("POST", &format!("/v1.0/me/calendars/{cal}/events"), &body).await)
}

async fn graph_batch(State(s): S, body: Bytes) -> Response {
    s.round_trip().await;
    s.batches.fetch_add(1, Ordering::Relaxed);
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let reqs = v["requests"].as_array().cloned().unwrap_or_default();
    if reqs.is_empty() || reqs.len() > 20 {
        return json_response((StatusCode::BAD_REQUEST, json!({"error": {"code": "BadRequest"}})));
    }
    let responses: Vec<Value> = futures::stream::iter(reqs)
        .map(|r| {
            let s = s.clone();
            async move {
                let path = format!("/v1.0{}", r["url"].as_str().unwrap_or_default());
                let body = r.get("body").map(|b| b.to_string()).unwrap_or_default();
                let ((status, body), throttled) =
                    s.serve_graph(r["method"].as_str().unwrap_or_default(), &path, body.as_bytes()).await;
                let headers = if throttled { json!({"Retry-After": "1"}) } else { json!({}) };
                json!({"id": r["id"], "status": status.as_u16(), "headers": headers, "body": body})
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    json_response((StatusCode::OK, json!({ "responses": responses })))
}

/// The parts of a Google batch body: (Content-ID, method, path, body).
fn google_parts(content_type: &str, body: &[u8]) -> Vec<(String, String, String, Vec<u8>)> {
    let Some(boundary) = content_type.split("boundary=").nth(1).map(|b| b.trim_matches('"').to_string()) else {
        return vec![];
    };
    let text = String::from_utf8_lossy(body);
    let mut out = vec![];
    for part in text.split(&format!("--{boundary}")).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let Some((outer, inner)) = part.split_once("\r\n\r\n") else { continue };
        let id = outer
            .lines()
            .find_map(|l| l.strip_prefix("Content-ID:"))
            .map(|v| v.trim().trim_matches(['<', '>']).to_string())
            .unwrap_or_default();
        let (head, body) = inner.split_once("\r\n\r\n").unwrap_or((inner, ""));
        let mut words = head.lines().next().unwrap_or_default().split_whitespace();
        let (method, path) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
        out.push((id, method.to_string(), path.to_string(), body.trim_end().as_bytes().to_vec()));
    }
    out
}

async fn google_batch(State(s): S, headers: HeaderMap, body: Bytes) -> Response {
    s.round_trip().await;
    s.batches.fetch_add(1, Ordering::Relaxed);
    let kind = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let parts = google_parts(kind, &body);
    let answers =
        futures::future::join_all(parts.iter().map(|(_, method, path, body)| s.serve(method, path, body))).await;
    let boundary = "batch_bench";
    let mut out = String::new();
    for ((id, ..), (status, body)) in parts.iter().zip(answers) {
        let body = body.to_string();
        out.push_str(&format!(
            "--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <response-{id}>\r\n\r\nHTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}\r\n",
            status.as_u16(),
            body.len()
        ));
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    ([(header::CONTENT_TYPE, format!("multipart/mixed; boundary={boundary}"))], out).into_response()
}
