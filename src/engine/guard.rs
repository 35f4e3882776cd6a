//! The mass-deletion guard: counts the calendar deletions of each connection in a window and,
//! past the threshold (`GuardConfig`), holds further deletions until the user confirms or
//! cancels them with the `calendar.getitdone.app/confirm-deletions` annotation.
//!
//! Owns: `status.deletionGuard` and the `DeletionGuard` condition of a CalendarConnection, the
//! decision annotation, and the verdict on one TaskSync's deletion. Must not touch: the calendar
//! call itself (`tasksync`) or any other field of the connection's status.
//!
//! Concurrency: all TaskSyncs of a connection are reconciled by one process (standalone shards by
//! connection, the controller has one leader), but concurrently. Every guard decision takes the
//! connection's in-process lock, reads the connection from the store, decides and writes the
//! status before letting go, so two reconciles can never both take the last slot, and a restart
//! resumes from the stored count (a guard that was holding keeps holding). Other writers of the
//! connection's status go through `save_connection_status`, which keeps the stored guard fields
//! under the same lock: a connection reconcile that read its status before a deletion was counted
//! must not roll the count back. A deletion is counted when it is let through, before the calendar
//! call, so a call that fails still counts: the guard errs toward holding.

mod config;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kube::{Resource, ResourceExt};

pub use config::GuardConfig;

use super::tasksync::{Ctx, cond};
use super::{Engine, EngineError, EventType, Labels, ObjectKey, Outcome, StoreError};
use crate::resources::condition::{find, set_condition};
use crate::resources::{
    CONFIRM_DELETIONS_ANNOTATION, CONNECTION_LABEL, CalendarConnection, CalendarConnectionStatus, DeletionGuardStatus,
    DeletionPolicy, FINALIZER, GuardAction, GuardDecision, Operation, SyncStatus, TaskSync,
};

/// Condition type on the connection: True while deletions are held.
pub const CONDITION: &str = "DeletionGuard";
/// Reason of the TaskSync's `Synced=False` while its deletion is held.
pub const HELD_REASON: &str = "DeletionHeld";

/// TaskSyncs of one connection whose deletion this process let through and counted. Until they
/// are gone they still record an event; counted among the connection's events as well, they
/// would count twice in the total and let a deletion past the threshold. A retry of one of them
/// is not counted again. Lost on a restart, which can only count a deletion twice (toward
/// holding).
type Passed = HashSet<String>;

/// One async lock per connection (`namespace/name`), guarding its `Passed`. Entries stay for the
/// life of the process: one small entry per connection this process reconciles.
#[derive(Default)]
pub(super) struct GuardLocks(std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Passed>>>>);

impl GuardLocks {
    async fn lock(&self, namespace: &str, name: &str) -> tokio::sync::OwnedMutexGuard<Passed> {
        let lock = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(format!("{namespace}/{name}")).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// The connection's TaskSyncs as the guard counts them.
struct Counts {
    /// Deletions waiting for a decision.
    held: u32,
    /// Events still recorded in the calendar.
    events: u32,
    /// The latest deletion mark among the held ones.
    latest_mark: Option<DateTime<Utc>>,
}

fn marked_at(ts: &TaskSync) -> Option<DateTime<Utc>> {
    ts.meta().deletion_timestamp.as_ref().and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))
}

/// Whether `decision` applies to `ts`: it was marked for deletion no later than the latest of
/// the deletions held when the decision was taken. Deletion marks come from the store's clock,
/// so the comparison never mixes clocks.
fn covered(decision: Option<&GuardDecision>, ts: &TaskSync) -> Option<GuardAction> {
    let d = decision?;
    (marked_at(ts)? <= d.covers_marked_until?).then_some(d.action)
}

fn guard_of(conn: &CalendarConnection) -> DeletionGuardStatus {
    conn.status.as_ref().and_then(|s| s.deletion_guard.clone()).unwrap_or_default()
}

/// What the guard has stored about deleting `ts` (read-only, for `calsync plan`: it neither
/// counts nor decides): the user's decision that covers it, else `Held` while deletions are held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredVerdict {
    Free,
    Held(String),
    Confirmed,
    Cancelled,
}

pub fn stored_verdict(conn: &CalendarConnection, ts: &TaskSync) -> StoredVerdict {
    let g = guard_of(conn);
    match covered(g.decision.as_ref(), ts) {
        Some(GuardAction::Confirm) => StoredVerdict::Confirmed,
        Some(GuardAction::Cancel) => StoredVerdict::Cancelled,
        None if g.holding() => StoredVerdict::Held(held_message(&g, g.total.saturating_sub(g.deleted_in_window))),
        None => StoredVerdict::Free,
    }
}

fn held_message(g: &DeletionGuardStatus, events: u32) -> String {
    let since = g.window_start.map(|t| t.to_rfc3339()).unwrap_or_default();
    format!(
        "{} calendar deletions are held: {} were deleted since {since} and the connection has {events} events left; \
         to delete them, annotate the CalendarConnection {CONFIRM_DELETIONS_ANNOTATION}=\"{}\"; to keep the events \
         and release the TaskSyncs, annotate it {CONFIRM_DELETIONS_ANNOTATION}=cancel",
        g.held, g.deleted_in_window, g.held
    )
}

impl Engine {
    /// Write a connection's status, keeping the guard's fields as stored now (every status
    /// writer but the guard itself).
    pub(super) async fn save_connection_status(
        &self,
        namespace: &str,
        name: &str,
        status: &CalendarConnectionStatus,
    ) -> Result<CalendarConnection, StoreError> {
        if !self.config.deletion_guard.enabled() {
            return self.objects.patch_connection_status(namespace, name, status).await;
        }
        let _lock = self.guards.lock(namespace, name).await;
        let mut status = status.clone();
        if let Some(stored) = self.objects.get_connection(namespace, name).await?.and_then(|c| c.status) {
            status.deletion_guard = stored.deletion_guard;
            status.conditions.retain(|c| c.type_ != CONDITION);
            status.conditions.extend(find(&stored.conditions, CONDITION).cloned());
        }
        self.objects.patch_connection_status(namespace, name, &status).await
    }

    /// The connection reconcile's part: act on a decision annotation. Returns the connection as
    /// it is afterwards when it acted.
    pub(super) async fn guard_on_connection(
        &self,
        conn: &CalendarConnection,
    ) -> Result<Option<CalendarConnection>, EngineError> {
        if !conn.annotations().contains_key(CONFIRM_DELETIONS_ANNOTATION) {
            return Ok(None);
        }
        let (ns, name) = (conn.namespace().unwrap_or_default(), conn.name_any());
        let mut passed = self.guards.lock(&ns, &name).await;
        let Some(fresh) = self.objects.get_connection(&ns, &name).await? else { return Ok(None) };
        self.decide(fresh, &mut passed).await.map(Some)
    }

    /// The TaskSync reconcile's part, before it deletes its calendar event: `None` lets the
    /// deletion proceed; otherwise the deletion is held (or, after a cancel, the event is left
    /// in place and the TaskSync released) and this is the outcome.
    pub(super) async fn guard_deletion(&self, ctx: &mut Ctx<'_>) -> Result<Option<Outcome>, EngineError> {
        let cfg = &self.config.deletion_guard;
        let Some(conn) = ctx.conn.filter(|_| cfg.enabled()) else { return Ok(None) };
        let (ns, name) = (conn.namespace().unwrap_or_default(), conn.name_any());
        let mut passed = self.guards.lock(&ns, &name).await;
        if passed.contains(&ctx.key.name) {
            return Ok(None);
        }
        let Some(mut fresh) = self.objects.get_connection(&ns, &name).await? else { return Ok(None) };
        if fresh.annotations().contains_key(CONFIRM_DELETIONS_ANNOTATION) {
            fresh = self.decide(fresh, &mut passed).await?;
        }
        let mut g = guard_of(&fresh);
        match covered(g.decision.as_ref(), ctx.ts) {
            Some(GuardAction::Confirm) => return Ok(None),
            Some(GuardAction::Cancel) => {
                drop(passed);
                return self.orphan_cancelled(ctx).await.map(Some);
            }
            None => {}
        }
        let now = self.now();
        let window = chrono::Duration::from_std(cfg.window).unwrap_or_default();
        if !g.holding() && g.window_start.is_none_or(|start| now >= start + window) {
            g.window_start = Some(now);
            g.deleted_in_window = 0;
            passed.clear();
        }
        let next = g.deleted_in_window.saturating_add(1);
        if g.holding() || next > cfg.max {
            let counts = self.guard_counts(&fresh, &mut passed).await?;
            let total = counts.events.saturating_add(g.deleted_in_window);
            if g.holding() || cfg.trips(next, total) {
                let tripped = !g.holding();
                let before = g.clone();
                g.since.get_or_insert(now);
                g.held = counts.held;
                g.total = total;
                let msg = held_message(&g, counts.events);
                // Unchanged counts keep the condition as it is (a refused confirm stays visible).
                if tripped || g != before {
                    self.write_guard(&fresh, g, Some(cond(CONDITION, true, "DeletionsHeld", msg.clone()))).await?;
                }
                drop(passed);
                if tripped {
                    let key = ObjectKey::connection(&ns, &name);
                    self.publish(&key, EventType::Warning, "DeletionsHeld", "Delete", msg).await;
                }
                let note = format!(
                    "the deletion of the calendar event is held by the connection's deletion guard; see the {CONDITION} condition of CalendarConnection {name}"
                );
                self.set_failed(ctx, HELD_REASON, &note);
                return self.finish(ctx, self.config.wait_requeue).await.map(Some);
            }
        }
        g.deleted_in_window = next;
        self.write_guard(&fresh, g, None).await?;
        passed.insert(ctx.key.name.clone());
        Ok(None)
    }

    /// Act on the decision annotation of `conn` (the caller holds its lock); the connection
    /// afterwards. The annotation is removed whatever it said, so it is acted on once.
    async fn decide(&self, conn: CalendarConnection, passed: &mut Passed) -> Result<CalendarConnection, EngineError> {
        let (ns, name) = (conn.namespace().unwrap_or_default(), conn.name_any());
        let key = ObjectKey::connection(&ns, &name);
        let value =
            conn.annotations().get(CONFIRM_DELETIONS_ANNOTATION).map(|v| v.trim().to_string()).unwrap_or_default();
        let mut g = guard_of(&conn);
        let counts = if g.holding() { Some(self.guard_counts(&conn, passed).await?) } else { None };
        let now = self.now();
        let action = counts.as_ref().and_then(|c| match value.as_str() {
            "cancel" => Some(GuardAction::Cancel),
            v if v.parse::<u32>() == Ok(c.held) => Some(GuardAction::Confirm),
            _ => None,
        });
        let (type_, reason, note, condition) = match (&counts, action) {
            (None, _) => (
                EventType::Warning,
                "ConfirmRefused",
                format!("{CONFIRM_DELETIONS_ANNOTATION}={value:?} refused: no deletions are held"),
                None,
            ),
            (Some(c), Some(action)) => {
                g.decision = Some(GuardDecision { action, at: now, count: c.held, covers_marked_until: c.latest_mark });
                g.since = None;
                g.held = 0;
                g.window_start = Some(now);
                g.deleted_in_window = 0;
                let (reason, note) = match action {
                    GuardAction::Confirm => {
                        ("DeletionsConfirmed", format!("{} held calendar deletions confirmed: they proceed", c.held))
                    }
                    GuardAction::Cancel => (
                        "DeletionsCancelled",
                        format!(
                            "{} held calendar deletions cancelled: the events stay in the calendar and the TaskSyncs are released",
                            c.held
                        ),
                    ),
                };
                (EventType::Normal, reason, note.clone(), Some(cond(CONDITION, false, reason, note)))
            }
            (Some(c), None) => {
                g.held = c.held;
                let note = format!(
                    "{CONFIRM_DELETIONS_ANNOTATION}={value:?} refused: {} deletions are held now; confirm with \"{}\" or cancel with \"cancel\"",
                    c.held, c.held
                );
                (
                    EventType::Warning,
                    "ConfirmRefused",
                    note.clone(),
                    Some(cond(CONDITION, true, "ConfirmRefused", note)),
                )
            }
        };
        let conn = match condition {
            Some(c) => self.write_guard(&conn, g, Some(c)).await?,
            None => conn,
        };
        self.objects
            .set_annotations(&key, &Labels::from([(CONFIRM_DELETIONS_ANNOTATION.to_string(), String::new())]))
            .await?;
        self.publish(&key, type_, reason, "Delete", note).await;
        Ok(conn)
    }

    /// Write the guard's part of the connection's status when it changed (the caller holds the
    /// connection's lock and read `conn` under it).
    async fn write_guard(
        &self,
        conn: &CalendarConnection,
        g: DeletionGuardStatus,
        condition: Option<crate::resources::Condition>,
    ) -> Result<CalendarConnection, EngineError> {
        let old = conn.status.clone().unwrap_or_default();
        let mut st = old.clone();
        st.deletion_guard = Some(g);
        if let Some(c) = condition {
            set_condition(&mut st.conditions, c, conn.meta().generation, self.now());
        }
        if st == old {
            return Ok(conn.clone());
        }
        let (ns, name) = (conn.namespace().unwrap_or_default(), conn.name_any());
        Ok(self.objects.patch_connection_status(&ns, &name, &st).await?)
    }

    /// Count the connection's TaskSyncs: held deletions and events still in the calendar (not
    /// those of deletions already counted); forget passed TaskSyncs that are gone.
    async fn guard_counts(&self, conn: &CalendarConnection, passed: &mut Passed) -> Result<Counts, EngineError> {
        let (ns, name) = (conn.namespace().unwrap_or_default(), conn.name_any());
        let selector = Labels::from([(CONNECTION_LABEL.to_string(), name.clone())]);
        let decision = guard_of(conn).decision;
        let mut counts = Counts { held: 0, events: 0, latest_mark: None };
        let list = self.objects.list_task_syncs(Some(&ns), &selector).await?;
        passed.retain(|p| list.iter().any(|ts| ts.name_any() == *p));
        for ts in list {
            if passed.contains(&ts.name_any()) {
                continue;
            }
            let st = ts.status.as_ref();
            // A deleted TaskSync's event stays with the connection its status names.
            let holder = st.and_then(|s| s.connection.as_deref()).unwrap_or(&ts.spec.connection_ref.name);
            if holder != name || st.and_then(|s| s.event_id.as_ref()).is_none() {
                continue;
            }
            counts.events += 1;
            let waits = ts.finalizers().iter().any(|f| f == FINALIZER)
                && ts.spec.deletion_policy == DeletionPolicy::Delete
                && covered(decision.as_ref(), &ts).is_none();
            if let Some(mark) = marked_at(&ts).filter(|_| waits) {
                counts.held += 1;
                counts.latest_mark = counts.latest_mark.max(Some(mark));
            }
        }
        Ok(counts)
    }

    /// Release a TaskSync whose held deletion was cancelled: the event stays in the calendar.
    async fn orphan_cancelled(&self, ctx: &mut Ctx<'_>) -> Result<Outcome, EngineError> {
        self.history(ctx, Operation::Orphan, SyncStatus::Success, None).await?;
        let note =
            "the deletion was cancelled at the connection's deletion guard: the calendar event was left in place";
        self.event(ctx, EventType::Normal, "DeletionCancelled", "Delete", note.into());
        self.flush(ctx).await?;
        match self.objects.remove_finalizer(&ctx.key, FINALIZER).await {
            Ok(()) | Err(StoreError::NotFound(_)) => Ok(Outcome::Done),
            Err(e) => Err(e.into()),
        }
    }
}
