//! The exceptions of a recurring Outlook event. `GET /me/events/{id}/instances` lists a series'
//! occurrences and exceptions in a window; an exception whose times differ from its
//! `originalStart` is a moved occurrence. Graph v1.0 says nothing about deleted occurrences
//! (they are simply not listed), so the series' own pattern is expanded here and every
//! occurrence it should have that no instance claims is a cancelled one.
//!
//! Cancelling or moving an occurrence of our own series is a DELETE or PATCH of that occurrence
//! (`apply`): Graph recurrences have no EXDATE.
//!
//! Owns: reading and changing single occurrences. Must not touch listing or the master's writes.

use chrono::{DateTime, Duration, Utc};
use reqwest::Method;

use super::client::classify;
use super::wire::{self, GraphEvent};
use super::{OutlookProvider, PAGE, PREFER, PREFER_PAGED, events};
use crate::providers::recurrence::{at, expand, instant};
use crate::providers::{EventData, Exception, ProviderError, RemoteEvent, Window};

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

/// The occurrence of series `id` whose original start is `original`, looked for in `window`.
async fn find(
    p: &OutlookProvider,
    id: &str,
    original: DateTime<Utc>,
    window: Window,
) -> Result<Option<(String, Option<String>)>, ProviderError> {
    let (from, to) = (iso(window.from), iso(window.to));
    let url = p.graph.url(&["me", "events", id, "instances"], &[("startDateTime", &from), ("endDateTime", &to)]);
    let what = format!("finding the occurrence of Outlook event {id} at {}", iso(original));
    let items: Vec<GraphEvent> = match p.pages(url, &[PREFER_PAGED], &what).await? {
        Ok((items, _)) => items,
        Err(resp) => return Err(classify(&resp, &what)),
    };
    Ok(items
        .into_iter()
        .find(|g| {
            original_start(g).or_else(|| wire::to_remote(g, None).ok().map(|r| instant(&r.start))) == Some(original)
        })
        .map(|g| (g.id, g.etag)))
}

/// Cancel (DELETE) and move (PATCH) the occurrences of our series `id` that `event` names,
/// then read the master again: its version is the one to remember. Idempotent: a cancelled
/// occurrence already gone is skipped, a moved one is patched to the same times.
pub async fn apply(
    p: &OutlookProvider,
    id: &str,
    event: &EventData,
    written: RemoteEvent,
) -> Result<RemoteEvent, ProviderError> {
    if event.exceptions.is_empty() {
        return Ok(written);
    }
    let length = instant(&event.end) - instant(&event.start);
    for x in &event.exceptions {
        let original = instant(&x.original_start);
        let now_at = x.start.as_ref().map(instant).unwrap_or(original);
        let window = Window {
            from: original.min(now_at) - Duration::days(1),
            to: original.max(now_at) + length + Duration::days(1),
        };
        let occurrence = find(p, id, original, window).await?;
        let (occurrence, etag, method, body) = match (occurrence, &x.start, &x.end) {
            (None, _, _) if x.cancelled => continue,
            (None, _, _) => {
                return Err(ProviderError::Invalid {
                    message: format!(
                        "Outlook event {id} has no occurrence at {} to move (was it deleted in Outlook?); remove that exception or cancel it instead",
                        iso(original)
                    ),
                });
            }
            (Some((o, tag)), _, _) if x.cancelled => (o, tag, Method::DELETE, None),
            (Some((o, tag)), Some(s), Some(e)) => (o, tag, Method::PATCH, Some(wire::occurrence_move(s, e))),
            (Some(_), _, _) => continue,
        };
        let url = p.graph.url(&["me", "events", &occurrence], &[]);
        // Versioned like every write: an occurrence edited since it was read is not overwritten.
        let mut headers = vec![PREFER];
        if let Some(tag) = etag.as_deref() {
            headers.push(("if-match", tag));
        }
        let resp = p.graph.send(method, &url, &headers, body.as_ref()).await?;
        match resp.status.as_u16() {
            200 | 204 => {}
            412 => {
                return Err(ProviderError::Transient {
                    message: format!(
                        "occurrence {occurrence} of Outlook event {id} changed while calsync changed it; will retry"
                    ),
                });
            }
            _ => match classify(&resp, &format!("changing occurrence {occurrence} of Outlook event {id}")) {
                // Deleted meanwhile: for a cancel, that is the goal.
                ProviderError::NotFound { .. } if x.cancelled => {}
                e => return Err(e),
            },
        }
    }
    let mut current = events::get(p, id).await?.ok_or_else(|| ProviderError::NotFound {
        message: format!("Outlook event {id} disappeared while its occurrences were changed"),
    })?;
    if current.marker.is_none() {
        current.marker = written.marker;
    }
    Ok(current)
}
