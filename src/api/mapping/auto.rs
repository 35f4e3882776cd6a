//! `task_data.auto_schedule` → `spec.schedule`: a task calsync places itself, checked field by
//! field (a 400 naming the field) before the engine's own check of the whole spec.
//!
//! Owns: that part of the mapping. Must not touch: I/O, nor the time and recurrence fields (the
//! parent's).

use super::{HHMM_RE, TIME_RE, TZ_RE};
use crate::api::dto::{AutoSchedule, HoursRange, WeekHours};
use crate::api::errors::ApiError;
use crate::engine::desired::{TimeValue, parse_time, parse_zone};
use crate::resources::{HoursRange as SpecHoursRange, TaskSchedule, TaskSyncSpec, Transparency, WorkingHoursSpec};
use crate::scheduling::DayRange;

fn auto_field(name: &str) -> String {
    format!("task_data.auto_schedule.{name}")
}

fn hours_range(field: &str, r: &HoursRange) -> Result<SpecHoursRange, ApiError> {
    let ok = [&r.start, &r.end].iter().all(|v| HHMM_RE.as_ref().is_some_and(|re| re.is_match(v)))
        && DayRange::parse(&r.start, &r.end).is_some();
    if !ok {
        return Err(ApiError::invalid_field(format!(
            "{field}: start and end must be HH:MM (end may be 24:00) with start before end; split a range that crosses midnight"
        )));
    }
    Ok(SpecHoursRange { start: r.start.clone(), end: r.end.clone() })
}

fn week_hours(w: &WeekHours) -> Result<WorkingHoursSpec, ApiError> {
    let day = |name: &str, ranges: &[HoursRange]| -> Result<Vec<SpecHoursRange>, ApiError> {
        if ranges.len() > 8 {
            return Err(ApiError::invalid_field(format!(
                "{} takes at most 8 ranges",
                auto_field(&format!("working_hours.{name}"))
            )));
        }
        ranges
            .iter()
            .enumerate()
            .map(|(i, r)| hours_range(&auto_field(&format!("working_hours.{name}[{i}]")), r))
            .collect()
    };
    Ok(WorkingHoursSpec {
        monday: day("monday", &w.monday)?,
        tuesday: day("tuesday", &w.tuesday)?,
        wednesday: day("wednesday", &w.wednesday)?,
        thursday: day("thursday", &w.thursday)?,
        friday: day("friday", &w.friday)?,
        saturday: day("saturday", &w.saturday)?,
        sunday: day("sunday", &w.sunday)?,
    })
}

fn auto_time(name: &str, value: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(v) = value.map(str::trim) else { return Ok(None) };
    let shape = TIME_RE.as_ref().is_some_and(|re| re.is_match(v)) && v.len() >= 16 && v.len() <= 40;
    if !shape || !matches!(parse_time(name, v), Ok(TimeValue::Absolute(_) | TimeValue::Local(_))) {
        return Err(ApiError::invalid_field(format!(
            "{}: must be RFC 3339 (2027-03-08T09:00:00-05:00) or a local date-time read in the timezone (2027-03-08T09:00:00)",
            auto_field(name)
        )));
    }
    Ok(Some(v.to_string()))
}

/// Make `spec` a task calsync places (`spec.schedule`) from `auto_schedule`; `timezone` is
/// `task_data.timezone`. Checked field by field (400 naming it) before the engine's own check.
pub(super) fn set_auto(spec: &mut TaskSyncSpec, a: &AutoSchedule, timezone: Option<&str>) -> Result<(), ApiError> {
    let zone = a.timezone.as_deref().or(timezone).map(str::to_string).or_else(|| spec.time_zone.clone());
    let Some(zone) = zone else {
        return Err(ApiError::invalid_field(format!(
            "{} is required (or task_data.timezone): working hours and local times are read in it",
            auto_field("timezone")
        )));
    };
    if zone.len() > 64 || !TZ_RE.as_ref().is_some_and(|re| re.is_match(&zone)) || parse_zone(&zone).is_err() {
        return Err(ApiError::invalid_field(format!(
            "{}: {zone:?} is not a known IANA time zone (e.g. America/New_York)",
            auto_field("timezone")
        )));
    }
    if !(1..=1440).contains(&a.duration_minutes) {
        return Err(ApiError::invalid_field(format!("{} must be between 1 and 1440", auto_field("duration_minutes"))));
    }
    let buffer = a.buffer_minutes.unwrap_or(0);
    if !(0..=240).contains(&buffer) {
        return Err(ApiError::invalid_field(format!("{} must be between 0 and 240", auto_field("buffer_minutes"))));
    }
    let working_hours = a.working_hours.as_ref().map(week_hours).transpose()?;
    spec.time_zone = Some(zone);
    spec.start = String::new();
    spec.all_day = None;
    spec.duration = None;
    spec.end = None;
    spec.schedule = Some(Box::new(TaskSchedule {
        duration_minutes: a.duration_minutes as u32,
        earliest_start: auto_time("earliest_start", a.earliest_start.as_deref())?,
        deadline: auto_time("deadline", a.deadline.as_deref())?,
        working_hours,
        buffer_minutes: a.buffer_minutes.map(|b| b as u32),
        transparency: if a.busy == Some(true) { Transparency::Opaque } else { Transparency::Transparent },
    }));
    Ok(())
}
