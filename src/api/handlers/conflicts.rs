//! Conflicts the user settles: `GET /conflicts/{user_id}` lists every task whose event was
//! edited or deleted in the calendar app and is held (conflictPolicy Manual, or any deletion),
//! with the diff per field; `POST /resolve-conflict` records the user's choice as the
//! `calendar.getitdone.app/resolve` annotation (the engine acts on it, as it would on one set
//! with kubectl) and waits for the outcome.
//!
//! Owns: the conflict view and the choice's request/answer. Must not touch: calendars (the
//! engine writes, `engine::resolve`).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kube::ResourceExt;
use serde_json::json;

use super::{timestamp, user_connections};
use crate::api::app_events;
use crate::api::auth::Caller;
use crate::api::dto::{
    ConflictField, ConflictInfo, ConflictsResponse, Id, ResolveConflictRequest, ResolveConflictResponse, ResolvedTask,
};
use crate::api::errors::{ApiError, ErrorBody};
use crate::api::extract::ApiJson;
use crate::api::mapping;
use crate::api::state::AppState;
use crate::engine::{Labels, ObjectKey, wait_for};
use crate::resources::{
    CalendarEdit, ConflictPolicy, RESOLVE_ANNOTATION, RESOLVE_BY_ANNOTATION, TaskSync, USER_LABEL, task_sync_name,
    user_label_value,
};

/// The held conflict of a TaskSync, if any.
fn held(ts: &TaskSync) -> Option<&CalendarEdit> {
    ts.status.as_ref()?.calendar_edit.as_deref().filter(|e| e.deleted || e.resolution == ConflictPolicy::Manual)
}

/// The conflict as the app shows it.
fn info(ts: &TaskSync, edit: &CalendarEdit, calendar_type: &str) -> ConflictInfo {
    let spec = &ts.spec;
    let zone = spec.time_zone.as_deref();
    let diff = app_events::conflict_diff(ts, edit)
        .into_iter()
        .map(|(field, task, calendar)| ConflictField { field, task, calendar })
        .collect();
    ConflictInfo {
        task_id: spec.task_id.clone(),
        event_id: ts.status.as_ref().and_then(|s| s.event_id.clone()),
        calendar_type: calendar_type.to_string(),
        deleted: edit.deleted,
        detected_at: timestamp(edit.detected_at),
        version: edit.etag.clone(),
        timezone: zone.unwrap_or("UTC").to_string(),
        diff,
    }
}

fn resolved(ts: &TaskSync) -> ResolvedTask {
    let s = &ts.spec;
    ResolvedTask {
        task_id: s.task_id.clone(),
        name: s.title.clone(),
        // A task calsync places: where its block is.
        scheduled_time: match (&s.schedule, ts.status.as_ref().and_then(|st| st.scheduled_start)) {
            (Some(_), Some(t)) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            _ => s.start.clone(),
        },
        end: s.end.clone(),
        timezone: s.time_zone.clone(),
        all_day: s.all_day == Some(true) || s.start.len() == 10,
        description: s.description.clone(),
        category: s.category.clone(),
        event_id: ts.status.as_ref().and_then(|st| st.event_id.clone()),
    }
}

/// The user's TaskSyncs with a held conflict, and each one's provider.
async fn user_conflicts(state: &AppState, user: &str) -> Result<Vec<(TaskSync, String)>, ApiError> {
    let providers: BTreeMap<String, String> = user_connections(state, user)
        .await?
        .into_iter()
        .map(|c| (c.name_any(), c.spec.provider.as_str().to_string()))
        .collect();
    let selector = Labels::from([(USER_LABEL.to_string(), user_label_value(user))]);
    let mut out: Vec<(TaskSync, String)> = state
        .objects
        .list_task_syncs(Some(&state.namespace), &selector)
        .await?
        .into_iter()
        // The label is a hash: the connection's user id decides.
        .filter_map(|t| providers.get(&t.spec.connection_ref.name).cloned().map(|p| (t, p)))
        .filter(|(t, _)| t.metadata.deletion_timestamp.is_none() && held(t).is_some())
        .collect();
    out.sort_by_key(|(t, _)| held(t).map(|e| e.detected_at));
    Ok(out)
}

/// Tasks held on an edit or deletion made in the calendar app.
#[utoipa::path(get, path = "/api/calendar/conflicts/{user_id}", tag = "sync",
    params(("user_id" = String, Path)),
    responses((status = 200, body = ConflictsResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> Result<axum::Json<ConflictsResponse>, ApiError> {
    let user = mapping::user_id(&Id(user_id))?.to_string();
    caller.authorize(&state, &user)?;
    let conflicts: Vec<ConflictInfo> =
        user_conflicts(&state, &user).await?.iter().filter_map(|(t, p)| held(t).map(|e| info(t, e, p))).collect();
    Ok(axum::Json(ConflictsResponse { success: true, count: conflicts.len(), conflicts }))
}

/// 409 with the conflict as it is now.
fn changed(now: ConflictInfo) -> Response {
    let body = json!({"error": "the event changed again in the calendar app since that version; show the new diff and choose again", "code": "conflict_changed", "conflict": now});
    (StatusCode::CONFLICT, axum::Json(body)).into_response()
}

/// Keep the task's or the calendar's version of a held conflict.
#[utoipa::path(post, path = "/api/calendar/resolve-conflict", tag = "sync",
    request_body = ResolveConflictRequest,
    responses((status = 200, body = ResolveConflictResponse), (status = 202, body = ResolveConflictResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn resolve(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<ResolveConflictRequest>,
) -> Result<Response, ApiError> {
    let user = mapping::user_id(&req.user_id)?.to_string();
    caller.authorize(&state, &user)?;
    if !matches!(req.keep.as_str(), "task" | "calendar") {
        return Err(ApiError::invalid_field("keep must be \"task\" or \"calendar\""));
    }
    let ts = match (&req.task_id, req.event_id.as_deref()) {
        (Some(t), None) => {
            let name = task_sync_name(&user, mapping::task_id(t)?);
            let found = state.objects.get_task_sync(&state.namespace, &name).await?;
            found.filter(|ts| ts.labels().get(USER_LABEL) == Some(&user_label_value(&user))).ok_or_else(|| {
                ApiError::not_found("task_not_found", "no task with this task_id is synced for this user")
            })?
        }
        (None, Some(e)) => super::owned_task_sync(&state, &user, mapping::event_id(e)?).await?,
        _ => return Err(ApiError::invalid_field("send either task_id or event_id (one of them)")),
    };
    let provider =
        user_conflicts(&state, &user).await?.into_iter().find(|(t, _)| t.name_any() == ts.name_any()).map(|(_, p)| p);
    let (Some(edit), Some(provider)) = (held(&ts).cloned(), provider) else {
        return Err(ApiError::conflict("no_conflict", "this task has no conflict waiting for a choice"));
    };
    if req.version.as_ref().is_some_and(|v| *v != edit.etag) {
        return Ok(changed(info(&ts, &edit, &provider)));
    }
    let by = match &caller {
        Caller::User(sub) => format!("user {sub}"),
        Caller::ApiKey => format!("the app, for user {user}"),
    };
    let name = ts.name_any();
    let key = ObjectKey::task_sync(&state.namespace, &name);
    let choice: Labels =
        [(RESOLVE_ANNOTATION.to_string(), req.keep.clone()), (RESOLVE_BY_ANNOTATION.to_string(), by)].into();
    state.objects.set_annotations(&key, &choice).await?;
    tracing::info!(task_sync = %name, keep = %req.keep, "conflict choice recorded");
    // Done when the engine has removed the choice (after recording what it did), or released
    // the task; a deleted event kept for the task also has to exist again.
    let recreate = edit.deleted && req.keep == "task";
    let (objects, ns, n) = (state.objects.as_ref(), state.namespace.as_str(), name.as_str());
    let (done, now) = wait_for(objects, state.config.sync_wait, || async move {
        let now = objects.get_task_sync(ns, n).await?;
        let acted = now.as_ref().is_none_or(|t| {
            let event = t.status.as_ref().is_some_and(|s| s.event_id.is_some());
            !t.annotations().contains_key(RESOLVE_ANNOTATION) && (!recreate || event || held(t).is_some())
        });
        Ok((acted, now))
    })
    .await?;
    let keep = req.keep.clone();
    if !done {
        let body = ResolveConflictResponse { success: true, keep, task: None, released: false, pending: true };
        return Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response());
    }
    let Some(now) = now else {
        return Ok(axum::Json(ResolveConflictResponse {
            success: true,
            keep,
            task: None,
            released: true,
            pending: false,
        })
        .into_response());
    };
    if let Some(again) = held(&now) {
        return Ok(changed(info(&now, again, &provider)));
    }
    Ok(axum::Json(ResolveConflictResponse {
        success: true,
        keep,
        task: Some(resolved(&now)),
        released: false,
        pending: false,
    })
    .into_response())
}
