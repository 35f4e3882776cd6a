//! What a TaskSync reconcile records: conditions, status writes, history rings (its own and
//! the connection's), Events, and what a provider error means for them.
//!
//! Owns: turning an outcome into status. Must not touch: the decision what to call (`plan`,
//! `tasksync`) or provider calls.

use std::time::Duration;

use kube::{Resource, ResourceExt};

use super::backoff::jitter;
use super::plan::{self, Call, OnError, Release};
use super::tasksync::{Ctx, cond};
use super::{Engine, EngineError, EventType, ObjectEvent, ObjectKey, Outcome, ReconcileRecord, Recorded};
use crate::providers::{HoldCause, ProviderError, RemoteEvent};
use crate::resources::condition::set_condition;
use crate::resources::history::{self, TASK_HISTORY_LIMIT};
use crate::resources::{CalendarConnection, Direction, HistoryEntry, Operation, SyncStatus};

impl Engine {
    pub(super) async fn on_provider_error(
        &self,
        ctx: &mut Ctx<'_>,
        call: Call,
        e: ProviderError,
    ) -> Result<Outcome, EngineError> {
        if let ProviderError::Held { retry_after, cause, .. } = &e {
            return self.held(ctx, *retry_after, *cause).await;
        }
        let now = self.now();
        tracing::info!(object = %ctx.key, reason = e.reason(), error = %e, "calendar call failed");
        match plan::on_error(call, &e, ctx.ts.spec.conflict_policy) {
            OnError::Reconnect => {
                if let Some(conn) = ctx.conn {
                    self.mark_reconnect_required(&ctx.key.namespace, conn, &e.to_string()).await?;
                }
                if call == Call::Delete {
                    return self.release(ctx, Release::CleanupImpossible("ReconnectRequired")).await;
                }
                self.set_failed(ctx, "ReconnectRequired", &e.to_string());
                self.finish(ctx, self.config.wait_requeue).await
            }
            OnError::Reject if call == Call::Delete => {
                self.release(ctx, Release::CleanupImpossible("ProviderRejected")).await
            }
            OnError::Reject => {
                self.set_failed(ctx, e.reason(), &e.to_string());
                ctx.status.observed_generation = Some(ctx.generation);
                ctx.status.next_attempt_time =
                    Some(now + chrono::Duration::from_std(self.config.resync).unwrap_or_default());
                self.history(ctx, op_of(call), SyncStatus::Failed, Some(e.to_string())).await?;
                self.event(ctx, EventType::Warning, e.reason(), action_of(call), e.to_string());
                self.finish(ctx, self.config.resync).await
            }
            _ => {
                let first = ctx.status.failed_attempts == 0;
                ctx.status.failed_attempts = ctx.status.failed_attempts.saturating_add(1);
                ctx.status.last_failure_time = Some(now);
                let (at, delay) = self.retry_at(ctx.status.failed_attempts, &e);
                ctx.status.next_attempt_time = Some(at);
                self.set_failed(ctx, e.reason(), &e.to_string());
                ctx.status.observed_generation = Some(ctx.generation);
                if first {
                    self.history(ctx, op_of(call), SyncStatus::Failed, Some(e.to_string())).await?;
                    self.event(ctx, EventType::Warning, e.reason(), action_of(call), e.to_string());
                }
                self.finish_exactly(ctx, delay).await
            }
        }
    }

    /// The client limiter holds the connection's calls (a provider's Retry-After on an earlier
    /// call): nothing was sent, so nothing failed — no attempt counted, no history, no Event.
    /// The condition says why the task waits, in words that do not change from one hold to the
    /// next, so a task held again and again is written once; the queue brings it back when the
    /// hold ends, on its own timer (the hold is this process's memory, not status).
    async fn held(&self, ctx: &mut Ctx<'_>, retry_after: Duration, cause: HoldCause) -> Result<Outcome, EngineError> {
        tracing::debug!(
            object = %ctx.key,
            wait_ms = retry_after.as_millis() as u64,
            ?cause,
            "connection's calls held; requeued"
        );
        let (reason, message) = match cause {
            HoldCause::RetryAfter => (
                "RateLimited",
                "the calendar provider asked calsync to slow down (Retry-After); calsync holds this connection's calls until then and retries by itself",
            ),
            HoldCause::Failing => (
                "ProviderUnavailable",
                "the calendar provider failed several calls of this connection in a row; calsync pauses its calls, longer each time, and retries by itself",
            ),
        };
        self.set_failed(ctx, reason, message);
        Ok(match self.finish_exactly(ctx, retry_after + super::RETRY_MARGIN).await? {
            Outcome::Requeue(d) => Outcome::Held(d),
            other => other,
        })
    }

    /// A successful write: the event now matches the spec.
    pub(super) async fn record(
        &self,
        ctx: &mut Ctx<'_>,
        op: Operation,
        ev: &RemoteEvent,
        hash: &str,
    ) -> Result<Outcome, EngineError> {
        let now = self.now();
        let s = &mut ctx.status;
        s.event_id = Some(ev.id.clone());
        s.etag = ev.etag.clone();
        s.event_link = ev.link.clone();
        s.calendar_id = Some(ctx.calendar.clone());
        s.connection = Some(ctx.ts.spec.connection_ref.name.clone());
        if let Some(from) = ctx.move_from.take() {
            // Same status write as the new event: after a crash the old copy is still known.
            s.moving_from = Some(Box::new(from));
        }
        s.applied_hash = Some(hash.to_string());
        s.last_sync_time = Some(now);
        s.failed_attempts = 0;
        s.last_failure_time = None;
        s.next_attempt_time = None;
        s.calendar_edit = None;
        let (reason, verb) = match op {
            Operation::Create => ("EventCreated", "created"),
            Operation::Adopt => ("EventAdopted", "adopted (it was created by an earlier attempt)"),
            _ => ("EventUpdated", "updated"),
        };
        let msg = format!("calendar event {} {verb}", ev.id);
        self.set_in_sync(ctx, reason, &msg);
        self.note_placed(ctx);
        self.history(ctx, op, SyncStatus::Success, None).await?;
        self.event(ctx, EventType::Normal, reason, if op == Operation::Update { "Update" } else { "Create" }, msg);
        let out = self.finish(ctx, self.config.resync).await?;
        self.after_placed(ctx).await;
        Ok(out)
    }

    /// Append to the TaskSync's ring and the connection's (the user's history).
    pub(super) async fn history(
        &self,
        ctx: &mut Ctx<'_>,
        op: Operation,
        status: SyncStatus,
        error: Option<String>,
    ) -> Result<(), EngineError> {
        let entry = HistoryEntry {
            id: 0,
            time: self.now(),
            task_id: Some(ctx.ts.spec.task_id.clone()),
            event_id: ctx.status.event_id.clone(),
            direction: Direction::ToCalendar,
            operation: op,
            status,
            error,
            note: None,
        };
        self.append_history(ctx, entry).await
    }

    /// Record `entry` in the TaskSync's ring and its connection's; both are written with the
    /// status (`finish`), or by `flush`.
    pub(super) async fn append_history(&self, ctx: &mut Ctx<'_>, entry: HistoryEntry) -> Result<(), EngineError> {
        history::push(&mut ctx.status.history, entry.clone(), TASK_HISTORY_LIMIT);
        if let Some(conn) = ctx.conn {
            ctx.pending.history.push((conn.name_any(), entry));
        }
        Ok(())
    }

    /// An Event about the TaskSync, published with the status (`finish`) or by `flush`; never
    /// fails the reconcile (a store that cannot keep it logs a warning).
    pub(super) fn event(&self, ctx: &mut Ctx<'_>, type_: EventType, reason: &str, action: &str, note: String) {
        ctx.pending.events.push(ObjectEvent { type_, reason: reason.into(), note, action: action.into() });
    }

    /// Write what is pending without a status (a released TaskSync's last entries).
    pub(super) async fn flush(&self, ctx: &mut Ctx<'_>) -> Result<(), EngineError> {
        let record = ReconcileRecord {
            status: None,
            history: std::mem::take(&mut ctx.pending.history),
            events: std::mem::take(&mut ctx.pending.events),
        };
        if !record.is_empty() {
            self.objects.record_outcome(&ctx.key, &record).await?;
        }
        Ok(())
    }

    pub(super) fn set_in_sync(&self, ctx: &mut Ctx<'_>, reason: &str, msg: &str) {
        let now = self.now();
        let g = Some(ctx.generation);
        ctx.status.observed_generation = g;
        set_condition(&mut ctx.status.conditions, cond("Synced", true, reason, msg), g, now);
        set_condition(
            &mut ctx.status.conditions,
            cond("Ready", true, "InSync", "the calendar event matches the task"),
            g,
            now,
        );
    }

    pub(super) fn set_failed(&self, ctx: &mut Ctx<'_>, reason: &str, msg: &str) {
        let now = self.now();
        let g = Some(ctx.generation);
        ctx.status.observed_generation = g;
        set_condition(&mut ctx.status.conditions, cond("Synced", false, reason, msg), g, now);
        let ready = ctx.status.event_id.is_some()
            && ctx.desired.as_ref().is_ok_and(|(_, h)| ctx.status.applied_hash.as_deref() == Some(h.as_str()));
        let c = if ready {
            cond("Ready", true, "InSync", "the calendar event matches the task")
        } else {
            cond("Ready", false, reason, msg)
        };
        set_condition(&mut ctx.status.conditions, c, g, now);
    }

    /// Write the status if it changed, then requeue after `after` (with jitter).
    pub(super) async fn finish(&self, ctx: &mut Ctx<'_>, after: Duration) -> Result<Outcome, EngineError> {
        self.finish_exactly(ctx, jitter(after)).await
    }

    /// Write the status if it changed, with the pending history entries and Events (one
    /// `record_outcome`: one durable commit on the SQL stores), then requeue after exactly
    /// `after` (a retry delay that is jittered already, or a Retry-After that must not be).
    pub(super) async fn finish_exactly(&self, ctx: &mut Ctx<'_>, after: Duration) -> Result<Outcome, EngineError> {
        let record = ReconcileRecord {
            status: (ctx.ts.status.as_ref() != Some(&ctx.status)).then(|| ctx.status.clone()),
            history: std::mem::take(&mut ctx.pending.history),
            events: std::mem::take(&mut ctx.pending.events),
        };
        if !record.is_empty() && self.objects.record_outcome(&ctx.key, &record).await? == Recorded::Gone {
            // Deleted meanwhile: nothing left to record.
            return Ok(Outcome::Done);
        }
        Ok(Outcome::Requeue(after))
    }

    /// The provider says the credentials are dead: the connection must say so too, so the REST
    /// status and `kubectl get calconn` tell the user to reconnect.
    pub(super) async fn mark_reconnect_required(
        &self,
        namespace: &str,
        conn: &CalendarConnection,
        message: &str,
    ) -> Result<(), EngineError> {
        // The connection as it is now, not the reconcile's earlier copy: writing back that copy
        // undid a disconnect that happened meanwhile (its grant revoked on purpose, so this
        // reconcile's refresh was refused), leaving `ReconnectRequired` and a stale push
        // status on a connection the user had just disconnected.
        let Some(conn) = self.objects.get_connection(namespace, &conn.name_any()).await? else {
            return Ok(());
        };
        if !conn.spec.active || conn.meta().deletion_timestamp.is_some() {
            return Ok(());
        }
        let conn = &conn;
        let mut status = conn.status.clone().unwrap_or_default();
        let now = self.now();
        let g = conn.meta().generation;
        set_condition(&mut status.conditions, cond("Authenticated", false, "ReconnectRequired", message), g, now);
        set_condition(&mut status.conditions, cond("Ready", false, "ReconnectRequired", message), g, now);
        if conn.status.as_ref() != Some(&status) {
            match self.save_connection_status(namespace, &conn.name_any(), &status).await {
                Ok(_) | Err(crate::engine::StoreError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            self.publish(
                &ObjectKey::connection(namespace, &conn.name_any()),
                EventType::Warning,
                "ReconnectRequired",
                "Check",
                message.to_string(),
            )
            .await;
        }
        Ok(())
    }
}

fn op_of(call: Call) -> Operation {
    match call {
        Call::Create => Operation::Create,
        Call::Update => Operation::Update,
        Call::Delete => Operation::Delete,
    }
}

fn action_of(call: Call) -> &'static str {
    match call {
        Call::Create => "Create",
        Call::Update => "Update",
        Call::Delete => "Delete",
    }
}
