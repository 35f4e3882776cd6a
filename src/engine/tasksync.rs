//! Reconcile of one TaskSync: read, plan, perform, record.

use std::sync::Arc;
use std::time::Duration;

use kube::{Resource, ResourceExt};

use super::backoff::jitter;
use super::desired::desired_event;
use super::plan::{self, Adopt, Call, ConnState, OnError, PlanInput, Release, Step};
use super::{Engine, EngineError, EventType, ObjectKey, Outcome};
use crate::providers::{Created, EventData, Provider, ProviderError, RemoteEvent, Target, event_key};
use crate::resources::condition::{self, Condition, ConditionStatus, set_condition};
use crate::resources::history::{self, TASK_HISTORY_LIMIT};
use crate::resources::{
    CalendarConnection, ConflictPolicy, Direction, HistoryEntry, Operation, SyncStatus, TaskSync, TaskSyncStatus,
    task_sync_labels,
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
}

pub(super) fn conn_state(conn: Option<&CalendarConnection>) -> ConnState {
    let Some(c) = conn else { return ConnState::Missing };
    if !c.spec.active {
        return ConnState::Inactive;
    }
    let conditions = c.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    match condition::find(conditions, "Ready") {
        Some(r) if r.status == ConditionStatus::True => ConnState::Ready,
        Some(r) if r.reason == "ReconnectRequired" => ConnState::ReconnectRequired,
        Some(r) => ConnState::NotReady { reason: r.reason.clone(), message: r.message.clone() },
        None => {
            ConnState::NotReady { reason: "Pending".into(), message: "the connection has not been checked yet".into() }
        }
    }
}

fn target_calendar(ts: &TaskSync, conn: Option<&CalendarConnection>) -> Option<String> {
    if let Some(c) = &ts.spec.calendar_id {
        return Some(c.clone());
    }
    let conn = conn?;
    ts.spec
        .category
        .as_ref()
        .and_then(|cat| conn.spec.category_calendars.get(cat))
        .or(conn.spec.chosen_calendar())
        .or(conn.status.as_ref().and_then(|s| s.default_calendar_id.as_ref()))
        .cloned()
}

pub(super) fn cond(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Condition {
    Condition::new(type_, if ok { ConditionStatus::True } else { ConditionStatus::False }, reason, message)
}

impl Engine {
    /// Reconcile the TaskSync `namespace/name`.
    pub async fn reconcile_task_sync(&self, namespace: &str, name: &str) -> Result<Outcome, EngineError> {
        let Some(ts) = self.objects.get_task_sync(namespace, name).await? else {
            // Gone: a hint left for it would never be taken.
            self.live.take_hint(&ObjectKey::task_sync(namespace, name));
            return Ok(Outcome::Done);
        };
        if super::feed_only::applies(&ts) {
            return self.reconcile_feed_only(&ts).await;
        }
        let deleting = ts.meta().deletion_timestamp.is_some();
        // A deleted TaskSync's event is where the status says, even if the spec was routed
        // elsewhere before the move happened.
        let holder = ts
            .status
            .as_ref()
            .and_then(|s| s.connection.as_deref())
            .filter(|_| deleting)
            .unwrap_or(&ts.spec.connection_ref.name);
        let conn = self.objects.get_connection(namespace, holder).await?;
        let uid = ts.uid().unwrap_or_default();
        let calendar = ts
            .status
            .as_ref()
            .and_then(|s| s.calendar_id.clone())
            .filter(|_| deleting)
            .or_else(|| target_calendar(&ts, conn.as_ref()));
        let conn_ready = conn_state(conn.as_ref()) == ConnState::Ready;
        let desired = desired_event(&ts.spec, &uid, &self.config.owner).and_then(|mut ev| {
            let cal = match &calendar {
                Some(c) => c.as_str(),
                None if conn_ready => return Err("the connection has no writable calendar to use: set calendarId on the TaskSync or the CalendarConnection".into()),
                None => "",
            };
            let hash = ev.content_hash(cal);
            ev.marker.hash = hash.clone();
            Ok((ev, hash))
        });
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
        };
        if ts.meta().deletion_timestamp.is_none()
            && let Some(c) = &conn
        {
            let want = task_sync_labels(&c.spec.user_id, &ts.spec.connection_ref.name, &ts.spec.task_id);
            let have = ts.labels();
            if want.iter().any(|(k, v)| have.get(k) != Some(v)) {
                self.objects.set_labels(&ctx.key, &want).await?;
            }
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
        let mut has_finalizer = ts.finalizers().iter().any(|f| f == crate::resources::FINALIZER);
        // A reconcile performs at most a few steps (finalizer, then one calendar write, maybe a
        // conflict re-read); the bound guarantees termination whatever the plan says.
        for _ in 0..4 {
            let step = plan::plan(&PlanInput {
                deleting: ts.meta().deletion_timestamp.is_some(),
                has_finalizer,
                deletion_policy: ts.spec.deletion_policy,
                conflict_policy: ts.spec.conflict_policy,
                connection: &conn_state(ctx.conn),
                desired: ctx.desired.as_ref().map(|(_, h)| h.as_str()).map_err(|e| e.as_str()),
                generation: ctx.generation,
                status: &ctx.status,
                elsewhere: !deleting && super::moves::elsewhere(&ctx),
                now: self.now(),
            });
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
                    return self.finish(&ctx, self.config.resync).await;
                }
                Step::Wait { reason, message } => {
                    self.set_failed(&mut ctx, reason, &message);
                    // A connection that was never checked will be in a moment: look again soon
                    // rather than after the long wait (drivers also requeue on its change).
                    let unchecked =
                        matches!(conn_state(ctx.conn), ConnState::NotReady { reason, .. } if reason == "Pending");
                    let after = if unchecked { self.config.backoff.base } else { self.config.wait_requeue };
                    return self.finish(&ctx, after).await;
                }
                Step::Backoff(left) => return Ok(Outcome::Requeue(jitter(left.max(Duration::from_millis(100))))),
                Step::HoldDeleted => {
                    self.set_failed(
                        &mut ctx,
                        "DeletedInCalendar",
                        "the event was deleted in the calendar app; change the task to create it again",
                    );
                    return self.finish(&ctx, self.config.resync).await;
                }
                Step::HoldConflict => {
                    self.set_failed(&mut ctx, "ConflictDetected", "the event was edited in the calendar app; change the task to overwrite the edit, or set conflictPolicy");
                    return self.finish(&ctx, self.config.resync).await;
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
                    return self.finish(&ctx, self.config.resync).await;
                }
                Step::FinishMove => return self.finish_move(&mut ctx).await,
                Step::Create | Step::Update { .. } | Step::Delete { .. } | Step::Move { .. } => {
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
                    self.publish(&ctx.key, EventType::Warning, "NotOwned", "Create", msg).await;
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
    async fn release(&self, ctx: &mut Ctx<'_>, why: Release) -> Result<Outcome, EngineError> {
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
        self.publish(&ctx.key, type_, reason, "Delete", note).await;
        self.objects.remove_finalizer(&ctx.key, crate::resources::FINALIZER).await?;
        Ok(Outcome::Done)
    }

    pub(super) async fn on_provider_error(
        &self,
        ctx: &mut Ctx<'_>,
        call: Call,
        e: ProviderError,
    ) -> Result<Outcome, EngineError> {
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
                self.publish(&ctx.key, EventType::Warning, e.reason(), action_of(call), e.to_string()).await;
                self.finish(ctx, self.config.resync).await
            }
            _ => {
                let first = ctx.status.failed_attempts == 0;
                ctx.status.failed_attempts = ctx.status.failed_attempts.saturating_add(1);
                ctx.status.last_failure_time = Some(now);
                let retry_after = match &e {
                    ProviderError::RateLimited { retry_after, .. } => *retry_after,
                    _ => None,
                };
                let delay = self.config.backoff.delay(ctx.status.failed_attempts, retry_after);
                ctx.status.next_attempt_time = Some(self.not_before(delay));
                self.set_failed(ctx, e.reason(), &e.to_string());
                ctx.status.observed_generation = Some(ctx.generation);
                if first {
                    self.history(ctx, op_of(call), SyncStatus::Failed, Some(e.to_string())).await?;
                    self.publish(&ctx.key, EventType::Warning, e.reason(), action_of(call), e.to_string()).await;
                }
                self.finish(ctx, delay).await
            }
        }
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
            s.moving_from = Some(from);
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
        self.history(ctx, op, SyncStatus::Success, None).await?;
        self.publish(
            &ctx.key,
            EventType::Normal,
            reason,
            if op == Operation::Update { "Update" } else { "Create" },
            msg,
        )
        .await;
        self.finish(ctx, self.config.resync).await
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

    /// Record `entry` in the TaskSync's ring (written with the status) and its connection's.
    pub(super) async fn append_history(&self, ctx: &mut Ctx<'_>, entry: HistoryEntry) -> Result<(), EngineError> {
        history::push(&mut ctx.status.history, entry.clone(), TASK_HISTORY_LIMIT);
        if let Some(conn) = ctx.conn {
            match self.objects.append_connection_history(&ctx.key.namespace, &conn.name_any(), entry).await {
                Ok(_) | Err(crate::engine::StoreError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
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
    pub(super) async fn finish(&self, ctx: &Ctx<'_>, after: Duration) -> Result<Outcome, EngineError> {
        if ctx.ts.status.as_ref() != Some(&ctx.status) {
            match self.objects.patch_task_sync_status(&ctx.key.namespace, &ctx.key.name, &ctx.status).await {
                Ok(_) => {}
                // Deleted meanwhile: nothing left to record.
                Err(crate::engine::StoreError::NotFound(_)) => return Ok(Outcome::Done),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Outcome::Requeue(jitter(after)))
    }

    /// The provider says the credentials are dead: the connection must say so too, so the REST
    /// status and `kubectl get calconn` tell the user to reconnect.
    pub(super) async fn mark_reconnect_required(
        &self,
        namespace: &str,
        conn: &CalendarConnection,
        message: &str,
    ) -> Result<(), EngineError> {
        let mut status = conn.status.clone().unwrap_or_default();
        let now = self.now();
        let g = conn.meta().generation;
        set_condition(&mut status.conditions, cond("Authenticated", false, "ReconnectRequired", message), g, now);
        set_condition(&mut status.conditions, cond("Ready", false, "ReconnectRequired", message), g, now);
        if conn.status.as_ref() != Some(&status) {
            match self.objects.patch_connection_status(namespace, &conn.name_any(), &status).await {
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
