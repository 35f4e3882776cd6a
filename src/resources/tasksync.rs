//! The `TaskSync` custom resource: the calendar event one task should be.
//!
//! Owns: the spec/status schema and its validation rules. Must not touch: how the spec becomes
//! an event (engine::desired) or provider calls.

// Several `printcolumn(type_ = ..)` entries are separate columns, which clippy's attribute
// lint mistakes for duplicates.
#![allow(clippy::duplicated_attributes)]

use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::condition::Condition;
use super::connection::is_zero;
use super::history::History;

/// RFC 3339 date-time with offset, a local date-time (read in timeZone), or a date (all-day).
pub const TIME_PATTERN: &str =
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|z|[+-][0-9]{2}:[0-9]{2})?)?$";
/// Go-style duration with hours, minutes and seconds, e.g. `90m`, `1h30m`.
pub const DURATION_PATTERN: &str = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$";
/// IANA zone name shape; the engine checks the name against the tz database.
pub const TZ_PATTERN: &str = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$";
/// One RFC 5545 recurrence line.
pub const RECURRENCE_PATTERN: &str = r"^(RRULE|EXRULE|RDATE|EXDATE)[;:][^\r\n]+$";

/// Reference to a CalendarConnection in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct ConnectionRef {
    /// Name of a CalendarConnection in the same namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
}

/// One occurrence of a recurring task that differs from its rule: cancelled, or moved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.cancelled) && self.cancelled ? !has(self.start) && !has(self.end) : has(self.start)").message("an exception either cancels its occurrence (cancelled: true, no start or end) or moves it (start, optionally end)"))]
#[serde(rename_all = "camelCase")]
pub struct OccurrenceException {
    /// The occurrence's start by the rule (same form as spec.start): which occurrence this is.
    #[schemars(
        length(min = 10, max = 40),
        regex(pattern = TIME_PATTERN)
    )]
    pub original_start: String,
    /// Where the occurrence moves to (same form as spec.start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 10, max = 40),
        regex(pattern = TIME_PATTERN)
    )]
    pub start: Option<String>,
    /// End of the moved occurrence; default: its start plus the task's length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 10, max = 40),
        regex(pattern = TIME_PATTERN)
    )]
    pub end: Option<String>,
    /// Cancel the occurrence.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
}

/// What happens to the calendar event when the TaskSync is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the event from the calendar (default).
    #[default]
    Delete,
    /// Leave the event in the calendar.
    Orphan,
}

/// What happens when the event was edited in the calendar app since calsync last wrote it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum ConflictPolicy {
    /// The task overwrites the calendar edit.
    TaskWins,
    /// The calendar edit stays; the task is reported as changed for the app to pull.
    CalendarWins,
    /// Report the conflict in status and wait; a later spec change resolves it for the task (default).
    #[default]
    Manual,
}

/// The calendar event one Get It Done! task should be.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "calendar.getitdone.app",
    version = "v1alpha1",
    kind = "TaskSync",
    namespaced,
    status = "TaskSyncStatus",
    shortname = "tsync",
    category = "getitdone",
    doc = "One Get It Done! task mirrored as an event in the calendar of a CalendarConnection.",
    printcolumn(
        name = "Connection",
        type_ = "string",
        json_path = ".spec.connectionRef.name",
        description = "CalendarConnection used"
    ),
    printcolumn(name = "Task", type_ = "string", json_path = ".spec.taskId", description = "The app's task id"),
    printcolumn(
        name = "Synced",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Synced\")].status",
        description = "The event matches the spec"
    ),
    printcolumn(name = "Event", type_ = "string", json_path = ".status.eventId", description = "Provider event id"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    cel
)]
#[x_kube(validation = Rule::new("!(has(self.duration) && has(self.end))").message("set either duration or end, not both"))]
#[x_kube(validation = Rule::new("has(self.start) != has(self.schedule)").message("set exactly one of start (a fixed time) and schedule (calsync finds the time)"))]
#[x_kube(validation = Rule::new("!has(self.allDay) || !self.allDay || (has(self.start) && self.start.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}$'))").message("allDay needs start as a date (YYYY-MM-DD)"))]
#[x_kube(validation = Rule::new("!has(self.start) || self.start.matches('(Z|z|[+-][0-9]{2}:[0-9]{2})$') || self.start.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}$') || has(self.timeZone)").message("start without an offset needs timeZone (an IANA name such as America/New_York)"))]
#[x_kube(validation = Rule::new("!has(self.end) || !has(self.start) || !self.start.matches('(Z|z|[+-][0-9]{2}:[0-9]{2})$') || !self.end.matches('(Z|z|[+-][0-9]{2}:[0-9]{2})$') || timestamp(self.end) > timestamp(self.start)").message("end must be after start"))]
#[x_kube(validation = Rule::new("!has(self.schedule) || has(self.timeZone)").message("schedule needs timeZone: working hours, earliestStart and deadline are read in it"))]
#[x_kube(validation = Rule::new("!has(self.schedule) || (!has(self.end) && !has(self.duration) && !has(self.allDay) && (!has(self.recurrence) || size(self.recurrence) == 0) && (!has(self.exceptions) || size(self.exceptions) == 0))").message("a scheduled task takes its length from schedule.durationMinutes and is one block: no end, duration, allDay, recurrence or exceptions"))]
#[x_kube(validation = Rule::new("self.taskId == oldSelf.taskId").message("taskId is immutable"))]
#[x_kube(validation = Rule::new("!has(self.exceptions) || size(self.exceptions) == 0 || has(self.recurrence)").message("exceptions need recurrence: only a recurring task has occurrences to cancel or move"))]
#[serde(rename_all = "camelCase")]
pub struct TaskSyncSpec {
    /// The CalendarConnection (same namespace) whose calendar holds the event.
    pub connection_ref: ConnectionRef,
    /// The app's task id.
    #[schemars(length(min = 1, max = 200))]
    pub task_id: String,
    /// Event title: the task name, verbatim.
    #[schemars(length(min = 1, max = 1024))]
    pub title: String,
    /// Start: RFC 3339 with offset (`2026-03-05T14:00:00Z`), a local date-time read in timeZone
    /// (`2026-03-05T14:00:00`), or a date (`2026-03-05`) for an all-day event.
    /// Absent when `schedule` asks calsync to find the time instead.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(
        length(min = 10, max = 40),
        regex(pattern = TIME_PATTERN)
    )]
    pub start: String,
    /// IANA time zone (e.g. `America/New_York`): how local times are read and the zone the event
    /// repeats in (a 09:00 weekly task stays 09:00 across DST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = TZ_PATTERN))]
    pub time_zone: Option<String>,
    /// Length, Go style (`45m`, `1h30m`; all-day: multiples of `24h`). Default 60 minutes, or
    /// one day for all-day events. Exclusive with end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 20), regex(pattern = DURATION_PATTERN))]
    pub duration: Option<String>,
    /// End, same formats as start (exclusive; for all-day events the day after the last day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 10, max = 40),
        regex(pattern = TIME_PATTERN)
    )]
    pub end: Option<String>,
    /// An all-day event (start and end are dates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_day: Option<bool>,
    /// Task category; becomes the event category and may pick the calendar (categoryCalendars).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub category: Option<String>,
    /// Event description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    pub description: Option<String>,
    /// RFC 5545 recurrence lines (`RRULE:FREQ=WEEKLY;BYDAY=MO`, `EXDATE:...`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(regex(pattern = r"^(RRULE|EXRULE|RDATE|EXDATE)[;:][^\r\n]+$")))]
    pub recurrence: Vec<String>,
    /// Occurrences of the recurring task to cancel or move, by their start under the rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub exceptions: Vec<OccurrenceException>,
    /// Calendar override for this task; default: the connection's category or default calendar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub calendar_id: Option<String>,
    /// Delete (default) removes the event when the TaskSync is deleted; Orphan keeps it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Manual (default), TaskWins or CalendarWins: what to do when the event was edited in the
    /// calendar app.
    #[serde(default)]
    pub conflict_policy: ConflictPolicy,
    /// Instead of `start`: calsync places the task in free time of every calendar the user
    /// connected (time blocking), records where in `status.scheduledStart`, and moves the block
    /// when a meeting lands on it, within the deadline. Needs `timeZone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Boxed (here and in status: `movingFrom`, `calendarEdit`): most TaskSyncs have none, and
    // inline they made every TaskSync ~570 bytes bigger in every cache and reflector store.
    pub schedule: Option<Box<TaskSchedule>>,
}

/// One wall-clock range of a working day, `HH:MM` (`end` may be `24:00`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct HoursRange {
    /// Start, `HH:MM` wall clock in timeZone.
    #[schemars(regex(pattern = HHMM_PATTERN))]
    pub start: String,
    /// End (exclusive), `HH:MM`; `24:00` for midnight.
    #[schemars(regex(pattern = HHMM_PATTERN))]
    pub end: String,
}

/// `HH:MM`, 00:00 to 24:00.
pub const HHMM_PATTERN: &str = r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$";

/// Working ranges per weekday; a day left out has none.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
pub struct WorkingHoursSpec {
    /// Monday's working ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub monday: Vec<HoursRange>,
    /// Tuesday's working ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub tuesday: Vec<HoursRange>,
    /// Wednesday's working ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub wednesday: Vec<HoursRange>,
    /// Thursday's working ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub thursday: Vec<HoursRange>,
    /// Friday's working ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub friday: Vec<HoursRange>,
    /// Saturday's working ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub saturday: Vec<HoursRange>,
    /// Sunday's working ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub sunday: Vec<HoursRange>,
}

/// How a placed block shows to free/busy readers (other people's scheduling tools, and
/// calsync's own suggest-times).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum Transparency {
    /// Free (default): the block does not make the user look busy (Google `transparency:
    /// transparent`, Outlook `showAs: free`, iCalendar `TRANSP:TRANSPARENT`).
    #[default]
    Transparent,
    /// Busy, like a meeting.
    Opaque,
}

/// What calsync needs to place a task itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskSchedule {
    /// Length of the block in minutes (1 to 1440).
    #[schemars(range(min = 1, max = 1440))]
    pub duration_minutes: u32,
    /// Not before this time (same forms as start, no date-only); default: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 16, max = 40), regex(pattern = TIME_PATTERN))]
    pub earliest_start: Option<String>,
    /// The block ends by then; default: the search looks 14 days ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 16, max = 40), regex(pattern = TIME_PATTERN))]
    pub deadline: Option<String>,
    /// When the block may be, per weekday in timeZone; default Monday to Friday 09:00-17:00.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_hours: Option<WorkingHoursSpec>,
    /// Minutes kept clear before and after every busy interval (0 to 240, default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 240))]
    pub buffer_minutes: Option<u32>,
    /// Transparent (default): the block reads as free to free/busy; Opaque: busy.
    #[serde(default)]
    pub transparency: Transparency,
}

/// What calsync saw when the event was changed in the calendar app.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CalendarEdit {
    /// When the edit was detected.
    pub detected_at: DateTime<Utc>,
    /// Spec generation at detection; a newer spec resolves a Manual conflict for the task.
    pub generation: i64,
    /// Provider version of the edited event (empty when it was deleted).
    #[serde(default)]
    pub etag: String,
    /// The event was deleted in the calendar app.
    #[serde(default)]
    pub deleted: bool,
    /// Fields that differ from what calsync wrote: title, start, end, description, category.
    #[serde(default)]
    pub changed: Vec<String>,
    /// Title now in the calendar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Start now in the calendar (RFC 3339, or a date for all-day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// End now in the calendar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// Description now in the calendar (when it changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How it was resolved: Manual (pending), CalendarWins or TaskWins.
    pub resolution: ConflictPolicy,
}

/// Where an event was before it moved; deleted once the copy in the new calendar is recorded.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MovingFrom {
    /// CalendarConnection that held the event.
    pub connection: String,
    /// Calendar that held the event.
    pub calendar_id: String,
    /// The old event's provider id.
    pub event_id: String,
    /// The old event's version when it was last written or seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// Observed state of a TaskSync.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskSyncStatus {
    /// `Synced` (last sync attempt) and `Ready` (the event matches the spec).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Provider's event id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Link to the event (Google htmlLink, Outlook webLink, CalDAV resource URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_link: Option<String>,
    /// Calendar that holds the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar_id: Option<String>,
    /// CalendarConnection whose calendar holds the event (differs from spec.connectionRef
    /// while the event moves to another connection). Unset in status written before moves
    /// existed: the event is on spec.connectionRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// An event copied to its new calendar whose old copy is still to be deleted (a move
    /// between calendars or connections survives a crash through this record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_from: Option<Box<MovingFrom>>,
    /// Provider version (etag) of the event as calsync last wrote or saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Hash of the event content last written; equal to the spec's hash means nothing to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_hash: Option<String>,
    /// When the event was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<DateTime<Utc>>,
    /// Consecutive failed attempts (drives the retry backoff; reset on success).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_attempts: u32,
    /// When the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<DateTime<Utc>>,
    /// No provider call before this time (failure backoff, or the provider's Retry-After).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<DateTime<Utc>>,
    /// The event was edited in the calendar app; see conflictPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar_edit: Option<Box<CalendarEdit>>,
    /// The last operations on this task's event (newest last, bounded).
    #[serde(default)]
    #[schemars(length(max = 20))]
    pub history: History,
    /// spec.schedule: where calsync placed the block (its event is there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_start: Option<DateTime<Utc>>,
    /// spec.schedule: the end of the placed block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_end: Option<DateTime<Utc>>,
    /// spec.schedule: why the block is where it is, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_reason: Option<String>,
}
