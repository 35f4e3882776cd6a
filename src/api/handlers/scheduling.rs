//! `POST /suggest-times`: ranked free slots for a task of a given length, across every
//! connected calendar of the user, inside working hours, clear of busy time plus a buffer,
//! between an earliest start and a deadline. "No room" is a 200 answer with `slots: []` and
//! `reason: "no_room"`: the question was fine, the calendar is full.
//!
//! Owns: reading and checking the request (400 naming the field) and shaping the answer. Must
//! not touch: the slot search (`scheduling`, pure) or calendars beyond reading busy time.

use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;

use super::busy::gather;
use super::user_connections;
use crate::api::auth::Caller;
use crate::api::dto::{HoursRange, SuggestTimesRequest, SuggestTimesResponse, SuggestedSlot, TimeWindow, WeekHours};
use crate::api::errors::{ApiError, ErrorBody};
use crate::api::extract::ApiJson;
use crate::api::mapping;
use crate::api::state::AppState;
use crate::providers::Window;
use crate::scheduling::{self, Interval, Outcome, WorkingHours};

/// Days searched when the request names no window.
const DEFAULT_WINDOW_DAYS: i64 = 7;
const DEFAULT_COUNT: usize = 5;
const MAX_DURATION_MINUTES: i64 = 24 * 60;
const MAX_BUFFER_MINUTES: i64 = 240;

fn bad(field: &str, message: &str) -> ApiError {
    ApiError::invalid_field(format!("{field}: {message}"))
}

fn instant(field: &str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| bad(field, "must be an RFC 3339 date-time with an offset, e.g. 2026-03-02T09:00:00-05:00"))
}

impl scheduling::TextRange for HoursRange {
    fn bounds(&self) -> (&str, &str) {
        (&self.start, &self.end)
    }
}

fn working_hours(w: Option<&WeekHours>) -> Result<WorkingHours, ApiError> {
    let Some(w) = w else { return Ok(WorkingHours::office()) };
    WorkingHours::parse([&w.monday, &w.tuesday, &w.wednesday, &w.thursday, &w.friday, &w.saturday, &w.sunday])
        .map_err(|b| {
            bad(
                &format!("working_hours.{}[{}]", b.day, b.index),
                "start and end must be HH:MM (end may be 24:00) with start before end; split a range that crosses midnight",
            )
        })?
        .map_err(|e| bad(&e.field, &e.message))
}

fn window(req: &SuggestTimesRequest, now: DateTime<Utc>) -> Result<Interval, ApiError> {
    match (&req.window, req.window_days) {
        (Some(_), Some(_)) => Err(bad("window", "give window or window_days, not both")),
        (Some(w), None) => Ok(Interval::new(instant("window.start", &w.start)?, instant("window.end", &w.end)?)),
        (None, days) => {
            let days = days.unwrap_or(DEFAULT_WINDOW_DAYS);
            if !(1..=scheduling::MAX_WINDOW_DAYS).contains(&days) {
                return Err(bad("window_days", &format!("must be between 1 and {}", scheduling::MAX_WINDOW_DAYS)));
            }
            Ok(Interval::new(now, now + Duration::days(days)))
        }
    }
}

/// The core's request for `req`, every field checked.
pub fn build(req: &SuggestTimesRequest, now: DateTime<Utc>) -> Result<scheduling::Request, ApiError> {
    let zone: Tz = req.timezone.trim().parse().map_err(|_| bad("timezone", "is not a known IANA time zone"))?;
    if !(1..=MAX_DURATION_MINUTES).contains(&req.duration_minutes) {
        return Err(bad("duration_minutes", &format!("must be between 1 and {MAX_DURATION_MINUTES}")));
    }
    let buffer = req.buffer_minutes.unwrap_or(0);
    if !(0..=MAX_BUFFER_MINUTES).contains(&buffer) {
        return Err(bad("buffer_minutes", &format!("must be between 0 and {MAX_BUFFER_MINUTES}")));
    }
    if req.category.as_ref().is_some_and(|c| c.chars().count() > 100) {
        return Err(bad("category", "is longer than 100 characters"));
    }
    let request = scheduling::Request {
        now,
        window: window(req, now)?,
        zone,
        working_hours: working_hours(req.working_hours.as_ref())?,
        duration: Duration::minutes(req.duration_minutes),
        buffer: Duration::minutes(buffer),
        earliest_start: req.earliest_start.as_deref().map(|s| instant("earliest_start", s)).transpose()?,
        deadline: req.deadline.as_deref().map(|s| instant("deadline", s)).transpose()?,
        count: req.count.unwrap_or(DEFAULT_COUNT),
        step: Duration::minutes(scheduling::DEFAULT_STEP_MINUTES),
    };
    request.validate().map_err(|e| bad(&e.field, &e.message))?;
    Ok(request)
}

fn local(t: DateTime<Utc>, zone: Tz) -> String {
    t.with_timezone(&zone).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Free slots across the user's calendars.
#[utoipa::path(post, path = "/api/calendar/suggest-times", tag = "scheduling",
    request_body = SuggestTimesRequest,
    responses((status = 200, body = SuggestTimesResponse, description = "Ranked slots; or `slots: []` with `reason: \"no_room\"` when nothing fits before the deadline. `partial: true` names connections whose busy time could not be read"),
        (status = 400, body = ErrorBody, description = "A field is invalid (the message names it), or no calendar is connected"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "No connection could be read: reconnect"),
        (status = 422, body = ErrorBody, description = "Wrong JSON type or an unknown field"),
        (status = 429, body = ErrorBody), (status = 502, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn suggest_times(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<SuggestTimesRequest>,
) -> Result<axum::Json<SuggestTimesResponse>, ApiError> {
    let user = mapping::user_id(&req.user_id)?.to_string();
    caller.authorize(&state, &user)?;
    let request = build(&req, Utc::now())?;
    let active: Vec<_> = user_connections(&state, &user).await?.into_iter().filter(|c| c.spec.active).collect();
    if active.is_empty() {
        return Err(ApiError::not_connected());
    }
    // Busy time just outside the window still keeps its buffer clear inside it.
    let searched = Window { from: request.window.start - request.buffer, to: request.window.end + request.buffer };
    let got = gather(&state, &active, searched, request.zone).await;
    if got.unavailable.len() == active.len()
        && let Some(e) = got.first_error
    {
        // Nothing is known about the user's time: suggesting anything would be a guess.
        return Err(e);
    }
    let busy: Vec<Interval> = got.spans.iter().map(|w| Interval::new(w.from, w.to)).collect();
    let outcome = scheduling::suggest(&request, &busy).map_err(|e| bad(&e.field, &e.message))?;
    let zone = request.zone;
    let (slots, reason, message) = match outcome {
        Outcome::Slots(s) => (
            s.into_iter()
                .map(|s| SuggestedSlot {
                    start: local(s.start, zone),
                    end: local(s.end, zone),
                    score: s.score,
                    why: s.why,
                })
                .collect(),
            None,
            None,
        ),
        Outcome::NoRoom { message } => (Vec::new(), Some("no_room".to_string()), Some(message)),
    };
    tracing::info!(slots = slots.len(), busy = busy.len(), partial = !got.unavailable.is_empty(), "suggested times");
    Ok(axum::Json(SuggestTimesResponse {
        success: true,
        slots,
        reason,
        message,
        timezone: zone.name().to_string(),
        window: TimeWindow { start: local(request.window.start, zone), end: local(request.window.end, zone) },
        category: req.category,
        partial: !got.unavailable.is_empty(),
        unavailable: got.unavailable,
    }))
}
