//! What the engine would do for one TaskSync now: the engine's own `plan` over the inputs the
//! engine derives (`engine::inputs`), then the provider reads a reconcile makes before it writes
//! (find the event under its key, read the recorded event) to tell create from adopt, update
//! from conflict, and to show the field diff. Only read methods of a provider are called.
//!
//! Owns: turning a `Step` into a reported action. Must not touch: any write.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use serde::Serialize;

use super::diff::{self, Change};
use super::snapshot::Snapshot;
use crate::engine::guard::{self, StoredVerdict};
use crate::engine::inputs::{self, Desired};
use crate::engine::plan::{self, Adopt, Call, ConnState, OnError, Release, Step};
use crate::engine::{Objects, desired};
use crate::error::ErrorClass;
use crate::providers::{Connector, Provider, ProviderError, RemoteEvent, Target, event_key};
use crate::resources::{CalendarConnection, ConflictPolicy, RESOLVE_ANNOTATION, TaskSync};

/// What the engine would do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
    Move,
    Adopt,
    Nothing,
    Blocked,
    Error,
}

impl Action {
    /// Whether the engine would write to a calendar or record a calendar event.
    pub fn writes(self) -> bool {
        matches!(self, Action::Create | Action::Update | Action::Delete | Action::Move | Action::Adopt)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Move => "move",
            Action::Adopt => "adopt",
            Action::Nothing => "nothing",
            Action::Blocked => "blocked",
            Action::Error => "error",
        }
    }
}

/// The plan of one TaskSync.
#[derive(Clone, Debug, Serialize)]
pub struct Planned {
    pub namespace: String,
    pub name: String,
    pub action: Action,
    pub reason: String,
    pub diff: Vec<Change>,
}

/// Plans TaskSyncs over a snapshot, reading calendars through `connector`.
pub struct Planner<'a> {
    pub objects: &'a Snapshot,
    pub connector: &'a dyn Connector,
    pub owner: &'a str,
    pub guard_enabled: bool,
    pub now: DateTime<Utc>,
}

/// One TaskSync's facts, as a reconcile gathers them.
struct Facts<'a> {
    ts: &'a TaskSync,
    ns: String,
    conn: Option<&'a CalendarConnection>,
    uid: String,
    calendar: String,
    desired: Desired,
}

type Outcome = (Action, String, Vec<Change>);

fn outcome(action: Action, reason: impl Into<String>) -> Outcome {
    (action, reason.into(), Vec::new())
}

/// A failed provider read: dead credentials block (the engine would ask for a reconnect),
/// anything else is an error of the dry run.
fn read_failed(e: &ProviderError) -> Outcome {
    match e.class() {
        ErrorClass::Reauthenticate => outcome(Action::Blocked, format!("ReconnectRequired: {e}")),
        _ => outcome(Action::Error, format!("reading the calendar failed ({}): {e}", e.reason())),
    }
}

impl Planner<'_> {
    pub async fn plan(&self, ts: &TaskSync) -> Planned {
        let (namespace, name) = Snapshot::key(ts);
        let (action, reason, diff) = self.decide(ts, &namespace).await;
        Planned { namespace, name, action, reason, diff }
    }

    async fn decide(&self, ts: &TaskSync, ns: &str) -> Outcome {
        if crate::engine::feed_only_applies(ts) {
            return outcome(Action::Nothing, "feed-only task: no calendar to write");
        }
        let conn = self.objects.connections.get(&(ns.to_string(), inputs::holder(ts).to_string()));
        let connection = inputs::conn_state(conn);
        let ready = connection == ConnState::Ready;
        let deleting = inputs::deleting(ts);
        let calendar = inputs::calendar(ts, conn);
        let uid = ts.uid().unwrap_or_default();
        let mut notes: Vec<String> = Vec::new();
        if ts.spec.schedule.is_some() && !deleting {
            if ready && desired::placed_block(ts).is_none() {
                return outcome(
                    Action::Blocked,
                    "Unplaced: the task places itself (spec.schedule) and has no block yet; the engine places it first (reading busy time), which plan does not simulate",
                );
            }
            notes.push("spec.schedule: planned at the recorded block (re-placement is not simulated)".into());
        }
        if !deleting && ts.annotations().contains_key(RESOLVE_ANNOTATION) {
            notes.push(format!("the engine first acts on the {RESOLVE_ANNOTATION} annotation"));
        }
        let desired = inputs::with_hash(
            crate::engine::unplaced_event(ts, &uid, self.owner, self.now),
            calendar.as_deref(),
            ready,
        );
        let facts = Facts { ts, ns: ns.to_string(), conn, uid, calendar: calendar.unwrap_or_default(), desired };
        let mut status = ts.status.clone().unwrap_or_default();
        let mut has_finalizer = inputs::has_finalizer(ts);
        let mut out = outcome(Action::Error, "the plan did not settle");
        // The engine's own loop: finalizer steps, then one calendar step.
        for _ in 0..4 {
            let input =
                inputs::plan_input(ts, has_finalizer, &connection, &facts.desired, &status, &facts.calendar, self.now);
            out = match plan::plan(&input) {
                Step::AddFinalizer => {
                    has_finalizer = true;
                    notes.push("adds its finalizer".into());
                    continue;
                }
                Step::RemoveFinalizer(Release::PolicyOrphan) => {
                    has_finalizer = false;
                    notes.push("removes its finalizer (deletionPolicy Orphan)".into());
                    continue;
                }
                Step::RemoveFinalizer(Release::Orphaned) => outcome(
                    Action::Nothing,
                    "deleted with deletionPolicy Orphan: the event stays, the TaskSync is released",
                ),
                Step::RemoveFinalizer(Release::CleanupImpossible(r)) => outcome(
                    Action::Nothing,
                    format!("{r}: the event cannot be deleted and stays; the TaskSync is released"),
                ),
                Step::RemoveFinalizer(Release::EventDeleted) => outcome(Action::Nothing, "the event is gone"),
                Step::Nothing => outcome(Action::Nothing, "marked for deletion and holds no event of ours"),
                Step::Invalid(m) => outcome(Action::Blocked, format!("InvalidSpec: {m}")),
                Step::Wait { reason, message } => outcome(Action::Blocked, format!("{reason}: {message}")),
                Step::Backoff(left) => {
                    outcome(Action::Blocked, format!("Backoff: a failed call is retried in {}s", left.as_secs().max(1)))
                }
                Step::HoldDeleted => outcome(
                    Action::Blocked,
                    "DeletedInCalendar: the event was deleted in the calendar app; change the task to create it again",
                ),
                Step::HoldConflict => outcome(
                    Action::Blocked,
                    "ConflictDetected: the event was edited in the calendar app; change the task or set conflictPolicy",
                ),
                Step::InSync => outcome(Action::Nothing, "in sync"),
                Step::FinishMove => {
                    let from = status.moving_from.as_ref().map(|m| {
                        format!(" {} from calendar {:?} of connection {:?}", m.event_id, m.calendar_id, m.connection)
                    });
                    outcome(Action::Delete, format!("finish a move: delete the old copy{}", from.unwrap_or_default()))
                }
                Step::Delete { event_id, .. } => self.delete(&facts, event_id).await,
                Step::Move { event_id, .. } => self.moved(&facts, &status, &event_id).await,
                Step::Create => self.create(&facts).await,
                Step::Update { event_id, etag } => match self.update(&facts, &event_id, etag.as_deref()).await {
                    Some(o) => o,
                    // The engine would forget the deleted event and plan again: a create.
                    None => {
                        status.event_id = None;
                        status.etag = None;
                        status.calendar_edit = None;
                        notes.push("the event was deleted in the calendar app (conflictPolicy TaskWins)".into());
                        continue;
                    }
                },
            };
            break;
        }
        if !notes.is_empty() {
            out.1 = format!("{} ({})", out.1, notes.join("; "));
        }
        out
    }

    /// A client for the connection `name` (gated: it can only read).
    async fn provider(&self, ns: &str, conn: Option<&CalendarConnection>) -> Result<Arc<dyn Provider>, Outcome> {
        let Some(conn) = conn else {
            return Err(outcome(Action::Blocked, "ConnectionNotFound: the CalendarConnection is gone"));
        };
        let secret = &conn.spec.credentials_secret_ref;
        let creds = match self.objects.read_credentials(ns, secret).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err(outcome(
                    Action::Blocked,
                    format!("ReconnectRequired: credentials Secret {:?} is missing", secret.name),
                ));
            }
            Err(e) => return Err(outcome(Action::Blocked, format!("ReconnectRequired: {e}"))),
        };
        let target = Target {
            provider: conn.spec.provider,
            server_url: conn.spec.server_url.clone(),
            connection: format!("{ns}/{}", conn.name_any()),
        };
        self.connector.connect(&target, &creds).await.map_err(|e| read_failed(&e))
    }

    fn desired(f: &Facts<'_>) -> Result<(crate::providers::EventData, String), Outcome> {
        f.desired.clone().map_err(|m| outcome(Action::Blocked, format!("InvalidSpec: {m}")))
    }

    async fn create(&self, f: &Facts<'_>) -> Outcome {
        let p = match self.provider(&f.ns, f.conn).await {
            Ok(p) => p,
            Err(o) => return o,
        };
        let (data, hash) = match Self::desired(f) {
            Ok(d) => d,
            Err(o) => return o,
        };
        let key = event_key(&f.uid);
        match p.find_by_key(&f.calendar, &key).await {
            Err(e) => read_failed(&e),
            Ok(None) => (
                Action::Create,
                format!("create the event in calendar {:?}", f.calendar),
                diff::changes(None, &data, (None, &f.calendar)),
            ),
            Ok(Some(ev)) => match plan::adopt(&ev, &f.uid, self.owner, &hash) {
                Adopt::AsIs => {
                    outcome(Action::Adopt, format!("event {} with this TaskSync's key is current: record it", ev.id))
                }
                Adopt::Update => (
                    Action::Adopt,
                    format!("event {} with this TaskSync's key is stale: update and record it", ev.id),
                    diff::changes(Some(&ev), &data, (Some(&f.calendar), &f.calendar)),
                ),
                Adopt::NotOurs => outcome(
                    Action::Blocked,
                    format!(
                        "NotOwned: an event with calsync's key {key} exists in calendar {:?} but was not written for this TaskSync",
                        f.calendar
                    ),
                ),
            },
        }
    }

    /// `None`: the event is gone and the engine would create it again.
    async fn update(&self, f: &Facts<'_>, id: &str, etag: Option<&str>) -> Option<Outcome> {
        let p = match self.provider(&f.ns, f.conn).await {
            Ok(p) => p,
            Err(o) => return Some(o),
        };
        let (data, _) = match Self::desired(f) {
            Ok(d) => d,
            Err(o) => return Some(o),
        };
        let policy = f.ts.spec.conflict_policy;
        let remote = match p.get(&f.calendar, id).await {
            Err(e) => return Some(read_failed(&e)),
            Ok(r) => r.filter(|r| !r.cancelled),
        };
        let Some(ev) = remote else {
            let gone = ProviderError::NotFound { message: String::new() };
            return match plan::on_error(Call::Update, &gone, policy) {
                OnError::Recreate => None,
                _ => Some(outcome(
                    Action::Blocked,
                    format!(
                        "DeletedInCalendar: the event was deleted in the calendar app; conflictPolicy {policy:?} does not bring it back"
                    ),
                )),
            };
        };
        if plan::adopt(&ev, &f.uid, self.owner, "") == Adopt::NotOurs {
            return Some(outcome(
                Action::Blocked,
                format!("NotOwned: event {id} no longer carries this TaskSync's ownership marker"),
            ));
        }
        let changes = diff::changes(Some(&ev), &data, (Some(&f.calendar), &f.calendar));
        let edited = etag.is_some() && ev.etag.as_deref() != etag;
        Some(match (edited, policy) {
            (false, _) => (Action::Update, format!("update event {id}"), changes),
            (true, ConflictPolicy::TaskWins) => (
                Action::Update,
                format!("update event {id}, overwriting an edit made in the calendar app (conflictPolicy TaskWins)"),
                changes,
            ),
            (true, other) => (
                Action::Blocked,
                format!(
                    "ConflictDetected: event {id} was edited in the calendar app; conflictPolicy {other:?} keeps the edit"
                ),
                changes,
            ),
        })
    }

    async fn delete(&self, f: &Facts<'_>, event_id: Option<String>) -> Outcome {
        if let Some(conn) = f.conn.filter(|_| self.guard_enabled) {
            match guard::stored_verdict(conn, f.ts) {
                StoredVerdict::Held(msg) => return outcome(Action::Blocked, format!("{}: {msg}", guard::HELD_REASON)),
                StoredVerdict::Cancelled => {
                    return outcome(
                        Action::Nothing,
                        "the user cancelled held deletions: the event stays, the TaskSync is released",
                    );
                }
                StoredVerdict::Confirmed | StoredVerdict::Free => {}
            }
        }
        let p = match self.provider(&f.ns, f.conn).await {
            Ok(p) => p,
            Err(o) => return o,
        };
        let found = match &event_id {
            Some(id) => p.get(&f.calendar, id).await,
            None => p.find_by_key(&f.calendar, &event_key(&f.uid)).await,
        };
        match found {
            Err(e) => read_failed(&e),
            Ok(Some(ev)) if !ev.cancelled && plan::adopt(&ev, &f.uid, self.owner, "") != Adopt::NotOurs => {
                (Action::Delete, format!("delete event {} from calendar {:?}", ev.id, f.calendar), gone(&ev))
            }
            Ok(_) => {
                outcome(Action::Nothing, "no event of this TaskSync is left in the calendar: the TaskSync is released")
            }
        }
    }

    async fn moved(&self, f: &Facts<'_>, status: &crate::resources::TaskSyncStatus, id: &str) -> Outcome {
        let (data, _) = match Self::desired(f) {
            Ok(d) => d,
            Err(o) => return o,
        };
        let old_calendar = status.calendar_id.clone().unwrap_or_default();
        let old_conn_name = status.connection.clone().unwrap_or_else(|| f.ts.spec.connection_ref.name.clone());
        let old_conn = self.objects.connections.get(&(f.ns.clone(), old_conn_name.clone()));
        // The old copy is read where it is; unreadable, the diff starts from nothing.
        let old = match self.provider(&f.ns, old_conn).await {
            Ok(p) => p.get(&old_calendar, id).await.ok().flatten(),
            Err(_) => None,
        };
        let mut changes = diff::changes(old.as_ref(), &data, (Some(&old_calendar), &f.calendar));
        if old_conn_name != f.ts.spec.connection_ref.name {
            changes.insert(
                0,
                Change {
                    field: "connection",
                    old: Some(old_conn_name),
                    new: Some(f.ts.spec.connection_ref.name.clone()),
                },
            );
        }
        (Action::Move, format!("move event {id} to calendar {:?}", f.calendar), changes)
    }
}

/// A deletion's diff: what goes away.
fn gone(ev: &RemoteEvent) -> Vec<Change> {
    vec![
        Change { field: "title", old: Some(ev.title.clone()), new: None },
        Change { field: "start", old: Some(ev.start.to_rfc3339_or_date()), new: None },
    ]
}
