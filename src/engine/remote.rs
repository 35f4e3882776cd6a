//! A TaskSync acting on a change made in the calendar app, found by its connection's change
//! sync (push or poll) rather than by a write meeting a changed etag: an edit goes through the
//! conflict policy at once, a deletion is reported (and not undone until the task changes), and
//! calsync's own writes are recognised and never reported.
//!
//! Owns: judging a hint against the TaskSync's status. Must not touch: listings (`changes`).

use kube::Resource;

use super::live::Hint;
use super::plan::{self, Adopt, ConnState};
use super::tasksync::Ctx;
use super::{Engine, EngineError, EventType, Outcome};
use crate::providers::{EventData, EventTime, Provider, RemoteEvent};
use crate::resources::{ConflictPolicy, Operation, SyncStatus};

fn same_time(a: &EventTime, b: &EventTime) -> bool {
    match (a, b) {
        (EventTime::Date(x), EventTime::Date(y)) => x == y,
        (EventTime::DateTime { utc: x, .. }, EventTime::DateTime { utc: y, .. }) => x == y,
        _ => false,
    }
}

fn same_text(a: &Option<String>, b: &Option<String>) -> bool {
    a.as_deref().unwrap_or("").trim() == b.as_deref().unwrap_or("").trim()
}

/// Does the calendar hold what calsync wrote? Providers re-serialise (zones, empty
/// descriptions), so this compares meaning, not bytes; a new etag alone (Google bumps it when
/// reminders or attendee answers change) is not an edit.
pub(super) fn same_content(remote: &RemoteEvent, data: &EventData) -> bool {
    remote.title.trim() == data.title.trim()
        && same_text(&remote.description, &data.description)
        && same_time(&remote.start, &data.start)
        && same_time(&remote.end, &data.end)
}

impl Engine {
    /// Act on a hint from the change sync. `Some` when the reconcile is finished.
    pub(super) async fn on_remote_change(&self, ctx: &mut Ctx<'_>, hint: Hint) -> Result<Option<Outcome>, EngineError> {
        if ctx.ts.meta().deletion_timestamp.is_some() || super::tasksync::conn_state(ctx.conn) != ConnState::Ready {
            return Ok(None);
        }
        let Some(event_id) = ctx.status.event_id.clone() else { return Ok(None) };
        let Ok((data, _)) = ctx.desired.clone() else { return Ok(None) };
        let p = match self.provider(ctx).await? {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(object = %ctx.key, reason = e.reason(), "cannot check a calendar change now");
                return Ok(None);
            }
        };
        let listed = match hint {
            Hint::Changed(ev) if !ev.cancelled => Some(*ev),
            _ => None,
        };
        // Our own write, already recorded.
        if listed.as_ref().is_some_and(|ev| ev.etag.is_some() && ev.etag == ctx.status.etag) {
            return Ok(None);
        }
        // The listing may predate a write of ours that finished since: judge the event as it is.
        let remote = match listed.filter(|ev| same_content(ev, &data)) {
            Some(ev) => Some(ev),
            None => match p.get(&ctx.calendar, &event_id).await {
                Ok(r) => r.filter(|r| !r.cancelled),
                Err(e) => {
                    tracing::info!(object = %ctx.key, reason = e.reason(), "cannot read a changed event now");
                    return Ok(None);
                }
            },
        };
        self.judge_remote(ctx, p.as_ref(), &event_id, remote, &data).await
    }

    async fn judge_remote(
        &self,
        ctx: &mut Ctx<'_>,
        p: &dyn Provider,
        event_id: &str,
        remote: Option<RemoteEvent>,
        data: &EventData,
    ) -> Result<Option<Outcome>, EngineError> {
        let policy = ctx.ts.spec.conflict_policy;
        let Some(remote) = remote else {
            if ctx.status.calendar_edit.as_ref().is_some_and(|e| e.deleted) {
                return Ok(None);
            }
            tracing::info!(object = %ctx.key, event = event_id, "event deleted in the calendar app");
            return self.report_edit(ctx, None, policy).await.map(Some);
        };
        if remote.etag.is_some() && remote.etag == ctx.status.etag {
            return Ok(None);
        }
        if plan::adopt(&remote, &ctx.uid, &self.config.owner, "") == Adopt::NotOurs {
            return Ok(None);
        }
        if same_content(&remote, data) {
            // Same meaning under a new version: remember the version, report nothing.
            ctx.status.etag = remote.etag.clone();
            return Ok(None);
        }
        if ctx.status.calendar_edit.as_ref().is_some_and(|e| remote.etag.as_deref() == Some(e.etag.as_str())) {
            return Ok(None);
        }
        tracing::info!(object = %ctx.key, event = event_id, policy = ?policy, "event edited in the calendar app");
        match policy {
            ConflictPolicy::TaskWins => {
                let msg = format!(
                    "event {event_id} was edited in the calendar app; the task's version was written back (conflictPolicy TaskWins)"
                );
                self.history(ctx, Operation::Conflict, SyncStatus::Success, None).await?;
                self.event(ctx, EventType::Normal, "EditOverwritten", "Update", msg);
                let (data, hash) = Self::desired(ctx);
                match p.update(&ctx.calendar, event_id, remote.etag.as_deref(), &data).await {
                    Ok(ev) => self.record(ctx, Operation::Update, &ev, &hash).await.map(Some),
                    // Edited again meanwhile, or deleted: the next signal or write sorts it out.
                    Err(e) => self.on_provider_error(ctx, plan::Call::Update, e).await.map(Some),
                }
            }
            other => self.report_edit(ctx, Some(&remote), other).await.map(Some),
        }
    }
}
