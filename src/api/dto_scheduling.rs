//! Request and answer bodies of `POST /suggest-times` (free slots across every connected
//! calendar).
//!
//! Owns: their JSON shapes. Must not touch: behaviour (handlers::scheduling, `scheduling`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Id;

/// `{start, end}` as RFC 3339 date-times with an offset.
#[derive(Deserialize, Serialize, ToSchema, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    #[schema(example = "2026-03-02T00:00:00-05:00")]
    pub start: String,
    #[schema(example = "2026-03-09T00:00:00-05:00")]
    pub end: String,
}

/// One working range of a day, wall clock in `timezone` (`24:00` allowed as an end).
#[derive(Deserialize, ToSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct HoursRange {
    #[schema(pattern = r"^\d\d:\d\d$", example = "09:00")]
    pub start: String,
    #[schema(pattern = r"^\d\d:\d\d$", example = "17:00")]
    pub end: String,
}

/// Working ranges per weekday. A day left out has no working time; the whole object left out
/// means Monday to Friday 09:00–17:00.
#[derive(Deserialize, ToSchema, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct WeekHours {
    #[serde(default)]
    pub monday: Vec<HoursRange>,
    #[serde(default)]
    pub tuesday: Vec<HoursRange>,
    #[serde(default)]
    pub wednesday: Vec<HoursRange>,
    #[serde(default)]
    pub thursday: Vec<HoursRange>,
    #[serde(default)]
    pub friday: Vec<HoursRange>,
    #[serde(default)]
    pub saturday: Vec<HoursRange>,
    #[serde(default)]
    pub sunday: Vec<HoursRange>,
}

/// `POST /suggest-times`: when could the user spend `duration_minutes` on something?
#[derive(Deserialize, ToSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct SuggestTimesRequest {
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub user_id: Id,
    #[schema(minimum = 1, maximum = 1440)]
    pub duration_minutes: i64,
    /// Where to look; at most 90 days. Give this or `window_days`, not both (neither: 7 days).
    #[serde(default)]
    pub window: Option<TimeWindow>,
    /// Days from now to look in (1–90).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 90)]
    pub window_days: Option<i64>,
    /// IANA zone of the working hours and of the answer's times.
    #[schema(example = "America/New_York")]
    pub timezone: String,
    #[serde(default)]
    pub working_hours: Option<WeekHours>,
    /// Clearance kept before and after every busy interval (0–240).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 240)]
    pub buffer_minutes: Option<i64>,
    /// No slot starts before this (RFC 3339).
    #[serde(default)]
    pub earliest_start: Option<String>,
    /// Every slot ends by this (RFC 3339).
    #[serde(default)]
    pub deadline: Option<String>,
    /// The task's category, echoed in the answer (reserved for per-category hours).
    #[serde(default)]
    #[schema(max_length = 100)]
    pub category: Option<String>,
    /// How many slots to return (1–50, default 5).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 50)]
    pub count: Option<usize>,
}

/// One suggested slot; times carry the request zone's offset.
#[derive(Serialize, ToSchema, Debug, Clone, PartialEq)]
pub struct SuggestedSlot {
    pub start: String,
    pub end: String,
    /// 0–1, higher is better (earlier, and snug against busy time or the end of working hours).
    pub score: f64,
    /// Why this slot, in words.
    pub why: String,
}

/// A connection whose busy time could not be read (revoked, rate limited, down): the slots do
/// not account for it.
#[derive(Serialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct UnavailableCalendar {
    pub calendar_type: String,
    pub error: String,
    pub code: String,
}

/// Answer of suggest-times. "No room" is an answer, not an error: `slots` is empty, `reason` is
/// `no_room` and `message` says which bounds were searched.
#[derive(Serialize, ToSchema, Debug, Clone, PartialEq)]
pub struct SuggestTimesResponse {
    pub success: bool,
    pub slots: Vec<SuggestedSlot>,
    /// `no_room` when nothing fits before the deadline (or the window's end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub timezone: String,
    /// The window searched.
    pub window: TimeWindow,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Some connection could not be read: see `unavailable`.
    pub partial: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<UnavailableCalendar>,
}

/// `task_data.auto_schedule`: calsync finds the time instead of `scheduled_time` (time
/// blocking). The task's block goes into free time of every connected calendar, inside working
/// hours, clear of busy time plus the buffer, and moves when a meeting lands on it, within the
/// deadline.
#[derive(Deserialize, ToSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct AutoSchedule {
    #[schema(minimum = 1, maximum = 1440)]
    pub duration_minutes: i64,
    /// Not before this: RFC 3339, or a local date-time read in `timezone` (default: now).
    #[serde(default)]
    #[schema(example = "2027-03-08T09:00:00")]
    pub earliest_start: Option<String>,
    /// The block ends by then (default: the next 14 days are searched).
    #[serde(default)]
    #[schema(example = "2027-03-12T17:00:00")]
    pub deadline: Option<String>,
    #[serde(default)]
    pub working_hours: Option<WeekHours>,
    /// Clearance kept before and after every busy interval (0–240, default 0).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 240)]
    pub buffer_minutes: Option<i64>,
    /// IANA zone of the working hours and local times (default: `task_data.timezone`; one of
    /// them is required).
    #[serde(default)]
    #[schema(example = "America/New_York")]
    pub timezone: Option<String>,
    /// `true`: the block shows as busy to other people's scheduling tools (default: free).
    #[serde(default)]
    pub busy: Option<bool>,
}
