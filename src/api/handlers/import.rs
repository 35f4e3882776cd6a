//! Calendar → tasks: `POST /calendar-to-tasks`. Reads (never writes) the events of the next
//! `window_days` from every active connection, drops ours (ownership marker), and reports our
//! events that were edited in the calendar app as `updated_tasks`. Cached per user (5 minutes).
//!
//! Owns: the import read and its cache. Must not touch: objects or calendars (read only).

use std::collections::BTreeSet;

use axum::extract::State;
use chrono::Utc;
use kube::ResourceExt;

use super::{provider_for, user_connections};
use crate::api::auth::Caller;
use crate::api::dto::{CalendarToTasksRequest, CalendarToTasksResponse, ImportWarning, ImportedTask, UpdatedTask};
use crate::api::errors::{self, ApiError, ErrorBody};
use crate::api::extract::ApiJson;
use crate::api::mapping;
use crate::api::state::AppState;
use crate::providers::Window;
use crate::resources::{CalendarConnection, task_sync_name};

/// Calendars read for a connection: where its tasks go (default, explicit, per category).
fn calendars_of(conn: &CalendarConnection) -> Vec<String> {
    let mut out = BTreeSet::new();
    if let Some(c) =
        conn.spec.calendar_id.clone().or_else(|| conn.status.as_ref().and_then(|s| s.default_calendar_id.clone()))
    {
        out.insert(c);
    }
    out.extend(conn.spec.category_calendars.values().cloned());
    out.into_iter().collect()
}

#[derive(Default)]
struct Found {
    tasks: Vec<ImportedTask>,
    updated: Vec<UpdatedTask>,
}

/// Read one connection's calendars into `found`.
async fn read_connection(
    state: &AppState,
    user: &str,
    conn: &CalendarConnection,
    window: Window,
    found: &mut Found,
) -> Result<(), ApiError> {
    let provider = provider_for(state, conn).await?;
    for calendar in calendars_of(conn) {
        let page = provider.list(&calendar, window, None).await.map_err(|e| {
            tracing::info!(connection = %conn.name_any(), reason = e.reason(), "calendar read failed");
            match e.class() {
                crate::error::ErrorClass::Reauthenticate => super::reconnect_required(),
                _ => errors::from_provider(&e),
            }
        })?;
        for ev in page.events.iter().filter(|e| !e.cancelled) {
            match &ev.marker {
                None => found.tasks.push(mapping::imported_task(ev, conn.spec.provider)),
                Some(m) if m.owner == state.config.owner => {
                    // Ours: report it only when the calendar app changed it since we wrote it.
                    // REST-made TaskSyncs have the deterministic name; YAML-made ones any name.
                    let name = task_sync_name(user, &m.task_id);
                    let ts = match state.objects.get_task_sync(&state.namespace, &name).await? {
                        Some(ts) => Some(ts),
                        None => state.objects.find_task_sync_by_event(&state.namespace, &ev.id).await?,
                    };
                    // Only this connection's own TaskSyncs (a shared calendar holds others' too).
                    let Some(ts) = ts.filter(|t| t.spec.connection_ref.name == conn.name_any()) else {
                        continue;
                    };
                    let seen = ts.status.as_ref().and_then(|s| s.etag.clone());
                    // Live sync may already have accepted this version (CalendarWins adopts the
                    // edited etag): the app still has to pull it.
                    let accepted_edit = ts
                        .status
                        .as_ref()
                        .and_then(|s| s.calendar_edit.as_ref())
                        .is_some_and(|e| !e.deleted && Some(&e.etag) == ev.etag.as_ref());
                    if seen.is_none() || (seen == ev.etag && !accepted_edit) {
                        continue;
                    }
                    let changed = mapping::changed_fields(&ts.spec, ev);
                    if changed.is_empty() {
                        continue;
                    }
                    let (scheduled_time, timezone, all_day) = mapping::task_time(&ev.start, ev.zone.as_deref());
                    found.updated.push(UpdatedTask {
                        task_id: m.task_id.clone(),
                        calendar_event_id: ev.id.clone(),
                        calendar_source: conn.spec.provider.as_str().to_string(),
                        changed,
                        name: ev.title.clone(),
                        scheduled_time,
                        timezone,
                        all_day,
                    });
                }
                // Another installation's event: neither ours to report nor the user's own.
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// Events of the user's calendars as tasks.
#[utoipa::path(post, path = "/api/calendar/calendar-to-tasks", tag = "sync",
    request_body = CalendarToTasksRequest,
    responses((status = 200, body = CalendarToTasksResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody), (status = 502, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn calendar_to_tasks(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CalendarToTasksRequest>,
) -> Result<axum::Json<CalendarToTasksResponse>, ApiError> {
    let user = mapping::user_id(&req.user_id)?.to_string();
    caller.authorize(&state, &user)?;
    if let Some(w) = req.window_days
        && !(1..=365).contains(&w)
    {
        return Err(ApiError::invalid_field("window_days must be between 1 and 365"));
    }
    // 0 in the cache key stands for "each connection's own default".
    let cache_window = req.window_days.unwrap_or(0);
    let ttl = state.config.import_cache_ttl;
    if req.refresh != Some(true)
        && let Some(hit) = state.caches.import.get(&user, cache_window, ttl)
    {
        return Ok(axum::Json(hit));
    }
    let active: Vec<_> = user_connections(&state, &user).await?.into_iter().filter(|c| c.spec.active).collect();
    if active.is_empty() {
        return Err(ApiError::not_connected());
    }
    let now = Utc::now();
    let mut found = Found::default();
    let mut warnings = Vec::new();
    let mut first_error = None;
    for conn in &active {
        let days = req.window_days.or(conn.spec.import.as_ref().map(|i| i.window_days)).unwrap_or(7);
        let window = Window { from: now, to: now + chrono::Duration::days(i64::from(days)) };
        // One broken calendar must not hide the others: report it and go on.
        if let Err(e) = read_connection(&state, &user, conn, window, &mut found).await {
            warnings.push(ImportWarning {
                calendar_type: conn.spec.provider.as_str().to_string(),
                error: e.message.clone(),
                code: e.code.to_string(),
            });
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error
        && warnings.len() == active.len()
    {
        return Err(e);
    }
    let Found { mut tasks, updated } = found;
    tasks.sort_by(|a, b| a.scheduled_time.cmp(&b.scheduled_time).then(a.calendar_event_id.cmp(&b.calendar_event_id)));
    let response =
        CalendarToTasksResponse { success: true, count: tasks.len(), tasks, updated_tasks: updated, warnings };
    // A partial answer is not cached: the next call tries the broken calendar again.
    if response.warnings.is_empty() {
        state.caches.import.put(&user, cache_window, response.clone());
    }
    Ok(axum::Json(response))
}
