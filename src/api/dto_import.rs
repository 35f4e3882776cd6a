//! Request and answer bodies of `POST /calendar-to-tasks`: calendar events as tasks, edits of
//! our events, changes since a cursor, and connections that could not be read.
//!
//! Owns: their JSON shapes. Must not touch: behaviour (handlers) or the mapping (`mapping`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Id;

/// `POST /calendar-to-tasks`.
#[derive(Deserialize, ToSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct CalendarToTasksRequest {
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub user_id: Id,
    /// Days ahead to look (default: the connection's import.windowDays, else 7).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 365)]
    pub window_days: Option<u32>,
    /// Bypass the 5-minute cache.
    #[serde(default)]
    pub refresh: Option<bool>,
    /// The `cursor` of an earlier answer: answer with `changes` since then instead of `tasks`.
    #[serde(default)]
    #[schema(max_length = 32768)]
    pub cursor: Option<String>,
}

/// A calendar event as a task.
#[derive(Serialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct ImportedTask {
    pub name: String,
    /// Local date-time in the event's zone (`2025-10-17T10:00:00`), or a date for all-day.
    pub scheduled_time: String,
    pub category: String,
    pub calendar_event_id: String,
    /// `google`, `outlook`, `apple` or `caldav`.
    pub calendar_source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calendar_link: Option<String>,
    /// IANA zone `scheduled_time` is read in (`UTC` when the event has none).
    pub timezone: String,
    pub all_day: bool,
    pub duration_minutes: i64,
    /// Recurring events only: the series' RFC 5545 lines (RRULE/EXDATE/RDATE), as the TaskSync
    /// spec and `task_data.recurrence` take them. `scheduled_time` is then the next occurrence.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recurrence: Vec<String>,
    /// Recurring events only: the start of the series' first occurrence, read like
    /// `scheduled_time`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_start: Option<String>,
    /// Recurring events only: occurrences moved or cancelled in the calendar (within the window
    /// read), by their original start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exceptions: Option<Vec<OccurrenceException>>,
}

/// One occurrence of a recurring task that differs from its rule. Times read like
/// `scheduled_time` (local date-times in `timezone`, or dates for all-day tasks).
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OccurrenceException {
    /// When the occurrence starts by the rule: what identifies it.
    #[schema(
        example = "2025-10-22T14:00:00",
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|z|[+-][0-9]{2}:[0-9]{2})?)?$"
    )]
    pub original_start: String,
    /// Where the occurrence is now, when moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        example = "2025-10-23T09:00:00",
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|z|[+-][0-9]{2}:[0-9]{2})?)?$"
    )]
    pub start: Option<String>,
    /// End of the moved occurrence (default: `start` plus the task's duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|z|[+-][0-9]{2}:[0-9]{2})?)?$"
    )]
    pub end: Option<String>,
    /// The occurrence was cancelled (deleted from the series).
    #[serde(default)]
    pub cancelled: bool,
}

/// One of our events that was edited in the calendar app.
#[derive(Serialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct UpdatedTask {
    pub task_id: String,
    pub calendar_event_id: String,
    pub calendar_source: String,
    /// Changed fields: `name`, `scheduled_time`, `end`, `description`, `category`.
    pub changed: Vec<String>,
    /// The event as it is now in the calendar.
    pub name: String,
    pub scheduled_time: String,
    pub timezone: String,
    pub all_day: bool,
}

/// What happened to a calendar event since the cursor.
#[derive(Serialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Created after the cursor was issued.
    Created,
    /// Changed (or created before the cursor and not seen by it): upsert by `calendar_event_id`.
    Updated,
    /// Deleted (or moved out of the range the calendar reports changes for).
    Deleted,
}

/// One change of a calendar event that is not ours.
#[derive(Serialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct CalendarChange {
    pub change: ChangeKind,
    pub calendar_event_id: String,
    pub calendar_source: String,
    /// The event as a task, as in `tasks` (absent on `deleted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<ImportedTask>,
}

/// Answer of calendar-to-tasks.
#[derive(Serialize, ToSchema, Debug, Clone)]
pub struct CalendarToTasksResponse {
    pub success: bool,
    /// The events in the window (empty when the request had a cursor: see `changes`).
    pub tasks: Vec<ImportedTask>,
    /// Entries of `tasks`, or of `changes` when the request had a cursor.
    pub count: usize,
    pub updated_tasks: Vec<UpdatedTask>,
    /// Connections that could not be read (the others' events are still listed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<ImportWarning>,
    /// Changes since the request's cursor (only when it had one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<CalendarChange>>,
    /// Pass this in the next request to get only what changed since this answer (absent when
    /// the deployment has no ENCRYPTION_KEY).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A connection calendar-to-tasks could not read.
#[derive(Serialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct ImportWarning {
    pub calendar_type: String,
    pub error: String,
    pub code: String,
}
