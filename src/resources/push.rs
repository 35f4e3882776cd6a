//! `CalendarConnection.status.push`: how changes made in the user's calendar reach calsync, per
//! watched calendar (a provider push channel/subscription, or polling), and the engine's own
//! incremental cursor.
//!
//! Owns: the status schema of live sync. Must not touch: provider calls or decisions (the
//! engine's connection reconcile fills it in).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Annotation on a CalendarConnection that carries "the calendar changed" from whoever received
/// a provider notification (any REST replica) to the engine (the controller leader, or the
/// standalone queue): a new value means "look again". Its value is opaque (a time in ms).
pub const CHANGED_ANNOTATION: &str = "calendar.getitdone.app/changed";

/// Finalizer present while a connection holds provider watches, so deleting the connection
/// stops them (released without stopping when stopping is impossible, never stuck).
pub const PUSH_FINALIZER: &str = "calendar.getitdone.app/push-cleanup";

/// How changes of one calendar reach calsync.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum PushMode {
    /// A live provider channel (Google) or subscription (Graph) notifies calsync.
    Push,
    /// calsync polls (CalDAV always; Google/Outlook without CALSYNC_PUBLIC_URL or while push fails).
    Poll,
}

/// Live-sync state of one watched calendar.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WatchedCalendar {
    /// Provider calendar id.
    pub calendar_id: String,
    /// How changes reach calsync right now.
    pub mode: PushMode,
    /// calsync's id of the live watch (Google channel id; prefix of Graph's clientState).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_id: Option<String>,
    /// The provider's handle of the watch (Google resourceId, Graph subscription id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// When the provider stops delivering unless the watch is renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<DateTime<Utc>>,
    /// When the provider granted (or last renewed) the watch: renewal comes at three quarters
    /// of the granted life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_at: Option<DateTime<Utc>>,
    /// A watch recorded before the provider call that makes it (a Google `sync` message can
    /// arrive before the answer); kept until that call's outcome is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_watch_id: Option<String>,
    /// When a notification (or poll) last found changes in this calendar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change_time: Option<DateTime<Utc>>,
    /// How many change syncs found changes: tells two changes within one second apart (times
    /// in status have second precision), for the app's `calendar.changed` and cursors.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub change_count: u64,
    /// Consecutive failures to create or renew the watch (reset on success).
    #[serde(default, skip_serializing_if = "crate::resources::connection::is_zero")]
    pub failures: u32,
    /// Why the last watch attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// No new watch attempt before this time (failure backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<DateTime<Utc>>,
    /// The engine's incremental cursor for this calendar (Google syncToken, Graph deltaLink,
    /// CalDAV sync-token), as of the last listing that found changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

impl WatchedCalendar {
    pub fn polled(calendar_id: &str) -> Self {
        WatchedCalendar {
            calendar_id: calendar_id.to_string(),
            mode: PushMode::Poll,
            watch_id: None,
            provider_id: None,
            expiration: None,
            granted_at: None,
            pending_watch_id: None,
            last_change_time: None,
            change_count: 0,
            failures: 0,
            last_error: None,
            next_attempt_time: None,
            cursor: None,
        }
    }
}

/// `status.push` of a CalendarConnection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushStatus {
    /// The last value of the `calendar.getitdone.app/changed` annotation the engine acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_seen: Option<String>,
    /// When the engine last acted on a notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_notification_time: Option<DateTime<Utc>>,
    /// Every calendar calsync watches for this connection.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["calendarId"]))]
    pub calendars: Vec<WatchedCalendar>,
}

impl PushStatus {
    pub fn calendar(&self, id: &str) -> Option<&WatchedCalendar> {
        self.calendars.iter().find(|c| c.calendar_id == id)
    }
}
