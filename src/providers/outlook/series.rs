//! The exceptions of a recurring Outlook event. `GET /me/events/{id}/instances` lists a series'
//! occurrences and exceptions in a window; an exception whose times differ from its
//! `originalStart` is a moved occurrence. Graph v1.0 says nothing about deleted occurrences
//! (they are simply not listed), so the series' own pattern is expanded here and every
//! occurrence it should have that no instance claims is a cancelled one.
//!
//! Owns: that read and its reading. Must not touch listing or writes.

use chrono::{DateTime, Duration, Utc};

use super::client::classify;
use super::wire::{self, GraphEvent};
use super::{OutlookProvider, PAGE, PREFER_PAGED};
use crate::providers::recurrence::{at, expand, instant};
use crate::providers::{Exception, ProviderError, RemoteEvent, Window};

/// How far outside the window instances are read, so an occurrence moved out of the window is
/// still seen as moved, not taken for a cancelled one.
const MOVE_MARGIN_DAYS: i64 = 62;

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Graph's `originalStart` (an ISO 8601 offset date-time, UTC as we ask for).
fn original_start(g: &GraphEvent) -> Option<DateTime<Utc>> {
    let raw = g.original_start.as_deref()?;
    DateTime::parse_from_rfc3339(raw).ok().map(|t| t.with_timezone(&Utc)).or_else(|| {
        // Graph may leave the offset off a UTC value.
        chrono::NaiveDateTime::parse_from_str(raw.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .map(|n| n.and_utc())
    })
}

pub async fn exceptions(
    p: &OutlookProvider,
    master: &RemoteEvent,
    window: Window,
) -> Result<Vec<Exception>, ProviderError> {
    let margin = Duration::days(MOVE_MARGIN_DAYS);
    let wide = Window { from: window.from - margin, to: window.to + margin };
    let (from, to, top) = (iso(wide.from), iso(wide.to), PAGE.to_string());
    let query = [("startDateTime", from.as_str()), ("endDateTime", to.as_str()), ("$top", top.as_str())];
    let url = p.graph.url(&["me", "events", &master.id, "instances"], &query);
    let what = format!("reading the instances of recurring Outlook event {}", master.id);
    let items: Vec<GraphEvent> = match p.pages(url, &[PREFER_PAGED], &what).await? {
        Ok((items, _)) => items,
        Err(resp) => match classify(&resp, &what) {
            // Deleted since it was listed: nothing to report.
            ProviderError::NotFound { .. } => return Ok(Vec::new()),
            e => return Err(e),
        },
    };
    let length = instant(&master.end) - instant(&master.start);
    let mut claimed: Vec<DateTime<Utc>> = Vec::new();
    let mut out = Vec::new();
    for g in &items {
        let Ok(inst) = wire::to_remote(g, None) else { continue };
        let original = original_start(g).unwrap_or_else(|| instant(&inst.start));
        claimed.push(original);
        let moved = instant(&inst.start) != original || instant(&inst.end) - instant(&inst.start) != length;
        if g.kind.as_deref() == Some("exception") && moved {
            out.push(Exception::moved(at(original, &master.start), inst.start, inst.end));
        }
    }
    // An occurrence the pattern has and no instance claims was deleted. A pattern that cannot be
    // expanded here reports moves only.
    match expand(&master.start, &master.end, &master.recurrence, &window) {
        Ok(expected) => {
            for (s, _) in expected {
                if !claimed.contains(&instant(&s)) {
                    out.push(Exception::cancelled(s));
                }
            }
        }
        Err(e) => tracing::debug!(id = %master.id, error = %e, "cannot expand an Outlook series; reporting moves only"),
    }
    out.sort_by_key(|x| instant(&x.original_start));
    Ok(out)
}
