//! The `CalendarConnection` custom resource: one user's calendar account.
//!
//! Owns: the spec/status schema. Must not touch: credentials themselves (they live in a Secret
//! or a store row, see `credentials`), provider calls, or reconcile decisions.

// Several `printcolumn(type_ = ..)` entries are separate columns, which clippy's attribute
// lint mistakes for duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::condition::Condition;
use super::history::History;

/// Which calendar service a connection talks to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Google Calendar (OAuth 2.0).
    Google,
    /// Outlook / Microsoft 365 calendar through Microsoft Graph (OAuth 2.0).
    Outlook,
    /// Apple iCloud calendar (CalDAV with an app-specific password).
    Apple,
    /// Any RFC 4791 CalDAV server; needs `serverUrl`.
    Caldav,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Google => "google",
            ProviderKind::Outlook => "outlook",
            ProviderKind::Apple => "apple",
            ProviderKind::Caldav => "caldav",
        }
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ProviderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "google" => Ok(ProviderKind::Google),
            "outlook" => Ok(ProviderKind::Outlook),
            "apple" => Ok(ProviderKind::Apple),
            "caldav" => Ok(ProviderKind::Caldav),
            other => Err(format!("unknown calendar provider {other:?}: use one of google, outlook, apple, caldav")),
        }
    }
}

/// Where the connection's credentials live: a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of a Secret in the same namespace as the connection.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
    /// Key inside the Secret holding calsync's encrypted `credentials` JSON. Unset: the default
    /// `credentials` key, or the plain keys (`username`/`password`, `refresh_token`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: Option<String>,
}

/// Settings for reading calendar events back as tasks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportSpec {
    /// How many days ahead `calendar-to-tasks` looks for events (1-365).
    #[serde(default = "default_window_days")]
    #[schemars(range(min = 1, max = 365))]
    pub window_days: u32,
}

impl Default for ImportSpec {
    fn default() -> Self {
        ImportSpec { window_days: default_window_days() }
    }
}

/// `spec.calendarId` value asking for a calendar of calsync's own (see `providers::dedicated`).
pub const AUTO_CALENDAR: &str = "auto";

fn default_window_days() -> u32 {
    7
}

fn default_true() -> bool {
    true
}

/// One user's calendar account and which of its calendars tasks go to.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "calendar.getitdone.app",
    version = "v1alpha1",
    kind = "CalendarConnection",
    namespaced,
    status = "CalendarConnectionStatus",
    shortname = "calconn",
    category = "getitdone",
    doc = "A user's calendar account (Google, Outlook, Apple iCloud or CalDAV) that TaskSyncs write events to.",
    printcolumn(name = "User", type_ = "string", json_path = ".spec.userId", description = "The app's user id"),
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider", description = "Calendar provider"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Credentials work and the calendar is reachable"),
    printcolumn(name = "Calendar", type_ = "string", json_path = ".status.defaultCalendarId", description = "Calendar new events go to"),
    printcolumn(name = "Push", type_ = "string", json_path = ".status.conditions[?(@.type==\"Push\")].reason", description = "How calendar changes reach calsync: Subscribed (push), Polling, or WatchFailed"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.spec.provider != 'caldav' || has(self.spec.serverUrl)").message("provider caldav needs spec.serverUrl (the CalDAV server's URL)").reason(Reason::FieldValueRequired),
    cel
)]
#[x_kube(validation = Rule::new("self.provider == oldSelf.provider").message("provider is immutable: create a new CalendarConnection instead"))]
#[x_kube(validation = Rule::new("self.userId == oldSelf.userId").message("userId is immutable: create a new CalendarConnection instead"))]
#[serde(rename_all = "camelCase")]
pub struct CalendarConnectionSpec {
    /// The Get It Done! user id this connection belongs to (any string up to 200 characters).
    #[schemars(length(min = 1, max = 200))]
    pub user_id: String,
    /// Calendar provider: google, outlook, apple (iCloud CalDAV) or caldav (any CalDAV server).
    pub provider: ProviderKind,
    /// Secret in the same namespace that holds the credentials.
    pub credentials_secret_ref: SecretRef,
    /// Default calendar for new events. Unset: Google `primary`, Outlook the default calendar,
    /// CalDAV the first writable calendar that accepts events. `auto`: calsync creates a
    /// calendar of its own named "Get It Done!" in the account (once; its id is recorded in
    /// status.dedicatedCalendarId) and uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub calendar_id: Option<String>,
    /// CalDAV server URL (http or https). Unset for apple: `https://caldav.icloud.com/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub server_url: Option<String>,
    /// Calendar id per task category, e.g. `{Work: work-calendar-id}`; falls back to calendarId.
    /// Across a user's connections this also routes: a task whose category one connection
    /// names goes to that connection (REST `task-to-calendar`, `PUT /preferences`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub category_calendars: BTreeMap<String, String>,
    /// The user's default connection: tasks whose category no connection routes go here when
    /// the app names no calendar. Unset on every connection: the newest connected one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub user_default: bool,
    /// Import settings for calendar-to-tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportSpec>,
    /// False after the user disconnected: nothing is written, the object and its history stay.
    #[serde(default = "default_true")]
    pub active: bool,
}

impl CalendarConnectionSpec {
    /// The calendar `calendarId` names, if it names one: unset and `auto` (a calendar calsync
    /// creates, whose id lives in status) give `None`, so callers fall back to
    /// status.defaultCalendarId.
    pub fn chosen_calendar(&self) -> Option<&String> {
        self.calendar_id.as_ref().filter(|c| c.as_str() != AUTO_CALENDAR)
    }

    /// `calendarId: auto`: the user asked for a calendar of calsync's own.
    pub fn wants_dedicated_calendar(&self) -> bool {
        self.calendar_id.as_deref() == Some(AUTO_CALENDAR)
    }
}

/// A calendar of the account, as the provider lists it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CalendarInfo {
    /// Provider's calendar id (CalDAV: the collection path).
    pub id: String,
    /// Display name.
    pub name: String,
    /// The account's primary/default calendar.
    #[serde(default)]
    pub primary: bool,
    /// Whether calsync may write events to it.
    #[serde(default)]
    pub writable: bool,
}

/// Observed state of a CalendarConnection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CalendarConnectionStatus {
    /// `Authenticated` (credentials accepted) and `Ready` (usable for sync).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the credentials were first accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_at: Option<DateTime<Utc>>,
    /// When the credentials were last checked against the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<DateTime<Utc>>,
    /// The account's calendars.
    #[serde(default)]
    pub calendars: Vec<CalendarInfo>,
    /// The calendar new events go to: spec.calendarId, else the provider's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_calendar_id: Option<String>,
    /// With spec.calendarId `auto`: the id of the "Get It Done!" calendar calsync created (or
    /// found) in the account. Kept when calendarId changes, so going back to `auto` reuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedicated_calendar_id: Option<String>,
    /// The account's e-mail address, where the provider tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_email: Option<String>,
    /// When an event of this connection was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<DateTime<Utc>>,
    /// Consecutive failed credential checks (drives the retry backoff; reset on success).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_attempts: u32,
    /// When the last credential check failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<DateTime<Utc>>,
    /// No credential check before this time (failure backoff, or the provider's Retry-After).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<DateTime<Utc>>,
    /// Live sync: how changes made in each watched calendar reach calsync (push or poll).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<super::push::PushStatus>,
    /// The mass-deletion guard: deletions counted in the current window, and what it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_guard: Option<super::guard::DeletionGuardStatus>,
    /// The user's sync history across all TaskSyncs of this connection (newest last, bounded).
    #[serde(default)]
    #[schemars(length(max = 200))]
    pub history: History,
}

pub(crate) fn is_zero(n: &u32) -> bool {
    *n == 0
}
