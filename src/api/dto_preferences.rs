//! Request and answer bodies of `GET`/`PUT /preferences/{user_id}`: where a user's tasks go
//! across their connected calendars.
//!
//! Owns: their JSON shapes. Must not touch: behaviour (handlers::preferences).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most categories one user may route (each is stored on a connection's `categoryCalendars`).
pub const MAX_CATEGORIES: usize = 100;

/// Where tasks of one category go.
#[derive(Deserialize, Serialize, ToSchema, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CategoryRoute {
    /// `google`, `outlook` or `apple` (`caldav`): a connected calendar account of the user.
    pub calendar_type: String,
    /// A writable calendar of that account (from `connections[].calendars`); default: the
    /// account's default calendar.
    #[serde(default)]
    pub calendar_id: Option<String>,
}

/// `PUT /preferences/{user_id}`: the whole routing, replacing what was set before.
#[derive(Deserialize, ToSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct PreferencesRequest {
    /// The account tasks go to when their category routes nowhere and the app names no
    /// calendar; null or absent: the newest connected account.
    #[serde(default)]
    pub default_calendar_type: Option<String>,
    /// Category (as in `task_data.category`) → calendar.
    #[serde(default)]
    pub categories: BTreeMap<String, CategoryRoute>,
}

/// One calendar of a connected account.
#[derive(Serialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct CalendarChoice {
    pub calendar_id: String,
    pub name: String,
    pub primary: bool,
    /// Only writable calendars can be chosen.
    pub writable: bool,
    /// New events of this account go here when no category picks another one.
    pub default: bool,
}

/// One connected account and its calendars (for a settings page).
#[derive(Serialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct ConnectionChoice {
    pub calendar_type: String,
    /// Credentials work and the calendars below are current.
    pub connected: bool,
    pub account_email: Option<String>,
    /// The account's calendars as last listed (empty until the connection was first checked).
    pub calendars: Vec<CalendarChoice>,
}

/// A category's route as it is in effect.
#[derive(Serialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct CategoryRouteView {
    pub calendar_type: String,
    pub calendar_id: String,
    /// The calendar's name, when the account lists it.
    pub calendar_name: Option<String>,
}

/// Answer of `GET` and `PUT /preferences/{user_id}`.
#[derive(Serialize, ToSchema, Debug)]
pub struct PreferencesResponse {
    pub success: bool,
    /// The account unrouted tasks go to (marked, or else the newest connected); null without
    /// a connected calendar.
    pub default_calendar_type: Option<String>,
    /// Whether `default_calendar_type` was chosen by the user (false: the newest connected).
    pub default_chosen: bool,
    pub categories: BTreeMap<String, CategoryRouteView>,
    pub connections: Vec<ConnectionChoice>,
    /// `PUT` only: existing tasks whose category now routes to another account; their events
    /// move there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks_rerouted: Option<usize>,
}
