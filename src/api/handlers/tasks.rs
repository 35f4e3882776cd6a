//! Task → calendar: `POST /task-to-calendar` (idempotent per (user, task id)), `PUT
//! /update-event` and `DELETE /delete-event`. Each declares the desired TaskSync and waits,
//! bounded, for the engine (DESIGN §6): 200 when done, 202 `pending` when it is still working.
//!
//! Owns: TaskSync objects made through the API. Must not touch: calendars (the engine writes).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::{Waited, feeds, owned_task_sync, user_connections, wait_synced};
use crate::api::auth::Caller;
use crate::api::dto::{
    DeleteEventRequest, Id, SuccessResponse, TaskToCalendarRequest, TaskToCalendarResponse, UpdateEventRequest,
};
use crate::api::errors::{ApiError, ErrorBody};
use crate::api::extract::ApiJson;
use crate::api::state::AppState;
use crate::api::{mapping, routing};
use crate::engine::{ObjectKey, wait_for};
use crate::resources::condition::{self, ConditionStatus};
use crate::resources::{
    DeletionPolicy, FEED_ONLY_CONNECTION, FEED_ONLY_LABEL, FINALIZER, TaskSync, USER_LABEL, is_feed_only,
    task_sync_labels, task_sync_name, user_label_value,
};

fn pending_task() -> Response {
    let body = TaskToCalendarResponse { success: true, pending: true, ..Default::default() };
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

fn pending() -> Response {
    (StatusCode::ACCEPTED, axum::Json(SuccessResponse { success: true, pending: true })).into_response()
}

/// Create or update the calendar event of a task.
#[utoipa::path(post, path = "/api/calendar/task-to-calendar", tag = "sync",
    request_body = TaskToCalendarRequest,
    responses((status = 200, body = TaskToCalendarResponse, description = "Synced; or `feed: true` with null ids: no calendar is connected and the user's ICS feed lists the task"), (status = 202, body = TaskToCalendarResponse, description = "Still syncing: event_id follows"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn task_to_calendar(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<TaskToCalendarRequest>,
) -> Result<Response, ApiError> {
    let user = mapping::user_id(&req.user_id)?.to_string();
    caller.authorize(&state, &user)?;
    let wanted = req.calendar_type.as_deref().map(mapping::calendar_type).transpose()?;
    let declared = declare(&state, &user, wanted, &req.task_data).await?;
    if declared.feed_only {
        // Nothing to wait for: the feed renders the stored spec, which `mapping` checked.
        let body = TaskToCalendarResponse { success: true, feed: true, ..Default::default() };
        return Ok(axum::Json(body).into_response());
    }
    match wait_synced(&state, &declared.name, declared.generation).await? {
        Waited::Synced(ts) => Ok(axum::Json(answer(&ts)).into_response()),
        Waited::Pending => Ok(pending_task()),
    }
}

/// What task-to-calendar answers for a TaskSync the engine has acted on: its event, and for a
/// task calsync places, where (or `no_room`).
pub(super) fn answer(ts: &TaskSync) -> TaskToCalendarResponse {
    let st = ts.status.clone().unwrap_or_default();
    let mut body = TaskToCalendarResponse {
        success: true,
        event_id: st.event_id.clone(),
        event_link: st.event_link.clone(),
        ..Default::default()
    };
    if ts.spec.schedule.is_none() {
        return body;
    }
    let zone = ts.spec.time_zone.as_deref().and_then(|z| z.parse::<chrono_tz::Tz>().ok()).unwrap_or(chrono_tz::UTC);
    let local =
        |t: chrono::DateTime<chrono::Utc>| t.with_timezone(&zone).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let scheduled = condition::find(&st.conditions, "Scheduled");
    if st.event_id.is_some() {
        body.scheduled_start = st.scheduled_start.map(local);
        body.scheduled_end = st.scheduled_end.map(local);
        body.why = st.scheduled_reason.clone();
    }
    if let Some(c) = scheduled.filter(|c| c.status == ConditionStatus::False && c.reason == "NoRoom") {
        body.reason = Some("no_room".into());
        body.message = Some(c.message.clone());
    }
    body
}

/// A TaskSync declared for a task: its name and the generation to wait for.
pub(super) struct Declared {
    pub name: String,
    pub generation: i64,
    /// No calendar, but an ICS feed: nothing to wait for.
    pub feed_only: bool,
}

/// Declare (create or update) the TaskSync of one task of `user` (authorized by the caller).
pub(super) async fn declare(
    state: &AppState,
    user: &str,
    wanted: Option<crate::resources::ProviderKind>,
    task_data: &crate::api::dto::TaskData,
) -> Result<Declared, ApiError> {
    let task_id = task_data.id.as_str().to_string();
    let name = task_sync_name(user, &task_id);
    let existing = state.objects.get_task_sync(&state.namespace, &name).await?;
    if existing.as_ref().is_some_and(|t| t.metadata.deletion_timestamp.is_some()) {
        return Err(ApiError::conflict(
            "task_being_deleted",
            "this task's calendar event is being deleted; retry in a moment",
        )
        .with_retry_after(Some(std::time::Duration::from_secs(2))));
    }
    let active: Vec<_> = user_connections(state, user).await?.into_iter().filter(|c| c.spec.active).collect();
    let mut feed_only = false;
    let connection = match wanted {
        Some(kind) => {
            active.iter().find(|c| c.spec.provider == kind).map(|c| c.name_any()).ok_or_else(ApiError::not_connected)?
        }
        // The user's routing rules; a task whose category now routes to another connection
        // moves there (the engine moves its event, crash-safe: engine::moves).
        None => match routing::route(
            &active,
            task_data.category.as_deref(),
            existing.as_ref().map(|t| t.spec.connection_ref.name.as_str()),
        ) {
            Some(c) => c.name_any(),
            // No calendar, but an ICS feed: the task is declared for the feed alone (and moves
            // to a calendar at the next call after the user connects one).
            // A task calsync places needs a calendar to read busy time from.
            None if task_data.auto_schedule.is_some() => return Err(ApiError::not_connected()),
            None if feeds::has_feed(state, user).await? => {
                feed_only = true;
                FEED_ONLY_CONNECTION.to_string()
            }
            None => return Err(ApiError::not_connected()),
        },
    };
    let mut spec = mapping::spec_from_task(existing.as_ref().map(|t| &t.spec), &connection, task_data)?;
    spec.connection_ref.name = connection.clone();
    let mut labels = existing.as_ref().map(|t| t.labels().clone()).unwrap_or_default();
    labels.extend(task_sync_labels(user, &connection, &task_id));
    if feed_only {
        labels.insert(FEED_ONLY_LABEL.to_string(), "true".to_string());
    } else {
        labels.remove(FEED_ONLY_LABEL);
    }
    let mut object = TaskSync {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(state.namespace.clone()),
            labels: Some(labels),
            annotations: existing.as_ref().and_then(|t| t.metadata.annotations.clone()),
            // The engine's finalizer with the declaration (a create keeps it; an update leaves
            // finalizers alone): the engine's first reconcile finds it and skips a durable write
            // of its own on this request's critical path. Not for a feed-only task (no event to
            // clean up; the engine keeps those without one) nor an Orphan one (the engine would
            // remove it again).
            finalizers: (!feed_only && spec.deletion_policy == DeletionPolicy::Delete)
                .then(|| vec![FINALIZER.to_string()]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    };
    // Only a change is traced to this request: re-declaring the same task causes no reconcile.
    if existing.as_ref().is_none_or(|t| t.spec != object.spec) {
        crate::telemetry::spans::stamp(&mut object.metadata.annotations);
    }
    let applied = state.objects.apply_task_sync(&object).await?;
    let generation = applied.metadata.generation.unwrap_or(1);
    tracing::info!(task_sync = %name, generation, feed_only, "task declared");
    Ok(Declared { name, generation, feed_only })
}

/// The TaskSync update-event / delete-event act on: by `event_id` (seed), or by `task_id`
/// (tasks served by the ICS feed only have no event id). Exactly one of them.
async fn target(
    state: &AppState,
    user: &str,
    event_id: Option<&str>,
    task_id: Option<&Id>,
) -> Result<TaskSync, ApiError> {
    match (event_id, task_id) {
        (Some(e), None) => owned_task_sync(state, user, mapping::event_id(e)?).await,
        (None, Some(t)) => {
            let task = mapping::task_id(t)?;
            let ts = state.objects.get_task_sync(&state.namespace, &task_sync_name(user, task)).await?;
            // The name is a hash of (user, task); the label confirms the user.
            match ts {
                Some(ts)
                    if ts.labels().get(USER_LABEL) == Some(&user_label_value(user))
                        && ts.metadata.deletion_timestamp.is_none() =>
                {
                    Ok(ts)
                }
                _ => Err(ApiError::not_found("event_not_found", "no task with this task_id is managed for this user")),
            }
        }
        _ => Err(ApiError::invalid_field("send either event_id or task_id (one of them)")),
    }
}

/// Change fields of one of our events.
#[utoipa::path(put, path = "/api/calendar/update-event", tag = "sync",
    request_body = UpdateEventRequest,
    responses((status = 200, body = SuccessResponse), (status = 202, body = SuccessResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_event(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<UpdateEventRequest>,
) -> Result<Response, ApiError> {
    let user = mapping::user_id(&req.user_id)?.to_string();
    caller.authorize(&state, &user)?;
    let ts = target(&state, &user, req.event_id.as_deref(), req.task_id.as_ref()).await?;
    let mut spec = mapping::spec_with_patch(&ts.spec, &req.task_data)?;
    if spec.category != ts.spec.category && !is_feed_only(&ts) {
        // A new category may route the task to another of the user's connections.
        let active: Vec<_> = user_connections(&state, &user).await?.into_iter().filter(|c| c.spec.active).collect();
        if let Some(c) = routing::route(&active, spec.category.as_deref(), Some(&ts.spec.connection_ref.name)) {
            spec.connection_ref.name = c.name_any();
        }
    }
    let name = ts.name_any();
    let mut object = ts.clone();
    if spec.connection_ref.name != ts.spec.connection_ref.name {
        let labels = object.metadata.labels.get_or_insert_with(Default::default);
        labels.extend(task_sync_labels(&user, &spec.connection_ref.name, &spec.task_id));
    }
    if object.spec != spec {
        crate::telemetry::spans::stamp(&mut object.metadata.annotations);
    }
    object.spec = spec;
    object.status = None;
    // Optimistic concurrency: a concurrent change makes this a 409 the client can retry.
    object.metadata.managed_fields = None;
    let applied = state.objects.apply_task_sync(&object).await?;
    if is_feed_only(&applied) {
        // No calendar to wait for: the feed renders the stored spec.
        return Ok(axum::Json(SuccessResponse { success: true, pending: false }).into_response());
    }
    let generation = applied.metadata.generation.unwrap_or(1);
    match wait_synced(&state, &name, generation).await? {
        Waited::Synced(_) => Ok(axum::Json(SuccessResponse { success: true, pending: false }).into_response()),
        Waited::Pending => Ok(pending()),
    }
}

/// Delete one of our events (the engine deletes it from the calendar).
#[utoipa::path(delete, path = "/api/calendar/delete-event", tag = "sync",
    request_body = DeleteEventRequest,
    responses((status = 200, body = SuccessResponse), (status = 202, body = SuccessResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_event(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<DeleteEventRequest>,
) -> Result<Response, ApiError> {
    let user = mapping::user_id(&req.user_id)?.to_string();
    caller.authorize(&state, &user)?;
    let ts = target(&state, &user, req.event_id.as_deref(), req.task_id.as_ref()).await?;
    let name = ts.name_any();
    state.objects.delete(&ObjectKey::task_sync(&state.namespace, &name)).await?;
    tracing::info!(task_sync = %name, "task deletion requested");
    // The object goes when the engine removes its finalizer, i.e. once the event is deleted.
    let (objects, ns, n) = (state.objects.as_ref(), state.namespace.as_str(), name.as_str());
    let (gone, ()) =
        wait_for(
            objects,
            state.config.sync_wait,
            || async move { Ok((objects.get_task_sync(ns, n).await?.is_none(), ())) },
        )
        .await?;
    state.metrics.record_sync_wait(if gone { "synced" } else { "pending" });
    if gone { Ok(axum::Json(SuccessResponse { success: true, pending: false }).into_response()) } else { Ok(pending()) }
}
