//! The full listing in one answer: an RFC 6578 `sync-collection` from the empty token that asks
//! for `getetag` and `calendar-data` (§3.2 lets a client ask for any property), so the events
//! and the token that covers them come together and nothing can change between the two.
//!
//! Servers differ in what they send back, and each case keeps a correct answer:
//! - members without calendar-data (allowed: a server may leave a property out of a member, or
//!   put it in a 404 propstat) are read afterwards with `calendar-multiget`, in batches. A change
//!   between the token and that read is listed again by the next incremental listing, as with
//!   the token-first fallback;
//! - a truncated answer (507 on the collection) is continued from its token, up to
//!   `MAX_SYNC_ROUNDS`; later rounds may report members removed since (404), which are dropped;
//! - a refusal (any 4xx but 401/404/410/429 and a 403 with Retry-After, or 501) or an answer
//!   without a token returns `None`: the caller lists the window with the sync-token PROPFIND
//!   and a time-range `calendar-query` instead.
//!
//! The answer holds the whole calendar, not the window, so the window is applied here as the
//! server's time-range filter applies it (RFC 4791 §9.9): a single event when it overlaps (a
//! zero-length one when it starts inside), a series when one of its occurrences does, counting
//! its EXDATEs and moved or cancelled RECURRENCE-ID instances (`recurrence::occurs_in`; a rule
//! this crate cannot expand is kept, as the incremental listing keeps it). Floating and all-day
//! times are read as UTC on both sides (RFC 4791 lets a server use the calendar's zone instead;
//! for such events the window edge may differ by that zone's offset).
//!
//! The caller remembers, per collection, when this listing is not worth it (refused, or most
//! events outside the window) and lists the window from then on.
//!
//! Owns: that request, its follow-ups and the window filter. Must not touch the incremental
//! listing, the fallback or event writes.

use std::collections::HashMap;

use reqwest::Url;

use super::events::remote;
use super::http::{CT, XML, classify};
use super::ical::parse_ics;
use super::listing::{MAX_SYNC_ROUNDS, MULTIGET_BATCH, events_of, report, report_body};
use super::xml::{Member, each_member, multiget, sync_collection_with_data};
use super::{CaldavProvider, id_from_href};
use crate::providers::recurrence::{instant, occurs_in};
use crate::providers::{ProviderError, RemoteEvent, Window};

/// What the rounds gathered: events by href (in the server's order), and members that came
/// without data.
#[derive(Default)]
struct Gathered {
    order: Vec<Option<RemoteEvent>>,
    at: HashMap<String, usize>,
    without_data: Vec<String>,
}

impl Gathered {
    fn put(&mut self, href: &str, ev: Option<RemoteEvent>) {
        match self.at.get(href) {
            Some(&i) => self.order[i] = ev,
            None => {
                self.at.insert(href.to_string(), self.order.len());
                self.order.push(ev);
            }
        }
    }

    fn member(&mut self, collection: &Url, m: Member<'_>, truncated: &mut bool) {
        let Ok(abs) = collection.join(m.href) else { return };
        // iCloud lists the collection itself; a 507 there says the answer was truncated.
        if abs.path().trim_end_matches('/') == collection.path().trim_end_matches('/') {
            *truncated |= m.status == Some(507);
            return;
        }
        if matches!(m.status, Some(404 | 410)) {
            self.put(m.href, None);
            self.without_data.retain(|h| h != m.href);
            return;
        }
        let Some(id) = id_from_href(m.href) else { return };
        match m.data {
            Some(data) => match parse_ics(&data) {
                Ok(parsed) => self.put(m.href, Some(remote(id, &abs, m.etag.map(str::to_string), parsed))),
                Err(e) => {
                    tracing::debug!(href = %m.href, error = %e, "skipping a resource that is not a readable event");
                    self.put(m.href, None);
                }
            },
            None => {
                self.put(m.href, None);
                if !self.without_data.iter().any(|h| h == m.href) {
                    self.without_data.push(m.href.to_string());
                }
            }
        }
    }
}

/// A one-answer listing.
pub(super) struct Listed {
    /// The events in the window.
    pub events: Vec<RemoteEvent>,
    /// Events read, in the window or not.
    pub read: usize,
    /// The token that covers them.
    pub token: String,
}

/// The calendar's events in `window` and the token that covers them, or `None` when the server
/// will not list it this way (see the module doc).
pub(super) async fn list(p: &CaldavProvider, url: &Url, window: &Window) -> Result<Option<Listed>, ProviderError> {
    let what = format!("listing events in {url}");
    let mut got = Gathered::default();
    let mut token = String::new();
    for _ in 0..MAX_SYNC_ROUNDS {
        // RFC 6578 §3.2: Depth 0; the level is in the body.
        let body = sync_collection_with_data(&token);
        let resp = p.client().send(report()?, url, &[("Depth", "0"), (CT, XML)], Some(&body)).await?;
        match resp.status.as_u16() {
            207 => {}
            401 | 404 | 410 | 429 => return Err(classify(&resp, &what, p.client().username())),
            403 if resp.header("retry-after").is_some() => {
                return Err(classify(&resp, &what, p.client().username()));
            }
            status @ (400..=499 | 501) => {
                tracing::info!(url = %url, status, "the server refuses sync-collection with data; listing the window");
                return Ok(None);
            }
            _ => return Err(classify(&resp, &what, p.client().username())),
        }
        let mut truncated = false;
        let next = each_member(&resp.body, |m| got.member(url, m, &mut truncated))?;
        let Some(next) = next else {
            tracing::info!(url = %url, "the server answered sync-collection without a token; listing the window");
            return Ok(None);
        };
        let more = truncated && next != token;
        token = next;
        if !more {
            break;
        }
    }
    let mut events: Vec<RemoteEvent> = got.order.into_iter().flatten().collect();
    for batch in got.without_data.chunks(MULTIGET_BATCH) {
        let body = report_body(p, url, "1", &multiget(batch), &format!("reading events in {url}")).await?;
        events.extend(events_of(&body, url)?);
    }
    let read = events.len();
    events.retain(|e| in_window(e, window));
    Ok(Some(Listed { events, read, token }))
}

/// Would a time-range `calendar-query` for `w` return this event? (See the module doc.)
pub(super) fn in_window(e: &RemoteEvent, w: &Window) -> bool {
    let (s, end) = (instant(&e.start), instant(&e.end));
    let first = s < w.to && (end > w.from || (end == s && s >= w.from));
    if e.recurrence.is_empty() {
        return first;
    }
    // The first occurrence decides when nothing removes or moves it: no expansion needed.
    let untouched = e.exceptions.is_empty()
        && !e.recurrence.iter().any(|l| l.trim_start().get(..6).is_some_and(|n| n.eq_ignore_ascii_case("EXDATE")));
    (first && untouched) || occurs_in(e, w)
}

#[cfg(test)]
#[path = "listing_initial_tests.rs"]
mod tests;
