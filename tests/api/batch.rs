//! `POST /tasks-to-calendar` on the memory calendar with the real engine: 300 tasks give 300
//! events, results come in order, bad items fail alone, and oversized batches are 413.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{API_KEY, Harness, config};

fn item(i: usize) -> Value {
    json!({"id": format!("b-{i}"), "name": format!("Batch task {i}"),
           "scheduled_time": format!("2030-05-{:02}T{:02}:00:00", 1 + i % 28, 8 + i % 10), "timezone": "Europe/Berlin"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_tasks_give_three_hundred_events() {
    let h = Harness::with_engine(config());
    h.connect_apple("batcher").await;
    let tasks: Vec<Value> = (0..300).map(item).collect();
    let (s, v) = h
        .call(Method::POST, "/api/calendar/tasks-to-calendar", Some(json!({"user_id": "batcher", "tasks": tasks})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["count"].as_u64(), v["failed"].as_u64()), (Some(300), Some(0)), "{}", v["results"][0]);
    let results = v["results"].as_array().unwrap();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["task_id"], format!("b-{i}"), "results in request order");
        assert!(r["event_id"].is_string() || r["pending"] == true, "{r}");
    }
    let started = Instant::now();
    loop {
        let ours = h.calendar.events("calendar").into_iter().filter(|e| e.marker.is_some() && !e.cancelled).count();
        if ours == 300 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{ours} events of 300");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same batch again changes nothing: still 300.
    let tasks: Vec<Value> = (0..300).map(item).collect();
    let (s, v) = h
        .call(Method::POST, "/api/calendar/tasks-to-calendar", Some(json!({"user_id": "batcher", "tasks": tasks})))
        .await;
    assert_eq!((s, v["failed"].as_u64()), (StatusCode::OK, Some(0)), "{v}");
    let ours = h.calendar.events("calendar").into_iter().filter(|e| e.marker.is_some() && !e.cancelled).count();
    assert_eq!(ours, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_items_fail_alone_and_oversized_batches_are_413() {
    let h = Harness::with_engine(config());
    h.connect_apple("mixed").await;
    let tasks = json!([
        item(1),
        {"id": "no-name", "scheduled_time": "2030-05-01T10:00:00"},
        {"id": "odd", "name": "x", "scheduled_time": "yesterday"},
        {"id": 42, "name": "numeric id", "scheduled_time": "2030-05-02T10:00:00Z"},
        {"id": "extra", "name": "x", "scheduled_time": "2030-05-01T10:00:00Z", "colour": "red"},
        item(2),
    ]);
    let (s, v) = h
        .call(Method::POST, "/api/calendar/tasks-to-calendar", Some(json!({"user_id": "mixed", "tasks": tasks})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = v["results"].as_array().unwrap();
    let ok: Vec<bool> = r.iter().map(|x| x["success"] == true).collect();
    assert_eq!(ok, [true, false, false, true, false, true], "{v}");
    assert_eq!(r[1]["task_id"], "no-name");
    assert_eq!(r[3]["task_id"], "42");
    assert!(r[4]["error"].as_str().is_some_and(|e| e.contains("colour")), "unknown fields are named: {}", r[4]);
    assert!(r[2]["code"].is_string() && r[2]["error"].is_string(), "{}", r[2]);
    assert_eq!(v["failed"], 3);

    let many: Vec<Value> = (0..501).map(item).collect();
    let (s, v) =
        h.call(Method::POST, "/api/calendar/tasks-to-calendar", Some(json!({"user_id": "mixed", "tasks": many}))).await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("batch_too_large")), "{v}");
    let huge = json!({"user_id": "mixed", "tasks": [{"id": "big", "name": "x".repeat(1_100_000), "scheduled_time": "2030-05-01"}]});
    let (s, _, v) =
        h.raw(Method::POST, "/api/calendar/tasks-to-calendar", Some(API_KEY), Some(huge.to_string()), &[]).await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")), "{v}");
    // The single endpoint keeps its small limit.
    let big = json!({"user_id": "mixed", "task_data": {"id": "big", "name": "x".repeat(100_000), "scheduled_time": "2030-05-01"}});
    let (s, _, _) =
        h.raw(Method::POST, "/api/calendar/task-to-calendar", Some(API_KEY), Some(big.to_string()), &[]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
}
