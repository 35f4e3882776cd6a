//! Moves of a task's event between calendars and connections: exactly one copy in the end,
//! whatever crashes in the middle.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::memory::StoreOp;
use super::tests::{World, reason, spec};
use super::*;
use crate::providers::ProviderError;
use crate::providers::memory::Op;
use crate::resources::*;

const NS: &str = "default";

/// The world's `conn` plus a second connection `conn2` of the same user whose default calendar
/// is `work`, and a third calendar `work` both can write.
async fn two_connections() -> World {
    let w = World::new();
    w.calendar.add_calendar("work", true);
    w.connection().await;
    let conn2 = CalendarConnection {
        metadata: ObjectMeta { name: Some("conn2".into()), namespace: Some(NS.into()), ..Default::default() },
        spec: CalendarConnectionSpec {
            user_id: "user123".into(),
            provider: ProviderKind::Outlook,
            credentials_secret_ref: SecretRef { name: "creds".into(), key: None },
            calendar_id: Some("work".into()),
            server_url: None,
            category_calendars: BTreeMap::new(),
            user_default: false,
            import: None,
            active: true,
        },
        status: None,
    };
    w.objects.apply_connection(&conn2).await.unwrap();
    w.engine.reconcile_connection(NS, "conn2").await.unwrap();
    w
}

fn where_is(w: &World, uid: &str) -> Vec<String> {
    let mut at: Vec<String> = ["calendar", "work"]
        .iter()
        .filter(|c| w.calendar.events(c).iter().any(|e| e.id == event_key(uid)))
        .map(|c| c.to_string())
        .collect();
    at.sort();
    at
}

fn event_key(uid: &str) -> String {
    crate::providers::event_key(uid)
}

async fn synced_task(w: &World) -> String {
    let uid = w.task("t1", spec("task1")).await.metadata.uid.unwrap();
    w.reconcile("t1").await;
    w.reconcile("t1").await;
    assert_eq!(where_is(w, &uid), ["calendar"]);
    uid
}

#[tokio::test]
async fn a_new_connection_ref_moves_the_event_once_and_both_histories_say_so() {
    let w = two_connections().await;
    let uid = synced_task(&w).await;
    w.set_spec("t1", |s| s.connection_ref.name = "conn2".into()).await;
    w.reconcile("t1").await;
    assert_eq!(where_is(&w, &uid), ["work"], "created in the new calendar, deleted from the old");
    let st = w.status("t1").await;
    assert_eq!(st.connection.as_deref(), Some("conn2"));
    assert_eq!(st.calendar_id.as_deref(), Some("work"));
    assert!(st.moving_from.is_none());
    assert_eq!(reason(&st, "Ready"), "True/InSync");
    let old = w.objects.get_connection(NS, "conn").await.unwrap().unwrap().status.unwrap();
    let last = old.history.last().unwrap();
    assert_eq!((last.operation, last.status), (Operation::Delete, SyncStatus::Success));
    assert!(last.note.as_deref().unwrap_or_default().contains("moved"), "{last:?}");
    let new = w.objects.get_connection(NS, "conn2").await.unwrap().unwrap().status.unwrap();
    assert_eq!(new.history.last().map(|e| e.operation), Some(Operation::Create));
    // Settled: another reconcile calls nothing.
    w.calendar.clear_calls();
    w.reconcile("t1").await;
    assert!(w.calendar.calls().is_empty(), "{:?}", w.calendar.calls());
}

#[tokio::test]
async fn a_category_routed_to_another_calendar_moves_the_event_within_the_connection() {
    let w = two_connections().await;
    let uid = synced_task(&w).await;
    let mut conn = w.objects.get_connection(NS, "conn").await.unwrap().unwrap();
    conn.spec.category_calendars.insert("Work".into(), "work".into());
    conn.metadata.resource_version = None;
    w.objects.apply_connection(&conn).await.unwrap();
    w.set_spec("t1", |s| s.category = Some("Work".into())).await;
    w.reconcile("t1").await;
    assert_eq!(where_is(&w, &uid), ["work"]);
    assert_eq!(w.status("t1").await.connection.as_deref(), Some("conn"));
}

#[tokio::test]
async fn a_crash_before_the_copy_is_recorded_adopts_it() {
    let w = two_connections().await;
    let uid = synced_task(&w).await;
    w.set_spec("t1", |s| s.connection_ref.name = "conn2".into()).await;
    w.objects.inject(StoreOp::PatchStatus, crate::engine::StoreError::Unavailable("crash".into()));
    assert!(w.engine.reconcile_task_sync(NS, "t1").await.is_err());
    assert_eq!(where_is(&w, &uid), ["calendar", "work"], "copied, not recorded, old copy kept");
    assert_eq!(w.status("t1").await.calendar_id.as_deref(), Some("calendar"));
    w.reconcile("t1").await;
    assert_eq!(where_is(&w, &uid), ["work"], "the copy was adopted, not made twice");
    assert_eq!(w.calendar.events("work").len(), 1);
}

#[tokio::test]
async fn a_crash_after_the_copy_is_recorded_finishes_the_move_later() {
    let w = two_connections().await;
    let uid = synced_task(&w).await;
    w.set_spec("t1", |s| s.connection_ref.name = "conn2".into()).await;
    w.calendar.inject(Op::Delete, ProviderError::Transient { message: "503".into() });
    w.reconcile("t1").await;
    assert_eq!(where_is(&w, &uid), ["calendar", "work"]);
    let st = w.status("t1").await;
    assert_eq!(st.moving_from.as_ref().map(|m| m.calendar_id.as_str()), Some("calendar"));
    assert_eq!(st.calendar_id.as_deref(), Some("work"));
    w.advance(600);
    w.reconcile("t1").await;
    assert_eq!(where_is(&w, &uid), ["work"]);
    assert!(w.status("t1").await.moving_from.is_none());
}

#[tokio::test]
async fn deleting_mid_move_deletes_both_copies() {
    let w = two_connections().await;
    let uid = synced_task(&w).await;
    w.set_spec("t1", |s| s.connection_ref.name = "conn2".into()).await;
    w.calendar.inject(Op::Delete, ProviderError::Transient { message: "503".into() });
    w.reconcile("t1").await;
    w.objects.delete(&ObjectKey::task_sync(NS, "t1")).await.unwrap();
    w.advance(600);
    w.reconcile("t1").await;
    w.reconcile("t1").await;
    assert!(where_is(&w, &uid).is_empty());
    assert!(w.get("t1").await.is_none());
}

#[tokio::test]
async fn deleting_before_the_move_deletes_where_the_event_is() {
    let w = two_connections().await;
    let uid = synced_task(&w).await;
    w.set_spec("t1", |s| s.connection_ref.name = "conn2".into()).await;
    w.objects.delete(&ObjectKey::task_sync(NS, "t1")).await.unwrap();
    w.reconcile("t1").await;
    assert!(where_is(&w, &uid).is_empty());
    assert!(w.get("t1").await.is_none());
}

#[tokio::test]
async fn an_old_connection_that_was_disconnected_leaves_its_copy_with_a_warning() {
    let w = two_connections().await;
    let uid = synced_task(&w).await;
    w.set_spec("t1", |s| s.connection_ref.name = "conn2".into()).await;
    w.calendar.inject(Op::Delete, ProviderError::Transient { message: "503".into() });
    w.reconcile("t1").await;
    let mut old = w.objects.get_connection(NS, "conn").await.unwrap().unwrap();
    old.spec.active = false;
    old.metadata.resource_version = None;
    w.objects.apply_connection(&old).await.unwrap();
    w.advance(600);
    w.reconcile("t1").await;
    let st = w.status("t1").await;
    assert!(st.moving_from.is_none());
    assert_eq!(where_is(&w, &uid), ["calendar", "work"], "nobody may write to a disconnected calendar");
    assert_eq!(st.history.last().map(|e| e.status), Some(SyncStatus::Failed));
    let events = w.objects.events();
    assert!(events.iter().any(|(_, e)| e.reason == "MoveIncomplete"), "a Warning says what was left where");
}
