//! `calendarId: auto` in a connection reconcile: find or create calsync's own calendar in the
//! account (`providers::dedicated::ensure`) and record its id in status.
//!
//! Owns: how the outcome lands in the status (dedicatedCalendarId, the calendar list) and the
//! condition reason of a failure. Must not touch: the find/create/converge rule (providers),
//! or the rest of the connection check (`connection`).

use super::{Engine, EventType, ObjectKey};
use crate::error::ErrorClass;
use crate::providers::dedicated::{self, DEDICATED_NAME};
use crate::providers::{Provider, ProviderError};
use crate::resources::{CalendarConnectionStatus, CalendarInfo};

/// Condition reason when the calendar can be neither found nor created.
pub const DEDICATED_FAILED: &str = "DedicatedCalendarFailed";

/// Why no calendar of our own is usable now.
pub enum DedicatedFailure {
    /// Passing (rate limit, outage): the usual connection backoff.
    Retry(ProviderError),
    /// The account will not let us (read-only grant, unsupported provider): the message says
    /// what the user can do.
    Failed(String),
}

impl Engine {
    /// The id of calsync's own calendar in the account, made if missing. `calendars` (the
    /// account's, from this check) gains a calendar created now and loses ones deleted by the
    /// race convergence. The id goes into `st` at once: the caller writes status next.
    pub(super) async fn dedicated_calendar(
        &self,
        key: &ObjectKey,
        old: &CalendarConnectionStatus,
        st: &mut CalendarConnectionStatus,
        p: &dyn Provider,
        calendars: &mut Vec<CalendarInfo>,
    ) -> Result<String, DedicatedFailure> {
        let ensured = match dedicated::ensure(p, old.dedicated_calendar_id.as_deref(), calendars).await {
            Ok(e) => e,
            Err(e) if matches!(e.class(), ErrorClass::Retry { .. }) => return Err(DedicatedFailure::Retry(e)),
            Err(e) => {
                return Err(DedicatedFailure::Failed(format!(
                    "calsync could not find or create its own calendar {DEDICATED_NAME:?} in this account ({e}); reconnect the calendar with dedicated_calendar: true so calsync may create calendars (Google asks for that permission then), or set spec.calendarId to an existing writable calendar"
                )));
            }
        };
        calendars.retain(|c| !ensured.removed.contains(&c.id));
        if !calendars.iter().any(|c| c.id == ensured.calendar.id) {
            calendars.push(ensured.calendar.clone());
        }
        let id = ensured.calendar.id.clone();
        if old.dedicated_calendar_id.as_deref() != Some(id.as_str()) {
            let note = if ensured.created {
                format!("created calendar {DEDICATED_NAME:?} ({id}) for this connection's events")
            } else {
                format!("using calendar {DEDICATED_NAME:?} ({id}) calsync made earlier")
            };
            self.publish(key, EventType::Normal, "DedicatedCalendar", "Check", note).await;
        }
        st.dedicated_calendar_id = Some(id.clone());
        Ok(id)
    }
}

#[cfg(test)]
#[path = "dedicated_tests.rs"]
mod tests;
