//! The ICS subscription feed's content: a user's TaskSyncs as one RFC 5545 VCALENDAR
//! (`METHOD:PUBLISH`), each task a VEVENT written by the same code as CalDAV resources
//! (`providers::caldav::ics::vevent`), with one VTIMEZONE per zone used, and its strong ETag.
//!
//! The body depends only on the stored objects (DTSTAMP and LAST-MODIFIED are the TaskSync's
//! last applied time, never "now"), so an unchanged feed has an unchanged ETag and calendar apps
//! polling it get 304s.
//!
//! Owns: feed rendering. Must not touch: I/O, tokens, or which TaskSyncs belong to the user
//! (the handler decides). The ownership marker is left out: a feed event imported into a
//! CalDAV calendar must never look like one calsync wrote there.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::engine::desired::event_of;
use crate::providers::caldav::ics::{
    Calendar, Component, PRODID, escape_text, override_events, property, property_with, start_year, timezone, vevent,
};
use crate::resources::TaskSync;

/// How often calendar apps are asked to refresh (REFRESH-INTERVAL, X-PUBLISHED-TTL).
pub const REFRESH: &str = "PT15M";
/// `Cache-Control` of a feed: private (it is one user's), short, revalidated by ETag.
pub const CACHE_CONTROL: &str = "private, max-age=300, must-revalidate";
/// The calendar's name in calendar apps.
pub const CALENDAR_NAME: &str = "Get It Done!";

/// A rendered feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feed {
    pub body: String,
    /// Strong ETag (quoted) of the body.
    pub etag: String,
    /// VEVENTs written.
    pub events: usize,
}

fn ical_time(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

fn created(ts: &TaskSync) -> Option<DateTime<Utc>> {
    let t = ts.metadata.creation_timestamp.as_ref()?;
    DateTime::from_timestamp(t.0.as_second(), 0)
}

/// When the task was last applied (to its calendar, or to the feed), else created.
fn modified(ts: &TaskSync) -> DateTime<Utc> {
    ts.status.as_ref().and_then(|s| s.last_sync_time).or_else(|| created(ts)).unwrap_or(DateTime::UNIX_EPOCH)
}

/// Render `tasks` (one user's, in any order) as the feed. Tasks whose spec the engine would
/// refuse are left out (their status says why); `owner` is the installation id the engine uses,
/// so UIDs equal the CalDAV resources' UIDs for the same task.
pub fn render(tasks: &[TaskSync], owner: &str) -> Feed {
    let mut events: Vec<(String, Component<'static>)> = Vec::new();
    // Zone → the earliest year an event in it starts: its VTIMEZONE covers from there.
    let mut zones: BTreeMap<String, (Tz, i32)> = BTreeMap::new();
    for ts in tasks {
        let uid = ts.uid().unwrap_or_else(|| ts.name_any());
        let ev = match event_of(ts, &uid, owner) {
            Ok(ev) => ev,
            Err(why) => {
                tracing::debug!(task_sync = %ts.name_any(), %why, "left out of the feed: invalid spec");
                continue;
            }
        };
        let stamp = modified(ts);
        let (mut vev, zone) = vevent(&ev, stamp);
        // SEQUENCE starts at 0 (RFC 5545 §3.8.7.4); generation starts at 1 and moves with the spec.
        let sequence = ts.metadata.generation.unwrap_or(1).saturating_sub(1).max(0);
        vev.properties.push(property("SEQUENCE", sequence.to_string()));
        if let Some(c) = created(ts) {
            vev.properties.push(property("CREATED", ical_time(c)));
        }
        vev.properties.push(property("LAST-MODIFIED", ical_time(stamp)));
        if let Some(tz) = zone {
            let year = start_year(&ev);
            zones.entry(tz.name().to_string()).and_modify(|(_, y)| *y = (*y).min(year)).or_insert((tz, year));
        }
        let key = vev.find_prop("UID").map(|p| p.val.as_str().to_string()).unwrap_or_default();
        // Moved occurrences of a recurring task: override VEVENTs with the same UID.
        let moved = override_events(&ev, &vev, stamp, zone);
        events.push((key.clone(), vev));
        events.extend(moved.into_iter().map(|o| (key.clone(), o)));
    }
    // Stable order, so the same tasks always give the same bytes (and ETag).
    events.sort_by(|a, b| a.0.cmp(&b.0));
    let count = events.len();
    let mut components: Vec<Component<'static>> = zones.values().map(|(tz, y)| timezone(*tz, *y)).collect();
    components.extend(events.into_iter().map(|(_, c)| c));
    let cal = Calendar {
        properties: vec![
            property("VERSION", "2.0".into()),
            property("PRODID", PRODID.into()),
            property("CALSCALE", "GREGORIAN".into()),
            property("METHOD", "PUBLISH".into()),
            property("X-WR-CALNAME", escape_text(CALENDAR_NAME)),
            property("X-WR-CALDESC", escape_text("Tasks from Get It Done!")),
            property_with("REFRESH-INTERVAL", REFRESH.into(), &[("VALUE", "DURATION")]),
            property("X-PUBLISHED-TTL", REFRESH.into()),
        ],
        components,
    };
    let body = cal.to_string();
    let digest = Sha256::digest(body.as_bytes());
    let etag = format!("\"{}\"", digest.iter().take(16).map(|b| format!("{b:02x}")).collect::<String>());
    Feed { body, etag, events: count }
}

/// Does an `If-None-Match` header value match `etag`? RFC 9110 §13.1.2: `*`, or a list
/// compared weakly (a `W/` prefix is ignored).
pub fn none_match(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

#[cfg(test)]
#[path = "ics_tests.rs"]
mod tests;
