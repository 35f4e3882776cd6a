//! The app's side of the end-to-end change tests: an open browser tab's event stream
//! (`GET /api/calendar/stream/{user}` over real HTTP, parsed as Server-Sent Events) and the
//! cursor pull of `calendar-to-tasks`.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::calsync_bin::{API_KEY, Standalone};

/// Events received on one stream, in order: `(id, type, data)`.
pub struct EventStream {
    events: Arc<Mutex<Vec<(String, String, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EventStream {
    /// Open the stream of `user` on a running standalone.
    pub async fn open(cs: &Standalone, user: &str) -> EventStream {
        // No overall timeout: the stream stays open for the whole test.
        let http = reqwest::Client::new();
        let mut resp = http
            .get(format!("{}/api/calendar/stream/{user}", cs.base))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("open the event stream");
        assert_eq!(resp.status().as_u16(), 200, "stream refused");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let task = tokio::spawn(async move {
            let mut buf = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    let (mut id, mut kind, mut data) = (String::new(), String::new(), String::new());
                    for line in frame.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            id = v.trim().to_string();
                        } else if let Some(v) = line.strip_prefix("event:") {
                            kind = v.trim().to_string();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.trim_start());
                        }
                    }
                    if !data.is_empty() {
                        let body: Value = serde_json::from_str(&data).unwrap_or(Value::String(data));
                        let kind =
                            if kind.is_empty() { body["type"].as_str().unwrap_or_default().to_string() } else { kind };
                        sink.lock().unwrap().push((id, kind, body));
                    }
                }
            }
        });
        EventStream { events, task }
    }

    pub fn count(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    pub fn all(&self) -> Vec<(String, String, Value)> {
        self.events.lock().unwrap().clone()
    }

    /// Wait for an event of `kind` after the first `skip` events; its body and how long it took.
    pub async fn wait(&self, kind: &str, skip: usize, limit: Duration) -> (Value, Duration) {
        let started = Instant::now();
        loop {
            if let Some((_, _, body)) = self.all().into_iter().skip(skip).find(|(_, k, _)| k == kind) {
                return (body, started.elapsed());
            }
            assert!(started.elapsed() < limit, "no {kind} within {limit:?}; got {:#?}", self.all());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `calendar-to-tasks` without a cursor: (answer, cursor).
pub async fn first_pull(cs: &Standalone, user: &str) -> (Value, String) {
    let (s, v) = cs.call("POST", "/calendar-to-tasks", Some(json!({"user_id": user, "refresh": true}))).await;
    assert_eq!(s, 200, "{v}");
    let cursor = v["cursor"].as_str().expect("cursor").to_string();
    (v, cursor)
}

/// `calendar-to-tasks` with a cursor: ((change, event id) pairs, the answer, the next cursor).
pub async fn pull(cs: &Standalone, user: &str, cursor: &str) -> (Vec<(String, String)>, Value, String) {
    let (s, v) = cs.call("POST", "/calendar-to-tasks", Some(json!({"user_id": user, "cursor": cursor}))).await;
    assert_eq!(s, 200, "{v}");
    let changes = v["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap_or_default().to_string(),
                c["calendar_event_id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let next = v["cursor"].as_str().expect("cursor").to_string();
    (changes, v, next)
}
