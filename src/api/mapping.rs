//! Translation between the seed's task JSON and the resources: `task_data` → `TaskSyncSpec`
//! (DESIGN §6 table: scheduled_time forms, timezone rules, duration default, name → title), and
//! calendar events → the seed's task shape. All input checks happen here, before anything is
//! stored, and mirror the CRD's schema so the engine never sees a spec it must reject.
//!
//! Owns: field validation and mapping. Must not touch: I/O.

mod auto;
mod events;

use auto::set_auto;
pub use events::{changed_fields, imported_task, imported_task_at, task_time};

use std::sync::LazyLock;

use chrono::NaiveDate;
use regex::Regex;

use super::dto::{Id, OccurrenceException, TaskData, TaskPatch};
use super::errors::ApiError;
use crate::engine::desired::{TimeValue, desired_event, parse_time, parse_zone};
use crate::resources::tasksync::{
    HHMM_PATTERN, OccurrenceException as SpecException, RECURRENCE_PATTERN, TIME_PATTERN, TZ_PATTERN,
};
use crate::resources::{ConnectionRef, ProviderKind, TaskSyncSpec};

static TIME_RE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(TIME_PATTERN).ok());
static TZ_RE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(TZ_PATTERN).ok());
static HHMM_RE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(HHMM_PATTERN).ok());

/// Longest event the API accepts: one leap year, in minutes.
pub const MAX_DURATION_MINUTES: u32 = 366 * 24 * 60;

fn text(field: &str, value: &str, min: usize, max: usize) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n < min || n > max {
        let what =
            if min > 0 { format!("between {min} and {max} characters") } else { format!("at most {max} characters") };
        return Err(ApiError::invalid_field(format!("{field} must be {what}")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ApiError::invalid_field(format!("{field} must not contain control characters")));
    }
    Ok(())
}

/// A user id: 1-200 characters, no control characters (the CRD's `userId` rule).
pub fn user_id(id: &Id) -> Result<&str, ApiError> {
    text("user_id", id.as_str(), 1, 200)?;
    Ok(id.as_str())
}

/// A task id as sent by the app.
pub fn task_id(id: &Id) -> Result<&str, ApiError> {
    text("task_id", id.as_str(), 1, 200)?;
    Ok(id.as_str())
}

/// An event id as sent by the app.
pub fn event_id(id: &str) -> Result<&str, ApiError> {
    text("event_id", id, 1, 1024)?;
    Ok(id)
}

/// `calendar_type` in a path or body.
pub fn calendar_type(value: &str) -> Result<ProviderKind, ApiError> {
    value.parse::<ProviderKind>().map_err(|_| {
        ApiError::bad_request("unknown_calendar_type", "unknown calendar_type: use google, outlook or apple")
    })
}

fn check_time(value: &str) -> Result<TimeValue, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_time",
            "task_data.scheduled_time must be RFC 3339 (2025-10-17T14:00:00Z), a local date-time with timezone (2025-10-17T14:00:00), or a date (2025-10-17)",
        )
    };
    let shape_ok = TIME_RE.as_ref().is_some_and(|re| re.is_match(value));
    if !shape_ok {
        return Err(bad());
    }
    parse_time("scheduled_time", value).map_err(|_| bad())
}

fn check_zone(value: &str) -> Result<(), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_timezone",
            "task_data.timezone must be an IANA time zone name such as America/New_York",
        )
    };
    if value.len() > 64 || !TZ_RE.as_ref().is_some_and(|re| re.is_match(value)) {
        return Err(bad());
    }
    parse_zone(value).map(|_| ()).map_err(|_| bad())
}

fn duration(minutes: u32, all_day: bool) -> Result<String, ApiError> {
    if minutes == 0 || minutes > MAX_DURATION_MINUTES {
        return Err(ApiError::invalid_field(format!(
            "task_data.duration_minutes must be between 1 and {MAX_DURATION_MINUTES}"
        )));
    }
    if all_day {
        if !minutes.is_multiple_of(1440) {
            return Err(ApiError::invalid_field(
                "task_data.duration_minutes of an all-day task (scheduled_time is a date) must be whole days (1440, 2880, ...)",
            ));
        }
        return Ok(format!("{}h", minutes / 60));
    }
    Ok(format!("{minutes}m"))
}

/// Set start, zone, all-day and duration on `spec` from the API's time fields; `None` keeps.
fn set_time(
    spec: &mut TaskSyncSpec,
    scheduled_time: Option<&str>,
    timezone: Option<&str>,
    duration_minutes: Option<u32>,
) -> Result<(), ApiError> {
    if let Some(tz) = timezone {
        check_zone(tz)?;
        spec.time_zone = Some(tz.to_string());
    }
    let was_all_day = spec.all_day == Some(true) || NaiveDate::parse_from_str(&spec.start, "%Y-%m-%d").is_ok();
    if let Some(start) = scheduled_time {
        let start = start.trim();
        let parsed = check_time(start)?;
        let all_day = matches!(parsed, TimeValue::Date(_));
        if matches!(parsed, TimeValue::Local(_)) && spec.time_zone.is_none() {
            return Err(ApiError::bad_request(
                "timezone_required",
                "task_data.timezone is required when scheduled_time has no UTC offset (e.g. America/New_York)",
            ));
        }
        spec.start = start.to_string();
        spec.all_day = all_day.then_some(true);
        spec.end = None;
        if all_day != was_all_day {
            // A duration meant for a timed task means nothing for an all-day one, and back.
            spec.duration = None;
        }
    }
    let all_day = spec.all_day == Some(true);
    if let Some(m) = duration_minutes {
        spec.duration = Some(duration(m, all_day)?);
    }
    Ok(())
}

static RECURRENCE_RE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(RECURRENCE_PATTERN).ok());

/// Set recurrence and exceptions on `spec` from the API's fields; `None` keeps.
fn set_recurrence(
    spec: &mut TaskSyncSpec,
    recurrence: Option<&[String]>,
    exceptions: Option<&[OccurrenceException]>,
) -> Result<(), ApiError> {
    if let Some(lines) = recurrence {
        if lines.len() > 20 {
            return Err(ApiError::invalid_field("task_data.recurrence takes at most 20 lines"));
        }
        for line in lines {
            let ok = line.len() <= 1000 && RECURRENCE_RE.as_ref().is_some_and(|re| re.is_match(line));
            if !ok {
                return Err(ApiError::bad_request(
                    "invalid_recurrence",
                    format!(
                        "task_data.recurrence line {line:?} is not an RFC 5545 RRULE, EXRULE, RDATE or EXDATE line (e.g. RRULE:FREQ=WEEKLY;BYDAY=MO)"
                    ),
                ));
            }
        }
        spec.recurrence = lines.to_vec();
    }
    if let Some(list) = exceptions {
        if list.len() > 100 {
            return Err(ApiError::invalid_field("task_data.exceptions takes at most 100 entries"));
        }
        for x in list {
            for (name, v) in
                [("original_start", Some(&x.original_start)), ("start", x.start.as_ref()), ("end", x.end.as_ref())]
            {
                if let Some(v) = v
                    && !TIME_RE.as_ref().is_some_and(|re| re.is_match(v))
                {
                    return Err(ApiError::bad_request(
                        "invalid_time",
                        format!(
                            "task_data.exceptions[].{name} {v:?} must be read like scheduled_time: RFC 3339, a local date-time, or a date"
                        ),
                    ));
                }
            }
        }
        spec.exceptions = list
            .iter()
            .map(|x| SpecException {
                original_start: x.original_start.clone(),
                start: x.start.clone(),
                end: x.end.clone(),
                cancelled: x.cancelled,
            })
            .collect();
    }
    Ok(())
}

/// Final check: the engine's own interpretation must accept the spec (DST gaps, end > start...).
fn check_spec(spec: &TaskSyncSpec) -> Result<(), ApiError> {
    text("task_data.name", &spec.title, 1, 1024)?;
    if let Some(c) = &spec.category {
        text("task_data.category", c, 0, 200)?;
    }
    if let Some(d) = &spec.description {
        text("task_data.description", d, 0, 8192)?;
    }
    if spec.schedule.is_some() {
        if !spec.recurrence.is_empty() || !spec.exceptions.is_empty() {
            return Err(ApiError::invalid_field(
                "task_data.recurrence: a task calsync places (auto_schedule) is one block; it cannot repeat",
            ));
        }
        return crate::engine::schedule::parse(spec).map(|_| ()).map_err(|m| {
            let m = m
                .replace("schedule.", "task_data.auto_schedule.")
                .replace("durationMinutes", "duration_minutes")
                .replace("earliestStart", "earliest_start")
                .replace("workingHours", "working_hours")
                .replace("bufferMinutes", "buffer_minutes")
                .replace("timeZone", "timezone");
            ApiError::invalid_field(m)
        });
    }
    desired_event(spec, "validation", "calsync").map(|_| ()).map_err(|m| {
        let m = m.replace("timeZone", "timezone").replace("start ", "scheduled_time ");
        ApiError::bad_request("invalid_task", format!("task_data: {m}"))
    })
}

/// A new TaskSync spec from task-to-calendar's `task_data`, or `existing` updated in place (the
/// seed's fields are replaced; fields only YAML sets, like recurrence or policies, stay).
pub fn spec_from_task(
    existing: Option<&TaskSyncSpec>,
    connection: &str,
    data: &TaskData,
) -> Result<TaskSyncSpec, ApiError> {
    let task_id = data.id.as_str();
    text("task_data.id", task_id, 1, 200)?;
    let mut spec = match existing {
        Some(s) => s.clone(),
        None => TaskSyncSpec {
            connection_ref: ConnectionRef { name: connection.to_string() },
            task_id: task_id.to_string(),
            title: String::new(),
            start: String::new(),
            time_zone: None,
            duration: None,
            end: None,
            all_day: None,
            category: None,
            description: None,
            recurrence: Vec::new(),
            exceptions: Vec::new(),
            calendar_id: None,
            deletion_policy: Default::default(),
            conflict_policy: Default::default(),
            schedule: None,
        },
    };
    spec.title = data.name.clone();
    spec.category = data.category.clone();
    spec.description = data.description.clone();
    spec.time_zone = None;
    spec.duration = None;
    // Force the "form changed" path so the duration is decided afresh.
    spec.start = String::new();
    spec.all_day = None;
    match (&data.scheduled_time, &data.auto_schedule) {
        (Some(t), None) => {
            spec.schedule = None;
            set_time(&mut spec, Some(t), data.timezone.as_deref(), data.duration_minutes)?;
        }
        (None, Some(a)) => {
            if data.duration_minutes.is_some() {
                return Err(ApiError::invalid_field(
                    "task_data.duration_minutes: with auto_schedule the length is auto_schedule.duration_minutes",
                ));
            }
            if let Some(tz) = data.timezone.as_deref() {
                check_zone(tz)?;
            }
            set_auto(&mut spec, a, data.timezone.as_deref())?;
            // A task that was recurring becomes one block unless the request says otherwise.
            spec.recurrence.clear();
            spec.exceptions.clear();
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_field(
                "task_data.auto_schedule: give scheduled_time (a fixed time) or auto_schedule (calsync finds the time), not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::invalid_field(
                "task_data.scheduled_time is required (or auto_schedule, to let calsync find the time)",
            ));
        }
    }
    set_recurrence(&mut spec, data.recurrence.as_deref(), data.exceptions.as_deref())?;
    check_spec(&spec)?;
    Ok(spec)
}

/// `existing` with only the fields update-event was given changed.
pub fn spec_with_patch(existing: &TaskSyncSpec, patch: &TaskPatch) -> Result<TaskSyncSpec, ApiError> {
    let mut spec = existing.clone();
    if let Some(n) = &patch.name {
        spec.title = n.clone();
    }
    if let Some(c) = &patch.category {
        spec.category = Some(c.clone());
    }
    if let Some(d) = &patch.description {
        spec.description = Some(d.clone());
    }
    match (&patch.scheduled_time, &patch.auto_schedule) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_field(
                "task_data.auto_schedule: give scheduled_time (a fixed time) or auto_schedule (calsync finds the time), not both",
            ));
        }
        (None, Some(a)) => {
            if let Some(tz) = patch.timezone.as_deref() {
                check_zone(tz)?;
            }
            set_auto(&mut spec, a, patch.timezone.as_deref())?;
            spec.recurrence.clear();
            spec.exceptions.clear();
        }
        (None, None) if spec.schedule.is_some() => {
            // A placed task: a new length or zone goes into its schedule.
            if let Some(tz) = patch.timezone.as_deref() {
                check_zone(tz)?;
                spec.time_zone = Some(tz.to_string());
            }
            if let (Some(m), Some(s)) = (patch.duration_minutes, spec.schedule.as_mut()) {
                if !(1..=1440).contains(&m) {
                    return Err(ApiError::invalid_field(
                        "task_data.duration_minutes of a placed task must be between 1 and 1440",
                    ));
                }
                s.duration_minutes = m;
            }
        }
        (t, None) => {
            if t.is_some() {
                // Pinned to a time: no longer placed by calsync.
                spec.schedule = None;
            }
            set_time(&mut spec, t.as_deref(), patch.timezone.as_deref(), patch.duration_minutes)?;
        }
    }
    set_recurrence(&mut spec, patch.recurrence.as_deref(), patch.exceptions.as_deref())?;
    check_spec(&spec)?;
    Ok(spec)
}

#[cfg(test)]
mod tests;
