//! Helpers of the live-sync end-to-end tests: read TaskSyncs from a running standalone's
//! database with the CLI (as a person would, no REST call) and wait for their status.

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::calsync_bin::Standalone;

pub fn task_syncs(dir: &Path) -> Vec<Value> {
    let (ok, out, err) = Standalone::cli(dir, &["get", "tasksyncs", "-o", "json"]);
    assert!(ok, "calsync get: {err}");
    let list: Value = serde_json::from_str(&out).expect("json");
    list["items"].as_array().cloned().unwrap_or_default()
}

pub fn task_sync(dir: &Path, task_id: &str) -> Value {
    task_syncs(dir).into_iter().find(|t| t["spec"]["taskId"] == task_id).unwrap_or(Value::Null)
}

pub fn connections(dir: &Path) -> Vec<Value> {
    let (ok, out, err) = Standalone::cli(dir, &["get", "calconn", "-o", "json"]);
    assert!(ok, "calsync get: {err}");
    let list: Value = serde_json::from_str(&out).expect("json");
    list["items"].as_array().cloned().unwrap_or_default()
}

/// Poll the TaskSync until `check` holds; returns how long it took. Fails past `limit`.
pub async fn until(dir: &Path, task_id: &str, limit: Duration, check: impl Fn(&Value) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let ts = task_sync(dir, task_id);
        if check(&ts) {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not within {limit:?}: {ts:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The first connection's status once `check` holds.
pub async fn until_connection(dir: &Path, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        if let Some(c) = connections(dir).into_iter().find(&check) {
            return c;
        }
        assert!(started.elapsed() < limit, "no connection as wanted within {limit:?}: {:#?}", connections(dir));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// (status, reason) of a condition.
pub fn condition(object: &Value, type_: &str) -> Option<(String, String)> {
    let c = object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)?;
    Some((c["status"].as_str()?.to_string(), c["reason"].as_str()?.to_string()))
}

pub fn synced(ts: &Value) -> Option<(String, String)> {
    condition(ts, "Synced")
}

/// A counter's value in a Prometheus text exposition (0 when absent).
pub fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}
