//! Calendar → tasks: `POST /calendar-to-tasks`. Reads (never writes) the events of the next
//! `window_days` from every active connection, drops ours (ownership marker), and reports our
//! events that were edited in the calendar app as `updated_tasks`. Cached per user (5 minutes).
//! The answer carries a `cursor`; a request with one is answered by `changes::pull`.
//!
//! Owns: the import read, its cache, and the pieces the change pull shares with it. Must not
//! touch: objects or calendars (read only).

use axum::extract::State;
use chrono::{DateTime, Utc};
use kube::ResourceExt;

use super::{provider_for, user_connections};
use crate::api::auth::Caller;
use crate::api::cursor::{AppCursor, CursorError, Mark};
use crate::api::dto::{CalendarToTasksRequest, CalendarToTasksResponse, ImportWarning, ImportedTask, UpdatedTask};
use crate::api::errors::{self, ApiError, ErrorBody};
use crate::api::extract::ApiJson;
use crate::api::mapping;
use crate::api::state::AppState;
use crate::providers::{Provider, RemoteEvent, Window, recurrence};
use crate::resources::push::PushMode;
use crate::resources::{CalendarConnection, ProviderKind, task_sync_name};

/// Calendars read for a connection: where its tasks go (default, explicit, per category).
pub(super) fn calendars_of(conn: &CalendarConnection) -> Vec<String> {
    crate::engine::busy::task_calendars(conn)
}

/// The window a connection is read in: the request's days, else the connection's, else 7.
pub(super) fn window_of(conn: &CalendarConnection, window_days: Option<u32>, now: DateTime<Utc>) -> Window {
    let days = window_days.or(conn.spec.import.as_ref().map(|i| i.window_days)).unwrap_or(7);
    Window { from: now, to: now + chrono::Duration::days(i64::from(days)) }
}

/// The window a first listing asks the provider for when the answer carries a cursor. Graph's
/// delta token only ever reports changes inside the window of the listing that started it, so
/// an Outlook cursor starts from a year; Google and CalDAV tokens cover the whole calendar.
pub(super) fn listing_window(conn: &CalendarConnection, window: Window, cursors: bool) -> Window {
    if cursors && conn.spec.provider == ProviderKind::Outlook {
        Window { from: window.from, to: window.to.max(window.from + chrono::Duration::days(366)) }
    } else {
        window
    }
}

/// `(watch, changeCount)` of a calendar in the connection's status: the live watch covering it
/// (none while it is polled or the watch has expired) and how many changes live sync has seen.
pub(super) fn push_state(conn: &CalendarConnection, calendar: &str) -> (Option<String>, u64) {
    let Some(w) = conn.status.as_ref().and_then(|s| s.push.as_ref()).and_then(|p| p.calendar(calendar)) else {
        return (None, 0);
    };
    let live = w.mode == PushMode::Push && w.expiration.is_some_and(|e| e > Utc::now());
    (w.watch_id.clone().filter(|_| live), w.change_count)
}

/// One of our events as `calendar-to-tasks` reports it: an `updated_tasks` entry when the
/// calendar app changed it since we wrote it, else nothing.
pub(super) async fn our_edit(
    state: &AppState,
    user: &str,
    conn: &CalendarConnection,
    ev: &RemoteEvent,
    task_id: &str,
) -> Result<Option<UpdatedTask>, ApiError> {
    // REST-made TaskSyncs have the deterministic name; YAML-made ones any name.
    let name = task_sync_name(user, task_id);
    let ts = match state.objects.get_task_sync(&state.namespace, &name).await? {
        Some(ts) => Some(ts),
        None => state.objects.find_task_sync_by_event(&state.namespace, &ev.id).await?,
    };
    // Only this connection's own TaskSyncs (a shared calendar holds others' too).
    let Some(ts) = ts.filter(|t| t.spec.connection_ref.name == conn.name_any()) else {
        return Ok(None);
    };
    let seen = ts.status.as_ref().and_then(|s| s.etag.clone());
    // Live sync may already have accepted this version (CalendarWins adopts the edited etag):
    // the app still has to pull it.
    let accepted_edit = ts
        .status
        .as_ref()
        .and_then(|s| s.calendar_edit.as_ref())
        .is_some_and(|e| !e.deleted && Some(&e.etag) == ev.etag.as_ref());
    if seen.is_none() || (seen == ev.etag && !accepted_edit) {
        return Ok(None);
    }
    let changed = mapping::changed_fields(&ts.spec, ev);
    if changed.is_empty() {
        return Ok(None);
    }
    let (scheduled_time, timezone, all_day) = mapping::task_time(&ev.start, ev.zone.as_deref());
    Ok(Some(UpdatedTask {
        task_id: task_id.to_string(),
        calendar_event_id: ev.id.clone(),
        calendar_source: conn.spec.provider.as_str().to_string(),
        changed,
        name: ev.title.clone(),
        scheduled_time,
        timezone,
        all_day,
    }))
}

/// An event that is not ours as the app gets it: a recurring one with its moved and cancelled
/// occurrences in `window` (one more provider read per series on Google and Outlook).
pub(super) async fn external_event(
    provider: &dyn Provider,
    conn: &CalendarConnection,
    calendar: &str,
    ev: &RemoteEvent,
    window: Window,
) -> Result<RemoteEvent, ApiError> {
    recurrence::with_exceptions(provider, calendar, ev.clone(), window).await.map_err(|e| read_failed(conn, &e))
}

/// Is `ev` in `window`? A series when one of its occurrences is (exceptions applied).
pub(super) fn shows_in(ev: &RemoteEvent, window: &Window) -> bool {
    if ev.recurrence.is_empty() { ev.in_window(window) } else { recurrence::occurs_in(ev, window) }
}

/// A provider failure while reading a calendar for the app.
pub(super) fn read_failed(conn: &CalendarConnection, e: &crate::providers::ProviderError) -> ApiError {
    tracing::info!(connection = %conn.name_any(), reason = e.reason(), "calendar read failed");
    match e.class() {
        crate::error::ErrorClass::Reauthenticate => super::reconnect_required(),
        _ => errors::from_provider(e),
    }
}

#[derive(Default)]
struct Found {
    tasks: Vec<ImportedTask>,
    updated: Vec<UpdatedTask>,
    marks: Vec<Mark>,
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
    let listed = listing_window(conn, window, state.cursors.is_some());
    for calendar in calendars_of(conn) {
        let since = Utc::now();
        let (watch, last_change) = push_state(conn, &calendar);
        // Without cursors the marks are dropped, and so would the token be: do not ask for one.
        let page = match state.cursors {
            Some(_) => provider.list(&calendar, listed, None).await,
            None => provider.list_window(&calendar, listed).await,
        }
        .map_err(|e| read_failed(conn, &e))?;
        for ev in page.events.iter().filter(|e| !e.cancelled && e.in_window(&window)) {
            match &ev.marker {
                None => {
                    let ev = external_event(provider.as_ref(), conn, &calendar, ev, window).await?;
                    if shows_in(&ev, &window) {
                        found.tasks.push(mapping::imported_task_at(&ev, conn.spec.provider, window.from));
                    }
                }
                Some(m) if m.owner == state.config.owner => {
                    found.updated.extend(our_edit(state, user, conn, ev, &m.task_id).await?);
                }
                // Another installation's event: neither ours to report nor the user's own.
                Some(_) => {}
            }
        }
        found.marks.push(Mark {
            connection: conn.name_any(),
            calendar,
            token: page.next_cursor,
            since,
            watch,
            last_change,
        });
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
    // A change pull is never cached: its answer depends on the cursor.
    if req.refresh != Some(true)
        && req.cursor.is_none()
        && let Some(hit) = state.caches.import.get(&user, cache_window, ttl)
    {
        return Ok(axum::Json(hit));
    }
    let active: Vec<_> = user_connections(&state, &user).await?.into_iter().filter(|c| c.spec.active).collect();
    if active.is_empty() {
        return Err(ApiError::not_connected());
    }
    if let Some(text) = &req.cursor {
        let sealer = state.cursors.clone().ok_or_else(|| ApiError::cursor(&CursorError::Unavailable))?;
        let cursor = sealer.open(text, &user).map_err(|e| ApiError::cursor(&e))?;
        return super::changes::pull(&state, &user, &active, cursor, req.window_days, &sealer).await.map(axum::Json);
    }
    let now = Utc::now();
    let mut found = Found::default();
    let mut warnings = Vec::new();
    let mut first_error = None;
    for conn in &active {
        let window = window_of(conn, req.window_days, now);
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
    let Found { mut tasks, updated, marks } = found;
    tasks.sort_by(|a, b| a.scheduled_time.cmp(&b.scheduled_time).then(a.calendar_event_id.cmp(&b.calendar_event_id)));
    let cursor = state.cursors.as_ref().and_then(|s| s.seal(&AppCursor { version: 1, user: user.clone(), marks }));
    let response = CalendarToTasksResponse {
        success: true,
        count: tasks.len(),
        tasks,
        updated_tasks: updated,
        warnings,
        changes: None,
        cursor,
    };
    // A partial answer is not cached: the next call tries the broken calendar again.
    if response.warnings.is_empty() {
        state.caches.import.put(&user, cache_window, response.clone());
    }
    Ok(axum::Json(response))
}
