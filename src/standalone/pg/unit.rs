//! `record_outcome` on PostgreSQL: one reconcile's connection-history entries, Events and
//! TaskSync status in ONE transaction (one durable commit instead of one per row).
//!
//! Semantics (the `Objects::record_outcome` contract): a connection that is gone skips its
//! entry; an Event that cannot be stored is rolled back alone (a savepoint) and logged; a
//! TaskSync that is gone skips the status (`Recorded::Gone`) while history and Events still
//! land. Any other error rolls the whole transaction back. Locks: the TaskSync's key first,
//! then the connections' in name order, all taken and their objects read in one round trip
//! (`rows::lock_load_all`), so two units never wait on each other in a cycle (every other write
//! takes one key lock). Keys are broadcast
//! after the COMMIT (`PgObjects::commit`).
//!
//! Owns: that transaction. Must not touch: the status semantics (`objects::status_in`).

use super::objects::{EVENTS_KEPT, event_fields};
use super::{PgObjects, Write, rows};
use crate::engine::{Kind, ObjectEvent, ObjectKey, ReconcileRecord, Recorded, StoreError};
use crate::resources::history::{self, CONNECTION_HISTORY_LIMIT};
use crate::resources::{CalendarConnection, CalendarConnectionStatus, HistoryEntry, TaskSync};

impl PgObjects {
    pub(super) async fn record_unit(&self, key: &ObjectKey, record: &ReconcileRecord) -> Result<Recorded, StoreError> {
        if record.is_empty() {
            return Ok(Recorded::Stored);
        }
        let tap = self.inner.tap.get().cloned();
        let mut w = self.begin().await?;
        // Every object this unit writes is locked and read in one round trip, in one fixed
        // order: the TaskSync, then the connections by name.
        let mut connections: Vec<&str> = record.history.iter().map(|(c, _)| c.as_str()).collect();
        connections.sort_unstable();
        connections.dedup();
        let mut keys: Vec<(Kind, &str)> = Vec::with_capacity(connections.len() + 1);
        if record.status.is_some() {
            keys.push((Kind::TaskSync, key.name.as_str()));
        }
        keys.extend(connections.iter().map(|c| (Kind::CalendarConnection, *c)));
        let mut loaded = rows::lock_load_all(&mut w.tx, &key.namespace, &keys).await?.into_iter();
        let task = match &record.status {
            Some(_) => loaded.next(),
            None => None,
        };
        let mut recorded = (Recorded::Stored, 0);
        for (connection, (rv, body)) in connections.into_iter().zip(loaded) {
            // A connection that is gone skips its entries.
            let Some(body) = body else { continue };
            let obj: CalendarConnection = rows::decode(&body, &key.namespace, connection)?;
            let mut entries = record.history.iter().filter(|(c, _)| c == connection).map(|(_, e)| e);
            let push = |entry: &HistoryEntry| {
                let entry = entry.clone();
                move |obj: &mut CalendarConnection| {
                    let status = obj.status.get_or_insert_with(CalendarConnectionStatus::default);
                    history::push(&mut status.history, entry, CONNECTION_HISTORY_LIMIT);
                }
            };
            if let Some(first) = entries.next() {
                recorded.1 += self.status_save(&mut w, tap.as_ref(), obj, rv, push(first)).await?.1;
            }
            // Seldom more than one: each further entry is its own write (its own webhook
            // message), re-read in this transaction.
            for entry in entries {
                recorded.1 += self.status_in(&mut w, tap.as_ref(), &key.namespace, connection, push(entry)).await?.1;
            }
        }
        for event in &record.events {
            event_in(&mut w, key, event).await?;
        }
        if let (Some(status), Some((rv, found))) = (&record.status, task) {
            match found {
                Some(body) => {
                    let obj: TaskSync = rows::decode(&body, &key.namespace, &key.name)?;
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
