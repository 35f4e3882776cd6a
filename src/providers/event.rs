//! The neutral event model every provider translates to and from, the ownership marker, and
//! deterministic event keys.
//!
//! Owns: `EventData` (what we want in the calendar), `RemoteEvent` (what is there), `Marker`.
//! Must not touch: resources (the engine builds `EventData` from a TaskSync) or any wire format.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// When an event starts or ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventTime {
    /// An all-day boundary (end dates are exclusive, as in RFC 5545 and Google).
    Date(NaiveDate),
    /// A point in time. `local` is the wall-clock time in `zone` (an IANA name) when the event
    /// has one, which recurrence expansion needs to stay DST-correct.
    DateTime { utc: DateTime<Utc>, local: NaiveDateTime, zone: Option<String> },
}

impl EventTime {
    /// RFC 3339 (UTC) for timed values, `YYYY-MM-DD` for dates.
    pub fn to_rfc3339_or_date(&self) -> String {
        match self {
            EventTime::Date(d) => d.format("%Y-%m-%d").to_string(),
            EventTime::DateTime { utc, .. } => utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }

    pub fn is_date(&self) -> bool {
        matches!(self, EventTime::Date(_))
    }
}

/// Identifies an event written by calsync, stored inside the event itself (Google private
/// extended property, Graph single-value extended property, iCalendar `X-` property), so marker
/// and event can never drift apart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// Which calsync installation wrote it (two installations never touch each other's events).
    pub owner: String,
    /// UID of the TaskSync the event belongs to.
    pub uid: String,
    /// The app's task id.
    pub task_id: String,
    /// Content hash of what calsync last wrote (lets adoption after a crash skip a rewrite).
    pub hash: String,
}

impl Marker {
    /// Compact single-string form for providers with one property slot:
    /// `v1;owner;uid;task-id;content-hash` (owner and uid never contain `;`; the task id may).
    pub fn encode(&self) -> String {
        format!("v1;{};{};{};{}", self.owner, self.uid, self.task_id, self.hash)
    }

    /// Inverse of `encode`; `None` for anything that is not a calsync marker.
    pub fn decode(s: &str) -> Option<Marker> {
        let rest = s.strip_prefix("v1;")?;
        let mut parts = rest.splitn(4, ';');
        let owner = parts.next()?.to_string();
        let uid = parts.next()?.to_string();
        // The task id may itself contain ';', so the hash is taken from the end.
        let tail = parts.next()?.to_string() + parts.next().map(|p| format!(";{p}")).as_deref().unwrap_or("");
        let (task_id, hash) = tail.rsplit_once(';')?;
        Some(Marker { owner, uid, task_id: task_id.to_string(), hash: hash.to_string() })
    }
}

/// The event calsync wants in the calendar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventData {
    pub title: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub start: EventTime,
    pub end: EventTime,
    /// Shown as free to free/busy readers (Google `transparency: transparent`, Outlook `showAs:
    /// free`, iCalendar `TRANSP:TRANSPARENT`); false: busy, each provider's default. Blocks
    /// calsync places itself (`spec.schedule`) are free unless asked otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transparent: bool,
    /// RFC 5545 RRULE/EXDATE/RDATE lines.
    pub recurrence: Vec<String>,
    /// Occurrences of a recurring event to cancel or move (empty for single events).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<Exception>,
    pub marker: Marker,
}

impl EventData {
    /// Hash of the content (everything but the marker's own hash) plus the target calendar: equal
    /// hashes mean the calendar already holds exactly this.
    pub fn content_hash(&self, calendar: &str) -> String {
        #[derive(Serialize)]
        struct Canonical<'a> {
            calendar: &'a str,
            title: &'a str,
            description: &'a Option<String>,
            category: &'a Option<String>,
            start: &'a EventTime,
            end: &'a EventTime,
            recurrence: &'a [String],
            // Left out when empty, so events without exceptions keep the hash they had.
            #[serde(skip_serializing_if = "<[Exception]>::is_empty")]
            exceptions: &'a [Exception],
            task_id: &'a str,
            // Left out when false, so busy events keep the hash they had.
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            transparent: bool,
        }
        let canonical = Canonical {
            calendar,
            title: &self.title,
            description: &self.description,
            category: &self.category,
            start: &self.start,
            end: &self.end,
            recurrence: &self.recurrence,
            exceptions: &self.exceptions,
            task_id: &self.marker.task_id,
            transparent: self.transparent,
        };
        // Serializing a struct of strings and chrono values cannot fail.
        let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
        let digest = Sha256::digest(&bytes);
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }
}

/// An event as the provider holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteEvent {
    /// Provider event id (Google id, Graph id, CalDAV resource name without `.ics`).
    pub id: String,
    /// Provider version for `If-Match`.
    pub etag: Option<String>,
    /// Link a person can open.
    pub link: Option<String>,
    pub title: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub start: EventTime,
    pub end: EventTime,
    /// The IANA zone the event is shown in, when it has one.
    pub zone: Option<String>,
    pub recurrence: Vec<String>,
    /// Present on events calsync wrote.
    pub marker: Option<Marker>,
    /// Deleted but still returned (Google keeps deleted events as `cancelled`).
    pub cancelled: bool,
    /// When the event was created in the calendar (Google `created`, Graph `createdDateTime`,
    /// iCalendar `CREATED`), when the provider says: tells "created" from "updated" in the
    /// app's change feed.
    pub created: Option<chrono::DateTime<chrono::Utc>>,
    /// Moved or cancelled occurrences of a recurring event, as far as the provider reported
    /// them (see `Provider::series_exceptions`); empty for single events.
    pub exceptions: Vec<Exception>,
}

/// One occurrence of a recurring event that differs from its rule: cancelled, or moved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exception {
    /// When the occurrence would have started by the rule (RECURRENCE-ID, Google
    /// `originalStartTime`, Graph `originalStart`): what identifies it.
    pub original_start: EventTime,
    /// Where it is now, when moved (`None` when cancelled).
    pub start: Option<EventTime>,
    pub end: Option<EventTime>,
    pub cancelled: bool,
}

impl Exception {
    pub fn cancelled(original_start: EventTime) -> Exception {
        Exception { original_start, start: None, end: None, cancelled: true }
    }

    pub fn moved(original_start: EventTime, start: EventTime, end: EventTime) -> Exception {
        Exception { original_start, start: Some(start), end: Some(end), cancelled: false }
    }
}

impl RemoteEvent {
    /// Does the event overlap `w`? A recurring event (reported as its series) counts when the
    /// series starts before the window ends, as a server's time-range filter sees it.
    pub fn in_window(&self, w: &super::Window) -> bool {
        let bound = |t: &EventTime| match t {
            EventTime::Date(d) => d.and_hms_opt(0, 0, 0).map(|n| n.and_utc()),
            EventTime::DateTime { utc, .. } => Some(*utc),
        };
        match (bound(&self.start), bound(&self.end)) {
            (Some(s), _) if !self.recurrence.is_empty() => s < w.to,
            // A zero-length event at the window's start is in it.
            (Some(s), Some(end)) => s < w.to && (end > w.from || (end == s && s >= w.from)),
            _ => false,
        }
    }

    /// The event a calendar holds after storing `data` verbatim (in-memory calendars: the test
    /// double and the bench provider).
    pub fn stored(id: &str, etag: String, link: String, data: &EventData) -> RemoteEvent {
        RemoteEvent {
            id: id.to_string(),
            etag: Some(etag),
            link: Some(link),
            title: data.title.clone(),
            description: data.description.clone(),
            category: data.category.clone(),
            start: data.start.clone(),
            end: data.end.clone(),
            zone: match &data.start {
                EventTime::DateTime { zone, .. } => zone.clone(),
                EventTime::Date(_) => None,
            },
            recurrence: data.recurrence.clone(),
            marker: Some(data.marker.clone()),
            cancelled: false,
            created: None,
            exceptions: data.exceptions.clone(),
        }
    }
}

/// A page of events from a window listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventPage {
    pub events: Vec<RemoteEvent>,
    /// Ids removed since the cursor (incremental listing only).
    pub removed: Vec<String>,
    /// Cursor for the next incremental listing.
    pub next_cursor: Option<String>,
    /// The cursor given was rejected; this page is a full listing.
    pub full_resync: bool,
}

/// Deterministic event key derived from the TaskSync UID: valid as a Google event id
/// (base32hex, lower case), a CalDAV resource name and a Graph transactionId. Re-creating with
/// the same key after a crash finds the first event instead of making a second one.
pub fn event_key(uid: &str) -> String {
    let digest = Sha256::digest(uid.as_bytes());
    let hex: String = digest.iter().take(15).map(|b| format!("{b:02x}")).collect();
    format!("cs{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_base32hex_and_stable() {
        let k = event_key("0b9f6a3e-1111-2222-3333-444455556666");
        assert_eq!(k, event_key("0b9f6a3e-1111-2222-3333-444455556666"));
        assert!(k.len() >= 5 && k.len() <= 1024);
        assert!(k.chars().all(|c| matches!(c, '0'..='9' | 'a'..='v')), "{k}");
    }

    #[test]
    fn marker_round_trips_with_awkward_task_ids() {
        let m = Marker { owner: "calsync".into(), uid: "u-1".into(), task_id: "a;b;c".into(), hash: "h".into() };
        assert_eq!(Marker::decode(&m.encode()), Some(m));
        assert_eq!(Marker::decode("something else"), None);
    }
}
