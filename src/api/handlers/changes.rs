//! Calendar → tasks with a cursor: what changed in the user's calendars since an earlier
//! answer, as `changes` (`created` / `updated` / `deleted` events that are not ours) and
//! `updated_tasks` (our events edited in the calendar app), plus the next cursor.
//!
//! Each calendar costs one incremental provider listing from the token in the cursor (Google
//! `syncToken`, Graph delta, CalDAV `sync-collection`), or none at all while a live watch
//! covers it and live sync has seen no change since the cursor. A calendar connected after the
//! cursor was issued is read in full and reported as `created`. A token the provider no longer
//! accepts ends the pull with 410 `cursor_expired`.
//!
//! Owns: the change pull. Must not touch: objects or calendars (read only), the cache of the
//! plain import (a pull is never cached).

use kube::ResourceExt;

use super::import::{
    calendars_of, external_event, listing_window, our_edit, push_state, read_failed, shows_in, window_of,
};
use super::provider_for;
use crate::api::cursor::{AppCursor, CursorSealer, Mark};
use crate::api::dto::{CalendarChange, CalendarToTasksResponse, ChangeKind, ImportWarning, UpdatedTask};
use crate::api::errors::ApiError;
use crate::api::mapping;
use crate::api::state::AppState;
use crate::providers::{Provider, RemoteEvent, Window};
use crate::resources::CalendarConnection;

/// How far an incremental listing looks: Google and CalDAV filter their changes to the window
/// given, and the app wants to hear about an event that moved far away too.
const CHANGES_SPAN_DAYS: i64 = 3650;

#[derive(Default)]
struct Pulled {
    changes: Vec<CalendarChange>,
    updated: Vec<UpdatedTask>,
    marks: Vec<Mark>,
    /// Provider listings made / calendars answered from live sync alone.
    listings: usize,
    quiet: usize,
}

enum PullError {
    /// The provider no longer knows the token: the app must start over.
    Expired,
    Api(ApiError),
}

impl From<ApiError> for PullError {
    fn from(e: ApiError) -> Self {
        PullError::Api(e)
    }
}

/// Answer a `calendar-to-tasks` request that carried `cursor` (already opened for `user`).
pub(super) async fn pull(
    state: &AppState,
    user: &str,
    active: &[CalendarConnection],
    cursor: AppCursor,
    window_days: Option<u32>,
    sealer: &CursorSealer,
) -> Result<CalendarToTasksResponse, ApiError> {
    let mut out = Pulled::default();
    let mut warnings = Vec::new();
    let mut first_error = None;
    for conn in active {
        let old: Vec<&Mark> = cursor.marks.iter().filter(|m| m.connection == conn.name_any()).collect();
        match pull_connection(state, user, conn, &old, window_days, &mut out).await {
            Ok(()) => {}
            Err(PullError::Expired) => {
                tracing::info!(connection = %conn.name_any(), "the calendar refused the cursor's token; the app must pull again");
                return Err(ApiError::cursor_expired());
            }
            Err(PullError::Api(e)) => {
                warnings.push(ImportWarning {
                    calendar_type: conn.spec.provider.as_str().to_string(),
                    error: e.message.clone(),
                    code: e.code.to_string(),
                });
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error
        && warnings.len() == active.len()
    {
        return Err(e);
    }
    tracing::debug!(
        user_connections = active.len(),
        listings = out.listings,
        quiet = out.quiet,
        changes = out.changes.len(),
        "changes pulled"
    );
    let Pulled { changes, updated, marks, .. } = out;
    let cursor = sealer.seal(&AppCursor { version: 1, user: user.to_string(), marks });
    Ok(CalendarToTasksResponse {
        success: true,
        tasks: Vec::new(),
        count: changes.len(),
        changes: Some(changes),
        updated_tasks: updated,
        warnings,
        cursor,
    })
}

/// One connection's calendars. A calendar that cannot be read keeps its old mark (nothing is
/// skipped: the next pull asks again from the same point) and fails the connection.
async fn pull_connection(
    state: &AppState,
    user: &str,
    conn: &CalendarConnection,
    old: &[&Mark],
    window_days: Option<u32>,
    out: &mut Pulled,
) -> Result<(), PullError> {
    let calendars = calendars_of(conn);
    let keep_old = |out: &mut Pulled| {
        out.marks.extend(old.iter().filter(|m| calendars.contains(&m.calendar)).map(|m| (*m).clone()));
    };
    // Live sync alone can answer when nothing changed: no credentials read, no provider call.
    let quiet: Vec<bool> = calendars.iter().map(|c| is_quiet(conn, c, old)).collect();
    if quiet.iter().all(|q| *q) {
        out.quiet += calendars.len();
        keep_old(out);
        return Ok(());
    }
    let provider = match provider_for(state, conn).await {
        Ok(p) => p,
        Err(e) => {
            keep_old(out);
            return Err(e.into());
        }
    };
    let mut failed = None;
    for (calendar, quiet) in calendars.iter().zip(quiet) {
        let mark = old.iter().find(|m| &m.calendar == calendar).copied();
        if quiet {
            out.quiet += 1;
            out.marks.extend(mark.cloned());
            continue;
        }
        let result = match mark.filter(|m| m.token.is_some()) {
            Some(m) => since_mark(state, user, conn, provider.as_ref(), m, window_days, out).await,
            None => first_read(state, user, conn, provider.as_ref(), calendar, window_days, out).await,
        };
        match result {
            Ok(()) => {}
            Err(PullError::Expired) => return Err(PullError::Expired),
            Err(PullError::Api(e)) => {
                out.marks.extend(mark.cloned());
                failed.get_or_insert(e);
            }
        }
    }
    failed.map_or(Ok(()), |e| Err(e.into()))
}

/// Does live sync vouch that `calendar` has not changed since its mark? Only while the same
/// live watch still covers it and it has reported no change since.
fn is_quiet(conn: &CalendarConnection, calendar: &str, old: &[&Mark]) -> bool {
    let Some(m) = old.iter().find(|m| m.calendar == calendar) else {
        return false;
    };
    let (watch, last_change) = push_state(conn, calendar);
    m.token.is_some() && watch.is_some() && m.watch == watch && m.last_change == last_change
}

/// Changes of one calendar since its mark.
async fn since_mark(
    state: &AppState,
    user: &str,
    conn: &CalendarConnection,
    provider: &dyn Provider,
    mark: &Mark,
    window_days: Option<u32>,
    out: &mut Pulled,
) -> Result<(), PullError> {
    // Read the live-sync state before listing: a change live sync records later differs from
    // it, so the next pull asks the provider again.
    let (watch, last_change) = push_state(conn, &mark.calendar);
    let started = chrono::Utc::now();
    let span = chrono::Duration::days(CHANGES_SPAN_DAYS);
    let all = Window { from: started - span, to: started + span };
    out.listings += 1;
    let page = provider.list(&mark.calendar, all, mark.token.as_deref()).await.map_err(|e| read_failed(conn, &e))?;
    if page.full_resync {
        return Err(PullError::Expired);
    }
    let source = conn.spec.provider.as_str();
    for ev in &page.events {
        if ev.cancelled {
            deleted(state, conn, &ev.id, ev.marker.is_some(), out).await?;
            continue;
        }
        match &ev.marker {
            None => {
                // Created after the token was taken: new to the app. Anything else is an upsert.
                let change =
                    if ev.created.is_some_and(|c| c >= mark.since) { ChangeKind::Created } else { ChangeKind::Updated };
                let window = window_of(conn, window_days, started);
                let ev = external_event(provider, conn, &mark.calendar, ev, window).await?;
                out.changes.push(CalendarChange {
                    change,
                    calendar_event_id: ev.id.clone(),
                    calendar_source: source.to_string(),
                    task: Some(mapping::imported_task_at(&ev, conn.spec.provider, started)),
                });
            }
            Some(m) if m.owner == state.config.owner => {
                out.updated.extend(our_edit(state, user, conn, ev, &m.task_id).await?);
            }
            Some(_) => {}
        }
    }
    for id in &page.removed {
        deleted(state, conn, id, false, out).await?;
    }
    out.marks.push(Mark {
        token: page.next_cursor.or_else(|| mark.token.clone()),
        since: started,
        watch,
        last_change,
        ..mark.clone()
    });
    Ok(())
}

/// Report a removed event unless it is (or was) ours: our events' deletions reach the app as
/// `task.deleted_in_calendar` and through the task's own status, never as an imported event
/// going away (the app would drop its own task).
async fn deleted(
    state: &AppState,
    conn: &CalendarConnection,
    id: &str,
    marked: bool,
    out: &mut Pulled,
) -> Result<(), ApiError> {
    let in_history = conn.status.as_ref().is_some_and(|s| s.history.iter().any(|h| h.event_id.as_deref() == Some(id)));
    if marked || in_history || state.objects.find_task_sync_by_event(&state.namespace, id).await?.is_some() {
        return Ok(());
    }
    out.changes.push(CalendarChange {
        change: ChangeKind::Deleted,
        calendar_event_id: id.to_string(),
        calendar_source: conn.spec.provider.as_str().to_string(),
        task: None,
    });
    Ok(())
}

/// A calendar the cursor does not know (connected since, or never read): everything in the
/// window is new to the app.
async fn first_read(
    state: &AppState,
    user: &str,
    conn: &CalendarConnection,
    provider: &dyn Provider,
    calendar: &str,
    window_days: Option<u32>,
    out: &mut Pulled,
) -> Result<(), PullError> {
    let (watch, last_change) = push_state(conn, calendar);
    let since = chrono::Utc::now();
    let window = window_of(conn, window_days, since);
    out.listings += 1;
    let page =
        provider.list(calendar, listing_window(conn, window, true), None).await.map_err(|e| read_failed(conn, &e))?;
    for ev in page.events.iter().filter(|e| !e.cancelled && e.in_window(&window)) {
        match &ev.marker {
            None => {
                let ev = external_event(provider, conn, calendar, ev, window).await?;
                if shows_in(&ev, &window) {
                    out.changes.push(created(conn, &ev, since));
                }
            }
            Some(m) if m.owner == state.config.owner => {
                out.updated.extend(our_edit(state, user, conn, ev, &m.task_id).await?);
            }
            Some(_) => {}
        }
    }
    out.marks.push(Mark {
        connection: conn.name_any(),
        calendar: calendar.to_string(),
        token: page.next_cursor,
        since,
        watch,
        last_change,
    });
    Ok(())
}

fn created(conn: &CalendarConnection, ev: &RemoteEvent, now: chrono::DateTime<chrono::Utc>) -> CalendarChange {
    CalendarChange {
        change: ChangeKind::Created,
        calendar_event_id: ev.id.clone(),
        calendar_source: conn.spec.provider.as_str().to_string(),
        task: Some(mapping::imported_task_at(ev, conn.spec.provider, now)),
    }
}
