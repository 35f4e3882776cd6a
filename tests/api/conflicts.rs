//! Conflict choice on the memory calendar with the real engine: `GET /conflicts` shows the diff
//! (times in the task's zone), `POST /resolve-conflict` keeps either side, a stale choice is
//! refused with the new diff, a deleted event is re-created or released, and bad input is 4xx.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use calsync::engine::{ObjectKey, Objects};
use calsync::providers::{EventTime, RemoteEvent};
use calsync::resources::push::CHANGED_ANNOTATION;
use calsync::resources::{ProviderKind, connection_name, task_sync_name};
use serde_json::{Value, json};

use crate::support::{Harness, NS, config, jwt};

/// A day inside the change-sync window, at 14:00 in New York.
fn day() -> String {
    (chrono::Utc::now() + chrono::Duration::days(10)).format("%Y-%m-%d").to_string()
}

async fn signal(h: &Harness, user: &str, n: &str) {
    let key = ObjectKey::connection(NS, &connection_name(user, ProviderKind::Apple));
    let value = BTreeMap::from([(CHANGED_ANNOTATION.to_string(), n.to_string())]);
    h.objects.set_annotations(&key, &value).await.unwrap();
}

/// Declare task `id` and let the connection take its baseline listing.
async fn task(h: &Harness, user: &str, id: &str) -> String {
    let body = json!({"user_id": user, "task_data": {"id": id, "name": "Essay",
        "scheduled_time": format!("{}T14:00:00", day()), "timezone": "America/New_York"}});
    let (s, v) = h.call(Method::POST, "/api/calendar/task-to-calendar", Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    signal(h, user, &format!("base-{id}")).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    v["event_id"].as_str().unwrap().to_string()
}

fn edit_in_calendar(h: &Harness, event: &str, title: &str) {
    assert!(h.calendar.edit_external("calendar", event, |e: &mut RemoteEvent| {
        e.title = title.into();
        for t in [&mut e.start, &mut e.end] {
            if let EventTime::DateTime { utc, .. } = t {
                *utc += chrono::Duration::hours(2);
            }
        }
    }));
}

/// The user's conflicts once `n` are listed.
async fn conflicts(h: &Harness, user: &str, n: usize) -> Value {
    let started = Instant::now();
    loop {
        let (s, v) = h.call(Method::GET, &format!("/api/calendar/conflicts/{user}"), None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if v["count"] == n {
            return v;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "not {n} conflicts: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn resolve(h: &Harness, body: Value) -> (StatusCode, Value) {
    h.call(Method::POST, "/api/calendar/resolve-conflict", Some(body)).await
}

fn field<'a>(c: &'a Value, name: &str) -> &'a Value {
    c["diff"].as_array().unwrap().iter().find(|d| d["field"] == name).unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_the_calendar_then_keep_the_task() {
    let h = Harness::with_engine(config());
    let user = "chooser";
    h.connect_apple(user).await;
    let event = task(&h, user, "t1").await;
    edit_in_calendar(&h, &event, "Essay (phone)");
    signal(&h, user, "edit-1").await;
    let v = conflicts(&h, user, 1).await;
    let c = &v["conflicts"][0];
    assert_eq!((c["task_id"].as_str(), c["deleted"].as_bool()), (Some("t1"), Some(false)), "{c}");
    assert_eq!(c["timezone"], "America/New_York");
    assert_eq!(field(c, "title"), &json!({"field": "title", "task": "Essay", "calendar": "Essay (phone)"}));
    let start = field(c, "start");
    assert_eq!(start["task"], format!("{}T14:00:00", day()), "{c}");
    assert_eq!(start["calendar"], format!("{}T16:00:00", day()), "times in the task's zone: {c}");
    let version = c["version"].as_str().unwrap().to_string();

    // Keep the calendar: the task follows the event; the calendar is not written.
    let before = h.calendar.events("calendar").into_iter().find(|e| e.id == event).unwrap();
    let (s, v) = resolve(&h, json!({"user_id": user, "task_id": "t1", "keep": "calendar", "version": version})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["task"]["name"], "Essay (phone)", "{v}");
    assert_eq!(v["task"]["scheduled_time"], format!("{}T16:00:00", day()), "{v}");
    assert_eq!(v["task"]["timezone"], "America/New_York");
    let after = h.calendar.events("calendar").into_iter().find(|e| e.id == event).unwrap();
    assert_eq!(after.etag, before.etag, "keeping the calendar's version writes nothing to it");
    conflicts(&h, user, 0).await;
    let ts = h.objects.get_task_sync(NS, &task_sync_name(user, "t1")).await.unwrap().unwrap();
    assert_eq!(ts.spec.title, "Essay (phone)");
    let st = ts.status.unwrap();
    assert!(
        st.history
            .iter()
            .any(|e| e.note.as_deref().is_some_and(|n| n.contains("calendar's version") && n.contains(user)))
    );
    assert!(!ts.metadata.annotations.unwrap_or_default().contains_key(calsync::resources::RESOLVE_ANNOTATION));

    // Another edit; a choice against an older version is refused with the new diff.
    edit_in_calendar(&h, &event, "Essay (laptop)");
    signal(&h, user, "edit-2").await;
    let v = conflicts(&h, user, 1).await;
    let version = v["conflicts"][0]["version"].as_str().unwrap().to_string();
    let (s, v) = resolve(&h, json!({"user_id": user, "event_id": event, "keep": "task", "version": "\"stale\""})).await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::CONFLICT, Some("conflict_changed")), "{v}");
    assert_eq!(field(&v["conflict"], "title")["calendar"], "Essay (laptop)", "{v}");
    // Keep the task: its version is written over the edit.
    let (s, v) = resolve(&h, json!({"user_id": user, "event_id": event, "keep": "task", "version": version})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["task"]["name"], "Essay (phone)");
    let now = h.calendar.events("calendar").into_iter().find(|e| e.id == event).unwrap();
    assert_eq!(now.title, "Essay (phone)", "the task's version is in the calendar");
    conflicts(&h, user, 0).await;
    // Nothing left to choose.
    let (s, v) = resolve(&h, json!({"user_id": user, "task_id": "t1", "keep": "task"})).await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::CONFLICT, Some("no_conflict")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_event_is_created_again_or_released() {
    let h = Harness::with_engine(config());
    let user = "deleter";
    h.connect_apple(user).await;
    let first = task(&h, user, "t1").await;
    assert!(h.calendar.delete_external("calendar", &first));
    signal(&h, user, "del-1").await;
    let v = conflicts(&h, user, 1).await;
    assert_eq!(
        (v["conflicts"][0]["deleted"].as_bool(), v["conflicts"][0]["diff"].as_array().map(Vec::len)),
        (Some(true), Some(0))
    );
    let (s, v) = resolve(&h, json!({"user_id": user, "task_id": "t1", "keep": "task"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Created again (under the same deterministic key, so the same id on this calendar).
    let again = v["task"]["event_id"].as_str().expect("an event again").to_string();
    let ours: Vec<_> =
        h.calendar.events("calendar").into_iter().filter(|e| e.marker.is_some() && !e.cancelled).collect();
    assert_eq!(ours.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), [again.as_str()], "{ours:?}");

    assert!(h.calendar.delete_external("calendar", &again));
    signal(&h, user, "del-2").await;
    conflicts(&h, user, 1).await;
    let (s, v) = resolve(&h, json!({"user_id": user, "task_id": "t1", "keep": "calendar"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["released"], true, "{v}");
    assert!(h.objects.get_task_sync(NS, &task_sync_name(user, "t1")).await.unwrap().is_none());
    assert!(h.calendar.events("calendar").iter().all(|e| e.marker.is_none() || e.cancelled), "nothing re-created");
}

#[tokio::test]
async fn bad_choices_are_4xx() {
    let h = Harness::without_engine(config());
    h.connect_apple("u1").await;
    for (body, status, code) in [
        (json!({"user_id": "u1", "task_id": "t", "keep": "both"}), StatusCode::BAD_REQUEST, "invalid_field"),
        (json!({"user_id": "u1", "keep": "task"}), StatusCode::BAD_REQUEST, "invalid_field"),
        (
            json!({"user_id": "u1", "task_id": "t", "event_id": "e", "keep": "task"}),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (json!({"user_id": "u1", "task_id": "nope", "keep": "task"}), StatusCode::NOT_FOUND, "task_not_found"),
    ] {
        let (s, v) = resolve(&h, body.clone()).await;
        assert_eq!((s, v["code"].as_str()), (status, Some(code)), "{body}: {v}");
    }
    let (s, v) = resolve(&h, json!({"user_id": "u1", "task_id": "t", "keep": "task", "surprise": 1})).await;
    assert!(s.is_client_error() && v.to_string().contains("surprise"), "{s} {v}");
    let token = jwt("someone-else", 3600);
    let (s, _, _) = h.raw(Method::GET, "/api/calendar/conflicts/u1", Some(&token), None, &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}
