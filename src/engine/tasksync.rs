//! Reconcile of one TaskSync: read, plan, perform (recording the outcome: `record`).

use std::sync::Arc;
use std::time::Duration;

use kube::{Resource, ResourceExt};
use tracing::Instrument as _;

use super::backoff::jitter;
use super::inputs;
use super::plan::{self, Adopt, Call, ConnState, OnError, Release, Step};
use super::schedule::Placed;
use super::{Engine, EngineError, EventType, ObjectKey, Outcome};
use crate::providers::{Created, EventData, Provider, ProviderError, Target, event_key};
use crate::resources::condition::{self, Condition, ConditionStatus};
use crate::resources::{
    CalendarConnection, ConflictPolicy, Operation, SyncStatus, TaskSync, TaskSyncStatus, task_sync_labels,
};

/// Everything one reconcile works with.
pub(super) struct Ctx<'a> {
    pub(super) key: ObjectKey,
    pub(super) ts: &'a TaskSync,
    pub(super) conn: Option<&'a CalendarConnection>,
    pub(super) uid: String,
    pub(super) generation: i64,
    pub(super) calendar: String,
    pub(super) desired: Result<(EventData, String), String>,
    pub(super) status: TaskSyncStatus,
    /// Set by a move: the old copy, recorded with the new event (see `moves`).
    pub(super) move_from: Option<crate::resources::MovingFrom>,
    /// `spec.schedule`: where this reconcile placed the task (recorded once the event is there).
    pub(super) placed: Option<Placed>,
    /// History entries and Events of this reconcile not written yet: they go with the status in
    /// one `Objects::record_outcome` (`finish`), or alone (`flush`) when no status follows.
    pub(super) pending: Pending,
}

/// See `Ctx::pending`.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) history: Vec<(String, crate::resources::HistoryEntry)>,
    pub(super) events: Vec<crate::engine::ObjectEvent>,
}

pub(super) use super::inputs::conn_state;

pub(super) fn cond(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Condition {
    Condition::new(type_, if ok { ConditionStatus::True } else { ConditionStatus::False }, reason, message)
}

/// Whether the plan's first step for this TaskSync (not being deleted) is `AddFinalizer`, so the
/// finalizer can ride on the labels' write: deletion policy `Delete`, none yet, no half-done
/// move (`plan::plan` checks that first). Auto-scheduled tasks are left to the plan: one that
/// finds no slot stays without a finalizer, as before.
fn finalizer_first(ts: &crate::resources::TaskSync, has_finalizer: bool) -> bool {
    !has_finalizer
        && ts.spec.deletion_policy == crate::resources::DeletionPolicy::Delete
        && ts.spec.schedule.is_none()
        && ts.status.as_ref().is_none_or(|s| s.moving_from.is_none())
}

impl Engine {
    /// Reconcile the TaskSync `namespace/name`.
    pub async fn reconcile_task_sync(&self, namespace: &str, name: &str) -> Result<Outcome, EngineError> {
        let Some(ts) = self.objects.get_task_sync(namespace, name).await? else {
            // Gone: a hint left for it would never be taken.
            self.live.take_hint(&ObjectKey::task_sync(namespace, name));
            return Ok(Outcome::Done);
        };
        // Part of the request's trace while the change it made is not yet observed.
        let pending = ts.status.as_ref().and_then(|s| s.observed_generation) != ts.meta().generation;
        let traceparent = ts.annotations().get(crate::telemetry::spans::TRACEPARENT_ANNOTATION).map(String::as_str);
        let key = ObjectKey::task_sync(namespace, name);
        let span = crate::telemetry::spans::reconcile_span("TaskSync", &key, traceparent, pending);
        let result = self.reconcile_task_sync_loaded(ts, namespace, name).instrument(span.clone()).await;
        crate::telemetry::spans::reconcile_outcome(&span, &result);
        result
    }

    async fn reconcile_task_sync_loaded(
        &self,
        ts: TaskSync,
        namespace: &str,
        name: &str,
    ) -> Result<Outcome, EngineError> {
        if super::feed_only::applies(&ts) {
            return self.reconcile_feed_only(&ts).await;
        }
        let deleting = inputs::deleting(&ts);
        let mut has_finalizer = inputs::has_finalizer(&ts);
        let conn = self.objects.get_connection(namespace, inputs::holder(&ts)).await?;
        let uid = ts.uid().unwrap_or_default();
        let calendar = inputs::calendar(&ts, conn.as_ref());
        let conn_ready = conn_state(conn.as_ref()) == ConnState::Ready;
        if ts.meta().deletion_timestamp.is_none()
            && let Some(c) = &conn
        {
            // Before any placement: the user's other auto tasks find this one by its labels.
            let want = task_sync_labels(&c.spec.user_id, &ts.spec.connection_ref.name, &ts.spec.task_id);
            let have = ts.labels();
            if want.iter().any(|(k, v)| have.get(k) != Some(v)) {
                let key = ObjectKey::task_sync(namespace, name);
                if finalizer_first(&ts, has_finalizer) {
                    // A new TaskSync: the finalizer the plan adds first anyway, in the same write.
                    let finalizer = crate::resources::FINALIZER;
                    self.objects.set_labels_and_finalizer(&key, &want, finalizer).await?;
                    has_finalizer = true;
                } else {
                    self.objects.set_labels(&key, &want).await?;
                }
            }
        }
        // A task that places itself: one placement at a time per user (the lock is held until
        // this reconcile has written the block and recorded it).
        let mut _user_lock = None;
        let mut placed = None;
        if ts.spec.schedule.is_some()
            && !deleting
            && let Some(c) = conn.as_ref().filter(|_| conn_ready)
        {
            _user_lock = Some(self.sched.user_lock(namespace, &c.spec.user_id).lock_owned().await);
            placed = Some(self.place(namespace, &ts, c).await?);
        }
        let desired = inputs::with_hash(self.desired_of(&ts, &uid, placed.as_ref()), calendar.as_deref(), conn_ready);
        let mut ctx = Ctx {
            key: ObjectKey::task_sync(namespace, name),
            ts: &ts,
            conn: conn.as_ref(),
            uid,
            generation: ts.meta().generation.unwrap_or(1),
            calendar: calendar.unwrap_or_default(),
            desired,
            status: ts.status.clone().unwrap_or_default(),
            move_from: None,
            pending: Pending::default(),
            placed,
        };
        // Nothing to write: never placed, and nothing fits (or the busy time is unknown).
        if let Some(out) = self.unplaced(&mut ctx).await? {
            return Ok(out);
        }
        // The connection's change sync found this event changed or gone in the calendar.
        if let Some(hint) = self.live.take_hint(&ctx.key)
            && let Some(out) = self.on_remote_change(&mut ctx, hint).await?
        {
            return Ok(out);
        }
        // The user chose a side in a held conflict.
        if ts.meta().deletion_timestamp.is_none()
            && let Some(choice) = ts.annotations().get(crate::resources::RESOLVE_ANNOTATION).cloned()
            && let Some(out) = self.on_resolve(&mut ctx, &choice).await?
        {
            return Ok(out);
        }
        // A reconcile performs at most a few steps (finalizer, then one calendar write, maybe a
        // conflict re-read); the bound guarantees termination whatever the plan says.
        for _ in 0..4 {
            let connection = conn_state(ctx.conn);
            let step = plan::plan(&inputs::plan_input(
                &ts,
                has_finalizer,
                &connection,
                &ctx.desired,
                &ctx.status,
                &ctx.calendar,
                self.now(),
            ));
            tracing::debug!(object = %ctx.key, ?step, "planned");
            match step {
                Step::Nothing => return Ok(Outcome::Done),
                Step::AddFinalizer => {
                    self.objects.add_finalizer(&ctx.key, crate::resources::FINALIZER).await?;
                    has_finalizer = true;
                }
                Step::RemoveFinalizer(Release::PolicyOrphan) => {
                    self.objects.remove_finalizer(&ctx.key, crate::resources::FINALIZER).await?;
                    has_finalizer = false;
                }
                Step::RemoveFinalizer(why) => return self.release(&mut ctx, why).await,
                Step::Invalid(msg) => {
                    self.set_failed(&mut ctx, "InvalidSpec", &msg);
                    return self.finish(&mut ctx, self.config.resync).await;
                }
                Step::Wait { reason, message } => {
                    self.set_failed(&mut ctx, reason, &message);
                    // A connection that was never checked will be in a moment: look again soon
                    // rather than after the long wait (drivers also requeue on its change).
                    let unchecked =
                        matches!(conn_state(ctx.conn), ConnState::NotReady { reason, .. } if reason == "Pending");
                    let after = if unchecked { self.config.backoff.base } else { self.config.wait_requeue };
                    return self.finish(&mut ctx, after).await;
                }
                Step::Backoff(left) => return Ok(Outcome::Requeue(jitter(left.max(Duration::from_millis(100))))),
                Step::HoldDeleted => {
                    self.set_failed(
                        &mut ctx,
                        "DeletedInCalendar",
                        "the event was deleted in the calendar app; change the task to create it again",
                    );
                    return self.finish(&mut ctx, self.config.resync).await;
                }
                Step::HoldConflict => {
                    self.set_failed(&mut ctx, "ConflictDetected", "the event was edited in the calendar app; change the task to overwrite the edit, or set conflictPolicy");
                    return self.finish(&mut ctx, self.config.resync).await;
                }
                Step::InSync => {
                    // Keep the reason of the write that got us here (EventCreated, ...): a
                    // no-op reconcile must not rewrite status.
                    let settled = condition::is_true(&ctx.status.conditions, "Synced")
                        && condition::is_true(&ctx.status.conditions, "Ready")
                        && ctx.status.observed_generation == Some(ctx.generation);
                    if !settled {
                        self.set_in_sync(&mut ctx, "InSync", "the calendar event matches the task");
                    }
                    self.note_placed(&mut ctx);
                    return self.finish(&mut ctx, self.config.resync).await;
                }
                Step::FinishMove => return self.finish_move(&mut ctx).await,
                Step::Create | Step::Update { .. } | Step::Delete { .. } | Step::Move { .. } => {
                    if matches!(step, Step::Delete { .. })
                        && let Some(out) = self.guard_deletion(&mut ctx).await?
                    {
                        return Ok(out);
                    }
                    let provider = match self.provider(&ctx).await? {
                        Ok(p) => p,
                        Err(e) => {
                            let call = if matches!(step, Step::Delete { .. }) { Call::Delete } else { Call::Create };
                            return self.on_provider_error(&mut ctx, call, e).await;
                        }
                    };
                    match step {
                        Step::Create => match self.create(&mut ctx, provider.as_ref()).await? {
                            Some(out) => return Ok(out),
                            None => continue,
                        },
                        Step::Update { event_id, etag } => {
                            match self.update(&mut ctx, provider.as_ref(), &event_id, etag.as_deref()).await? {
                                Some(out) => return Ok(out),
                                None => continue,
                            }
                        }
                        Step::Delete { event_id, etag } => {
                            return self.delete(&mut ctx, provider.as_ref(), event_id, etag).await;
                        }
                        Step::Move { event_id, etag } => {
                            return self.move_event(&mut ctx, provider.as_ref(), event_id, etag).await;
                        }
                        _ => unreachable!("only calendar steps reach here"),
                    }
                }
            }
        }
        Ok(Outcome::Requeue(jitter(self.config.backoff.base)))
    }

    pub(super) async fn provider(
        &self,
        ctx: &Ctx<'_>,
    ) -> Result<Result<Arc<dyn Provider>, ProviderError>, EngineError> {
        let Some(conn) = ctx.conn else {
            return Ok(Err(ProviderError::Invalid { message: "the CalendarConnection is gone".into() }));
        };
        self.provider_of(&ctx.key.namespace, conn).await
    }

    /// A client for `conn` (in `namespace`).
    pub(super) async fn provider_of(
        &self,
        namespace: &str,
        conn: &CalendarConnection,
    ) -> Result<Result<Arc<dyn Provider>, ProviderError>, EngineError> {
        let creds = match self.objects.read_credentials(namespace, &conn.spec.credentials_secret_ref).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Ok(Err(ProviderError::Revoked {
                    message: format!("credentials Secret {:?} is missing", conn.spec.credentials_secret_ref.name),
                }));
            }
            Err(crate::engine::StoreError::Invalid(m) | crate::engine::StoreError::Unreadable(m)) => {
                return Ok(Err(ProviderError::Revoked { message: m }));
            }
            Err(e) => return Err(e.into()),
        };
        let target = Target {
            provider: conn.spec.provider,
            server_url: conn.spec.server_url.clone(),
            connection: format!("{namespace}/{}", conn.name_any()),
        };
        Ok(self.connector.connect(&target, &creds).await)
    }

    pub(super) fn desired(ctx: &Ctx<'_>) -> (EventData, String) {
        // Callers reach calendar steps only after plan checked the spec is valid.
        ctx.desired.clone().unwrap_or_else(|_| unreachable!("plan returns Invalid for a bad spec"))
    }

    /// Create (or adopt after a crash). `None` means: plan again (the event was recreated).
    pub(super) async fn create(&self, ctx: &mut Ctx<'_>, p: &dyn Provider) -> Result<Option<Outcome>, EngineError> {
        let (data, hash) = Self::desired(ctx);
        let key = event_key(&ctx.uid);
        match p.create(&ctx.calendar, &key, &data).await {
            Ok(Created::New(ev)) => self.record(ctx, Operation::Create, &ev, &hash).await.map(Some),
            Ok(Created::Existing(ev)) => match plan::adopt(&ev, &ctx.uid, &self.config.owner, &hash) {
                Adopt::AsIs => self.record(ctx, Operation::Adopt, &ev, &hash).await.map(Some),
                Adopt::Update => match p.update(&ctx.calendar, &ev.id, ev.etag.as_deref(), &data).await {
                    Ok(ev) => self.record(ctx, Operation::Adopt, &ev, &hash).await.map(Some),
                    Err(e) => self.on_provider_error(ctx, Call::Update, e).await.map(Some),
                },
                Adopt::NotOurs => {
                    let msg = format!(
                        "an event with calsync's key {key} exists in calendar {:?} but was not written for this TaskSync; calsync never touches events it does not own",
                        ctx.calendar
                    );
                    self.set_failed(ctx, "NotOwned", &msg);
                    ctx.status.next_attempt_time =
                        Some(self.now() + chrono::Duration::from_std(self.config.resync).unwrap_or_default());
                    self.event(ctx, EventType::Warning, "NotOwned", "Create", msg);
                    self.finish(ctx, self.config.resync).await.map(Some)
                }
            },
            Err(e) => self.on_provider_error(ctx, Call::Create, e).await.map(Some),
        }
    }

    /// Update. `None` means: plan again.
    async fn update(
        &self,
        ctx: &mut Ctx<'_>,
        p: &dyn Provider,
        id: &str,
        etag: Option<&str>,
    ) -> Result<Option<Outcome>, EngineError> {
        let (data, hash) = Self::desired(ctx);
        match p.update(&ctx.calendar, id, etag, &data).await {
            Ok(ev) => self.record(ctx, Operation::Update, &ev, &hash).await.map(Some),
            Err(e) => match plan::on_error(Call::Update, &e, ctx.ts.spec.conflict_policy) {
                OnError::ResolveConflict(policy) => self.resolve_conflict(ctx, p, id, policy).await,
                OnError::Recreate => {
                    ctx.status.event_id = None;
                    ctx.status.etag = None;
                    ctx.status.calendar_edit = None;
                    Ok(None)
                }
                OnError::ReportDeleted => self.report_edit(ctx, None, ctx.ts.spec.conflict_policy).await.map(Some),
                _ => self.on_provider_error(ctx, Call::Update, e).await.map(Some),
            },
        }
    }

    async fn delete(
        &self,
        ctx: &mut Ctx<'_>,
        p: &dyn Provider,
        id: Option<String>,
        etag: Option<String>,
    ) -> Result<Outcome, EngineError> {
        let key = event_key(&ctx.uid);
        let (id, etag) = match id {
            Some(id) => (id, etag),
            None => match p.find_by_key(&ctx.calendar, &key).await {
                Ok(Some(ev)) if plan::adopt(&ev, &ctx.uid, &self.config.owner, "") != Adopt::NotOurs => {
                    (ev.id, ev.etag)
                }
                Ok(_) => return self.release(ctx, Release::EventDeleted).await,
                Err(e) => return self.on_provider_error(ctx, Call::Delete, e).await,
            },
        };
        let mut result = p.delete(&ctx.calendar, &id, etag.as_deref()).await;
        if let Err(e) = &result
            && plan::on_error(Call::Delete, e, ConflictPolicy::TaskWins)
                == OnError::ResolveConflict(ConflictPolicy::TaskWins)
        {
            result = match p.get(&ctx.calendar, &id).await {
                Ok(Some(r)) if plan::adopt(&r, &ctx.uid, &self.config.owner, "") != Adopt::NotOurs => {
                    p.delete(&ctx.calendar, &id, r.etag.as_deref()).await
                }
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
        }
        match result {
            Ok(()) => self.release(ctx, Release::EventDeleted).await,
            Err(e) if plan::on_error(Call::Delete, &e, ConflictPolicy::TaskWins) == OnError::Gone => {
                self.release(ctx, Release::EventDeleted).await
            }
            Err(e) => self.on_provider_error(ctx, Call::Delete, e).await,
        }
    }

    /// Let a deleted TaskSync go.
    pub(super) async fn release(&self, ctx: &mut Ctx<'_>, why: Release) -> Result<Outcome, EngineError> {
        let (op, type_, reason, note) = match &why {
            Release::EventDeleted => {
                (Operation::Delete, EventType::Normal, "EventDeleted", "the calendar event was deleted".to_string())
            }
            Release::Orphaned | Release::PolicyOrphan => (
                Operation::Orphan,
                EventType::Normal,
                "EventOrphaned",
                "deletionPolicy is Orphan: the calendar event was left in place".to_string(),
            ),
            Release::CleanupImpossible(r) => (
                Operation::Orphan,
                EventType::Warning,
                *r,
                format!("the calendar event could not be deleted ({r}) and was left in the calendar"),
            ),
        };
        let status = if type_ == EventType::Warning { SyncStatus::Failed } else { SyncStatus::Success };
        let error = (type_ == EventType::Warning).then(|| note.clone());
        self.history(ctx, op, status, error).await?;
        self.event(ctx, type_, reason, "Delete", note);
        // No status follows: the object goes once the finalizer is removed.
        self.flush(ctx).await?;
        self.objects.remove_finalizer(&ctx.key, crate::resources::FINALIZER).await?;
        Ok(Outcome::Done)
    }
}
