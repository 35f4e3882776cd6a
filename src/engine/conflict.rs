//! Conflicts: what happens when the calendar app edited or deleted one of our events, under
//! the TaskSync's `conflictPolicy`.

use super::plan::{self, Adopt, Call};
use super::tasksync::{Ctx, cond};
use super::{Engine, EngineError, EventType, Outcome};
use crate::providers::{Provider, RemoteEvent};
use crate::resources::condition::set_condition;
use crate::resources::{CalendarEdit, ConflictPolicy, Operation, SyncStatus};

impl Engine {
    pub(super) async fn resolve_conflict(
        &self,
        ctx: &mut Ctx<'_>,
        p: &dyn Provider,
        id: &str,
        policy: ConflictPolicy,
    ) -> Result<Option<Outcome>, EngineError> {
        let remote = match p.get(&ctx.calendar, id).await {
            Ok(r) => r,
            Err(e) => return self.on_provider_error(ctx, Call::Update, e).await.map(Some),
        };
        let Some(remote) = remote.filter(|r| !r.cancelled) else {
            return match policy {
                ConflictPolicy::TaskWins => {
                    ctx.status.event_id = None;
                    Ok(None)
                }
                other => self.report_edit(ctx, None, other).await.map(Some),
            };
        };
        if plan::adopt(&remote, &ctx.uid, &self.config.owner, "").eq(&Adopt::NotOurs) {
            let msg =
                format!("event {id} no longer carries this TaskSync's ownership marker; calsync will not modify it");
            self.set_failed(ctx, "NotOwned", &msg);
            return self.finish(ctx, self.config.resync).await.map(Some);
        }
        match policy {
            ConflictPolicy::TaskWins => {
                let (data, hash) = Self::desired(ctx);
                match p.update(&ctx.calendar, id, remote.etag.as_deref(), &data).await {
                    Ok(ev) => self.record(ctx, Operation::Update, &ev, &hash).await.map(Some),
                    Err(e) => self.on_provider_error(ctx, Call::Update, e).await.map(Some),
                }
            }
            other => self.report_edit(ctx, Some(&remote), other).await.map(Some),
        }
    }

    /// Record an edit (or deletion, `remote` None) made in the calendar app.
    pub(super) async fn report_edit(
        &self,
        ctx: &mut Ctx<'_>,
        remote: Option<&RemoteEvent>,
        policy: ConflictPolicy,
    ) -> Result<Outcome, EngineError> {
        let now = self.now();
        let (data, hash) = Self::desired(ctx);
        let mut changed = Vec::new();
        if let Some(r) = remote {
            if r.title != data.title {
                changed.push("title".to_string());
            }
            if r.start != data.start {
                changed.push("start".to_string());
            }
            if r.end != data.end {
                changed.push("end".to_string());
            }
            if r.description != data.description {
                changed.push("description".to_string());
            }
            if r.category != data.category {
                changed.push("category".to_string());
            }
        }
        let description =
            remote.and_then(|r| r.description.clone()).filter(|_| changed.iter().any(|c| c == "description"));
        ctx.status.calendar_edit = Some(Box::new(CalendarEdit {
            detected_at: now,
            generation: ctx.generation,
            etag: remote.and_then(|r| r.etag.clone()).unwrap_or_default(),
            deleted: remote.is_none(),
            changed,
            title: remote.map(|r| r.title.clone()),
            start: remote.map(|r| r.start.to_rfc3339_or_date()),
            end: remote.map(|r| r.end.to_rfc3339_or_date()),
            description,
            resolution: policy,
        }));
        ctx.status.observed_generation = Some(ctx.generation);
        let (reason, msg) = match (remote.is_some(), policy) {
            (false, _) => ("DeletedInCalendar", "the event was deleted in the calendar app; change the task to create it again".to_string()),
            (true, ConflictPolicy::CalendarWins) => ("CalendarWins", "the event was edited in the calendar app and the edit was kept (conflictPolicy CalendarWins)".to_string()),
            (true, _) => ("ConflictDetected", "the event was edited in the calendar app; change the task to overwrite the edit, or set conflictPolicy".to_string()),
        };
        if remote.is_some() && policy == ConflictPolicy::CalendarWins {
            // The calendar's version is now the accepted one: no rewrite until the spec changes.
            ctx.status.etag = remote.and_then(|r| r.etag.clone());
            ctx.status.applied_hash = Some(hash);
            let now = self.now();
            let c = cond("Synced", true, reason, &msg);
            set_condition(&mut ctx.status.conditions, c, Some(ctx.generation), now);
            set_condition(&mut ctx.status.conditions, cond("Ready", true, reason, &msg), Some(ctx.generation), now);
        } else {
            self.set_failed(ctx, reason, &msg);
        }
        self.history(ctx, Operation::Conflict, SyncStatus::Success, None).await?;
        self.event(ctx, EventType::Warning, reason, "Update", msg);
        self.finish(ctx, self.config.resync).await
    }
}
