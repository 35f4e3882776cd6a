//! Smart scheduling's pure core (DESIGN §8 "Scheduling is a pure core"): busy intervals and a
//! request in, ranked free slots (or an explicit "no room") out.
//!
//! Owns: the slot search (working hours in an IANA zone through DST, buffers around busy time,
//! earliest start, deadline, duration, count), scoring and the human "why", validation of the
//! request, and placing auto-scheduled tasks (`place`: keep, move, pack). Must not touch I/O, providers, stores or the clock: `now` is a parameter, so the
//! same input always gives the same answer. Busy time comes from `providers` (see
//! `providers::busy`); the REST handler (`api::handlers::scheduling`) only translates.

pub mod hours;
pub mod interval;
pub mod place;
mod slots;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::Serialize;

pub use hours::{BadRange, DAY_NAMES, DayRange, TextRange, WorkingHours};
pub use interval::{Interval, merge};
pub use place::{AutoTask, Placement, pack, replan};

/// The longest window one request may search (Google freeBusy's practical limit, and enough
/// for any "place this task" question).
pub const MAX_WINDOW_DAYS: i64 = 90;
/// Most slots one answer ranks.
pub const MAX_COUNT: usize = 50;
/// Slot starts are on this grid (minutes past the hour in every zone with a whole-quarter
/// offset, which is every zone in use), so suggestions look like times a person would pick.
pub const DEFAULT_STEP_MINUTES: i64 = 15;

/// A request that makes no sense. `field` names the input at fault (the API's 400 names it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ScheduleError {
    pub field: String,
    pub message: String,
}

impl ScheduleError {
    pub fn invalid(field: &str, message: &str) -> ScheduleError {
        ScheduleError { field: field.to_string(), message: message.to_string() }
    }
}

/// What to find room for.
#[derive(Clone, Debug)]
pub struct Request {
    /// The present instant: nothing is suggested before it.
    pub now: DateTime<Utc>,
    /// Where to look, `[start, end)`.
    pub window: Interval,
    /// The zone working hours are in (and the one the "why" speaks).
    pub zone: Tz,
    pub working_hours: WorkingHours,
    pub duration: Duration,
    /// Clearance kept on both sides of every busy interval.
    pub buffer: Duration,
    pub earliest_start: Option<DateTime<Utc>>,
    /// Slots end by then.
    pub deadline: Option<DateTime<Utc>>,
    /// How many slots to return (1..=`MAX_COUNT`).
    pub count: usize,
    /// Slot start grid; `DEFAULT_STEP_MINUTES` unless a caller needs finer.
    pub step: Duration,
}

/// One suggestion.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Slot {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// 0..=1, higher is better; rounded to 3 decimals so equal inputs compare equal.
    pub score: f64,
    pub why: String,
}

/// The answer: slots, or an explicit statement that nothing fits.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Slots(Vec<Slot>),
    /// No free stretch of `duration` inside working hours between the earliest start and the
    /// deadline (or window end). `message` says which bounds were searched.
    NoRoom {
        message: String,
    },
}

impl Request {
    /// Checks the request on its own (the busy list cannot be wrong).
    pub fn validate(&self) -> Result<(), ScheduleError> {
        if self.duration <= Duration::zero() {
            return Err(ScheduleError::invalid("duration_minutes", "must be greater than 0"));
        }
        if self.window.is_empty() {
            return Err(ScheduleError::invalid("window", "end must be after start"));
        }
        if self.window.len() > Duration::days(MAX_WINDOW_DAYS) {
            return Err(ScheduleError::invalid("window", &format!("is longer than {MAX_WINDOW_DAYS} days")));
        }
        if self.duration > self.window.len() {
            return Err(ScheduleError::invalid("duration_minutes", "is longer than the window"));
        }
        if self.buffer < Duration::zero() {
            return Err(ScheduleError::invalid("buffer_minutes", "must not be negative"));
        }
        if self.count == 0 || self.count > MAX_COUNT {
            return Err(ScheduleError::invalid("count", &format!("must be between 1 and {MAX_COUNT}")));
        }
        if self.step <= Duration::zero() {
            return Err(ScheduleError::invalid("step", "must be greater than 0"));
        }
        if let (Some(e), Some(d)) = (self.earliest_start, self.deadline)
            && d <= e
        {
            return Err(ScheduleError::invalid("deadline", "is not after earliest_start"));
        }
        Ok(())
    }
}

/// Ranked free slots for `req` given `busy` (any order, overlaps allowed). Deterministic: the
/// same request and busy list give the same answer.
pub fn suggest(req: &Request, busy: &[Interval]) -> Result<Outcome, ScheduleError> {
    req.validate()?;
    Ok(slots::search(req, busy))
}

#[cfg(test)]
mod place_tests;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
