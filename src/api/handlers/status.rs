//! Status and management: `GET /connection-status/{user_id}`, `POST /disconnect/{user_id}`,
//! `GET /sync-history/{user_id}`.
//!
//! Owns: reading connections for status and history, and the disconnect sequence. Must not
//! touch: calendar events (disconnect leaves them in the calendar, DESIGN §6).

use axum::extract::State;
use kube::ResourceExt;

use super::{connected_at, readiness, timestamp, user_connections};
use crate::api::auth::Caller;
use crate::api::dto::{
    ConnectionInfo, ConnectionStatusResponse, DisconnectQuery, DisconnectResponse, HistoryQuery, Id,
    SyncHistoryResponse, SyncRecord,
};
use crate::api::errors::{ApiError, ErrorBody};
use crate::api::extract::{ApiPath, ApiQuery};
use crate::api::mapping;
use crate::api::state::AppState;
use crate::engine::{Labels, ObjectKey};
use crate::resources::{CalendarConnection, DeletionPolicy, Direction, SyncStatus, USER_LABEL, user_label_value};

/// Connection state of a user.
#[utoipa::path(get, path = "/api/calendar/connection-status/{user_id}", tag = "status",
    params(("user_id" = String, Path)),
    responses((status = 200, body = ConnectionStatusResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn connection_status(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<String>,
) -> Result<axum::Json<ConnectionStatusResponse>, ApiError> {
    let user = mapping::user_id(&Id(user_id))?.to_string();
    caller.authorize(&state, &user)?;
    let conns = user_connections(&state, &user).await?;
    let info = |c: &CalendarConnection| {
        let (ready, reason) = if c.spec.active { readiness(c) } else { (false, "Disconnected".to_string()) };
        ConnectionInfo {
            calendar_type: c.spec.provider.as_str().to_string(),
            active: c.spec.active,
            ready,
            reason,
            connected_at: connected_at(c).map(timestamp),
            account_email: c.status.as_ref().and_then(|s| s.account_email.clone()),
        }
    };
    let connections: Vec<ConnectionInfo> = conns.iter().map(info).collect();
    let current = conns.iter().find(|c| c.spec.active).map(info);
    Ok(axum::Json(match current {
        Some(c) => ConnectionStatusResponse {
            connected: true,
            calendar_type: Some(c.calendar_type),
            connected_at: c.connected_at,
            ready: Some(c.ready),
            reason: Some(c.reason),
            connections,
        },
        None => ConnectionStatusResponse {
            connected: false,
            calendar_type: None,
            connected_at: None,
            ready: None,
            reason: None,
            connections,
        },
    }))
}

/// Disconnect all (or one type of) the user's calendars; events and history stay.
#[utoipa::path(post, path = "/api/calendar/disconnect/{user_id}", tag = "status",
    params(("user_id" = String, Path), DisconnectQuery),
    responses((status = 200, body = DisconnectResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn disconnect(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<DisconnectQuery>,
) -> Result<axum::Json<DisconnectResponse>, ApiError> {
    let user = mapping::user_id(&Id(user_id))?.to_string();
    caller.authorize(&state, &user)?;
    let only = query.calendar_type.as_deref().map(mapping::calendar_type).transpose()?;
    let conns: Vec<_> = user_connections(&state, &user)
        .await?
        .into_iter()
        .filter(|c| c.spec.active && only.is_none_or(|k| c.spec.provider == k))
        .collect();
    let selector = Labels::from([(USER_LABEL.to_string(), user_label_value(&user))]);
    for conn in &conns {
        let name = conn.name_any();
        super::oauth::stop_watches(&state, conn).await;
        // Apple/CalDAV app passwords cannot be revoked by an API (appleid.apple.com does that).
        super::oauth::revoke(&state, conn).await;
        // The user's TaskSyncs go without touching the calendar: Orphan first, then delete.
        let task_syncs = state.objects.list_task_syncs(Some(&state.namespace), &selector).await?;
        for ts in task_syncs.into_iter().filter(|t| t.spec.connection_ref.name == name) {
            let ts_name = ts.name_any();
            if ts.spec.deletion_policy != DeletionPolicy::Orphan && ts.metadata.deletion_timestamp.is_none() {
                let mut orphan = ts.clone();
                orphan.spec.deletion_policy = DeletionPolicy::Orphan;
                orphan.status = None;
                orphan.metadata.resource_version = None;
                state.objects.apply_task_sync(&orphan).await?;
            }
            state.objects.delete(&ObjectKey::task_sync(&state.namespace, &ts_name)).await?;
        }
        state.objects.delete_credentials(&state.namespace, &conn.spec.credentials_secret_ref).await?;
        let mut inactive = conn.clone();
        inactive.spec.active = false;
        inactive.status = None;
        inactive.metadata.resource_version = None;
        state.objects.apply_connection(&inactive).await?;
        tracing::info!(connection = %name, "calendar disconnected");
    }
    state.caches.import.invalidate(&user);
    Ok(axum::Json(DisconnectResponse { success: true, message: "Calendar disconnected".into() }))
}

/// The user's sync operations, newest first.
#[utoipa::path(get, path = "/api/calendar/sync-history/{user_id}", tag = "status",
    params(("user_id" = String, Path), HistoryQuery),
    responses((status = 200, body = SyncHistoryResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sync_history(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<axum::Json<SyncHistoryResponse>, ApiError> {
    let user = mapping::user_id(&Id(user_id))?.to_string();
    caller.authorize(&state, &user)?;
    let limit = match query.limit {
        None => 50,
        Some(0) => return Err(ApiError::invalid_field("limit must be between 1 and 200")),
        Some(n) => n.min(200) as usize,
    };
    let mut records = Vec::new();
    for conn in user_connections(&state, &user).await? {
        let Some(status) = &conn.status else { continue };
        for e in &status.history {
            records.push((
                e.time,
                e.id,
                SyncRecord {
                    id: e.id,
                    user_id: user.clone(),
                    task_id: e.task_id.clone(),
                    calendar_event_id: e.event_id.clone(),
                    calendar_type: conn.spec.provider.as_str().to_string(),
                    sync_direction: match e.direction {
                        Direction::ToCalendar => "to_calendar",
                        Direction::FromCalendar => "from_calendar",
                    }
                    .to_string(),
                    sync_status: match e.status {
                        SyncStatus::Pending => "pending",
                        SyncStatus::Success => "success",
                        SyncStatus::Failed => "failed",
                    }
                    .to_string(),
                    error_message: e.error.clone(),
                    created_at: timestamp(e.time),
                    operation: serde_json::to_value(e.operation)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                    note: e.note.clone(),
                },
            ));
        }
    }
    records.sort_by_key(|r| std::cmp::Reverse((r.0, r.1)));
    let syncs: Vec<SyncRecord> = records.into_iter().take(limit).map(|(_, _, r)| r).collect();
    Ok(axum::Json(SyncHistoryResponse { count: syncs.len(), syncs }))
}
