//! The pure decision step of a TaskSync reconcile: given desired and last-applied state, what
//! one thing to do next, and what a provider answer means. No I/O, no clock, table-tested
//! (the external-dns `plan` idea).
//!
//! Owns: every rule about when calsync writes to a calendar. Must not touch: how it is done.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::ErrorClass;
use crate::providers::{ProviderError, RemoteEvent};
use crate::resources::{ConflictPolicy, DeletionPolicy, TaskSyncStatus};

/// Give up cleaning up a deleted TaskSync's event after this many failed attempts, so a broken
/// connection can never leave the finalizer stuck forever (DESIGN §4).
pub const MAX_CLEANUP_ATTEMPTS: u32 = 8;

/// What the engine knows about the TaskSync's connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnState {
    Ready,
    /// No such CalendarConnection.
    Missing,
    /// The user disconnected (`active: false`).
    Inactive,
    /// Credentials were revoked or are wrong; only the user can fix it.
    ReconnectRequired,
    /// Not Ready for another reason (reason and message from its condition).
    NotReady {
        reason: String,
        message: String,
    },
}

/// Everything `plan` looks at.
#[derive(Clone, Debug)]
pub struct PlanInput<'a> {
    pub deleting: bool,
    pub has_finalizer: bool,
    pub deletion_policy: DeletionPolicy,
    pub conflict_policy: ConflictPolicy,
    pub connection: &'a ConnState,
    /// Content hash of the desired event, or why the spec is invalid.
    pub desired: Result<&'a str, &'a str>,
    pub generation: i64,
    pub status: &'a TaskSyncStatus,
    /// The recorded event lives in another calendar or connection than the spec now routes
    /// the task to (category, calendarId or connectionRef changed).
    pub elsewhere: bool,
    pub now: DateTime<Utc>,
}

/// Why a finalizer is released.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Release {
    /// The event is gone from the calendar.
    EventDeleted,
    /// `deletionPolicy: Orphan`: the event stays.
    Orphaned,
    /// The policy switched to Orphan while the TaskSync lives: no finalizer needed.
    PolicyOrphan,
    /// The event cannot be deleted any more (reason); it is left in the calendar.
    CleanupImpossible(&'static str),
}

/// The one next thing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do, not even a status write (deleted object that is not ours to finalize).
    Nothing,
    AddFinalizer,
    RemoveFinalizer(Release),
    /// The spec cannot become an event; report and wait for a spec change.
    Invalid(String),
    /// The connection is not usable; report and wait for it.
    Wait {
        reason: &'static str,
        message: String,
    },
    /// In failure backoff: no provider call until then.
    Backoff(Duration),
    /// A Manual conflict is pending: leave the event alone until the spec changes.
    HoldConflict,
    /// The event was deleted in the calendar app: do not bring it back until the spec changes
    /// (any conflict policy; a common complaint is deleted events coming back).
    HoldDeleted,
    Create,
    Update {
        event_id: String,
        etag: Option<String>,
    },
    /// Delete the event (`event_id` None: look it up by key first, a create may be unrecorded).
    Delete {
        event_id: Option<String>,
        etag: Option<String>,
    },
    /// The event must live in another calendar: create it there (under the same key, so a
    /// crash before the status write adopts it), then delete the old copy (`FinishMove`).
    Move {
        event_id: String,
        etag: Option<String>,
    },
    /// A moved event's old copy (`status.movingFrom`) is still to be deleted.
    FinishMove,
    /// The calendar already holds what the spec says.
    InSync,
}

fn backoff_remaining(status: &TaskSyncStatus, now: DateTime<Utc>) -> Option<Duration> {
    let next = status.next_attempt_time?;
    (next > now).then(|| (next - now).to_std().unwrap_or_default())
}

/// Decide the next step. Rules are checked top to bottom; the first that applies wins.
pub fn plan(i: &PlanInput<'_>) -> Step {
    let st = i.status;
    if i.deleting && !i.has_finalizer {
        return Step::Nothing;
    }
    // A half-done move first: the new copy is recorded, the old one must go before anything
    // else (also when deleting: otherwise the old copy would outlive the TaskSync).
    if st.moving_from.is_some() {
        if let Some(left) = backoff_remaining(st, i.now) {
            return Step::Backoff(left);
        }
        return Step::FinishMove;
    }
    if i.deleting {
        if i.deletion_policy == DeletionPolicy::Orphan {
            return Step::RemoveFinalizer(Release::Orphaned);
        }
        match i.connection {
            ConnState::Missing => return Step::RemoveFinalizer(Release::CleanupImpossible("ConnectionNotFound")),
            ConnState::Inactive => return Step::RemoveFinalizer(Release::CleanupImpossible("ConnectionInactive")),
            ConnState::ReconnectRequired => {
                return Step::RemoveFinalizer(Release::CleanupImpossible("ReconnectRequired"));
            }
            ConnState::Ready | ConnState::NotReady { .. } => {}
        }
        if st.failed_attempts >= MAX_CLEANUP_ATTEMPTS {
            return Step::RemoveFinalizer(Release::CleanupImpossible("CleanupFailed"));
        }
        if let Some(left) = backoff_remaining(st, i.now) {
            return Step::Backoff(left);
        }
        return Step::Delete { event_id: st.event_id.clone(), etag: st.etag.clone() };
    }
    match (i.deletion_policy, i.has_finalizer) {
        (DeletionPolicy::Delete, false) => return Step::AddFinalizer,
        (DeletionPolicy::Orphan, true) => return Step::RemoveFinalizer(Release::PolicyOrphan),
        _ => {}
    }
    let hash = match i.desired {
        Ok(h) => h,
        Err(msg) => return Step::Invalid(msg.to_string()),
    };
    match i.connection {
        ConnState::Ready => {}
        ConnState::Missing => {
            return Step::Wait { reason: "ConnectionNotFound", message: "the CalendarConnection named in connectionRef does not exist in this namespace; create it or fix connectionRef".into() };
        }
        ConnState::Inactive => {
            return Step::Wait {
                reason: "ConnectionInactive",
                message: "the user disconnected this calendar (active: false); reconnect to resume syncing".into(),
            };
        }
        ConnState::ReconnectRequired => {
            return Step::Wait {
                reason: "ReconnectRequired",
                message: "the calendar credentials were revoked or are wrong; the user must reconnect the calendar"
                    .into(),
            };
        }
        ConnState::NotReady { reason, message } => {
            return Step::Wait {
                reason: "ConnectionNotReady",
                message: format!("the CalendarConnection is not Ready ({reason}): {message}"),
            };
        }
    }
    let spec_changed = st.observed_generation != Some(i.generation);
    if !spec_changed && let Some(left) = backoff_remaining(st, i.now) {
        return Step::Backoff(left);
    }
    if let Some(edit) = st.calendar_edit.as_ref().filter(|e| e.deleted) {
        return if edit.generation >= i.generation { Step::HoldDeleted } else { Step::Create };
    }
    let pending_edit = st.calendar_edit.as_ref().filter(|e| e.resolution == ConflictPolicy::Manual);
    if let Some(edit) = pending_edit {
        if edit.generation >= i.generation {
            return Step::HoldConflict;
        }
        // A newer spec after a reported conflict resolves it for the task.
        if edit.deleted {
            return Step::Create;
        }
    }
    let Some(event_id) = st.event_id.clone() else { return Step::Create };
    if i.elsewhere {
        let etag = match pending_edit {
            Some(edit) => Some(edit.etag.clone()),
            None => st.etag.clone(),
        };
        return Step::Move { event_id, etag };
    }
    if st.applied_hash.as_deref() != Some(hash) {
        let etag = match pending_edit {
            Some(edit) => Some(edit.etag.clone()),
            None => st.etag.clone(),
        };
        return Step::Update { event_id, etag };
    }
    Step::InSync
}

/// What to do with an event found under our key when creating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Adopt {
    /// It is ours and current: record it.
    AsIs,
    /// It is ours but stale or cancelled: update it (with its etag).
    Update,
    /// It carries another owner's or TaskSync's marker (or none): never touch it.
    NotOurs,
}

/// Decide about an existing event found when creating (the crash-after-create case).
pub fn adopt(existing: &RemoteEvent, uid: &str, owner: &str, desired_hash: &str) -> Adopt {
    match &existing.marker {
        Some(m) if m.uid == uid && m.owner == owner => {
            if existing.cancelled || m.hash != desired_hash {
                Adopt::Update
            } else {
                Adopt::AsIs
            }
        }
        _ => Adopt::NotOurs,
    }
}

/// Which call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Create,
    Update,
    Delete,
}

/// What a provider error means for this TaskSync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Count a failure and retry after the backoff delay (at least `retry_after`).
    Retry { retry_after: Option<Duration> },
    /// Credentials are dead: report ReconnectRequired (on the connection too) and wait.
    Reconnect,
    /// The event was edited in the calendar app: read it, then apply the conflict policy.
    ResolveConflict(ConflictPolicy),
    /// The event was deleted in the calendar app: create it again.
    Recreate,
    /// The event was deleted in the calendar app: report it, do not bring it back.
    ReportDeleted,
    /// Delete found nothing: done.
    Gone,
    /// Retrying cannot help; report and wait for a spec change.
    Reject,
}

/// Classify a provider error for a call, under the TaskSync's conflict policy.
pub fn on_error(call: Call, err: &ProviderError, policy: ConflictPolicy) -> OnError {
    match (call, err) {
        (Call::Delete, ProviderError::NotFound { .. }) => OnError::Gone,
        (Call::Update, ProviderError::NotFound { .. }) => match policy {
            ConflictPolicy::TaskWins => OnError::Recreate,
            ConflictPolicy::CalendarWins | ConflictPolicy::Manual => OnError::ReportDeleted,
        },
        // A delete of an event edited in the calendar app still deletes it (the task is gone),
        // after re-reading it to check it is still ours.
        (Call::Delete, ProviderError::Conflict { .. }) => OnError::ResolveConflict(ConflictPolicy::TaskWins),
        (_, ProviderError::Conflict { .. }) => OnError::ResolveConflict(policy),
        _ => match err.class() {
            ErrorClass::Retry { after } => OnError::Retry { retry_after: after },
            ErrorClass::Reauthenticate => OnError::Reconnect,
            ErrorClass::Permanent => OnError::Reject,
        },
    }
}

#[cfg(test)]
mod tests;
