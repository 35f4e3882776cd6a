//! End to end for provider batching: the built `calsync standalone` binary, a real OAuth server
//! and the strict fake Google; a 300-task `tasks-to-calendar` gives 300 events, written through
//! Google batch requests (fewer HTTP requests than tasks), and the same batch again adds none.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::google_world::{eventually, world_with};

fn item(i: usize) -> Value {
    json!({"id": format!("b-{i}"), "name": format!("Batch task {i}"),
           "scheduled_time": format!("2031-05-{:02}T{:02}:00:00", 1 + i % 28, 8 + i % 10), "timezone": "Europe/Berlin"})
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hundred_tasks_through_google_batches() {
    // Google's default pacing (10/s per connection) would make this a 30-second test of the
    // limiter; the limiter admitting every part is tested in `provider_batch`.
    let env = [("CALSYNC_GOOGLE_RATE_PER_SECOND", "off".to_string()), ("CALSYNC_CONCURRENCY", "32".to_string())];
    let w = world_with(3600, None, &env).await;
    let user = "batch_user";
    w.connect_user(user).await;
    w.fake.set_delay(Duration::from_millis(20));
    w.fake.clear_requests();
    let tasks: Vec<Value> = (0..300).map(item).collect();
    let (s, body) = w.cs.call("POST", "/tasks-to-calendar", Some(json!({"user_id": user, "tasks": tasks}))).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["failed"].as_u64(), Some(0), "{body}");
    eventually("300 events in Google", || async { w.ours().len() == 300 }).await;
    let log = w.fake.requests();
    let inserts = log.iter().filter(|r| r.method == "POST" && r.path.ends_with("/events")).count();
    assert_eq!(inserts, 300, "one insert per task");
    let batches = log.iter().filter(|r| r.path == "/batch/calendar/v3").count();
    let http = log.iter().filter(|r| !r.in_batch).count();
    assert!(batches > 0, "the writes travelled in batch requests");
    assert!(http < inserts, "{http} HTTP requests for {inserts} inserts");

    let tasks: Vec<Value> = (0..300).map(item).collect();
    let (s, body) = w.cs.call("POST", "/tasks-to-calendar", Some(json!({"user_id": user, "tasks": tasks}))).await;
    assert_eq!(s, 200, "{body}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.ours().len(), 300, "the same batch again made no duplicate");
}
