//! How a TaskSync reconcile gathers what the pure `plan` decides on: the connection that holds
//! the event, the calendar it belongs in, the desired event with its content hash, the
//! connection's state and whether the recorded event lives elsewhere. Shared by the engine and
//! `calsync plan`, so a dry run decides exactly as a reconcile would.
//!
//! Owns: those derivations. Must not touch: I/O (callers read the objects), placement of
//! `spec.schedule` tasks (`schedule`), or the rules themselves (`plan`).

use chrono::{DateTime, Utc};
use kube::{Resource, ResourceExt};

use super::plan::{ConnState, PlanInput};
use crate::providers::EventData;
use crate::resources::condition::{self, ConditionStatus};
use crate::resources::{CalendarConnection, TaskSync, TaskSyncStatus};

/// The desired event with its content hash, or why the spec cannot become one.
pub type Desired = Result<(EventData, String), String>;

/// What the engine knows about a TaskSync's connection.
pub fn conn_state(conn: Option<&CalendarConnection>) -> ConnState {
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

pub fn deleting(ts: &TaskSync) -> bool {
    ts.meta().deletion_timestamp.is_some()
}

/// The connection whose calendar holds (or will hold) the event: a deleted TaskSync's event is
/// where the status says, even if the spec was routed elsewhere before the move happened.
pub fn holder(ts: &TaskSync) -> &str {
    ts.status
        .as_ref()
        .and_then(|s| s.connection.as_deref())
        .filter(|_| deleting(ts))
        .unwrap_or(&ts.spec.connection_ref.name)
}

/// Where the spec routes the task: calendarId, else the category's calendar, else the
/// connection's chosen or default calendar.
pub fn target_calendar(ts: &TaskSync, conn: Option<&CalendarConnection>) -> Option<String> {
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

/// The calendar this reconcile works in: a deleted TaskSync's recorded one, else the target.
pub fn calendar(ts: &TaskSync, conn: Option<&CalendarConnection>) -> Option<String> {
    ts.status
        .as_ref()
        .and_then(|s| s.calendar_id.clone())
        .filter(|_| deleting(ts))
        .or_else(|| target_calendar(ts, conn))
}

/// The desired event stamped with its content hash (which covers the calendar).
pub fn with_hash(event: Result<EventData, String>, calendar: Option<&str>, conn_ready: bool) -> Desired {
    event.and_then(|mut ev| {
        let cal = match calendar {
            Some(c) => c,
            None if conn_ready => return Err("the connection has no writable calendar to use: set calendarId on the TaskSync or the CalendarConnection".into()),
            None => "",
        };
        let hash = ev.content_hash(cal);
        ev.marker.hash = hash.clone();
        Ok((ev, hash))
    })
}

/// Whether the recorded event is in another calendar or connection than the spec routes to.
pub fn elsewhere(ts: &TaskSync, status: &TaskSyncStatus, calendar: &str) -> bool {
    if status.event_id.is_none() {
        return false;
    }
    let spec_conn = ts.spec.connection_ref.name.as_str();
    // Status written before moves existed has no connection: the event is on the spec's.
    let other_conn = status.connection.as_deref().is_some_and(|c| c != spec_conn);
    let other_calendar = !calendar.is_empty() && status.calendar_id.as_deref().is_some_and(|c| c != calendar);
    other_conn || other_calendar
}

pub fn has_finalizer(ts: &TaskSync) -> bool {
    ts.finalizers().iter().any(|f| f == crate::resources::FINALIZER)
}

/// The plan's input for `ts` as it stands (`status` and `has_finalizer` as the reconcile has
/// them so far: both change between the steps of one reconcile).
pub fn plan_input<'a>(
    ts: &TaskSync,
    has_finalizer: bool,
    connection: &'a ConnState,
    desired: &'a Desired,
    status: &'a TaskSyncStatus,
    calendar: &str,
    now: DateTime<Utc>,
) -> PlanInput<'a> {
    let deleting = deleting(ts);
    PlanInput {
        deleting,
        has_finalizer,
        deletion_policy: ts.spec.deletion_policy,
        conflict_policy: ts.spec.conflict_policy,
        connection,
        desired: desired.as_ref().map(|(_, h)| h.as_str()).map_err(|e| e.as_str()),
        generation: ts.meta().generation.unwrap_or(1),
        status,
        elsewhere: !deleting && elsewhere(ts, status, calendar),
        now,
    }
}
