//! The pure parts of live sync: which calendars a connection watches, when a calendar's first
//! poll comes, what a change signal asks for, and when a watch is renewed. No I/O, no state.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::ResourceExt;

use crate::resources::condition::{Condition, ConditionStatus};
use crate::resources::push::CHANGED_ANNOTATION;
use crate::resources::{CalendarConnection, CalendarConnectionStatus, WatchedCalendar};

/// A spread of `interval` that stays the same for one (connection, calendar), so 10,000
/// connections started together do not poll in the same second: the first poll comes at a
/// stable offset in `[0, interval)`.
pub(in crate::engine) fn first_poll_offset(conn: &str, cal: &str, interval: Duration) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    (conn, cal).hash(&mut h);
    let frac = (h.finish() % 10_000) as f64 / 10_000.0;
    interval.mul_f64(frac)
}

/// The calendars a connection writes to or imports from.
pub(in crate::engine) fn watched_calendars(conn: &CalendarConnection, st: &CalendarConnectionStatus) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |c: &str| {
        if !c.is_empty() && !out.iter().any(|o| o == c) {
            out.push(c.to_string());
        }
    };
    if let Some(c) = conn.spec.chosen_calendar().map(String::as_str).or(st.default_calendar_id.as_deref()) {
        add(c);
    }
    for c in conn.spec.category_calendars.values() {
        add(c);
    }
    out
}

/// Is a new annotation value waiting for the engine?
pub(in crate::engine) fn pending_signal(conn: &CalendarConnection, st: &CalendarConnectionStatus) -> Option<String> {
    let value = conn.annotations().get(CHANGED_ANNOTATION)?;
    let seen = st.push.as_ref().and_then(|p| p.signal_seen.as_ref());
    (seen != Some(value)).then(|| value.clone())
}

/// What a signal asks beyond "look again": `<ms>` or `<ms>:<action>:<watch id>`.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::engine) enum SignalAction {
    Look,
    /// Graph `reauthorizationRequired`: renew that subscription now.
    Renew(String),
    /// Graph `missed` / `subscriptionRemoved`: list in full (and re-create, when removed).
    Resync(String),
}

pub(in crate::engine) fn signal_action(value: &str) -> SignalAction {
    let mut parts = value.splitn(3, ':');
    let _time = parts.next();
    match (parts.next(), parts.next()) {
        (Some("renew"), Some(id)) => SignalAction::Renew(id.to_string()),
        (Some("resync"), Some(id)) => SignalAction::Resync(id.to_string()),
        _ => SignalAction::Look,
    }
}

pub(super) fn push_condition(ok: bool, reason: &str, message: impl Into<String>) -> Condition {
    Condition::new("Push", if ok { ConditionStatus::True } else { ConditionStatus::False }, reason, message)
}

/// Renew a watch once three quarters of its granted life have passed (at most 12 h early).
pub(super) fn renew_due(w: &WatchedCalendar, now: DateTime<Utc>, granted_at: Option<DateTime<Utc>>) -> DateTime<Utc> {
    let Some(exp) = w.expiration else { return now };
    let life = granted_at.map(|g| exp - g).unwrap_or_else(|| chrono::Duration::hours(1));
    let margin = (life / 4).min(chrono::Duration::hours(12)).max(chrono::Duration::zero());
    exp - margin
}
