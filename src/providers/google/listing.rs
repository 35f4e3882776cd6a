//! Listing a Google calendar: a window with `singleEvents=false&timeMin&timeMax` (full listing)
//! and changes since a sync token (incremental listing), following `nextPageToken`.
//!
//! Recurring events are reported as their series master, once, as CalDAV and Outlook do: the
//! engine works on series. Google lists a series' exceptions (moved or cancelled instances,
//! with `recurringEventId`) as items of their own; they are not events to report but say their
//! series is in the window (a moved instance) or changed (incremental listing), so a master
//! missing from the answer is read. The exceptions themselves come from `series`.
//!
//! Google forbids `timeMin`/`timeMax` together with `syncToken`, so an incremental listing
//! returns changes anywhere in the calendar: they are filtered to the window here, and cancelled
//! items become `removed`. Cursors are `gcal1:<calendar tag>:<syncToken>`, so a cursor from
//! another provider or calendar is recognised and treated like an expired token (410): a full
//! listing with `full_resync`. Must not touch single event writes.

use chrono::{DateTime, Utc};
use reqwest::{Method, Url};
use sha2::{Digest, Sha256};

use super::client::{classify, parse};
use super::wire::{GEvents, to_remote};
use super::{GoogleProvider, MAX_PAGES};
use crate::providers::{EventPage, EventTime, ProviderError, RemoteEvent, Window};

const CURSOR_PREFIX: &str = "gcal1:";
/// Events per page: Google's maximum, to keep the number of requests (and quota) down.
const PAGE_SIZE: &str = "2500";

/// A short tag of the calendar id, so a cursor is only ever used on the calendar it came from.
fn calendar_tag(calendar: &str) -> String {
    Sha256::digest(calendar.as_bytes()).iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// The `EventPage.next_cursor` for Google's `nextSyncToken` of `calendar`.
pub fn encode_cursor(calendar: &str, sync_token: &str) -> String {
    format!("{CURSOR_PREFIX}{}:{sync_token}", calendar_tag(calendar))
}

/// The sync token inside a cursor of ours for `calendar`; `None` for anything else.
pub fn decode_cursor(calendar: &str, cursor: &str) -> Option<String> {
    let rest = cursor.strip_prefix(CURSOR_PREFIX)?;
    let (tag, token) = rest.split_once(':')?;
    (tag == calendar_tag(calendar) && !token.is_empty()).then(|| token.to_string())
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Does the event overlap `[from, to)`, the way Google's `timeMin`/`timeMax` select (end after
/// `from`, start before `to`)? Dates count from UTC midnight; a series when any occurrence does.
pub fn overlaps(e: &RemoteEvent, w: &Window) -> bool {
    if !e.recurrence.is_empty() {
        return crate::providers::recurrence::occurs_in(e, w);
    }
    let bound = |t: &EventTime| match t {
        EventTime::Date(d) => d.and_hms_opt(0, 0, 0).map(|n| n.and_utc()),
        EventTime::DateTime { utc, .. } => Some(*utc),
    };
    match (bound(&e.start), bound(&e.end)) {
        (Some(s), Some(end)) => s < w.to && end > w.from,
        _ => false,
    }
}

enum Fetched {
    /// Live events, ids of cancelled ones, masters of the exceptions listed (with whether that
    /// exception is live), and the last page's sync token.
    Done { live: Vec<RemoteEvent>, cancelled: Vec<String>, masters: Vec<(String, bool)>, sync_token: Option<String> },
    /// The sync token was refused (410 `fullSyncRequired`, or 400 for a token Google cannot read).
    TokenRejected,
}

/// All pages of one query. `params` are repeated on every page, as Google requires.
async fn fetch_all(
    p: &GoogleProvider,
    calendar: &str,
    params: &[(&str, String)],
    incremental: bool,
) -> Result<Fetched, ProviderError> {
    let what = format!("listing events in {calendar}");
    let mut live = Vec::new();
    let mut cancelled = Vec::new();
    let mut masters: Vec<(String, bool)> = Vec::new();
    let mut page_token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut url: Url = p.events_url(calendar)?;
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            if let Some(t) = &page_token {
                q.append_pair("pageToken", t);
            }
        }
        let resp = p.client().send(Method::GET, &url, None, None).await?;
        match resp.status.as_u16() {
            200 => {}
            410 if incremental => return Ok(Fetched::TokenRejected),
            400 if incremental && resp.error_reason().1.is_some_and(|m| m.to_ascii_lowercase().contains("sync")) => {
                return Ok(Fetched::TokenRejected);
            }
            _ => return Err(classify(&resp, &what)),
        }
        let page: GEvents = parse(&resp, &what)?;
        for g in page.items {
            if let Some(master) = g.recurring_event_id.clone().filter(|m| !m.is_empty()) {
                let live_one = !g.is_cancelled();
                match masters.iter_mut().find(|(m, _)| *m == master) {
                    Some(entry) => entry.1 |= live_one,
                    None => masters.push((master, live_one)),
                }
                continue;
            }
            if g.is_cancelled() {
                if !cancelled.contains(&g.id) {
                    cancelled.push(g.id);
                }
                continue;
            }
            let id = g.id.clone();
            match to_remote(g) {
                Ok(ev) => live.push(ev),
                // One unreadable event must not hide the others.
                Err(e) => tracing::debug!(calendar, id, error = %e, "skipping a google event we cannot read"),
            }
        }
        page_token = page.next_page_token.filter(|t| !t.is_empty());
        if page_token.is_none() {
            let sync_token = page.next_sync_token.filter(|t| !t.is_empty());
            return Ok(Fetched::Done { live, cancelled, masters, sync_token });
        }
    }
    Err(ProviderError::Invalid {
        message: format!("listing {calendar} did not end after {MAX_PAGES} pages; not following it further"),
    })
}

/// Add the masters of listed exceptions that the listing did not return itself (an instance
/// moved into the window; in an incremental listing, a series whose instance changed). `all`:
/// also for cancelled exceptions (a full listing does not need them: the rest of the series is
/// listed when it occurs in the window).
async fn add_masters(
    p: &GoogleProvider,
    calendar: &str,
    live: &mut Vec<RemoteEvent>,
    cancelled: &[String],
    masters: &[(String, bool)],
    all: bool,
) -> Result<(), ProviderError> {
    for (id, live_exception) in masters {
        if !(all || *live_exception) || live.iter().any(|e| &e.id == id) || cancelled.contains(id) {
            continue;
        }
        if let Some(master) = p.fetch(calendar, id).await?.filter(|m| !m.cancelled) {
            live.push(master);
        }
    }
    Ok(())
}

async fn full(p: &GoogleProvider, calendar: &str, window: &Window, resync: bool) -> Result<EventPage, ProviderError> {
    let params = [
        ("singleEvents", "false".to_string()),
        // timeMin bounds an event's end, timeMax its start: exactly the events overlapping.
        ("timeMin", rfc3339(window.from)),
        ("timeMax", rfc3339(window.to)),
        ("maxResults", PAGE_SIZE.to_string()),
    ];
    // A full listing does not ask for deleted events; any a server sends anyway are ignored.
    let Fetched::Done { live: mut events, masters, sync_token, .. } = fetch_all(p, calendar, &params, false).await?
    else {
        return Err(ProviderError::Transient { message: format!("listing {calendar} was refused; will retry") });
    };
    add_masters(p, calendar, &mut events, &[], &masters, false).await?;
    tracing::debug!(calendar, events = events.len(), resync, "google window listed");
    Ok(EventPage {
        events,
        removed: Vec::new(),
        next_cursor: sync_token.map(|t| encode_cursor(calendar, &t)),
        full_resync: resync,
    })
}

pub async fn list(
    p: &GoogleProvider,
    calendar: &str,
    window: Window,
    cursor: Option<&str>,
) -> Result<EventPage, ProviderError> {
    let Some(cursor) = cursor else {
        return full(p, calendar, &window, false).await;
    };
    let Some(token) = decode_cursor(calendar, cursor) else {
        tracing::debug!(calendar, "cursor is not a google sync token for this calendar; listing in full");
        return full(p, calendar, &window, true).await;
    };
    let params = [("singleEvents", "false".to_string()), ("syncToken", token), ("maxResults", PAGE_SIZE.to_string())];
    match fetch_all(p, calendar, &params, true).await? {
        Fetched::TokenRejected => {
            tracing::debug!(calendar, "google refused the sync token; listing in full");
            full(p, calendar, &window, true).await
        }
        Fetched::Done { mut live, cancelled, masters, sync_token } => {
            add_masters(p, calendar, &mut live, &cancelled, &masters, true).await?;
            let page = EventPage {
                events: live.into_iter().filter(|e| overlaps(e, &window)).collect(),
                removed: cancelled,
                next_cursor: sync_token.map(|t| encode_cursor(calendar, &t)),
                full_resync: false,
            };
            tracing::debug!(
                calendar,
                changed = page.events.len(),
                removed = page.removed.len(),
                "google changes listed"
            );
            Ok(page)
        }
    }
}
