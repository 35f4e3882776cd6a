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
                    debug_assert_eq!(n, 0, "a history entry owes no app-webhook message");
                }
                for event in &record.events {
                    event_in(tx, &key, event)?;
                }
                let Some(status) = record.status else { return Ok((Recorded::Stored, 0)) };
                if !rows::exists(tx, &key)? {
                    return Ok((Recorded::Gone, 0));
                }
                let (_, n) = status_in::<TaskSync>(tx, origin, fx, tap_in.as_ref(), &key.namespace, &key.name, |obj| {
                    obj.status = Some(status)
                })?;
                Ok((Recorded::Stored, n))
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
    tx.execute_batch("SAVEPOINT ev").map_err(rows::db_err)?;
    match rows::insert_event(tx, key, event_fields(event), EVENTS_KEPT) {
        Ok(()) => tx.execute_batch("RELEASE ev").map_err(rows::db_err),
        Err(e) if tx.is_autocommit() => Err(e),
        Err(e) => {
            tracing::warn!(object = %key, reason = %event.reason, error = %e, "could not publish event");
            tx.execute_batch("ROLLBACK TO ev; RELEASE ev").map_err(rows::db_err)
        }
    }
}
