//! Many tasks in one request: `POST /tasks-to-calendar` (the seed's "sync multiple tasks to
//! calendar in a single request"). Each item is declared like a task-to-calendar call, then the
//! request waits once, bounded, for all of them; every item gets its own result (an item that
//! fails validation fails alone).
//!
//! Owns: the batch request and answer. Must not touch: calendars (the engine writes; its work
//! queue spreads the batch over connections within each one's rate limit).

use axum::extract::State;
use axum::http::StatusCode;

use super::tasks::declare;
use super::{Waited, wait_synced};
use crate::api::auth::Caller;
use crate::api::dto::{BatchResult, MAX_BATCH, TaskData, TasksToCalendarRequest, TasksToCalendarResponse};
use crate::api::errors::{ApiError, ErrorBody};
use crate::api::extract::ApiJson;
use crate::api::mapping;
use crate::api::state::AppState;

fn failed(task_id: Option<String>, e: &ApiError) -> BatchResult {
    BatchResult {
        task_id,
        success: false,
        event_id: None,
        event_link: None,
        pending: false,
        feed: false,
        error: Some(e.message.clone()),
        code: Some(e.code.to_string()),
    }
}

/// Create or update the calendar events of many tasks.
#[utoipa::path(post, path = "/api/calendar/tasks-to-calendar", tag = "sync",
    request_body = TasksToCalendarRequest,
    responses((status = 200, body = TasksToCalendarResponse, description = "One result per task, in order; partial success is per item"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn tasks_to_calendar(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<TasksToCalendarRequest>,
) -> Result<axum::Json<TasksToCalendarResponse>, ApiError> {
    let user = mapping::user_id(&req.user_id)?.to_string();
    caller.authorize(&state, &user)?;
    if req.tasks.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("a batch holds at most {MAX_BATCH} tasks ({} sent); split it", req.tasks.len()),
        ));
    }
    let wanted = req.calendar_type.as_deref().map(mapping::calendar_type).transpose()?;
    let mut results = Vec::with_capacity(req.tasks.len());
    let mut waits = Vec::new();
    for (i, item) in req.tasks.into_iter().enumerate() {
        let id_hint =
            item.get("id").and_then(|v| v.as_str().map(str::to_string).or_else(|| v.as_i64().map(|n| n.to_string())));
        let data: TaskData = match serde_json::from_value(item) {
            Ok(d) => d,
            Err(e) => {
                let err = ApiError::invalid_field(format!("tasks[{i}]: {e}"));
                results.push(failed(id_hint, &err));
                continue;
            }
        };
        let task_id = data.id.as_str().to_string();
        match declare(&state, &user, wanted, &data).await {
            Ok(d) if d.feed_only => results.push(BatchResult {
                task_id: Some(task_id),
                success: true,
                event_id: None,
                event_link: None,
                pending: false,
                feed: true,
                error: None,
                code: None,
            }),
            Ok(d) => {
                waits.push((results.len(), d));
                results.push(BatchResult {
                    task_id: Some(task_id),
                    success: true,
                    event_id: None,
                    event_link: None,
                    pending: true,
                    feed: false,
                    error: None,
                    code: None,
                });
            }
            Err(e) => results.push(failed(Some(task_id), &e)),
        }
    }
    // One bounded wait for all of them, side by side.
    let outcomes =
        futures::future::join_all(waits.iter().map(|(_, d)| wait_synced(&state, &d.name, d.generation))).await;
    for ((slot, _), outcome) in waits.iter().zip(outcomes) {
        let r = &mut results[*slot];
        match outcome {
            Ok(Waited::Synced(ts)) => {
                let st = ts.status.unwrap_or_default();
                (r.event_id, r.event_link, r.pending) = (st.event_id, st.event_link, false);
            }
            Ok(Waited::Pending) => {}
            Err(e) => *r = failed(r.task_id.clone(), &e),
        }
    }
    let count = results.len();
    let failed_n = results.iter().filter(|r| !r.success).count();
    let pending = results.iter().filter(|r| r.pending).count();
    tracing::info!(tasks = count, failed = failed_n, pending, "batch declared");
    Ok(axum::Json(TasksToCalendarResponse {
        success: true,
        count,
        synced: count - failed_n - pending,
        pending,
        failed: failed_n,
        results,
    }))
}
