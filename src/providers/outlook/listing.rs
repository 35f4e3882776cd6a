//! Listing a calendar: a window with `calendarView` (full listing, our properties expanded)
//! and changes since a cursor with `calendarView/delta` (incremental listing).
//!
//! Cursors are Graph's `@odata.deltaLink`, kept as-is (the token encodes the window). A full
//! listing first starts a delta round and then reads the window, so a change made in between
//! shows up in the next incremental listing rather than being lost. Delta items carry no
//! extended properties (`$expand` is not supported there), so items that may be ours (a
//! `transactionId` shaped like our keys) or that are partial are read again with `GET`. A
//! rejected cursor (410, `syncStateNotFound`, or not a link to our Graph) gives a full listing
//! with `full_resync`.
//!
//! Recurring events are reported as their series master, once, as the CalDAV provider does:
//! the engine works on series, not instances. Must not touch single-event writes.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use reqwest::Url;

use super::client::{GraphResponse, classify};
use super::events;
use super::wire::{self, GraphEvent};
use super::{OutlookProvider, PAGE, PREFER_PAGED};
use crate::providers::{EventPage, ProviderError, RemoteEvent, Window};

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Does this answer say "the delta token is no good, start over"?
fn is_resync(resp: &GraphResponse) -> bool {
    let (code, _) = resp.error();
    // A reset comes as 410 (with a `Location` to restart from, which a full listing does
    // anyway); an expired token as some 4xx with `syncStateNotFound`.
    resp.status.as_u16() == 410
        || (resp.status.is_client_error() && (code == "syncStateNotFound" || code == "resyncRequired"))
}

pub async fn list(
    p: &OutlookProvider,
    calendar: &str,
    window: Window,
    cursor: Option<&str>,
) -> Result<EventPage, ProviderError> {
    let Some(cursor) = cursor else { return full(p, calendar, window).await };
    let Some(link) = p.graph.own_link(cursor) else {
        tracing::info!(calendar, "outlook cursor is not a delta link of this Graph; listing in full");
        return resync(p, calendar, window).await;
    };
    match delta(p, link).await? {
        Some(page) => Ok(page),
        None => {
            tracing::info!(calendar, "outlook delta token expired; listing in full");
            resync(p, calendar, window).await
        }
    }
}

async fn resync(p: &OutlookProvider, calendar: &str, window: Window) -> Result<EventPage, ProviderError> {
    let mut page = full(p, calendar, window).await?;
    page.full_resync = true;
    Ok(page)
}

async fn full(p: &OutlookProvider, calendar: &str, window: Window) -> Result<EventPage, ProviderError> {
    let range = [("startDateTime", iso(window.from)), ("endDateTime", iso(window.to))];
    let range: Vec<(&str, &str)> = range.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Graph's documented delta path for the default calendar is `/me/calendarView/delta`.
    let delta_path: Vec<&str> = match calendar {
        "primary" => vec!["me", "calendarView", "delta"],
        _ => vec!["me", "calendars", calendar, "calendarView", "delta"],
    };
    // The delta round only sets the cursor; its items are read below, with our properties.
    let what = format!("starting change tracking of calendar {calendar}");
    let cursor = match p.pages::<serde_json::Value>(p.graph.url(&delta_path, &range), &[PREFER_PAGED], &what).await? {
        Ok((_, Some(link))) => link,
        Ok((_, None)) => {
            return Err(ProviderError::Invalid {
                message: format!("Microsoft Graph ended a delta round without @odata.deltaLink while {what}"),
            });
        }
        Err(resp) => return Err(classify(&resp, &what)),
    };
    let mut path = OutlookProvider::calendar_path(calendar);
    path.push("calendarView");
    let expand = wire::expand();
    let top = PAGE.to_string();
    let mut query = range.clone();
    query.extend([("$expand", expand.as_str()), ("$top", top.as_str())]);
    let what = format!("listing calendar {calendar}");
    let items: Vec<GraphEvent> = match p.pages(p.graph.url(&path, &query), &[PREFER_PAGED], &what).await? {
        Ok((items, _)) => items,
        Err(resp) => return Err(classify(&resp, &what)),
    };
    let mut out = Collected::default();
    for g in items {
        match g.series() {
            Some(master) => {
                out.masters.insert(master.to_string());
            }
            None => out.push(wire::to_remote(&g, None)?),
        }
    }
    let mut page = out.finish(p).await?;
    page.next_cursor = Some(cursor);
    Ok(page)
}

/// Changes since `link`; `None` when Graph wants a full resync.
async fn delta(p: &OutlookProvider, link: Url) -> Result<Option<EventPage>, ProviderError> {
    let what = "reading calendar changes";
    let (items, cursor) = match p.pages::<GraphEvent>(link, &[PREFER_PAGED], what).await? {
        Ok((items, Some(cursor))) => (items, cursor),
        Ok((_, None)) => {
            return Err(ProviderError::Invalid {
                message: "Microsoft Graph ended a delta round without @odata.deltaLink".into(),
            });
        }
        Err(resp) if is_resync(&resp) => return Ok(None),
        Err(resp) => return Err(classify(&resp, what)),
    };
    let mut out = Collected::default();
    for g in items {
        if g.removed.is_some() {
            out.removed.insert(g.id.clone());
        } else if let Some(master) = g.series() {
            out.masters.insert(master.to_string());
        } else if !g.is_complete() || g.transaction_id.as_deref().is_some_and(|t| t.starts_with("cs")) {
            out.reread.insert(g.id.clone());
        } else {
            out.push(wire::to_remote(&g, None)?);
        }
    }
    let mut page = out.finish(p).await?;
    page.next_cursor = Some(cursor);
    Ok(Some(page))
}

/// Events gathered from a listing, plus ids to read whole.
#[derive(Default)]
struct Collected {
    events: Vec<RemoteEvent>,
    removed: BTreeSet<String>,
    masters: BTreeSet<String>,
    reread: BTreeSet<String>,
}

impl Collected {
    fn push(&mut self, ev: RemoteEvent) {
        // Delta may replay an item; the last one wins.
        self.events.retain(|e| e.id != ev.id);
        self.events.push(ev);
    }

    async fn finish(mut self, p: &OutlookProvider) -> Result<EventPage, ProviderError> {
        let ids: Vec<String> = self.masters.iter().chain(self.reread.iter()).cloned().collect();
        for id in ids {
            if self.events.iter().any(|e| e.id == id) {
                continue;
            }
            match events::get(p, &id).await? {
                Some(ev) => self.push(ev),
                // Changed, then deleted before we looked.
                None => {
                    self.removed.insert(id);
                }
            }
        }
        self.removed.retain(|id| !self.events.iter().any(|e| &e.id == id));
        Ok(EventPage { events: self.events, removed: self.removed.into_iter().collect(), ..EventPage::default() })
    }
}
