//! Moving a task's event to another calendar or connection (its category now routes elsewhere,
//! or calendarId / connectionRef changed): create the copy in the new place, record it together
//! with the old copy (`status.movingFrom`), then delete the old copy.
//!
//! Why this order survives crashes exactly once: the copy is created under the same
//! deterministic key, so a crash before the status write finds and adopts it (never a second
//! copy); once recorded, the old copy is known until its delete succeeds, so a crash after the
//! write finishes the move at the next reconcile. The event is never missing from both places
//! and is in both only between the two steps.
//!
//! Owns: the move steps. Must not touch: routing (the REST layer and `inputs::target_calendar` decide
//! where a task belongs) or the plan's rules.

use kube::ResourceExt;

use super::plan::{Adopt, ConnState};
use super::tasksync::{Ctx, conn_state};
use super::{Engine, EngineError, EventType, Outcome};
use crate::error::ErrorClass;
use crate::providers::{Provider, ProviderError};
use crate::resources::history::{self, TASK_HISTORY_LIMIT};
use crate::resources::{Direction, HistoryEntry, MovingFrom, Operation, SyncStatus};

impl Engine {
    /// Step one of a move: the copy in the new place, recorded with the old copy's address.
    pub(super) async fn move_event(
        &self,
        ctx: &mut Ctx<'_>,
        p: &dyn Provider,
        event_id: String,
        etag: Option<String>,
    ) -> Result<Outcome, EngineError> {
        let from = MovingFrom {
            connection: ctx.status.connection.clone().unwrap_or_else(|| ctx.ts.spec.connection_ref.name.clone()),
            calendar_id: ctx.status.calendar_id.clone().unwrap_or_default(),
            event_id,
            etag,
        };
        tracing::info!(object = %ctx.key, from_connection = %from.connection, from_calendar = %from.calendar_id,
            to_calendar = %ctx.calendar, "moving the event to another calendar");
        // The old event stays the recorded one until the copy is recorded (a failed create
        // writes status too, and must not lose the old copy's address).
        ctx.move_from = Some(from);
        let out = match self.create(ctx, p).await? {
            Some(out) => out,
            // Unreachable today (create only returns None for a recreate), but planning again is
            // always safe: the old copy is still in the status the store holds.
            None => return Ok(Outcome::Requeue(self.config.backoff.base)),
        };
        if ctx.status.moving_from.is_some() {
            return self.finish_move(ctx).await;
        }
        // The create failed (its status write kept the old event as current) or was refused.
        ctx.move_from = None;
        Ok(out)
    }

    /// Step two: delete the old copy, then forget it.
    pub(super) async fn finish_move(&self, ctx: &mut Ctx<'_>) -> Result<Outcome, EngineError> {
        let Some(from) = ctx.status.moving_from.clone() else { return Ok(Outcome::Done) };
        let ns = ctx.key.namespace.clone();
        let Some(old) = self.objects.get_connection(&ns, &from.connection).await? else {
            return self.move_abandoned(ctx, &from, "the old CalendarConnection is gone").await;
        };
        match conn_state(Some(&old)) {
            ConnState::Inactive => {
                return self.move_abandoned(ctx, &from, "the user disconnected the old calendar").await;
            }
            ConnState::ReconnectRequired => {
                return self.move_abandoned(ctx, &from, "the old calendar's credentials were revoked").await;
            }
            // Not Ready for another reason (e.g. a failed check) may still delete: try it.
            ConnState::Ready | ConnState::NotReady { .. } | ConnState::Missing => {}
        }
        let provider = match self.provider_of(&ns, &old).await? {
            Ok(p) => p,
            Err(e) => return self.move_failed(ctx, &from, e).await,
        };
        let cal = from.calendar_id.as_str();
        let mut result = provider.delete(cal, &from.event_id, from.etag.as_deref()).await;
        if let Err(ProviderError::Conflict { .. }) = &result {
            // Edited in the calendar app since: still delete it if it is still ours (the task
            // lives on in the new calendar with the task's content).
            result = match provider.get(cal, &from.event_id).await {
                Ok(Some(r)) if super::plan::adopt(&r, &ctx.uid, &self.config.owner, "") != Adopt::NotOurs => {
                    provider.delete(cal, &from.event_id, r.etag.as_deref()).await
                }
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
        }
        match result {
            Ok(()) | Err(ProviderError::NotFound { .. }) => {}
            Err(e) => return self.move_failed(ctx, &from, e).await,
        }
        let msg = format!(
            "calendar event moved from calendar {:?} of {} to calendar {:?} of {}",
            from.calendar_id, from.connection, ctx.calendar, ctx.ts.spec.connection_ref.name
        );
        self.moved(ctx, &from, SyncStatus::Success, None, &msg).await?;
        self.event(ctx, EventType::Normal, "EventMoved", "Move", msg);
        self.finish(ctx, self.config.resync).await
    }

    /// A failed delete of the old copy: retry later, or give up when retrying cannot help.
    async fn move_failed(
        &self,
        ctx: &mut Ctx<'_>,
        from: &MovingFrom,
        e: ProviderError,
    ) -> Result<Outcome, EngineError> {
        tracing::info!(object = %ctx.key, reason = e.reason(), error = %e, "deleting a moved event's old copy failed");
        match e.class() {
            ErrorClass::Retry { .. } => {
                let now = self.now();
                ctx.status.failed_attempts = ctx.status.failed_attempts.saturating_add(1);
                ctx.status.last_failure_time = Some(now);
                let (at, delay) = self.retry_at(ctx.status.failed_attempts, &e);
                ctx.status.next_attempt_time = Some(at);
                if ctx.status.failed_attempts >= super::plan::MAX_CLEANUP_ATTEMPTS {
                    return self.move_abandoned(ctx, from, &e.to_string()).await;
                }
                self.finish_exactly(ctx, delay).await
            }
            ErrorClass::Reauthenticate | ErrorClass::Permanent => self.move_abandoned(ctx, from, &e.to_string()).await,
        }
    }

    /// The old copy cannot be deleted: leave it, say so, and stop trying.
    async fn move_abandoned(&self, ctx: &mut Ctx<'_>, from: &MovingFrom, why: &str) -> Result<Outcome, EngineError> {
        let msg = format!(
            "the event moved to calendar {:?}, but its old copy {} in calendar {:?} of {} could not be deleted ({why}) and was left there; delete it in the calendar app",
            ctx.calendar, from.event_id, from.calendar_id, from.connection
        );
        ctx.status.failed_attempts = 0;
        ctx.status.last_failure_time = None;
        ctx.status.next_attempt_time = None;
        self.moved(ctx, from, SyncStatus::Failed, Some(msg.clone()), &msg).await?;
        self.event(ctx, EventType::Warning, "MoveIncomplete", "Move", msg);
        self.finish(ctx, self.config.resync).await
    }

    /// Forget the old copy and record the move in both connections' histories (the old one's
    /// change feed must know the deletion was ours).
    async fn moved(
        &self,
        ctx: &mut Ctx<'_>,
        from: &MovingFrom,
        status: SyncStatus,
        error: Option<String>,
        note: &str,
    ) -> Result<(), EngineError> {
        ctx.status.moving_from = None;
        if status == SyncStatus::Success {
            ctx.status.failed_attempts = 0;
            ctx.status.last_failure_time = None;
            ctx.status.next_attempt_time = None;
        }
        let entry = HistoryEntry {
            id: 0,
            time: self.now(),
            task_id: Some(ctx.ts.spec.task_id.clone()),
            event_id: Some(from.event_id.clone()),
            direction: Direction::ToCalendar,
            operation: Operation::Delete,
            status,
            error,
            note: Some(note.to_string()),
        };
        history::push(&mut ctx.status.history, entry.clone(), TASK_HISTORY_LIMIT);
        let here = ctx.conn.map(|c| c.name_any());
        if here.as_deref() != Some(from.connection.as_str()) {
            // Written with the status (`finish`), as every entry of a reconcile.
            ctx.pending.history.push((from.connection.clone(), entry));
        }
        Ok(())
    }
}
