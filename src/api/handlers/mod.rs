//! The endpoint handlers, one file per group, and the helpers they share: finding a user's
//! connections, the bounded wait for the engine's status, and finding our TaskSync by event id.
//!
//! Owns: request → objects → response. Must not touch: calendars beyond reading (only the
//! engine writes to them); credentials beyond checking them once at connect.

pub mod batch;
pub mod busy;
pub mod changes;
pub mod conflicts;
pub mod connect;
pub mod events;
pub mod feeds;
pub mod health;
pub mod import;
pub mod oauth;
pub mod preferences;
pub mod scheduling;
pub mod status;
pub mod tasks;
pub mod webhooks;

use std::sync::Arc;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use kube::ResourceExt;

use super::errors::{self, ApiError};
use super::state::AppState;
use crate::engine::{Labels, ObjectKey, wait_for_key};
use crate::providers::{Provider, Target};
use crate::resources::condition::{self, ConditionStatus};
use crate::resources::{CalendarConnection, TaskSync, USER_LABEL, user_label_value};

/// All of `user`'s connections (active or not), newest connection first.
pub async fn user_connections(state: &AppState, user: &str) -> Result<Vec<CalendarConnection>, ApiError> {
    let selector = Labels::from([(USER_LABEL.to_string(), user_label_value(user))]);
    let mut conns: Vec<CalendarConnection> = state
        .objects
        .list_connections(Some(&state.namespace), &selector)
        .await?
        .into_iter()
        // The label is a hash: check the real id so a collision can never mix two users.
        .filter(|c| c.spec.user_id == user && c.metadata.deletion_timestamp.is_none())
        .collect();
    conns.sort_by_key(|c| std::cmp::Reverse(connected_at(c)));
    Ok(conns)
}

/// When the connection was (last) connected: status.connectedAt, else its creation.
pub fn connected_at(c: &CalendarConnection) -> Option<DateTime<Utc>> {
    c.status
        .as_ref()
        .and_then(|s| s.connected_at)
        .or_else(|| c.metadata.creation_timestamp.as_ref().and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0)))
}

/// Seed-style timestamp.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// (ready, reason) of a connection's Ready condition.
pub fn readiness(c: &CalendarConnection) -> (bool, String) {
    let conditions = c.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    match condition::find(conditions, "Ready") {
        Some(r) => (r.status == ConditionStatus::True, r.reason.clone()),
        None => (false, "Pending".to_string()),
    }
}

/// A read-only client for one connection (calendar-to-tasks, event ownership checks).
pub async fn provider_for(state: &AppState, conn: &CalendarConnection) -> Result<Arc<dyn Provider>, ApiError> {
    let creds = state
        .objects
        .read_credentials(&state.namespace, &conn.spec.credentials_secret_ref)
        .await
        .ok()
        .flatten()
        .ok_or_else(reconnect_required)?;
    let target = Target {
        provider: conn.spec.provider,
        server_url: conn.spec.server_url.clone(),
        connection: format!("{}/{}", state.namespace, conn.name_any()),
    };
    state.connector.connect(&target, &creds).await.map_err(|e| errors::from_provider(&e))
}

pub fn reconnect_required() -> ApiError {
    ApiError::conflict(
        "reconnect_required",
        format!(
            "{}: the calendar credentials were revoked or are wrong; reconnect the calendar",
            errors::INVALID_CREDENTIALS
        ),
    )
}

/// How a bounded wait for the engine ended.
pub enum Waited {
    Synced(Box<TaskSync>),
    Pending,
}

/// Synced=False reasons that will not change without the user doing something: answer at once.
fn permanent_failure(reason: &str, message: &str) -> Option<ApiError> {
    let e = match reason {
        "InvalidSpec" => ApiError::bad_request("invalid_task", message),
        "ReconnectRequired" => reconnect_required(),
        "ConnectionInactive" | "ConnectionNotFound" => ApiError::not_connected(),
        "NotOwned" => ApiError::conflict("event_not_managed", message),
        "ConflictDetected" | "DeletedInCalendar" => ApiError::conflict("calendar_conflict", message),
        "ProviderRejected" | "NotFound" => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "provider_rejected",
            format!("the calendar rejected the event: {message}"),
        ),
        _ => return None,
    };
    Some(e)
}

/// Wait (bounded by `sync_wait`) until the engine has reconciled `generation` of the TaskSync.
pub async fn wait_synced(state: &AppState, name: &str, generation: i64) -> Result<Waited, ApiError> {
    let objects = state.objects.as_ref();
    let ns = state.namespace.as_str();
    let key = ObjectKey::task_sync(ns, name);
    let (done, value) = wait_for_key(objects, &key, state.config.sync_wait, || async move {
        let ts = objects.get_task_sync(ns, name).await?;
        let Some(ts) = ts else {
            return Ok((true, None));
        };
        let st = ts.status.clone().unwrap_or_default();
        let synced = condition::find(&st.conditions, "Synced")
            .filter(|c| c.observed_generation == Some(generation) && st.observed_generation == Some(generation))
            .cloned();
        // A task that places itself and found no room: an answer, not a failure.
        let no_room = condition::find(&st.conditions, "Scheduled").is_some_and(|c| {
            c.status == ConditionStatus::False && c.reason == "NoRoom" && c.observed_generation == Some(generation)
        });
        let done = no_room
            || match &synced {
                Some(c) if c.status == ConditionStatus::True => st.event_id.is_some(),
                Some(c) => permanent_failure(&c.reason, &c.message).is_some(),
                None => false,
            };
        Ok((done, Some((ts, synced, no_room))))
    })
    .await?;
    let result = match value {
        None => {
            Err(ApiError::conflict("task_deleted", "the task's calendar event was deleted meanwhile; send it again"))
        }
        Some(_) if !done => Ok(Waited::Pending),
        Some((ts, _, true)) => Ok(Waited::Synced(Box::new(ts))),
        Some((_, Some(c), _)) if c.status != ConditionStatus::True => {
            Err(permanent_failure(&c.reason, &c.message)
                .unwrap_or_else(|| ApiError::conflict("sync_failed", c.message)))
        }
        Some((ts, _, _)) => Ok(Waited::Synced(Box::new(ts))),
    };
    state.metrics.record_sync_wait(match &result {
        Ok(Waited::Synced(_)) => "synced",
        Ok(Waited::Pending) => "pending",
        Err(_) => "failed",
    });
    result
}

/// Our TaskSync for `event_id` belonging to `user`: 404 when there is none, 409
/// `event_not_managed` when the event exists in one of the user's calendars but is not ours.
pub async fn owned_task_sync(state: &AppState, user: &str, event_id: &str) -> Result<TaskSync, ApiError> {
    if let Some(ts) = state.objects.find_task_sync_by_event(&state.namespace, event_id).await? {
        let conn = state.objects.get_connection(&state.namespace, &ts.spec.connection_ref.name).await?;
        let mine = ts.labels().get(USER_LABEL) == Some(&user_label_value(user))
            && conn.as_ref().is_none_or(|c| c.spec.user_id == user);
        if mine && ts.metadata.deletion_timestamp.is_none() {
            return Ok(ts);
        }
        if mine {
            return Err(ApiError::not_found("event_not_found", "this event is already being deleted"));
        }
        // Another user's event: answer exactly as for an unknown id, so ids cannot be probed.
        return Err(ApiError::not_found(
            "event_not_found",
            "no calendar event with this event_id is managed for this user",
        ));
    }
    for conn in user_connections(state, user).await?.iter().filter(|c| c.spec.active) {
        let Some(calendar) =
            conn.status.as_ref().and_then(|s| s.default_calendar_id.clone()).or(conn.spec.chosen_calendar().cloned())
        else {
            continue;
        };
        let Ok(provider) = provider_for(state, conn).await else {
            continue;
        };
        if let Ok(Some(ev)) = provider.get(&calendar, event_id).await
            && !ev.cancelled
        {
            return Err(ApiError::conflict(
                "event_not_managed",
                "this event was not created by Get It Done!; calsync never changes or deletes events it does not own",
            ));
        }
    }
    Err(ApiError::not_found("event_not_found", "no calendar event with this event_id is managed for this user"))
}
