//! `record_outcome` on PostgreSQL: one reconcile's connection-history entries, Events and
//! TaskSync status in ONE transaction (one durable commit instead of one per row).
//!
//! Semantics (the `Objects::record_outcome` contract): a connection that is gone skips its
//! entries; an Event that cannot be stored is rolled back alone (a subtransaction) and logged;
//! a TaskSync that is gone skips the status (`Recorded::Gone`) while history and Events still
//! land. Any other error rolls the whole transaction back. Locks: the TaskSync's key first,
//! then the connections' in name order, all taken and their objects read in one round trip
//! (`rows::lock_load_all`), so two units never wait on each other in a cycle (every other write
//! takes one key lock). The patched objects and the Events are then written in one statement
//! (`rows::save_all`): four round trips per unit with BEGIN and COMMIT. Keys are broadcast
//! after the COMMIT (`PgObjects::commit`), the connections' before the TaskSync's.
//!
//! Owns: that transaction. Must not touch: the status semantics (`objects::status_in`).

use super::objects::{EVENTS_KEPT, event_fields};
use super::{PgObjects, outbox, rows};
use crate::engine::{Kind, ObjectKey, ReconcileRecord, Recorded, StoreError};
use crate::resources::history::{self, CONNECTION_HISTORY_LIMIT};
use crate::resources::{CalendarConnection, CalendarConnectionStatus, TaskSync};

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
        let mut recorded = Recorded::Stored;
        // Patched in memory here, then saved with the Events in one statement.
        let mut saves = Vec::with_capacity(keys.len());
        let mut messages = Vec::new();
        let mut connection_objects = Vec::with_capacity(connections.len());
        for (connection, (rv, body)) in connections.into_iter().zip(loaded) {
            // A connection that is gone skips its entries.
            let Some(body) = body else { continue };
            let obj: CalendarConnection = rows::decode(&body, &key.namespace, connection)?;
            let push = |obj: &mut CalendarConnection| {
                let status = obj.status.get_or_insert_with(CalendarConnectionStatus::default);
                for (_, entry) in record.history.iter().filter(|(c, _)| c == connection) {
                    history::push(&mut status.history, entry.clone(), CONNECTION_HISTORY_LIMIT);
                }
            };
            let (obj, owed) = self.status_patch(&mut w, tap.as_ref(), obj, rv, push).await?;
            saves.push(rows::encode(&obj)?);
            messages.extend(owed);
            connection_objects.push(obj);
        }
        let mut task_object = None;
        if let (Some(status), Some((rv, found))) = (&record.status, task) {
            match found {
                Some(body) => {
                    let obj: TaskSync = rows::decode(&body, &key.namespace, &key.name)?;
                    let set = |obj: &mut TaskSync| obj.status = Some(status.clone());
                    let (obj, owed) = self.status_patch(&mut w, tap.as_ref(), obj, rv, set).await?;
                    saves.push(rows::encode(&obj)?);
                    messages.extend(owed);
                    task_object = Some(obj);
                }
                None => recorded = Recorded::Gone,
            }
        }
        let events: Vec<[&str; 4]> = record.events.iter().map(event_fields).collect();
        let failed = rows::save_all(&mut w.tx, &saves, key, &events, EVENTS_KEPT, &self.inner.origin).await?;
        for error in failed {
            // Events are best effort: one that cannot be stored was rolled back alone.
            tracing::warn!(object = %key, error = %error, "could not publish event");
        }
        // The messages the status changes owe commit with them, or none does.
        outbox::insert(&mut w.tx, &messages, chrono::Utc::now().timestamp_millis()).await?;
        for obj in &connection_objects {
            self.saved(&mut w, obj);
        }
        if let Some(obj) = &task_object {
            self.saved(&mut w, obj);
        }
        self.commit(w).await?;
        if let Some(tap) = tap.filter(|_| !messages.is_empty()) {
            tap.recorded(messages.len());
        }
        Ok(recorded)
    }
}
