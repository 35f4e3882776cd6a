//! `record_outcome` on PostgreSQL: one reconcile's connection-history entries, Events and
//! TaskSync status in ONE transaction (one durable commit instead of one per row).
//!
//! Semantics (the `Objects::record_outcome` contract): a connection that is gone skips its
//! entry; an Event that cannot be stored is rolled back alone (a savepoint) and logged; a
//! TaskSync that is gone skips the status (`Recorded::Gone`) while history and Events still
//! land. Any other error rolls the whole transaction back. Locks: the TaskSync's key first,
//! then the connections' in name order, each taken as its object is read, so two units never
//! wait on each other in a cycle (every other write takes one key lock). Keys are broadcast
//! after the COMMIT (`PgObjects::commit`).
//!
//! Owns: that transaction. Must not touch: the status semantics (`objects::status_in`).

use super::objects::{EVENTS_KEPT, event_fields};
use super::{PgObjects, Write, rows};
use crate::engine::{ObjectEvent, ObjectKey, ReconcileRecord, Recorded, StoreError};
use crate::resources::history::{self, CONNECTION_HISTORY_LIMIT};
use crate::resources::{CalendarConnection, CalendarConnectionStatus, HistoryEntry, TaskSync};

impl PgObjects {
    pub(super) async fn record_unit(&self, key: &ObjectKey, record: &ReconcileRecord) -> Result<Recorded, StoreError> {
        if record.is_empty() {
            return Ok(Recorded::Stored);
        }
        let tap = self.inner.tap.get().cloned();
        let mut w = self.begin().await?;
        // Each read below takes its key's lock (`rows::lock_load`), in one fixed order: the
        // TaskSync's, then the connections' by name.
        let task = match &record.status {
            Some(_) => Some(rows::lock_load::<TaskSync>(&mut w.tx, &key.namespace, &key.name).await?),
            None => None,
        };
        // Stable: a connection's entries keep their order.
        let mut entries: Vec<&(String, HistoryEntry)> = record.history.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut recorded = (Recorded::Stored, 0);
        for (connection, entry) in entries {
            let push = |obj: &mut CalendarConnection| {
                let status = obj.status.get_or_insert_with(CalendarConnectionStatus::default);
                history::push(&mut status.history, entry.clone(), CONNECTION_HISTORY_LIMIT);
            };
            match self.status_in(&mut w, tap.as_ref(), &key.namespace, connection, push).await {
                Ok((_, n)) => recorded.1 += n,
                Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        for event in &record.events {
            event_in(&mut w, key, event).await?;
        }
        if let (Some(status), Some((rv, found))) = (&record.status, task) {
            match found {
                Some(obj) => {
                    let set = |obj: &mut TaskSync| obj.status = Some(status.clone());
                    recorded.1 += self.status_save(&mut w, tap.as_ref(), obj, rv, set).await?.1;
                }
                None => recorded.0 = Recorded::Gone,
            }
        }
        self.commit(w).await?;
        if let Some(tap) = tap.filter(|_| recorded.1 > 0) {
            tap.recorded(recorded.1);
        }
        Ok(recorded.0)
    }
}

/// Insert one Event in its own subtransaction (`rows::insert_event_or_error`): a failure is
/// rolled back alone and logged (Events are best effort).
async fn event_in(w: &mut Write, key: &ObjectKey, event: &ObjectEvent) -> Result<(), StoreError> {
    if let Some(error) = rows::insert_event_or_error(&mut w.tx, key, event_fields(event), EVENTS_KEPT).await? {
        tracing::warn!(object = %key, reason = %event.reason, error = %error, "could not publish event");
    }
    Ok(())
}
