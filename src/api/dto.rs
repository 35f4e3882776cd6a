//! Request and response bodies of the 11 endpoints: the seed's fields, plus the optional extras
//! DESIGN §6 allows. Unknown fields are refused (422), so a typo never silently does nothing.
//!
//! Owns: wire shapes and their OpenAPI schemas. Must not touch: validation of values (see
//! `mapping`) or any I/O. Secrets are wrapped (`SecretString`) and never serialized back.

use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

/// An id the app may send as a JSON string or an integer (`"task456"` or `456`): both mean the
/// same string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Id(pub String);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            I(i64),
            U(u64),
        }
        match Raw::deserialize(d).map_err(|_| serde::de::Error::custom("expected a string or an integer id"))? {
            Raw::S(s) => Ok(Id(s)),
            Raw::I(i) => Ok(Id(i.to_string())),
            Raw::U(u) => Ok(Id(u.to_string())),
        }
    }
}

impl Id {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `POST /connect/{calendar_type}`.
#[derive(Deserialize, ToSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct ConnectRequest {
    /// The app's user id (string or integer).
    #[schema(value_type = String, min_length = 1, max_length = 200, example = "user123")]
    pub user_id: Id,
    /// Google/Outlook: put events into a calendar of calsync's own, "Get It Done!", created in
    /// the account once (the connection gets `calendarId: auto`). Google asks the user for the
    /// extra permission to create calendars. Default false.
    #[serde(default)]
    pub dedicated_calendar: bool,
}

/// Apple answer of `POST /connect/apple`.
#[derive(Serialize, ToSchema, Debug)]
pub struct ConnectResponse {
    pub message: String,
    pub instructions: String,
    pub calendar_type: String,
}

/// Google/Outlook answer of `POST /connect/{calendar_type}`: send the user to
/// `authorization_url`. `state` is opaque (sealed; not the user id as in the seed) and equals the
/// one in the URL.
#[derive(Serialize, ToSchema, Debug)]
pub struct OAuthConnectResponse {
    pub authorization_url: String,
    pub state: String,
    pub calendar_type: String,
}

/// `POST /apple/connect`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppleConnectRequest {
    #[schema(value_type = String, min_length = 1, max_length = 200, example = "user123")]
    pub user_id: Id,
    /// CalDAV user name: the Apple ID e-mail on iCloud, any user name elsewhere.
    #[schema(min_length = 1, max_length = 320, example = "user@icloud.com")]
    pub apple_id: String,
    /// App-specific password (never stored in clear, logged or returned).
    #[schema(value_type = String, format = Password, example = "abcd-efgh-ijkl-mnop")]
    pub app_password: SecretString,
    /// CalDAV server (default `https://caldav.icloud.com/`).
    #[serde(default)]
    #[schema(pattern = r"^https?://[^\s/][^\s]*$", max_length = 2048, example = "https://caldav.icloud.com/")]
    pub server_url: Option<String>,
    /// Calendar for new events (default: the first writable calendar that accepts events).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 1024, example = "/123456789/calendars/home/")]
    pub calendar_id: Option<String>,
    /// Put events into a calendar of calsync's own, "Get It Done!", created in the account once
    /// (MKCALENDAR) before this call answers. Not together with `calendar_id`. Default false.
    #[serde(default)]
    pub dedicated_calendar: bool,
}

/// Answer of `POST /apple/connect`.
#[derive(Serialize, ToSchema, Debug)]
pub struct AppleConnectResponse {
    pub success: bool,
    pub message: String,
    /// Display names of the account's calendars.
    pub calendars: Vec<String>,
}

/// `task_data` of task-to-calendar (all seed fields plus optional extras).
#[derive(Deserialize, ToSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct TaskData {
    /// The app's task id (string or integer).
    #[schema(value_type = String, min_length = 1, max_length = 200, example = "task456")]
    pub id: Id,
    /// Event title, verbatim.
    #[schema(min_length = 1, max_length = 1024, example = "Complete assignment")]
    pub name: String,
    /// RFC 3339 with offset, a local date-time read in `timezone`, or a date (all-day).
    /// Required unless `auto_schedule` is given (exactly one of them).
    #[serde(default)]
    #[schema(
        example = "2025-10-17T14:00:00",
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|z|[+-][0-9]{2}:[0-9]{2})?)?$"
    )]
    pub scheduled_time: Option<String>,
    /// Instead of `scheduled_time`: calsync places the task in free time and moves it when a
    /// meeting lands on it (see "Tasks that place themselves").
    #[serde(default)]
    pub auto_schedule: Option<AutoSchedule>,
    #[serde(default)]
    #[schema(max_length = 200)]
    pub category: Option<String>,
    /// IANA zone; required when `scheduled_time` is a local date-time.
    #[serde(default)]
    #[schema(example = "America/New_York", pattern = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$", max_length = 64)]
    pub timezone: Option<String>,
    /// Event length in minutes (default 60; whole days for all-day tasks).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 527040)]
    pub duration_minutes: Option<u32>,
    #[serde(default)]
    #[schema(max_length = 8192)]
    pub description: Option<String>,
    /// Makes the task recurring: RFC 5545 lines (`RRULE:FREQ=WEEKLY;BYDAY=MO`, `EXDATE...`),
    /// repeating from `scheduled_time` in `timezone` (required for timed tasks). Absent: an
    /// existing task keeps its recurrence; `[]` makes it a single event again.
    #[serde(default)]
    #[schema(max_items = 20, example = json!(["RRULE:FREQ=WEEKLY;BYDAY=WE;COUNT=10"]))]
    pub recurrence: Option<Vec<String>>,
    /// Occurrences of the recurring task to cancel or move, by their start under the rule
    /// (read like `scheduled_time`). Absent: kept; `[]` clears them.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub exceptions: Option<Vec<OccurrenceException>>,
}

/// `POST /task-to-calendar`.
#[derive(Deserialize, ToSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct TaskToCalendarRequest {
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub user_id: Id,
    pub task_data: TaskData,
    /// Which connected calendar to use (default: the most recently connected one).
    #[serde(default)]
    #[schema(example = "apple", pattern = r"^(google|outlook|apple|caldav)$")]
    pub calendar_type: Option<String>,
}

/// Answer of task-to-calendar (200 synced; 202 `pending: true` with null ids when the engine
/// has not finished within the wait; 200 `feed: true` with null ids when the user has no
/// connected calendar but an ICS feed, which now lists the task).
#[derive(Serialize, ToSchema, Debug, Default)]
pub struct TaskToCalendarResponse {
    pub success: bool,
    pub event_id: Option<String>,
    pub event_link: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
    /// The task is served by the user's ICS feed only (no calendar is connected).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub feed: bool,
    /// `auto_schedule`: where calsync placed the block (RFC 3339 in the task's zone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_end: Option<String>,
    /// `auto_schedule`: why the block is there, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// `auto_schedule`: `no_room` when nothing fits before the deadline (no event is written;
    /// `message` says which bounds were searched; the app also hears `task.unschedulable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Fields update-event may change (all optional; absent ones stay).
#[derive(Deserialize, ToSchema, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct TaskPatch {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 1024)]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(
        example = "2025-10-17T14:00:00",
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|z|[+-][0-9]{2}:[0-9]{2})?)?$"
    )]
    pub scheduled_time: Option<String>,
    /// Let calsync place the task instead (replaces its time; `scheduled_time` pins it again).
    #[serde(default)]
    pub auto_schedule: Option<AutoSchedule>,
    #[serde(default)]
    #[schema(max_length = 200)]
    pub category: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 527040)]
    pub duration_minutes: Option<u32>,
    #[serde(default)]
    #[schema(max_length = 8192)]
    pub description: Option<String>,
    /// New recurrence lines (`[]`: no longer recurring).
    #[serde(default)]
    #[schema(max_items = 20)]
    pub recurrence: Option<Vec<String>>,
    /// New set of cancelled or moved occurrences (`[]`: none).
    #[serde(default)]
    #[schema(max_items = 100)]
    pub exceptions: Option<Vec<OccurrenceException>>,
}

/// `PUT /update-event`.
#[derive(Deserialize, ToSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct UpdateEventRequest {
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub user_id: Id,
    /// The event to change; or give `task_id` instead (tasks served by the ICS feed only have no
    /// event id).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 1024)]
    pub event_id: Option<String>,
    /// The app's task id, instead of `event_id`.
    #[serde(default)]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200)]
    pub task_id: Option<Id>,
    #[serde(default)]
    pub task_data: TaskPatch,
}

/// `DELETE /delete-event`.
#[derive(Deserialize, ToSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct DeleteEventRequest {
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub user_id: Id,
    /// The event to delete; or give `task_id` instead (tasks served by the ICS feed only have no
    /// event id).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 1024)]
    pub event_id: Option<String>,
    /// The app's task id, instead of `event_id`.
    #[serde(default)]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200)]
    pub task_id: Option<Id>,
}

/// `{"success": true}` (with `pending: true` on 202).
#[derive(Serialize, ToSchema, Debug)]
pub struct SuccessResponse {
    pub success: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

/// One of the user's connections in connection-status.
#[derive(Serialize, ToSchema, Debug)]
pub struct ConnectionInfo {
    pub calendar_type: String,
    pub active: bool,
    pub ready: bool,
    /// Ready condition reason, e.g. `Connected`, `ReconnectRequired`, `Pending`, `Disconnected`.
    pub reason: String,
    pub connected_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_email: Option<String>,
}

/// Answer of connection-status.
#[derive(Serialize, ToSchema, Debug)]
pub struct ConnectionStatusResponse {
    pub connected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calendar_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub connections: Vec<ConnectionInfo>,
}

/// Query of disconnect.
#[derive(Deserialize, IntoParams, Debug)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DisconnectQuery {
    /// Disconnect only this calendar type (default: all).
    pub calendar_type: Option<String>,
}

/// Answer of disconnect.
#[derive(Serialize, ToSchema, Debug)]
pub struct DisconnectResponse {
    pub success: bool,
    pub message: String,
}

/// Query of sync-history.
#[derive(Deserialize, IntoParams, Debug)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Entries to return, newest first (default 50, at most 200).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

/// One sync operation, with the seed's fields.
#[derive(Serialize, ToSchema, Debug, Clone)]
pub struct SyncRecord {
    /// Integer id, increasing within one calendar_type's history.
    pub id: u64,
    pub user_id: String,
    pub task_id: Option<String>,
    pub calendar_event_id: Option<String>,
    pub calendar_type: String,
    /// `to_calendar` or `from_calendar`.
    pub sync_direction: String,
    /// `pending`, `success` or `failed`.
    pub sync_status: String,
    pub error_message: Option<String>,
    pub created_at: String,
    /// What was done: create, adopt, update, delete, orphan, conflict, import, resolve.
    pub operation: String,
    /// What was decided and by whom (a resolved conflict), or where an event moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Answer of sync-history.
#[derive(Serialize, ToSchema, Debug)]
pub struct SyncHistoryResponse {
    pub syncs: Vec<SyncRecord>,
    pub count: usize,
}

/// Answer of `/healthz` and `/readyz`.
#[derive(Serialize, ToSchema, Debug)]
pub struct HealthResponse {
    pub status: String,
}

/// Answer of `POST /feeds/{user_id}`: the user's secret ICS feed URL (the same one on every
/// call until it is revoked).
#[derive(Serialize, ToSchema)]
pub struct FeedResponse {
    pub success: bool,
    /// `https://…/api/calendar/feeds/<token>.ics`: subscribe to it in a calendar app. Anyone
    /// holding it can read the user's tasks; revoke it with `DELETE /feeds/{user_id}`.
    pub feed_url: String,
    /// The same URL with the `webcal://` scheme (opens the subscribe dialog of Apple Calendar
    /// and Outlook).
    pub webcal_url: String,
    /// This call made the feed (false: it existed already).
    pub created: bool,
}

// The URL carries the token: Debug must not print it.
impl std::fmt::Debug for FeedResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedResponse").field("feed_url", &"[redacted]").field("created", &self.created).finish()
    }
}

/// Answer of `DELETE /feeds/{user_id}`.
#[derive(Serialize, ToSchema, Debug)]
pub struct FeedRevokedResponse {
    pub success: bool,
    /// A feed existed and its URL now answers 404 (false: there was none).
    pub revoked: bool,
}

#[path = "dto_conflicts.rs"]
mod conflicts;
pub use conflicts::*;

#[path = "dto_import.rs"]
mod import;
pub use import::*;

#[path = "dto_batch.rs"]
mod batch;
pub use batch::*;

#[path = "dto_preferences.rs"]
mod preferences;
pub use preferences::*;
#[path = "dto_scheduling.rs"]
mod scheduling;
pub use scheduling::*;
