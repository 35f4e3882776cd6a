//! What a placement (`schedule::Placed`) means for one TaskSync reconcile: the event to write,
//! the `Scheduled` condition and `status.scheduledStart`/`scheduledEnd`/`scheduledReason`, and
//! the reconcile that writes nothing because the task has no place.
//!
//! Owns: turning a placement into desired state and status. Must not touch: the placement
//! itself (`schedule`) or provider calls.

use super::desired::{desired_event, placed_block, placed_event};
use super::schedule::{self, Placed};
use super::tasksync::{Ctx, cond};
use super::{Engine, EngineError, EventType, Outcome};
use crate::providers::EventData;
use crate::resources::TaskSync;
use crate::resources::condition::{self, set_condition};
use crate::scheduling::Interval;

/// The event of `ts` when this reconcile placed nothing: its spec's; for a `spec.schedule` task
/// the block it has, else a stand-in at its earliest start (or `now`) that the plan never writes
/// (it waits for the connection first). Also what `calsync plan` uses: it never places.
pub fn unplaced_event(
    ts: &TaskSync,
    uid: &str,
    owner: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<EventData, String> {
    if ts.spec.schedule.is_none() {
        return desired_event(&ts.spec, uid, owner);
    }
    match placed_block(ts) {
        Some(b) => placed_event(&ts.spec, uid, owner, b),
        None => schedule::parse(&ts.spec).and_then(|s| {
            let at = s.earliest_start.unwrap_or(now);
            placed_event(&ts.spec, uid, owner, Interval::new(at, at + s.duration))
        }),
    }
}

impl Engine {
    /// The event `ts` should be: its spec's, or for a `spec.schedule` task its block. Without a
    /// placement (connection not ready, deleting) the block it has, else a stand-in that the
    /// plan never writes (it waits for the connection first).
    pub(super) fn desired_of(&self, ts: &TaskSync, uid: &str, placed: Option<&Placed>) -> Result<EventData, String> {
        let owner = &self.config.owner;
        if ts.spec.schedule.is_none() {
            return desired_event(&ts.spec, uid, owner);
        }
        match placed {
            Some(Placed::Invalid(m)) => Err(m.clone()),
            Some(p) => match p.block() {
                Some(b) => placed_event(&ts.spec, uid, owner, b),
                // `unplaced` finishes this reconcile before anything is planned.
                None => Err("the task has no place: nothing fits".into()),
            },
            None => unplaced_event(ts, uid, owner, self.now()),
        }
    }

    /// A task with no block and no place for one: record why, write nothing. `Some` when the
    /// reconcile is finished.
    pub(super) async fn unplaced(&self, ctx: &mut Ctx<'_>) -> Result<Option<Outcome>, EngineError> {
        let (reason, message, after) = match &ctx.placed {
            Some(Placed::NoRoom { message, keep: None }) => ("NoRoom", message.clone(), self.config.resync),
            Some(Placed::Unknown { message, keep: None }) => {
                ("BusyUnavailable", message.clone(), self.config.wait_requeue)
            }
            _ => return Ok(None),
        };
        let was = condition::find(&ctx.status.conditions, "Scheduled").map(|c| c.reason.clone());
        self.set_scheduled(ctx, false, reason, &message);
        self.set_failed(ctx, reason, &message);
        if was.as_deref() != Some(reason) {
            let note = format!("the task was not placed: {message}");
            self.event(ctx, EventType::Warning, reason, "Schedule", note);
        }
        self.finish(ctx, after).await.map(Some)
    }

    fn set_scheduled(&self, ctx: &mut Ctx<'_>, ok: bool, reason: &str, message: &str) {
        let now = self.now();
        set_condition(&mut ctx.status.conditions, cond("Scheduled", ok, reason, message), Some(ctx.generation), now);
    }

    /// The event holds what this reconcile placed: record the block and why (after a write, or
    /// when the calendar already held it).
    pub(super) fn note_placed(&self, ctx: &mut Ctx<'_>) {
        let Some(placed) = ctx.placed.clone() else { return };
        match placed {
            Placed::At { block, why, moved } => {
                let held = condition::find(&ctx.status.conditions, "Scheduled")
                    .filter(|c| c.status == crate::resources::ConditionStatus::True)
                    .map(|c| c.reason.clone());
                let reason = match (moved, held) {
                    (true, _) => "Moved".to_string(),
                    (false, Some(r)) => r,
                    (false, None) => "Placed".to_string(),
                };
                ctx.status.scheduled_start = Some(block.start);
                ctx.status.scheduled_end = Some(block.end);
                ctx.status.scheduled_reason = Some(why.clone());
                self.set_scheduled(ctx, true, &reason, &why);
            }
            Placed::NoRoom { message, .. } => self.set_scheduled(ctx, false, "NoRoom", &message),
            // Nothing is known: the block and the condition stay as they were.
            Placed::Unknown { .. } | Placed::Invalid(_) => {}
        }
    }

    /// After a block moved, the user's other auto tasks look again (one may have to make room).
    pub(super) async fn after_placed(&self, ctx: &Ctx<'_>) {
        let moved = matches!(&ctx.placed, Some(Placed::At { moved: true, .. }));
        let first = matches!(&ctx.placed, Some(Placed::At { moved: false, .. }))
            && ctx.ts.status.as_ref().is_none_or(|s| s.scheduled_start.is_none());
        if let (true, Some(conn)) = (moved || first, ctx.conn) {
            self.wake_scheduled(&ctx.key.namespace, &conn.spec.user_id, Some(&ctx.key.name)).await;
        }
    }
}
