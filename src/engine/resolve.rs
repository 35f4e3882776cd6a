//! The user's choice in a held conflict: the annotation `calendar.getitdone.app/resolve` set to
//! `task` or `calendar` (by `POST /resolve-conflict`, or by hand with kubectl).
//!
//! - `task`: the task's version is written over the edit, conditional on the edited version the
//!   user saw (`status.calendarEdit.etag`); a deleted event is created again.
//! - `calendar`: the spec follows the event (title, description, times in the task's zone), so
//!   nothing is written to the calendar; a deleted event stays deleted and the TaskSync is
//!   released (deleted without touching the calendar).
//!
//! A newer edit found meanwhile (or a deletion) is reported as the new conflict instead, and the
//! choice is dropped: the user chose between versions they saw. The annotation is removed once
//! acted on (after the status says what happened), never while the calendar cannot be reached.
//!
//! Owns: acting on that choice. Must not touch: detecting edits (`remote`, `conflict`).

use kube::{Resource, ResourceExt};

use super::desired::desired_event;
use super::tasksync::Ctx;
use super::{Engine, EngineError, EventType, Outcome};
use crate::providers::{EventTime, Provider, ProviderError, RemoteEvent};
use crate::resources::{
    CalendarEdit, ConflictPolicy, Direction, FINALIZER, HistoryEntry, Operation, RESOLVE_ANNOTATION,
    RESOLVE_BY_ANNOTATION, SyncStatus, TaskSyncSpec,
};

/// The spec a task takes when the user keeps the calendar's version of its event: its title,
/// description and times (in the task's own zone when it has one), the rest unchanged.
pub fn spec_from_event(spec: &TaskSyncSpec, ev: &RemoteEvent) -> TaskSyncSpec {
    let mut out = spec.clone();
    // A placed block the user moved by hand is pinned there: the task keeps that time.
    out.schedule = None;
    out.title = ev.title.clone();
    out.description = ev.description.clone();
    out.duration = None;
    match (&ev.start, &ev.end) {
        (EventTime::Date(s), EventTime::Date(e)) => {
            out.start = s.format("%Y-%m-%d").to_string();
            out.end = Some(e.format("%Y-%m-%d").to_string());
            out.all_day = Some(true);
        }
        (start, end) => {
            let zone = spec.time_zone.clone().or_else(|| ev.zone.clone());
            let tz = zone.as_deref().and_then(|z| z.parse::<chrono_tz::Tz>().ok());
            let text = |t: &EventTime| {
                let utc = match t {
                    EventTime::DateTime { utc, .. } => *utc,
                    EventTime::Date(d) => d.and_hms_opt(0, 0, 0).map(|n| n.and_utc()).unwrap_or_default(),
                };
                match tz {
                    Some(tz) => utc.with_timezone(&tz).naive_local().format("%Y-%m-%dT%H:%M:%S").to_string(),
                    None => utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                }
            };
            out.start = text(start);
            out.end = Some(text(end));
            out.all_day = None;
            out.time_zone = tz.map(|t| t.name().to_string());
        }
    }
    out
}

impl Engine {
    /// Act on a conflict choice. `Some` when the reconcile is finished.
    pub(super) async fn on_resolve(&self, ctx: &mut Ctx<'_>, choice: &str) -> Result<Option<Outcome>, EngineError> {
        let by = ctx.ts.annotations().get(RESOLVE_BY_ANNOTATION).cloned().unwrap_or_else(|| "annotation".into());
        let held = ctx.status.calendar_edit.clone().filter(|e| e.deleted || e.resolution == ConflictPolicy::Manual);
        let Some(edit) = held.filter(|_| matches!(choice, "task" | "calendar")) else {
            let msg = if matches!(choice, "task" | "calendar") {
                format!("{RESOLVE_ANNOTATION}: {choice} was set, but there is no held conflict; nothing was changed")
            } else {
                format!("{RESOLVE_ANNOTATION} must be `task` or `calendar`, not {choice:?}; nothing was changed")
            };
            self.publish(&ctx.key, EventType::Warning, "ResolveIgnored", "Resolve", msg).await;
            self.clear_choice(ctx).await?;
            return Ok(None);
        };
        if choice == "calendar" && edit.deleted {
            return self.release_deleted(ctx, &by).await.map(Some);
        }
        let p = match self.provider(ctx).await? {
            Ok(p) => p,
            Err(e) => {
                // Keep the choice: it is acted on once the calendar can be reached.
                tracing::info!(object = %ctx.key, reason = e.reason(), "cannot act on a conflict choice now");
                return Ok(Some(Outcome::Requeue(self.config.wait_requeue)));
            }
        };
        if choice == "task" {
            self.keep_task(ctx, p.as_ref(), &edit, &by).await
        } else {
            self.keep_calendar(ctx, p.as_ref(), &edit, &by).await
        }
    }

    /// Remove the choice (after the status records its outcome).
    async fn clear_choice(&self, ctx: &Ctx<'_>) -> Result<(), EngineError> {
        let clear =
            [(RESOLVE_ANNOTATION.to_string(), String::new()), (RESOLVE_BY_ANNOTATION.to_string(), String::new())];
        match self.objects.set_annotations(&ctx.key, &clear.into_iter().collect()).await {
            Ok(()) | Err(crate::engine::StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn note(&self, ctx: &mut Ctx<'_>, note: String) -> Result<(), EngineError> {
        let entry = HistoryEntry {
            id: 0,
            time: self.now(),
            task_id: Some(ctx.ts.spec.task_id.clone()),
            event_id: ctx.status.event_id.clone(),
            direction: Direction::ToCalendar,
            operation: Operation::Resolve,
            status: SyncStatus::Success,
            error: None,
            note: Some(note.clone()),
        };
        self.append_history(ctx, entry).await?;
        self.event(ctx, EventType::Normal, "ConflictResolved", "Resolve", note);
        Ok(())
    }

    /// The calendar changed again since the version the user chose against: report that one.
    async fn stale(&self, ctx: &mut Ctx<'_>, now: Option<&RemoteEvent>) -> Result<Outcome, EngineError> {
        let msg = "the event changed again in the calendar app before the choice was applied; the new version is reported instead".to_string();
        self.publish(&ctx.key, EventType::Warning, "ResolveStale", "Resolve", msg).await;
        let out = self.report_edit(ctx, now, ConflictPolicy::Manual).await?;
        self.clear_choice(ctx).await?;
        Ok(out)
    }

    async fn keep_task(
        &self,
        ctx: &mut Ctx<'_>,
        p: &dyn Provider,
        edit: &CalendarEdit,
        by: &str,
    ) -> Result<Option<Outcome>, EngineError> {
        let event_id = ctx.status.event_id.clone().unwrap_or_default();
        if edit.deleted || event_id.is_empty() {
            // Created again by the plan that follows, in this reconcile.
            ctx.status.calendar_edit = None;
            ctx.status.event_id = None;
            ctx.status.etag = None;
            ctx.status.applied_hash = None;
            self.note(ctx, format!("kept the task: its deleted event is created again (chosen by {by})")).await?;
            self.finish(ctx, self.config.resync).await?;
            self.clear_choice(ctx).await?;
            return Ok(None);
        }
        let (data, hash) = Self::desired(ctx);
        match p.update(&ctx.calendar, &event_id, Some(edit.etag.as_str()).filter(|e| !e.is_empty()), &data).await {
            Ok(ev) => {
                self.note(ctx, format!("kept the task's version over the calendar edit (chosen by {by})")).await?;
                let out = self.record(ctx, Operation::Update, &ev, &hash).await?;
                self.clear_choice(ctx).await?;
                Ok(Some(out))
            }
            Err(ProviderError::Conflict { .. }) => {
                let now = p.get(&ctx.calendar, &event_id).await.ok().flatten().filter(|r| !r.cancelled);
                self.stale(ctx, now.as_ref()).await.map(Some)
            }
            Err(ProviderError::NotFound { .. }) => self.stale(ctx, None).await.map(Some),
            Err(e) => self.on_provider_error(ctx, super::plan::Call::Update, e).await.map(Some),
        }
    }

    async fn keep_calendar(
        &self,
        ctx: &mut Ctx<'_>,
        p: &dyn Provider,
        edit: &CalendarEdit,
        by: &str,
    ) -> Result<Option<Outcome>, EngineError> {
        let event_id = ctx.status.event_id.clone().unwrap_or_default();
        let remote = match p.get(&ctx.calendar, &event_id).await {
            Ok(r) => r.filter(|r| !r.cancelled),
            Err(e) => return self.on_provider_error(ctx, super::plan::Call::Update, e).await.map(Some),
        };
        let Some(remote) = remote else { return self.stale(ctx, None).await.map(Some) };
        if remote.etag.as_deref().is_some_and(|e| !edit.etag.is_empty() && e != edit.etag) {
            return self.stale(ctx, Some(&remote)).await.map(Some);
        }
        let mut object = ctx.ts.clone();
        object.spec = spec_from_event(&ctx.ts.spec, &remote);
        object.status = None;
        object.metadata.managed_fields = None;
        let applied = self.objects.apply_task_sync(&object).await?;
        let generation = applied.meta().generation.unwrap_or(ctx.generation);
        let hash = match desired_event(&applied.spec, &ctx.uid, &self.config.owner) {
            Ok(ev) => ev.content_hash(&ctx.calendar),
            Err(e) => {
                // The event holds something a spec cannot say; the next reconcile reports it.
                tracing::info!(object = %ctx.key, error = %e, "the calendar's version does not make a valid spec");
                String::new()
            }
        };
        ctx.generation = generation;
        let s = &mut ctx.status;
        if ctx.ts.spec.schedule.is_some() {
            // Pinned by the user: no longer placed by calsync.
            s.scheduled_start = None;
            s.scheduled_end = None;
            s.scheduled_reason = None;
            s.conditions.retain(|c| c.type_ != "Scheduled");
        }
        s.etag = remote.etag.clone();
        s.applied_hash = Some(hash);
        s.calendar_edit = None;
        s.last_sync_time = Some(self.now());
        self.note(ctx, format!("kept the calendar's version: the task now follows the event (chosen by {by})")).await?;
        self.set_in_sync(ctx, "CalendarKept", "the task follows the calendar's version of the event");
        let out = self.finish(ctx, self.config.resync).await?;
        self.clear_choice(ctx).await?;
        Ok(Some(out))
    }

    /// `calendar` for a deleted event: the event stays deleted; the TaskSync goes without
    /// touching the calendar.
    async fn release_deleted(&self, ctx: &mut Ctx<'_>, by: &str) -> Result<Outcome, EngineError> {
        self.note(ctx, format!("kept the calendar's deletion: the TaskSync is released (chosen by {by})")).await?;
        self.finish(ctx, self.config.resync).await?;
        if ctx.ts.finalizers().iter().any(|f| f == FINALIZER) {
            self.objects.remove_finalizer(&ctx.key, FINALIZER).await?;
        }
        match self.objects.delete(&ctx.key).await {
            Ok(_) | Err(crate::engine::StoreError::NotFound(_)) => Ok(Outcome::Done),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{ConnectionRef, TaskSyncSpec};
    use chrono::TimeZone;

    fn spec(zone: Option<&str>) -> TaskSyncSpec {
        TaskSyncSpec {
            connection_ref: ConnectionRef { name: "c".into() },
            task_id: "t".into(),
            title: "Essay".into(),
            start: "2026-03-07T14:00:00".into(),
            time_zone: zone.map(str::to_string),
            duration: Some("1h".into()),
            end: None,
            all_day: None,
            category: Some("Homework".into()),
            description: None,
            recurrence: vec![],
            exceptions: vec![],
            calendar_id: None,
            deletion_policy: Default::default(),
            conflict_policy: Default::default(),
            schedule: None,
        }
    }

    fn timed(start: chrono::DateTime<chrono::Utc>, minutes: i64) -> RemoteEvent {
        let at = |u: chrono::DateTime<chrono::Utc>| EventTime::DateTime { utc: u, local: u.naive_utc(), zone: None };
        RemoteEvent {
            id: "e".into(),
            etag: Some("\"2\"".into()),
            link: None,
            title: "Essay (moved)".into(),
            description: Some("by hand".into()),
            category: None,
            start: at(start),
            end: at(start + chrono::Duration::minutes(minutes)),
            zone: None,
            recurrence: vec![],
            exceptions: vec![],
            marker: None,
            cancelled: false,
            created: None,
        }
    }

    #[test]
    fn the_spec_follows_the_event_in_the_task_zone_across_dst() {
        // 2026-03-08 is the US spring-forward day: 16:00 UTC is 12:00 EDT (it was 11:00 EST).
        let ev = timed(chrono::Utc.with_ymd_and_hms(2026, 3, 8, 16, 0, 0).unwrap(), 90);
        let s = spec_from_event(&spec(Some("America/New_York")), &ev);
        assert_eq!((s.start.as_str(), s.end.as_deref()), ("2026-03-08T12:00:00", Some("2026-03-08T13:30:00")));
        assert_eq!((s.title.as_str(), s.description.as_deref()), ("Essay (moved)", Some("by hand")));
        assert_eq!((s.duration.as_deref(), s.category.as_deref()), (None, Some("Homework")));
        let d = desired_event(&s, "uid", "owner").unwrap();
        let instants = |a: &EventTime, b: &EventTime| (a.to_rfc3339_or_date(), b.to_rfc3339_or_date());
        assert_eq!(instants(&d.start, &d.end), instants(&ev.start, &ev.end), "the new spec means the event as it is");
        // No zone: UTC instants.
        let s = spec_from_event(&spec(None), &ev);
        assert_eq!(s.start, "2026-03-08T16:00:00Z");
    }

    #[test]
    fn an_all_day_event_makes_an_all_day_task() {
        let d = |day| EventTime::Date(chrono::NaiveDate::from_ymd_opt(2026, 3, day).unwrap());
        let ev = RemoteEvent { start: d(9), end: d(11), ..timed(chrono::Utc::now(), 10) };
        let s = spec_from_event(&spec(Some("Europe/Berlin")), &ev);
        assert_eq!((s.start.as_str(), s.end.as_deref(), s.all_day), ("2026-03-09", Some("2026-03-11"), Some(true)));
        let want = desired_event(&s, "uid", "owner").unwrap();
        assert_eq!((want.start, want.end), (d(9), d(11)));
    }
}
