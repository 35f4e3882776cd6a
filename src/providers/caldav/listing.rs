//! Listing a calendar: a time window with `calendar-query` (full listing) and changes since a
//! cursor with RFC 6578 `sync-collection` + `calendar-multiget` (incremental listing).
//!
//! Recurring events are reported as their master (with RRULE/EXDATE), not expanded: the
//! server's time-range filter returns a recurring resource when any instance overlaps the
//! window, and the engine works on series, not instances.
//!
//! Cursors are the server's sync tokens, opaque; `list_window` does not ask for one. A token the
//! server rejects (403/409/412 or a `valid-sync-token` error) leads to a full listing with
//! `full_resync`. Must not touch single event writes or discovery.

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode, Url};

use super::events::remote;
use super::http::{CT, XML, classify};
use super::ical::parse_ics;
use super::xml::{
    Multistatus, calendar_query, each_resource, multiget, parse_multistatus, preconditions, sync_collection, uid_query,
};
use super::{CaldavProvider, discovery, id_from_href};
use crate::providers::{EventPage, ProviderError, RemoteEvent, Window};

/// hrefs per multiget request.
const MULTIGET_BATCH: usize = 100;
/// Follow-up requests when the server truncates a sync report (507).
const MAX_SYNC_ROUNDS: usize = 50;

fn report() -> Result<Method, ProviderError> {
    Method::from_bytes(b"REPORT").map_err(|_| ProviderError::Invalid { message: "REPORT".into() })
}

pub(super) fn ical_utc(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Events from a multistatus with calendar-data, in one pass over the body: each resource's
/// iCalendar text is parsed where the XML parser left it. Resources we cannot read (a VTODO,
/// broken data) are skipped and logged, so one bad event does not hide the others.
fn events_of(body: &[u8], base: &Url) -> Result<Vec<RemoteEvent>, ProviderError> {
    let mut out = Vec::new();
    each_resource(body, |r| {
        let (Some(id), Ok(url)) = (id_from_href(r.href), base.join(r.href)) else {
            return;
        };
        match parse_ics(&r.data) {
            Ok(parsed) => out.push(remote(id, &url, r.etag.map(str::to_string), parsed)),
            Err(e) => {
                tracing::debug!(href = %r.href, error = %e, "skipping a resource that is not a readable event")
            }
        }
    })?;
    Ok(out)
}

/// The events of a `calendar-query`/`calendar-multiget` answer, read as `Provider::list`
/// reads them (public for `calsync-bench caldav-import`, which times the parse alone).
pub fn parse_report(body: &[u8], base: &Url) -> Result<Vec<RemoteEvent>, ProviderError> {
    events_of(body, base)
}

/// The responses with calendar-data in such an answer: the XML pass alone, for the bench's
/// breakdown.
pub fn count_calendar_data(body: &[u8]) -> Result<usize, ProviderError> {
    let mut n = 0;
    each_resource(body, |_| n += 1)?;
    Ok(n)
}

/// The `calendar-query` body `Provider::list` sends for `window` (for the bench's raw REPORT).
pub fn calendar_query_body(window: Window) -> String {
    calendar_query(&ical_utc(window.from), &ical_utc(window.to))
}

pub(super) async fn report_ms(
    p: &CaldavProvider,
    url: &Url,
    depth: &str,
    body: &str,
    what: &str,
) -> Result<Multistatus, ProviderError> {
    parse_multistatus(&report_body(p, url, depth, body, what).await?)
}

/// A REPORT's 207 body, unparsed.
async fn report_body(
    p: &CaldavProvider,
    url: &Url,
    depth: &str,
    body: &str,
    what: &str,
) -> Result<Vec<u8>, ProviderError> {
    let resp = p.client().send(report()?, url, &[("Depth", depth), (CT, XML)], Some(body)).await?;
    if resp.status != StatusCode::MULTI_STATUS {
        return Err(classify(&resp, what, p.client().username()));
    }
    Ok(resp.body)
}

/// The collection's current sync token, if the server supports RFC 6578.
async fn current_token(p: &CaldavProvider, url: &Url) -> Result<Option<String>, ProviderError> {
    let resp = discovery::propfind_at(p.client(), url, "0", &["d:sync-token"]).await?;
    match resp.status.as_u16() {
        207 => Ok(parse_multistatus(&resp.body)?.sync_token),
        401 | 429 | 500..=599 => Err(classify(&resp, "reading the sync token", p.client().username())),
        _ => Ok(None),
    }
}

/// Whether a full listing establishes a cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cursor {
    /// Ask for the sync token first (`list`): the caller lists incrementally from it.
    Wanted,
    /// No token request (`list_window`): the caller keeps no cursor, and Radicale computes the
    /// token over every item, about a third of a 1,000-event listing.
    Skipped,
}

async fn full(
    p: &CaldavProvider,
    url: &Url,
    window: &Window,
    cursor: Cursor,
    resync: bool,
) -> Result<EventPage, ProviderError> {
    // Token first: a change between the two requests then shows up again in the next
    // incremental listing instead of being lost.
    let token = match cursor {
        Cursor::Wanted => current_token(p, url).await?,
        Cursor::Skipped => None,
    };
    let body = calendar_query(&ical_utc(window.from), &ical_utc(window.to));
    let events = events_of(&report_body(p, url, "1", &body, &format!("listing events in {url}")).await?, url)?;
    tracing::debug!(events = events.len(), resync, token = cursor == Cursor::Wanted, "caldav window listed");
    Ok(EventPage { events, removed: Vec::new(), next_cursor: token, full_resync: resync })
}

enum Sync {
    Changes { changed: Vec<String>, removed: Vec<String>, token: Option<String> },
    Rejected,
}

async fn sync_since(p: &CaldavProvider, url: &Url, token: &str) -> Result<Sync, ProviderError> {
    let mut token = token.to_string();
    let mut changed = Vec::new();
    let mut removed = Vec::new();
    for _ in 0..MAX_SYNC_ROUNDS {
        // RFC 6578 §3.2: Depth 0; the level is in the body.
        let resp =
            p.client().send(report()?, url, &[("Depth", "0"), (CT, XML)], Some(&sync_collection(&token))).await?;
        match resp.status.as_u16() {
            207 => {}
            400 | 403 | 409 | 412 => {
                let named = preconditions(&resp.body).iter().any(|(n, _)| n == "valid-sync-token");
                // Radicale answers 403, others 409/412; some send no body. Any of these
                // statuses on a sync report means the token cannot be used.
                if named || resp.status.as_u16() != 400 {
                    return Ok(Sync::Rejected);
                }
                return Err(classify(&resp, "listing changes", p.client().username()));
            }
            _ => return Err(classify(&resp, "listing changes", p.client().username())),
        }
        let ms = parse_multistatus(&resp.body)?;
        let mut truncated = false;
        for r in &ms.responses {
            let is_collection =
                url.join(&r.href).is_ok_and(|u| u.path().trim_end_matches('/') == url.path().trim_end_matches('/'));
            if is_collection {
                truncated |= r.status == Some(507);
                continue;
            }
            if matches!(r.status, Some(404 | 410)) {
                removed.push(r.href.clone());
            } else {
                changed.push(r.href.clone());
            }
        }
        let next = ms.sync_token.clone();
        match (truncated, next) {
            (true, Some(n)) if n != token => token = n,
            (_, next) => {
                return Ok(Sync::Changes { changed, removed, token: next });
            }
        }
    }
    Ok(Sync::Changes { changed, removed, token: Some(token) })
}

/// The collection's change fingerprint: `DAV:sync-token` (RFC 6578), else Apple's
/// `CS:getctag`, else `None` (no cheap check: list instead). One Depth-0 PROPFIND.
pub async fn probe(p: &CaldavProvider, calendar: &str) -> Result<Option<String>, ProviderError> {
    let url = p.collection(calendar)?;
    let resp = discovery::propfind_at(p.client(), &url, "0", &["d:sync-token", "cs:getctag"]).await?;
    match resp.status.as_u16() {
        207 => {
            let ms = parse_multistatus(&resp.body)?;
            let ctag = ms
                .responses
                .iter()
                .find_map(|r| r.prop("http://calendarserver.org/ns/", "getctag"))
                .map(|p| p.text.clone())
                .filter(|t| !t.is_empty());
            Ok(ms.sync_token.map(|t| format!("sync:{t}")).or_else(|| ctag.map(|c| format!("ctag:{c}"))))
        }
        401 | 403 | 404 | 429 | 500..=599 => {
            Err(classify(&resp, &format!("checking {url} for changes"), p.client().username()))
        }
        _ => Ok(None),
    }
}

pub async fn list(
    p: &CaldavProvider,
    calendar: &str,
    window: Window,
    cursor: Option<&str>,
) -> Result<EventPage, ProviderError> {
    let url = p.collection(calendar)?;
    let Some(cursor) = cursor.filter(|c| !c.is_empty()) else {
        return full(p, &url, &window, Cursor::Wanted, false).await;
    };
    let (changed, removed, token) = match sync_since(p, &url, cursor).await? {
        Sync::Rejected => {
            tracing::info!(calendar, "sync token rejected by the server; listing everything");
            return full(p, &url, &window, Cursor::Wanted, true).await;
        }
        Sync::Changes { changed, removed, token } => (changed, removed, token),
    };
    let mut events = Vec::new();
    for batch in changed.chunks(MULTIGET_BATCH) {
        let ms = report_body(p, &url, "1", &multiget(batch), &format!("reading changed events in {url}")).await?;
        events.extend(events_of(&ms, &url)?.into_iter().filter(|e| e.in_window(&window)));
    }
    let mut removed: Vec<String> = removed.iter().filter_map(|h| id_from_href(h)).collect();
    removed.dedup();
    Ok(EventPage { events, removed, next_cursor: token.or_else(|| Some(cursor.to_string())), full_resync: false })
}

/// `Provider::list_window`: the full listing without the sync-token request; no cursor.
pub async fn list_window(p: &CaldavProvider, calendar: &str, window: Window) -> Result<EventPage, ProviderError> {
    let url = p.collection(calendar)?;
    full(p, &url, &window, Cursor::Skipped, false).await
}

/// The event with exactly this UID in the collection, wherever it is stored (servers that
/// report a `no-uid-conflict` without saying where, as Radicale does).
pub async fn find_uid(p: &CaldavProvider, collection: &Url, uid: &str) -> Result<Option<RemoteEvent>, ProviderError> {
    let body = report_body(p, collection, "1", &uid_query(uid), &format!("looking up UID {uid}")).await?;
    let mut found = None;
    each_resource(&body, |r| {
        let (Some(id), Ok(url)) = (id_from_href(r.href), collection.join(r.href)) else {
            return;
        };
        if found.is_none()
            && let Ok(parsed) = parse_ics(&r.data)
            && parsed.uid.as_deref() == Some(uid)
        {
            found = Some(remote(id, &url, r.etag.map(str::to_string), parsed));
        }
    })?;
    Ok(found)
}
