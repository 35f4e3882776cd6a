//! Several connections per user (one per provider), permanent failures, and a JWT-driven user.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use calsync::engine::Objects;
use calsync::providers::ProviderError;
use calsync::providers::memory::Op;
use calsync::resources::{
    CalendarConnection, CalendarConnectionSpec, ProviderKind, SecretRef, USER_LABEL, connection_name, user_label_value,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use crate::support::{Harness, NS, config, jwt};

/// A CalDAV connection a platform team wrote as YAML (plain-key Secret).
async fn yaml_caldav_connection(h: &Harness, user: &str) {
    yaml_caldav_connection_with(h, user, "secret").await
}

async fn yaml_caldav_connection_with(h: &Harness, user: &str, password: &str) {
    let name = connection_name(user, ProviderKind::Caldav);
    h.objects.put_secret(
        NS,
        "team-caldav",
        BTreeMap::from([("username".into(), b"user".to_vec()), ("password".into(), password.as_bytes().to_vec())]),
    );
    let conn = CalendarConnection {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(NS.into()),
            labels: Some(BTreeMap::from([(USER_LABEL.to_string(), user_label_value(user))])),
            ..ObjectMeta::default()
        },
        spec: CalendarConnectionSpec {
            user_id: user.into(),
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_per_provider_and_disconnect_by_type() {
    let h = Harness::with_engine(config());
    let user = "multi";
    h.connect_apple(user).await;
    h.connect_apple(user).await; // Again: still one apple connection.
    yaml_caldav_connection(&h, user).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let (_, v) = h.call(Method::GET, &format!("/api/calendar/connection-status/{user}"), None).await;
    let types: Vec<&str> =
        v["connections"].as_array().unwrap().iter().map(|c| c["calendar_type"].as_str().unwrap()).collect();
    assert_eq!(types.len(), 2, "{v}");
    assert!(types.contains(&"apple") && types.contains(&"caldav"), "{v}");

    // calendar_type picks the connection.
    let task = |id: &str, kind: &str| json!({"user_id": user, "calendar_type": kind, "task_data": {"id": id, "name": id, "scheduled_time": "2030-05-01T09:00:00Z"}});
    let (s, v) = h.call(Method::POST, "/api/calendar/task-to-calendar", Some(task("on-caldav", "caldav"))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = h.call(Method::POST, "/api/calendar/task-to-calendar", Some(task("on-apple", "apple"))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let syncs = h.objects.list_task_syncs(Some(NS), &Default::default()).await.unwrap();
    let conn_of =
        |task: &str| syncs.iter().find(|t| t.spec.task_id == task).map(|t| t.spec.connection_ref.name.clone());
    assert_eq!(conn_of("on-caldav"), Some(connection_name(user, ProviderKind::Caldav)));
    assert_eq!(conn_of("on-apple"), Some(connection_name(user, ProviderKind::Apple)));

    // Disconnect only apple: caldav stays active, its task stays; apple's task is orphaned.
    let (s, _) = h.call(Method::POST, &format!("/api/calendar/disconnect/{user}?calendar_type=apple"), None).await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (_, v) = h.call(Method::GET, &format!("/api/calendar/connection-status/{user}"), None).await;
    assert_eq!(v["connected"], true, "{v}");
    assert_eq!(v["calendar_type"], "caldav", "{v}");
    let syncs = h.objects.list_task_syncs(Some(NS), &Default::default()).await.unwrap();
    let tasks: Vec<&str> = syncs.iter().map(|t| t.spec.task_id.as_str()).collect();
    assert_eq!(tasks, ["on-caldav"]);
    let apple = h.objects.get_connection(NS, &connection_name(user, ProviderKind::Apple)).await.unwrap().unwrap();
    assert!(!h.objects.has_secret(NS, &apple.spec.credentials_secret_ref.name));
    assert!(!apple.spec.active);
    assert!(h.objects.has_secret(NS, "team-caldav"));
    // Both events are still in the calendar (the memory service backs both connections).
    let titles: Vec<String> = h.calendar.events("calendar").into_iter().map(|e| e.title).collect();
    assert!(titles.contains(&"on-apple".to_string()) && titles.contains(&"on-caldav".to_string()), "{titles:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_provider_failure_says_why() {
    let h = Harness::with_engine(config());
    h.connect_apple("pat").await;
    h.calendar.inject(Op::Create, ProviderError::Invalid { message: "the event has no DTSTART".into() });
    let body =
        json!({"user_id": "pat", "task_data": {"id": "t", "name": "n", "scheduled_time": "2030-01-01T10:00:00Z"}});
    let (s, v) = h.call(Method::POST, "/api/calendar/task-to-calendar", Some(body)).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    assert_eq!(v["code"], "provider_rejected");
    assert!(v["error"].as_str().unwrap().contains("DTSTART"), "{v}");
    let (_, v) = h.call(Method::GET, "/api/calendar/sync-history/pat", None).await;
    assert_eq!(v["syncs"][0]["sync_status"], "failed", "{v}");
    assert!(v["syncs"][0]["error_message"].as_str().is_some_and(|m| m.contains("DTSTART")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_user_walks_the_flow_for_itself_only() {
    let h = Harness::with_engine(config());
    let token = jwt("jwt-user", 600);
    let (s, _, v) = h
        .raw(
            Method::POST,
            "/api/calendar/apple/connect",
            Some(&token),
            Some(json!({"user_id": "jwt-user", "apple_id": "user", "app_password": "secret"}).to_string()),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let body =
        json!({"user_id": "jwt-user", "task_data": {"id": 7, "name": "n", "scheduled_time": "2030-01-01"}}).to_string();
    let (s, _, v) = h.raw(Method::POST, "/api/calendar/task-to-calendar", Some(&token), Some(body), &[]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let event = v["event_id"].as_str().unwrap().to_string();
    let other = jwt("someone-else", 600);
    let (s, _, v) = h
        .raw(
            Method::PUT,
            "/api/calendar/update-event",
            Some(&other),
            Some(json!({"user_id": "someone-else", "event_id": event, "task_data": {"name": "pwned"}}).to_string()),
            &[],
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (StatusCode::NOT_FOUND, Some("event_not_found")), "{v}");
    assert!(h.calendar.events("calendar").iter().all(|e| e.title != "pwned"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_broken_calendar_does_not_hide_the_others() {
    let h = Harness::with_engine(config());
    h.connect_apple("partial").await;
    yaml_caldav_connection_with(&h, "partial", "wrong-password").await;
    let (s, v) = h.call(Method::POST, "/api/calendar/calendar-to-tasks", Some(json!({"user_id": "partial"}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["success"], true);
    assert_eq!(v["warnings"][0]["calendar_type"], "caldav", "{v}");
    assert_eq!(v["warnings"][0]["code"], "invalid_credentials", "{v}");
    assert!(!v.to_string().contains("wrong-password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_another_account_replaces_the_credentials() {
    let h = Harness::with_engine(config());
    h.connect_apple("switch").await;
    let name = connection_name("switch", ProviderKind::Apple);
    let first = h.objects.get_connection(NS, &name).await.unwrap().unwrap();
    h.calendar.add_account("other@icloud.com", "pw-2");
    let (s, v) = h
        .call(
            Method::POST,
            "/api/calendar/apple/connect",
            Some(json!({"user_id": "switch", "apple_id": "other@icloud.com", "app_password": "pw-2"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let second = h.objects.get_connection(NS, &name).await.unwrap().unwrap();
    assert_ne!(first.spec.credentials_secret_ref, second.spec.credentials_secret_ref);
    assert!(second.metadata.generation > first.metadata.generation);
    assert!(!h.objects.has_secret(NS, &first.spec.credentials_secret_ref.name));
    assert!(h.objects.has_secret(NS, &second.spec.credentials_secret_ref.name));
    let all = h.objects.list_connections(Some(NS), &Default::default()).await.unwrap();
    assert_eq!(all.len(), 1, "one connection per provider");
}
