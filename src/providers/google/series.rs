//! The exceptions of a recurring Google event: `events.instances` of the master over a window,
//! cancelled ones included (`showDeleted=true`), read as moved or cancelled occurrences by
//! their `originalStartTime`.
//!
//! Moving an occurrence of our own series is a patch of that instance (`apply_moves`).
//!
//! Owns: reading and moving instances. Must not touch listing or the master's writes.

use chrono::{DateTime, Utc};
use reqwest::Method;

use super::client::{classify, parse};
use super::wire::{GEvent, GEvents, instance_move, read_time};
use super::{GoogleProvider, MAX_PAGES, api_url};
use crate::providers::recurrence::instant;
use crate::providers::{EventData, EventTime, Exception, ProviderError, RemoteEvent, Window};

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// One instance as an exception: cancelled, or moved (another start or length); `None` for an
/// instance where the rule puts it (or one Google sent without readable times).
pub fn exception_of(g: &GEvent, length: chrono::Duration) -> Option<Exception> {
    let original = read_time(g.original_start_time.as_ref()?).ok()?;
    if g.is_cancelled() {
        return Some(Exception::cancelled(original));
    }
    let start: EventTime = read_time(g.start.as_ref()?).ok()?;
    let end: EventTime = read_time(g.end.as_ref()?).ok()?;
    let moved = instant(&start) != instant(&original) || instant(&end) - instant(&start) != length;
    moved.then(|| Exception::moved(original, start, end))
}

pub async fn exceptions(
    p: &GoogleProvider,
    calendar: &str,
    master: &RemoteEvent,
    window: Window,
) -> Result<Vec<Exception>, ProviderError> {
    let what = format!("reading the instances of recurring event {} in {calendar}", master.id);
    let length = instant(&master.end) - instant(&master.start);
    let mut out = Vec::new();
    let mut page_token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut url = api_url(&p.base, &["calendars", calendar, "events", &master.id, "instances"])?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("showDeleted", "true");
            q.append_pair("timeMin", &rfc3339(window.from));
            q.append_pair("timeMax", &rfc3339(window.to));
            q.append_pair("maxResults", "2500");
            if let Some(t) = &page_token {
                q.append_pair("pageToken", t);
            }
        }
        let resp = p.client().send(Method::GET, &url, None, None).await?;
        match resp.status.as_u16() {
            200 => {}
            // Deleted since it was listed: no exceptions to report.
            404 | 410 => return Ok(Vec::new()),
            _ => return Err(classify(&resp, &what)),
        }
        let page: GEvents = parse(&resp, &what)?;
        out.extend(page.items.iter().filter_map(|g| exception_of(g, length)));
        page_token = page.next_page_token.filter(|t| !t.is_empty());
        if page_token.is_none() {
            return Ok(out);
        }
    }
    Err(ProviderError::Invalid {
        message: format!("{what} did not end after {MAX_PAGES} pages; not following it further"),
    })
}

/// Move the instances of our series `id` that `event` says are moved (the master is written
/// already; cancelled ones are its EXDATEs), then read the master again: its version is the
/// one to remember. Idempotent: an instance already where it should be is patched to the same
/// times.
pub async fn apply_moves(
    p: &GoogleProvider,
    calendar: &str,
    id: &str,
    event: &EventData,
    written: RemoteEvent,
) -> Result<RemoteEvent, ProviderError> {
    let moves: Vec<&Exception> = event.exceptions.iter().filter(|x| !x.cancelled).collect();
    if moves.is_empty() {
        return Ok(written);
    }
    for x in moves {
        let (Some(start), Some(end)) = (&x.start, &x.end) else { continue };
        let (instance, etag) = find_instance(p, calendar, id, &x.original_start).await?;
        let url = p.event_url(calendar, &instance)?;
        let body = instance_move(event, start, end);
        // Versioned like every write: an instance edited since it was read is not overwritten.
        let resp = p.client().send(Method::PATCH, &url, etag.as_deref(), Some(&body)).await?;
        if resp.status.as_u16() == 412 {
            return Err(ProviderError::Transient {
                message: format!("occurrence {instance} of event {id} changed while calsync moved it; will retry"),
            });
        }
        if resp.status.as_u16() != 200 {
            return Err(classify(&resp, &format!("moving occurrence {instance} of event {id} in {calendar}")));
        }
    }
    p.fetch(calendar, id).await?.ok_or_else(|| ProviderError::NotFound {
        message: format!("event {id} in Google calendar {calendar} disappeared while its occurrences were moved"),
    })
}

/// The id and version of the instance of `id` whose original start is `original`.
async fn find_instance(
    p: &GoogleProvider,
    calendar: &str,
    id: &str,
    original: &EventTime,
) -> Result<(String, Option<String>), ProviderError> {
    let mut url = api_url(&p.base, &["calendars", calendar, "events", id, "instances"])?;
    url.query_pairs_mut()
        .append_pair("originalStart", &original.to_rfc3339_or_date())
        .append_pair("showDeleted", "true");
    let what = format!("finding the occurrence of event {id} at {}", original.to_rfc3339_or_date());
    let resp = p.client().send(Method::GET, &url, None, None).await?;
    if resp.status.as_u16() != 200 {
        return Err(classify(&resp, &what));
    }
    let page: GEvents = parse(&resp, &what)?;
    page.items
        .into_iter()
        .find(|g| {
            g.original_start_time
                .as_ref()
                .and_then(|t| read_time(t).ok())
                .is_some_and(|t| instant(&t) == instant(original))
        })
        .map(|g| (g.id, g.etag))
        .ok_or_else(|| ProviderError::Invalid {
            message: format!(
                "event {id} in {calendar} has no occurrence at {}: check the task's exceptions against its recurrence",
                original.to_rfc3339_or_date()
            ),
        })
}
