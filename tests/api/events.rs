//! `GET /api/calendar/stream/{user_id}` (Server-Sent Events): two streams of one user both get
//! the events, `Last-Event-ID` resumes without a gap, an edit made in the calendar arrives as
//! `task.conflict`, and the stream refuses other users and too many streams.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use calsync::engine::{ObjectKey, Objects};
use calsync::providers::EventTime;
use calsync::resources::push::CHANGED_ANNOTATION;
use calsync::resources::{ProviderKind, connection_name};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::{API_KEY, Harness, NS, config, jwt};

/// An open event stream: the response body, read frame by frame.
struct Stream {
    body: Body,
    buf: String,
}

/// One parsed event: (id, type, data).
type Sse = (String, String, Value);

impl Stream {
    async fn open(
        h: &Harness,
        user: &str,
        token: &str,
        last_event_id: Option<&str>,
    ) -> Result<Stream, (StatusCode, Value)> {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(format!("/api/calendar/stream/{user}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = h.router.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            return Err((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)));
        }
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
        Ok(Stream { body: resp.into_body(), buf: String::new() })
    }

    /// The next event (heartbeat comments skipped), or `None` after `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let field = |name: &str| {
                    block.lines().find_map(|l| l.strip_prefix(&format!("{name}:"))).map(|v| v.trim_start().to_string())
                };
                if let (Some(id), Some(kind), Some(data)) = (field("id"), field("event"), field("data")) {
                    return Some((id, kind, serde_json::from_str(&data).expect("data is JSON")));
                }
                continue;
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame()).await.ok()??.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// The next event of type `kind`, skipping others.
    async fn next_of(&mut self, kind: &str, wait: Duration) -> Sse {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let e = self.next(left).await.unwrap_or_else(|| panic!("no {kind} within {wait:?}"));
            if e.1 == kind {
                return e;
            }
        }
    }
}

fn task(id: &str, name: &str) -> Value {
    json!({"user_id": "alice", "task_data": {"id": id, "name": name, "scheduled_time": "2031-01-10T10:00:00Z"}})
}

#[tokio::test]
async fn two_streams_get_the_events_and_last_event_id_resumes_without_a_gap() {
    let h = Harness::with_engine(config());
    let mut a = Stream::open(&h, "alice", API_KEY, None).await.unwrap();
    let mut b = Stream::open(&h, "alice", API_KEY, None).await.unwrap();
    let mut bob = Stream::open(&h, "bob", API_KEY, None).await.unwrap();
    h.connect_apple("alice").await;
    let connected = a.next_of("connection.connected", Duration::from_secs(10)).await;
    assert_eq!(connected.2["type"], "connection.connected");
    assert_eq!(connected.2["data"]["calendar_type"], "apple");

    let (s, v) = h.call(Method::POST, "/api/calendar/task-to-calendar", Some(task("t1", "Essay"))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let first = a.next_of("task.synced", Duration::from_secs(10)).await;
    assert_eq!(b.next_of("task.synced", Duration::from_secs(10)).await, first, "both streams get the same event");
    assert_eq!(first.2["data"]["task_id"], "t1");
    assert_eq!(first.2["data"]["event_id"], json!(v["event_id"]));
    assert!(bob.next(Duration::from_millis(300)).await.is_none(), "another user's stream stays silent");

    // The tab goes away; two more tasks sync meanwhile; it comes back with Last-Event-ID.
    drop(a);
    for (id, name) in [("t2", "Lab"), ("t3", "Reading")] {
        let (s, v) = h.call(Method::POST, "/api/calendar/task-to-calendar", Some(task(id, name))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let mut seen_by_b = Vec::new();
    while seen_by_b.len() < 2 {
        let e = b.next_of("task.synced", Duration::from_secs(10)).await;
        seen_by_b.push(e);
    }
    let mut resumed = Stream::open(&h, "alice", API_KEY, Some(&first.0)).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(resumed.next_of("task.synced", Duration::from_secs(5)).await);
    }
    assert_eq!(got, seen_by_b, "resume gives exactly what was missed, in order");
    assert!(got.iter().all(|e| e.0 != first.0), "nothing already seen comes again");
}

#[tokio::test]
async fn an_edit_in_the_calendar_arrives_as_task_conflict_with_the_diff() {
    let h = Harness::with_engine(config());
    h.connect_apple("alice").await;
    // Inside the window change syncs list (a year ahead).
    let day = (chrono::Utc::now() + chrono::Duration::days(10)).format("%Y-%m-%d").to_string();
    let body = json!({"user_id": "alice", "task_data": {"id": "t1", "name": "Essay", "scheduled_time": format!("{day}T10:00:00Z")}});
    let (s, v) = h.call(Method::POST, "/api/calendar/task-to-calendar", Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let event_id = v["event_id"].as_str().unwrap().to_string();
    let mut a = Stream::open(&h, "alice", API_KEY, None).await.unwrap();
    // Signal the connection first so its baseline listing runs, then edit and signal again.
    let conn = connection_name("alice", ProviderKind::Apple);
    let key = ObjectKey::connection(NS, &conn);
    let signal = |v: &str| BTreeMap::from([(CHANGED_ANNOTATION.to_string(), v.to_string())]);
    h.objects.set_annotations(&key, &signal("1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.calendar.edit_external("calendar", &event_id, |e| {
        if let EventTime::DateTime { utc, .. } = &mut e.start {
            *utc += chrono::Duration::hours(2);
        }
        if let EventTime::DateTime { utc, .. } = &mut e.end {
            *utc += chrono::Duration::hours(2);
        }
    }));
    h.objects.set_annotations(&key, &signal("2")).await.unwrap();
    let conflict = a.next_of("task.conflict", Duration::from_secs(10)).await;
    let data = &conflict.2["data"];
    assert_eq!((data["task_id"].as_str(), data["resolution"].as_str()), (Some("t1"), Some("Manual")), "{data}");
    let start = data["diff"].as_array().unwrap().iter().find(|d| d["field"] == "start").cloned().expect("start diff");
    assert_eq!(start["task"], format!("{day}T10:00:00Z"));
    assert_eq!(start["calendar"], format!("{day}T12:00:00Z"));
}

#[tokio::test]
async fn streams_refuse_other_users_and_too_many() {
    let h = Harness::with_engine(calsync::api::ApiConfig { streams_per_user: 2, ..config() });
    let (s, v) = Stream::open(&h, "alice", &jwt("bob", 600), None).await.err().expect("refused");
    assert_eq!((s, v["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{v}");
    let one = Stream::open(&h, "alice", &jwt("alice", 600), None).await.unwrap();
    let _two = Stream::open(&h, "alice", API_KEY, None).await.unwrap();
    let (s, v) = Stream::open(&h, "alice", API_KEY, None).await.err().expect("third refused");
    assert_eq!((s, v["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("too_many_streams")), "{v}");
    drop(one);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(Stream::open(&h, "alice", API_KEY, None).await.is_ok(), "a closed stream frees its slot");
}
