//! The `record_outcome` contract: one reconcile's status, connection history and Events as one
//! unit, run on every store by the parent's `contract!`.
//!
//! Owns: that test. Helpers (`conn`, `task`, `entry`, `Harness`) are the parent's.

use super::*;

/// `record_outcome`: status, connection history and Events of one reconcile as one unit. A
/// TaskSync that is gone answers `Gone` (its history still lands); a connection that is gone
/// never fails the status; concurrent units on one connection keep every entry.
pub(super) async fn reconcile_outcome_as_one_unit(h: &dyn Harness) {
    let o = h.objects();
    o.apply_connection(&conn("c")).await.unwrap();
    let key = |n: &str| ObjectKey::task_sync("default", n);
    let record = |event_id: &str, connection: &str| ReconcileRecord {
        status: Some(TaskSyncStatus { event_id: Some(event_id.into()), ..Default::default() }),
        history: vec![(connection.to_string(), entry())],
        events: vec![ObjectEvent {
            type_: EventType::Normal,
            reason: "EventCreated".into(),
            note: format!("calendar event {event_id} created"),
            action: "Create".into(),
        }],
    };
    let ring = async || o.get_connection("default", "c").await.unwrap().unwrap().status.unwrap_or_default().history;
    o.apply_task_sync(&task("default", "t", &[])).await.unwrap();
    let mut rx = o.subscribe();
    assert_eq!(o.record_outcome(&key("t"), &record("ev-1", "c")).await.unwrap(), Recorded::Stored);
    let t = o.get_task_sync("default", "t").await.unwrap().unwrap();
    assert_eq!(t.status.and_then(|s| s.event_id).as_deref(), Some("ev-1"));
    assert_eq!(ring().await.len(), 1);
    // Notified (the TaskSync after the connection) once written.
    let next = async |rx: &mut tokio::sync::broadcast::Receiver<ObjectKey>| {
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap()
    };
    assert_eq!(next(&mut rx).await, ObjectKey::connection("default", "c"));
    assert_eq!(next(&mut rx).await, key("t"));

    assert_eq!(o.record_outcome(&key("gone"), &record("ev-2", "c")).await.unwrap(), Recorded::Gone);
    assert!(o.get_task_sync("default", "gone").await.unwrap().is_none());
    assert_eq!(ring().await.len(), 2, "the calendar write is still in the user's history");

    assert_eq!(o.record_outcome(&key("t"), &record("ev-3", "nope")).await.unwrap(), Recorded::Stored);
    let t = o.get_task_sync("default", "t").await.unwrap().unwrap();
    assert_eq!(t.status.and_then(|s| s.event_id).as_deref(), Some("ev-3"));

    // No status: history and Event only.
    let only = ReconcileRecord { status: None, ..record("ev-4", "c") };
    assert_eq!(o.record_outcome(&key("t"), &only).await.unwrap(), Recorded::Stored);
    let t = o.get_task_sync("default", "t").await.unwrap().unwrap();
    assert_eq!(t.status.and_then(|s| s.event_id).as_deref(), Some("ev-3"));
    assert_eq!(ring().await.len(), 3);

    // Several entries for several connections, listed out of name order: each lands once.
    o.apply_connection(&conn("b")).await.unwrap();
    let several =
        ReconcileRecord { history: vec![("c".into(), entry()), ("b".into(), entry()), ("c".into(), entry())], ..only };
    assert_eq!(o.record_outcome(&key("t"), &several).await.unwrap(), Recorded::Stored);
    assert_eq!(ring().await.len(), 5);
    let b = o.get_connection("default", "b").await.unwrap().unwrap();
    assert_eq!(b.status.unwrap_or_default().history.len(), 1);

    // Four at once: Kubernetes appends retry a conflict 5 times (each lost round is another
    // writer's win), so more writers than that may fail there by design.
    let mut writers = Vec::new();
    for i in 0..4 {
        let (o, name) = (o.clone(), format!("p{i}"));
        o.apply_task_sync(&task("default", &name, &[])).await.unwrap();
        let r = record(&format!("ev-p{i}"), "c");
        writers.push(tokio::spawn(async move { o.record_outcome(&ObjectKey::task_sync("default", &name), &r).await }));
    }
    for w in writers {
        assert_eq!(w.await.unwrap().unwrap(), Recorded::Stored);
    }
    let ids: Vec<u64> = ring().await.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=9).collect::<Vec<u64>>(), "every entry, each its own id");
}
