//! `PgObjects::record_outcome`: one reconcile's history entry, Event and status as one
//! transaction (the `Objects` contract part runs in `objects_contract.rs`).

use std::sync::Arc;

use calsync::engine::{EventType, ObjectEvent, ObjectKey, Objects, ReconcileRecord, Recorded};
use calsync::standalone::pg::PgObjects;

use super::{ENV, TestTap, conn, fresh_db, keyring, task};

/// `record_outcome` is one transaction: the history entry, the Event and the status (with the
/// outbox message it owes) commit together; an Event that cannot be stored is dropped alone; a
/// status that cannot be written (the tap fails) takes the history entry and the Event with it.
#[tokio::test]
async fn a_reconcile_outcome_commits_as_one_transaction() {
    let _env = ENV.lock().await;
    let (url, _) = fresh_db().await;
    let store = PgObjects::open(&url, keyring()).await.unwrap();
    let tap = Arc::new(TestTap::default());
    store.set_status_tap(tap.clone()).unwrap();
    store.apply_connection(&conn("c")).await.unwrap();
    store.apply_task_sync(&task("ts")).await.unwrap();
    let key = ObjectKey::task_sync("default", "ts");
    let record = |e: &str| ReconcileRecord {
        status: Some(calsync::resources::TaskSyncStatus { event_id: Some(e.into()), ..Default::default() }),
        history: vec![("c".to_string(), history_entry(e))],
        events: vec![ObjectEvent {
            type_: EventType::Normal,
            reason: "EventCreated".into(),
            note: format!("calendar event {e} created"),
            action: "Create".into(),
        }],
    };
    let ring = async || store.get_connection("default", "c").await.unwrap().unwrap().status.unwrap().history.len();
    let event_id = async || store.get_task_sync("default", "ts").await.unwrap().unwrap().status.unwrap().event_id;
    assert_eq!(store.record_outcome(&key, &record("e1")).await.unwrap(), Recorded::Stored);
    assert_eq!((event_id().await.as_deref(), ring().await), (Some("e1"), 1));
    assert_eq!(store.events(Some(&key), 10).await.unwrap().len(), 1);
    assert_eq!(store.outbox_depth().await.unwrap().0, 1, "the status' message committed with it");

    store.raw_execute("ALTER TABLE events RENAME TO events_gone").await.unwrap();
    assert_eq!(store.record_outcome(&key, &record("e2")).await.unwrap(), Recorded::Stored);
    assert_eq!((event_id().await.as_deref(), ring().await), (Some("e2"), 2), "a lost Event costs nothing else");
    store.raw_execute("ALTER TABLE events_gone RENAME TO events").await.unwrap();

    tap.panic.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(store.record_outcome(&key, &record("e3")).await.is_err());
    assert_eq!((event_id().await.as_deref(), ring().await), (Some("e2"), 2), "nothing of a failed unit stays");
    assert_eq!(store.events(Some(&key), 10).await.unwrap().len(), 1);
    assert_eq!(store.outbox_depth().await.unwrap().0, 2);
}

fn history_entry(event_id: &str) -> calsync::resources::HistoryEntry {
    calsync::resources::HistoryEntry {
        id: 0,
        time: chrono::Utc::now(),
        task_id: Some("ts".into()),
        event_id: Some(event_id.into()),
        direction: calsync::resources::Direction::ToCalendar,
        operation: calsync::resources::Operation::Create,
        status: calsync::resources::SyncStatus::Success,
        error: None,
        note: None,
    }
}
