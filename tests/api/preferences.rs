//! Several calendars per user: routing preferences over REST, tasks routed by category across
//! connections, and events moving (exactly once) when a task's route changes.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use calsync::engine::Objects;
use calsync::resources::{
    CalendarConnection, CalendarConnectionSpec, ProviderKind, SecretRef, TaskSync, USER_LABEL, connection_name,
    task_sync_name, user_label_value,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use crate::support::{Harness, NS, config};

const USER: &str = "router";

/// The user with an Apple connection (REST) and a CalDAV one (YAML), both Ready. The memory
/// service backs both; it has `calendar`, `work` and the read-only `holidays`.
async fn two_accounts() -> Harness {
    let h = Harness::with_engine(config());
    h.calendar.add_calendar("work", true);
    h.connect_apple(USER).await;
    h.objects.put_secret(
        NS,
        "team-caldav",
        BTreeMap::from([("username".into(), b"user".to_vec()), ("password".into(), b"secret".to_vec())]),
    );
    let conn = CalendarConnection {
        metadata: ObjectMeta {
            name: Some(connection_name(USER, ProviderKind::Caldav)),
            namespace: Some(NS.into()),
            labels: Some(BTreeMap::from([(USER_LABEL.to_string(), user_label_value(USER))])),
            ..ObjectMeta::default()
        },
        spec: CalendarConnectionSpec {
            user_id: USER.into(),
            provider: ProviderKind::Caldav,
            credentials_secret_ref: SecretRef { name: "team-caldav".into(), key: None },
            calendar_id: None,
            server_url: Some("https://dav.example.org/".into()),
            category_calendars: Default::default(),
            user_default: false,
            import: None,
            active: true,
        },
        status: None,
    };
    h.objects.apply_connection(&conn).await.expect("apply");
    for _ in 0..100 {
        let (_, v) = h.call(Method::GET, &format!("/api/calendar/preferences/{USER}"), None).await;
        let ready = v["connections"].as_array().is_some_and(|c| {
            c.len() == 2 && c.iter().all(|c| c["connected"] == true && !c["calendars"].as_array().unwrap().is_empty())
        });
        if ready {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("connections never became Ready");
}

async fn task_sync(h: &Harness, task: &str) -> TaskSync {
    h.objects.get_task_sync(NS, &task_sync_name(USER, task)).await.unwrap().expect("task sync")
}

/// Calendars holding the task's event (by its uid), once the engine settled.
async fn calendars_of(h: &Harness, task: &str) -> Vec<String> {
    let uid = task_sync(h, task).await.metadata.uid.unwrap();
    let mut last = Vec::new();
    for _ in 0..100 {
        let ts = task_sync(h, task).await;
        let st = ts.status.clone().unwrap_or_default();
        last = ["calendar", "work"]
            .iter()
            .filter(|c| h.calendar.events(c).iter().any(|e| e.marker.as_ref().is_some_and(|m| m.uid == uid)))
            .map(|c| c.to_string())
            .collect();
        if st.moving_from.is_none() && st.connection.as_deref() == Some(ts.spec.connection_ref.name.as_str()) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the task never settled: {last:?}");
}

fn task(id: &str, category: &str) -> Value {
    json!({"user_id": USER, "task_data": {"id": id, "name": id, "category": category, "scheduled_time": "2030-05-01T09:00:00Z"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn categories_route_across_accounts_and_a_new_route_moves_the_event_once() {
    let h = two_accounts().await;
    let uri = format!("/api/calendar/preferences/{USER}");
    let (s, v) = h.call(Method::GET, &uri, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["default_chosen"], false, "{v}");
    let apple = &v["connections"].as_array().unwrap().iter().find(|c| c["calendar_type"] == "apple").unwrap().clone();
    let cal = |id: &str| apple["calendars"].as_array().unwrap().iter().find(|c| c["calendar_id"] == id).cloned();
    assert_eq!(cal("holidays").unwrap()["writable"], false, "{v}");
    assert_eq!(cal("calendar").unwrap()["default"], true, "{v}");

    let prefs = json!({"default_calendar_type": "apple", "categories": {
        "Work": {"calendar_type": "caldav", "calendar_id": "work"},
        "Personal": {"calendar_type": "apple"}}});
    let (s, v) = h.call(Method::PUT, &uri, Some(prefs)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["default_calendar_type"], "apple");
    assert_eq!(v["default_chosen"], true);
    assert_eq!(
        v["categories"]["Work"],
        json!({"calendar_type": "caldav", "calendar_id": "work", "calendar_name": "work"})
    );
    assert_eq!(v["categories"]["Personal"]["calendar_id"], "calendar");
    assert_eq!(v["tasks_rerouted"], 0);
    let (_, again) = h.call(Method::GET, &uri, None).await;
    assert_eq!(again["categories"], v["categories"], "GET reads what PUT stored");

    let apple_conn = connection_name(USER, ProviderKind::Apple);
    let caldav_conn = connection_name(USER, ProviderKind::Caldav);
    for (id, category) in [("w1", "Work"), ("p1", "Personal"), ("e1", "Errands")] {
        let (s, v) = h.call(Method::POST, "/api/calendar/task-to-calendar", Some(task(id, category))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    assert_eq!(task_sync(&h, "w1").await.spec.connection_ref.name, caldav_conn);
    assert_eq!(calendars_of(&h, "w1").await, ["work"]);
    assert_eq!(task_sync(&h, "p1").await.spec.connection_ref.name, apple_conn);
    assert_eq!(task_sync(&h, "e1").await.spec.connection_ref.name, apple_conn, "unrouted: the chosen default");

    // The app changes the task's category: its event moves, exactly once.
    let event_id = task_sync(&h, "w1").await.status.unwrap().event_id.unwrap();
    let patch = json!({"user_id": USER, "event_id": event_id, "task_data": {"category": "Personal"}});
    let (s, v) = h.call(Method::PUT, "/api/calendar/update-event", Some(patch)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(task_sync(&h, "w1").await.spec.connection_ref.name, apple_conn);
    assert_eq!(calendars_of(&h, "w1").await, ["calendar"]);

    // The user moves Personal to the CalDAV account's work calendar: existing tasks follow.
    let prefs = json!({"default_calendar_type": "apple", "categories": {
        "Personal": {"calendar_type": "caldav", "calendar_id": "work"}}});
    let (s, v) = h.call(Method::PUT, &uri, Some(prefs)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["tasks_rerouted"], 2, "w1 and p1: {v}");
    assert!(v["categories"].get("Work").is_none(), "PUT replaces: {v}");
    for id in ["w1", "p1"] {
        assert_eq!(task_sync(&h, id).await.spec.connection_ref.name, caldav_conn);
        assert_eq!(calendars_of(&h, id).await, ["work"], "{id}");
    }
    assert_eq!(calendars_of(&h, "e1").await, ["calendar"], "unrouted tasks stay");
    let history = task_sync(&h, "p1").await.status.unwrap().history;
    assert!(history.iter().any(|e| e.note.as_deref().is_some_and(|n| n.contains("moved"))), "{history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferences_name_what_is_wrong() {
    let h = two_accounts().await;
    let uri = format!("/api/calendar/preferences/{USER}");
    let cases = [
        (
            json!({"categories": {"Work": {"calendar_type": "caldav", "calendar_id": "nope"}}}),
            422,
            "unknown_calendar",
            "nope",
        ),
        (
            json!({"categories": {"Work": {"calendar_type": "apple", "calendar_id": "holidays"}}}),
            422,
            "calendar_read_only",
            "holidays",
        ),
        (json!({"categories": {"Work": {"calendar_type": "outlook"}}}), 422, "calendar_not_connected", "outlook"),
        (json!({"default_calendar_type": "google"}), 422, "calendar_not_connected", "default_calendar_type"),
        (json!({"categories": {"Work": {"calendar_type": "yahoo"}}}), 400, "unknown_calendar_type", "calendar_type"),
        (json!({"categories": {"Work": {"calendar_type": "apple", "colour": "red"}}}), 422, "invalid_field", "colour"),
        (json!({"default": "apple"}), 422, "invalid_field", "default"),
        (json!({"categories": {"": {"calendar_type": "apple"}}}), 400, "", "category names"),
    ];
    for (body, status, code, names) in cases {
        let (s, v) = h.call(Method::PUT, &uri, Some(body.clone())).await;
        assert_eq!(s.as_u16(), status, "{body} → {v}");
        if !code.is_empty() {
            assert_eq!(v["code"], code, "{body} → {v}");
        }
        assert!(v["error"].as_str().unwrap_or_default().contains(names), "{body} → {v}");
    }
    let (_, v) = h.call(Method::GET, &uri, None).await;
    assert_eq!(v["categories"], json!({}), "nothing partial was stored: {v}");
    let (s, _) = h.call(Method::PUT, "/api/calendar/preferences/someone-else", Some(json!({}))).await;
    assert_eq!(s, StatusCode::OK, "the API key may act for any user; a user without calendars gets an empty view");
}
