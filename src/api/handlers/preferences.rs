//! `GET`/`PUT /preferences/{user_id}`: which of the user's connected calendars each task
//! category goes to, and the default. Stored where a platform team would declare it: each
//! connection's `categoryCalendars` and `userDefault`, so YAML and REST agree.
//!
//! A `PUT` re-points the user's existing tasks whose category now routes to another connection;
//! the engine moves their events (create there, then delete here: `engine::moves`).
//!
//! Owns: the routing preferences' request/answer. Must not touch: calendars (the engine writes).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use kube::ResourceExt;

use super::{readiness, user_connections};
use crate::api::auth::Caller;
use crate::api::dto::{
    CalendarChoice, CategoryRouteView, ConnectionChoice, Id, MAX_CATEGORIES, PreferencesRequest, PreferencesResponse,
};
use crate::api::errors::{ApiError, ErrorBody};
use crate::api::extract::ApiJson;
use crate::api::state::AppState;
use crate::api::{mapping, routing};
use crate::engine::Labels;
use crate::resources::{CalendarConnection, USER_LABEL, is_feed_only, task_sync_labels, user_label_value};

fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// The preferences in effect over the user's active connections.
fn view(active: &[CalendarConnection]) -> PreferencesResponse {
    let mut categories = BTreeMap::new();
    for conn in active {
        for category in conn.spec.category_calendars.keys() {
            if categories.contains_key(category) {
                continue;
            }
            let Some(winner) = routing::routed(active, category) else { continue };
            let Some(calendar_id) = winner.spec.category_calendars.get(category) else { continue };
            let calendar_name = winner
                .status
                .as_ref()
                .and_then(|s| s.calendars.iter().find(|c| &c.id == calendar_id))
                .map(|c| c.name.clone());
            let route = CategoryRouteView {
                calendar_type: winner.spec.provider.as_str().to_string(),
                calendar_id: calendar_id.clone(),
                calendar_name,
            };
            categories.insert(category.clone(), route);
        }
    }
    let connections = active
        .iter()
        .map(|c| {
            let st = c.status.clone().unwrap_or_default();
            let calendars = st
                .calendars
                .iter()
                .map(|cal| CalendarChoice {
                    calendar_id: cal.id.clone(),
                    name: cal.name.clone(),
                    primary: cal.primary,
                    writable: cal.writable,
                    default: st.default_calendar_id.as_deref() == Some(cal.id.as_str()),
                })
                .collect();
            ConnectionChoice {
                calendar_type: c.spec.provider.as_str().to_string(),
                connected: readiness(c).0,
                account_email: st.account_email.clone(),
                calendars,
            }
        })
        .collect();
    PreferencesResponse {
        success: true,
        default_calendar_type: routing::default_connection(active).map(|c| c.spec.provider.as_str().to_string()),
        default_chosen: active.iter().any(|c| c.spec.user_default),
        categories,
        connections,
        tasks_rerouted: None,
    }
}

async fn active_connections(state: &AppState, user: &str) -> Result<Vec<CalendarConnection>, ApiError> {
    Ok(user_connections(state, user).await?.into_iter().filter(|c| c.spec.active).collect())
}

/// Where the user's tasks go.
#[utoipa::path(get, path = "/api/calendar/preferences/{user_id}", tag = "connections",
    params(("user_id" = String, Path)),
    responses((status = 200, body = PreferencesResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> Result<axum::Json<PreferencesResponse>, ApiError> {
    let user = mapping::user_id(&Id(user_id))?.to_string();
    caller.authorize(&state, &user)?;
    Ok(axum::Json(view(&active_connections(&state, &user).await?)))
}

/// The connection of `calendar_type` among `active`, or 422 naming what is missing.
fn connection_of<'a>(
    active: &'a [CalendarConnection],
    calendar_type: &str,
    what: &str,
) -> Result<&'a CalendarConnection, ApiError> {
    let kind = mapping::calendar_type(calendar_type)?;
    active.iter().find(|c| c.spec.provider == kind).ok_or_else(|| {
        unprocessable(
            "calendar_not_connected",
            format!("{what}: the user has no connected {kind} calendar; connect it first (or pick one of the connected ones)"),
        )
    })
}

/// Replace where the user's tasks go.
#[utoipa::path(put, path = "/api/calendar/preferences/{user_id}", tag = "connections",
    params(("user_id" = String, Path)), request_body = PreferencesRequest,
    responses((status = 200, body = PreferencesResponse, description = "Stored; `tasks_rerouted` tasks move to their new calendar"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "A connection is not checked yet, or changed concurrently: retry"),
        (status = 422, body = ErrorBody, description = "A calendar the user does not have, or a read-only one (named)")),
    security(("bearer" = [])))]
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    ApiJson(req): ApiJson<PreferencesRequest>,
) -> Result<axum::Json<PreferencesResponse>, ApiError> {
    let user = mapping::user_id(&Id(user_id))?.to_string();
    caller.authorize(&state, &user)?;
    let active = active_connections(&state, &user).await?;
    if req.categories.len() > MAX_CATEGORIES {
        return Err(ApiError::invalid_field(format!("categories: at most {MAX_CATEGORIES} categories")));
    }
    let default = match &req.default_calendar_type {
        Some(t) => Some(connection_of(&active, t, "default_calendar_type")?.name_any()),
        None => None,
    };
    // connection name → category → calendar id, for every active connection (empty: none).
    let mut wanted: BTreeMap<String, BTreeMap<String, String>> =
        active.iter().map(|c| (c.name_any(), BTreeMap::new())).collect();
    for (category, route) in &req.categories {
        if category.is_empty() || category.chars().count() > 200 {
            return Err(ApiError::invalid_field(format!(
                "categories: category names are 1 to 200 characters ({:?} is not)",
                category.chars().take(40).collect::<String>()
            )));
        }
        let conn = connection_of(&active, &route.calendar_type, &format!("categories.{category}"))?;
        let calendars = conn.status.as_ref().map(|s| s.calendars.as_slice()).unwrap_or_default();
        let id = match &route.calendar_id {
            Some(id) => {
                let Some(cal) = calendars.iter().find(|c| &c.id == id) else {
                    return Err(unprocessable(
                        "unknown_calendar",
                        format!(
                            "categories.{category}: the {} account has no calendar {id:?}; pick one of connections[].calendars from GET /preferences",
                            conn.spec.provider
                        ),
                    ));
                };
                if !cal.writable {
                    return Err(unprocessable(
                        "calendar_read_only",
                        format!(
                            "categories.{category}: calendar {:?} ({id}) of the {} account is read-only; pick a writable one",
                            cal.name, conn.spec.provider
                        ),
                    ));
                }
                id.clone()
            }
            None => conn.status.as_ref().and_then(|s| s.default_calendar_id.clone()).ok_or_else(|| {
                ApiError::conflict(
                    "connection_not_ready",
                    format!(
                        "categories.{category}: the {} account is not checked yet; retry in a moment",
                        conn.spec.provider
                    ),
                )
                .with_retry_after(Some(std::time::Duration::from_secs(2)))
            })?,
        };
        if let Some(routes) = wanted.get_mut(&conn.name_any()) {
            routes.insert(category.clone(), id);
        }
    }
    // Add routes before removing old ones: in between, a category is on two connections at
    // most, never on none (routing picks one of two deterministically).
    let mut changed: Vec<CalendarConnection> = Vec::new();
    for conn in &active {
        let name = conn.name_any();
        let routes = wanted.remove(&name).unwrap_or_default();
        let is_default = default.as_deref() == Some(name.as_str());
        if conn.spec.category_calendars == routes && conn.spec.user_default == is_default {
            continue;
        }
        let mut object = conn.clone();
        object.status = None;
        object.metadata.managed_fields = None;
        object.spec.category_calendars = routes;
        object.spec.user_default = is_default;
        changed.push(object);
    }
    changed.sort_by_key(|c| !gains_routes(&active, c));
    let mut now = active.clone();
    for object in changed {
        let applied = state.objects.apply_connection(&object).await?;
        if let Some(slot) = now.iter_mut().find(|c| c.name_any() == applied.name_any()) {
            *slot = applied;
        }
    }
    tracing::info!(user_hash = %user_label_value(&user), categories = req.categories.len(), "routing preferences stored");
    let rerouted = reroute(&state, &user, &now).await?;
    let mut body = view(&now);
    body.tasks_rerouted = Some(rerouted);
    Ok(axum::Json(body))
}

/// Whether `c` (as it will be) routes a category it did not before.
fn gains_routes(active: &[CalendarConnection], c: &CalendarConnection) -> bool {
    let before = active.iter().find(|a| a.name_any() == c.name_any());
    c.spec.category_calendars.keys().any(|k| before.is_none_or(|b| !b.spec.category_calendars.contains_key(k)))
}

/// Point the user's tasks whose category now routes to another connection at it.
async fn reroute(state: &AppState, user: &str, active: &[CalendarConnection]) -> Result<usize, ApiError> {
    let selector = Labels::from([(USER_LABEL.to_string(), user_label_value(user))]);
    let mut moved = 0;
    for ts in state.objects.list_task_syncs(Some(&state.namespace), &selector).await? {
        if ts.metadata.deletion_timestamp.is_some() || is_feed_only(&ts) {
            continue;
        }
        let current = ts.spec.connection_ref.name.as_str();
        // Only the user's own tasks (the label is a hash), and only where a category routes.
        if !active.iter().any(|c| c.name_any() == current) {
            continue;
        }
        let Some(target) = ts.spec.category.as_deref().and_then(|cat| routing::routed(active, cat)) else { continue };
        let target = target.name_any();
        if target == current {
            continue;
        }
        let mut object = ts.clone();
        object.status = None;
        object.metadata.managed_fields = None;
        object.metadata.labels.get_or_insert_with(Default::default).extend(task_sync_labels(
            user,
            &target,
            &ts.spec.task_id,
        ));
        object.spec.connection_ref.name = target;
        crate::telemetry::spans::stamp(&mut object.metadata.annotations);
        state.objects.apply_task_sync(&object).await?;
        moved += 1;
    }
    Ok(moved)
}
