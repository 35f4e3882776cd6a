//! `record_outcome` on PostgreSQL: one reconcile's connection-history entries, Events and
//! TaskSync status in ONE transaction (one durable commit instead of one per row).
//!
//! Semantics (the `Objects::record_outcome` contract): a connection that is gone skips its
//! entry; an Event that cannot be stored is rolled back alone (a savepoint) and logged; a
//! TaskSync that is gone skips the status (`Recorded::Gone`) while history and Events still
//! land. Any other error rolls the whole transaction back. Locks: the TaskSync's key first,
//! then the connections' in name order, so two units never wait on each other in a cycle (every
//! other write takes one key lock). Keys are broadcast after the COMMIT (`PgObjects::commit`).
//!
//! Owns: that transaction. Must not touch: the status semantics (`objects::status_in`).

use super::objects::{EVENTS_KEPT, event_fields};
use super::{PgObjects, Write, db_err, rows};
use crate::engine::{ObjectEvent, ObjectKey, ReconcileRecord, Recorded, StoreError};
use crate::resources::history::{self, CONNECTION_HISTORY_LIMIT};
use crate::resources::{CalendarConnection, CalendarConnectionStatus, TaskSync};
use crate::standalone::rows::kind_str;

impl PgObjects {
    pub(super) async fn record_unit(&self, key: &ObjectKey, record: &ReconcileRecord) -> Result<Recorded, StoreError> {
        if record.is_empty() {
            return Ok(Recorded::Stored);
        }
        let tap = self.inner.tap.get().cloned();
        let mut w = self.begin().await?;
        let mut connections: Vec<&str> = record.history.iter().map(|(c, _)| c.as_str()).collect();
        connections.sort_unstable();
        connections.dedup();
        let mut locks = Vec::with_capacity(connections.len() + 1);
        if record.status.is_some() {
            locks.push(rows::lock_name(kind_str(key.kind), &key.namespace, &key.name));
        }
        let kind = kind_str(crate::engine::Kind::CalendarConnection);
        locks.extend(connections.into_iter().map(|c| rows::lock_name(kind, &key.namespace, c)));
        rows::lock_keys(&mut w.tx, &locks).await?;
        let mut recorded = (Recorded::Stored, 0);
        for (connection, entry) in &record.history {
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
        if let Some(status) = &record.status {
            let set = |obj: &mut TaskSync| obj.status = Some(status.clone());
            match self.status_in(&mut w, tap.as_ref(), &key.namespace, &key.name, set).await {
                Ok((_, n)) => recorded.1 += n,
                Err(StoreError::NotFound(_)) => recorded.0 = Recorded::Gone,
                Err(e) => return Err(e),
            }
        }
        self.commit(w).await?;
        if let Some(tap) = tap.filter(|_| recorded.1 > 0) {
            tap.recorded(recorded.1);
        }
        Ok(recorded.0)
    }
}

/// Insert one Event under a savepoint: a failure is rolled back alone and logged (Events are
/// best effort); PostgreSQL would otherwise refuse every later statement of the transaction.
async fn event_in(w: &mut Write, key: &ObjectKey, event: &ObjectEvent) -> Result<(), StoreError> {
    sqlx::query("SAVEPOINT ev").execute(&mut *w.tx).await.map_err(db_err)?;
    match rows::insert_event(&mut w.tx, key, event_fields(event), EVENTS_KEPT).await {
        Ok(()) => sqlx::query("RELEASE SAVEPOINT ev").execute(&mut *w.tx).await.map_err(db_err).map(|_| ()),
        Err(e) => {
            tracing::warn!(object = %key, reason = %event.reason, error = %e, "could not publish event");
            sqlx::query("ROLLBACK TO SAVEPOINT ev").execute(&mut *w.tx).await.map_err(db_err)?;
            sqlx::query("RELEASE SAVEPOINT ev").execute(&mut *w.tx).await.map_err(db_err).map(|_| ())
        }
    }
}
