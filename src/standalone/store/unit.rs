//! `record_outcome` on SQLite: one reconcile's connection-history entries, Events and TaskSync
//! status as ONE write of the group commit (one savepoint), so the reconcile waits for one
//! durable COMMIT, shared with whatever else queued meanwhile, instead of one per row.
//!
//! Semantics (the `Objects::record_outcome` contract): a connection that is gone skips its
//! entry; an Event that cannot be stored is rolled back alone (a savepoint of its own) and
//! logged; a TaskSync that is gone skips the status (`Recorded::Gone`) while history and Events
//! still land, as with the separate calls. Any other error rolls the whole unit back: none of
//! it is stored, and the caller retries. Notifications (connection, TaskSync) and the cache
//! follow the COMMIT, like every write of the writer thread.
//!
//! Owns: that unit. Must not touch: the writer thread (`commit`) or the status semantics
//! (`access::status_in`).

use rusqlite::Transaction;

use super::access::status_in;
use super::{EVENTS_KEPT, SqliteObjects, event_fields, rows};
use crate::engine::{ObjectKey, ReconcileRecord, Recorded, StoreError};
use crate::resources::history::{self, CONNECTION_HISTORY_LIMIT};
use crate::resources::{CalendarConnection, CalendarConnectionStatus, TaskSync};

impl SqliteObjects {
    pub(super) async fn record_unit(&self, key: &ObjectKey, record: &ReconcileRecord) -> Result<Recorded, StoreError> {
        if record.is_empty() {
            return Ok(Recorded::Stored);
        }
        let (key, record) = (key.clone(), record.clone());
        let tap = self.inner.tap.get().cloned();
        let tap_in = tap.clone();
        let (recorded, messages) = self
            .tx(move |tx, origin, fx| {
                // App-webhook messages the writes owe (the tap decides; they commit with them).
                let mut owed = 0;
                for (connection, entry) in record.history {
                    let conn_key = ObjectKey::connection(&key.namespace, &connection);
                    if !rows::exists(tx, &conn_key)? {
                        continue;
                    }
                    let (_, n) = status_in::<CalendarConnection>(
                        tx,
                        origin,
                        fx,
                        tap_in.as_ref(),
                        &key.namespace,
                        &connection,
                        |obj| {
                            let status = obj.status.get_or_insert_with(CalendarConnectionStatus::default);
                            history::push(&mut status.history, entry, CONNECTION_HISTORY_LIMIT);
                        },
                    )?;
                    owed += n;
                }
                for event in &record.events {
                    event_in(tx, &key, event)?;
                }
                let Some(status) = record.status else { return Ok((Recorded::Stored, owed)) };
                if !rows::exists(tx, &key)? {
                    return Ok((Recorded::Gone, owed));
                }
                let (_, n) =
                    status_in::<TaskSync>(tx, origin, fx, tap_in.as_ref(), &key.namespace, &key.name, |obj| {
                        obj.status = Some(status)
                    })?;
                Ok((Recorded::Stored, owed + n))
            })
            .await?;
        if let Some(tap) = tap.filter(|_| messages > 0) {
            tap.recorded(messages);
        }
        Ok(recorded)
    }
}

/// Insert one Event in a savepoint of its own: a failure is logged and rolled back alone, so it
/// never costs the status (Events are best effort). Fails only when SQLite rolled back the
/// whole transaction (disk full, I/O): then nothing of the unit is stored anyway.
fn event_in(tx: &Transaction, key: &ObjectKey, event: &crate::engine::ObjectEvent) -> Result<(), StoreError> {
    rows::exec(tx, "SAVEPOINT ev", []).map_err(rows::db_err)?;
    match rows::insert_event(tx, key, event_fields(event), EVENTS_KEPT) {
        Ok(()) => rows::exec(tx, "RELEASE ev", []).map(|_| ()).map_err(rows::db_err),
        Err(e) if tx.is_autocommit() => Err(e),
        Err(e) => {
            tracing::warn!(object = %key, reason = %event.reason, error = %e, "could not publish event");
            tx.execute_batch("ROLLBACK TO ev; RELEASE ev").map_err(rows::db_err)
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::broadcast::error::TryRecvError;

    use crate::credentials::envelope::{Key, Keyring};
    use crate::engine::{EventType, ObjectEvent, ObjectKey, Objects, ReconcileRecord, Recorded};
    use crate::resources::{
        CalendarConnection, Direction, HistoryEntry, Operation, SyncStatus, TaskSync, TaskSyncStatus,
    };
    use crate::standalone::store::SqliteObjects;

    async fn open(dir: &tempfile::TempDir) -> (SqliteObjects, String, Key) {
        let url = format!("sqlite://{}", dir.path().join("u.db").display());
        let key = Key::generate().0;
        (SqliteObjects::open(&url, Keyring::new(key.clone())).await.unwrap(), url, key)
    }

    async fn seed(store: &SqliteObjects, connection: bool, task: bool) {
        if connection {
            let c: CalendarConnection = serde_json::from_value(serde_json::json!({
                "apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "CalendarConnection",
                "metadata": {"name": "c", "namespace": "default"},
                "spec": {"userId": "u", "provider": "caldav", "credentialsSecretRef": {"name": "s"}}
            }))
            .unwrap();
            store.apply_connection(&c).await.unwrap();
        }
        if task {
            let t: TaskSync = serde_json::from_value(serde_json::json!({
                "apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "TaskSync",
                "metadata": {"name": "t", "namespace": "default"},
                "spec": {"connectionRef": {"name": "c"}, "taskId": "t", "title": "T", "start": "2026-03-05T14:00:00Z"}
            }))
            .unwrap();
            store.apply_task_sync(&t).await.unwrap();
        }
    }

    fn outcome(event_id: &str) -> ReconcileRecord {
        let entry = HistoryEntry {
            id: 0,
            time: chrono::Utc::now(),
            task_id: Some("t".into()),
            event_id: Some(event_id.into()),
            direction: Direction::ToCalendar,
            operation: Operation::Create,
            status: SyncStatus::Success,
            error: None,
            note: None,
        };
        let event = ObjectEvent {
            type_: EventType::Normal,
            reason: "EventCreated".into(),
            note: format!("calendar event {event_id} created"),
            action: "Create".into(),
        };
        let status = TaskSyncStatus { event_id: Some(event_id.into()), ..Default::default() };
        ReconcileRecord { status: Some(status), history: vec![("c".into(), entry)], events: vec![event] }
    }

    fn key() -> ObjectKey {
        ObjectKey::task_sync("default", "t")
    }

    async fn history_of(store: &SqliteObjects) -> Vec<HistoryEntry> {
        let c = store.get_connection("default", "c").await.unwrap().unwrap();
        c.status.map(|s| s.history.to_vec()).unwrap_or_default()
    }

    async fn events_of(store: &SqliteObjects) -> usize {
        store.events(Some(&key()), 100).await.unwrap().len()
    }

    /// Status, connection history and Event are one write (one savepoint of one commit): the
    /// notifications of both objects are out and the cache holds the new status when the call
    /// returns, and a fresh process reads all three.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outcome_is_one_durable_write() {
        let dir = tempfile::tempdir().unwrap();
        let (store, url, k) = open(&dir).await;
        seed(&store, true, true).await;
        let mut changes = store.subscribe();
        let before = store.stats().writes;
        assert_eq!(store.record_outcome(&key(), &outcome("ev1")).await.unwrap(), Recorded::Stored);
        assert_eq!(store.stats().writes, before + 1, "one write of the group commit");
        let mut notified = Vec::new();
        loop {
            match changes.try_recv() {
                Ok(k) => notified.push(k),
                Err(TryRecvError::Empty) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(notified, vec![ObjectKey::connection("default", "c"), key()]);
        let t = store.get_task_sync("default", "t").await.unwrap().unwrap();
        assert_eq!(t.status.and_then(|s| s.event_id).as_deref(), Some("ev1"), "the cache has the status");
        drop(store);
        let reopened = SqliteObjects::open(&url, Keyring::new(k)).await.unwrap();
        let t = reopened.get_task_sync("default", "t").await.unwrap().unwrap();
        assert_eq!(t.status.and_then(|s| s.event_id).as_deref(), Some("ev1"));
        let h = history_of(&reopened).await;
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].event_id.as_deref(), Some("ev1"));
        assert_eq!(h[0].id, 1, "the ring assigned the id");
        assert_eq!(events_of(&reopened).await, 1);
    }

    /// Writes patch the version their row holds, never this process's cached copy: another
    /// process changed both objects just before this one's cache could hear of it (its
    /// change-log poll), and the outcome keeps that process's changes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outcome_patches_the_row_not_a_stale_cached_copy() {
        let dir = tempfile::tempdir().unwrap();
        let (a, url, k) = open(&dir).await;
        seed(&a, true, true).await;
        assert_eq!(a.record_outcome(&key(), &outcome("ev1")).await.unwrap(), Recorded::Stored);
        let b = SqliteObjects::open(&url, Keyring::new(k.clone())).await.unwrap();
        let mut c = b.get_connection("default", "c").await.unwrap().unwrap();
        c.spec.user_id = "changed-by-b".into();
        b.apply_connection(&c).await.unwrap();
        let mut t = b.get_task_sync("default", "t").await.unwrap().unwrap();
        t.spec.title = "changed by b".into();
        b.apply_task_sync(&t).await.unwrap();
        // At once, before `a`'s change-log poll (200 ms) drops its cached copies.
        assert_eq!(a.record_outcome(&key(), &outcome("ev2")).await.unwrap(), Recorded::Stored);
        let fresh = SqliteObjects::open(&url, Keyring::new(k.clone())).await.unwrap();
        let c = fresh.get_connection("default", "c").await.unwrap().unwrap();
        assert_eq!(c.spec.user_id, "changed-by-b");
        assert_eq!(history_of(&fresh).await.len(), 2, "both entries, on b's version");
        let t = fresh.get_task_sync("default", "t").await.unwrap().unwrap();
        assert_eq!(t.spec.title, "changed by b");
        assert_eq!(t.status.and_then(|s| s.event_id).as_deref(), Some("ev2"));
        // And the next one builds on that.
        assert_eq!(a.record_outcome(&key(), &outcome("ev3")).await.unwrap(), Recorded::Stored);
        drop(fresh);
        let fresh = SqliteObjects::open(&url, Keyring::new(k)).await.unwrap();
        let t = fresh.get_task_sync("default", "t").await.unwrap().unwrap();
        assert_eq!((t.spec.title.as_str(), t.status.and_then(|s| s.event_id)), ("changed by b", Some("ev3".into())));
        assert_eq!(history_of(&fresh).await.len(), 3);
    }

    /// A TaskSync deleted meanwhile: no status, `Gone`; the calendar write still shows in the
    /// connection's history and the Events. A connection that is gone never fails the status.
    #[tokio::test]
    async fn a_gone_object_skips_only_its_own_part() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, _) = open(&dir).await;
        seed(&store, true, false).await;
        assert_eq!(store.record_outcome(&key(), &outcome("ev1")).await.unwrap(), Recorded::Gone);
        assert!(store.get_task_sync("default", "t").await.unwrap().is_none());
        assert_eq!(history_of(&store).await.len(), 1);
        assert_eq!(events_of(&store).await, 1);

        let dir = tempfile::tempdir().unwrap();
        let (store, _, _) = open(&dir).await;
        seed(&store, false, true).await;
        assert_eq!(store.record_outcome(&key(), &outcome("ev2")).await.unwrap(), Recorded::Stored);
        let t = store.get_task_sync("default", "t").await.unwrap().unwrap();
        assert_eq!(t.status.and_then(|s| s.event_id).as_deref(), Some("ev2"));
        assert!(store.get_connection("default", "c").await.unwrap().is_none());
    }

    /// An Event the store cannot keep is logged and dropped alone; a status write that fails
    /// takes the whole unit with it (no history entry without its status).
    #[tokio::test]
    async fn an_event_failure_is_alone_a_status_failure_is_all() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, _) = open(&dir).await;
        seed(&store, true, true).await;
        store.raw_execute("ALTER TABLE events RENAME TO events_gone").await.unwrap();
        assert_eq!(store.record_outcome(&key(), &outcome("ev1")).await.unwrap(), Recorded::Stored);
        let t = store.get_task_sync("default", "t").await.unwrap().unwrap();
        assert_eq!(t.status.and_then(|s| s.event_id).as_deref(), Some("ev1"));
        assert_eq!(history_of(&store).await.len(), 1);
        store.raw_execute("ALTER TABLE events_gone RENAME TO events").await.unwrap();

        store
            .raw_execute(
                "CREATE TRIGGER refuse BEFORE UPDATE ON objects WHEN NEW.kind = 'TaskSync'
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
            )
            .await
            .unwrap();
        store.record_outcome(&key(), &outcome("ev2")).await.unwrap_err();
        let t = store.get_task_sync("default", "t").await.unwrap().unwrap();
        assert_eq!(t.status.and_then(|s| s.event_id).as_deref(), Some("ev1"));
        assert_eq!(history_of(&store).await.len(), 1, "the entry went with its failed status");
        assert_eq!(events_of(&store).await, 0, "so did the Event");
    }
}
