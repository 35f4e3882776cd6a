//! Writing and reading single CalDAV resources: idempotent create (`If-None-Match: *`),
//! versioned update and delete (`If-Match`), and GET.
//!
//! Owns: the status handling of those requests (which answers mean "exists", "conflict",
//! "gone"), including the variants servers differ on (412 vs 409/403 `no-uid-conflict`).
//! Must not touch listing or discovery.

use chrono::Utc;
use reqwest::{Method, Url};

use super::http::{CT, DavResponse, ICS, classify};
use super::ical::{ParsedEvent, parse_ics, to_ics, uid_for};
use super::listing;
use super::xml::preconditions;
use super::{CaldavProvider, id_from_href};
use crate::providers::{Created, EventData, ProviderError, RemoteEvent};

/// A resource's event as a `RemoteEvent`.
pub fn remote(id: String, url: &Url, etag: Option<String>, p: ParsedEvent) -> RemoteEvent {
    RemoteEvent {
        id,
        etag,
        link: Some(url.to_string()),
        title: p.title,
        description: p.description,
        category: p.category,
        start: p.start,
        end: p.end,
        zone: p.zone,
        recurrence: p.recurrence,
        marker: p.marker,
        cancelled: p.cancelled,
        created: p.created,
        exceptions: p.exceptions,
    }
}

/// GET a resource; `None` when it does not exist.
pub async fn fetch(p: &CaldavProvider, url: &Url) -> Result<Option<RemoteEvent>, ProviderError> {
    let resp = p.client().send(Method::GET, url, &[("Accept", "text/calendar")], None).await?;
    match resp.status.as_u16() {
        200 => {
            let parsed = parse_ics(&resp.text())?;
            let id = id_from_href(url.path()).unwrap_or_default();
            Ok(Some(remote(id, url, resp.header("etag").map(str::to_string), parsed)))
        }
        404 | 410 => Ok(None),
        _ => Err(classify(&resp, &format!("reading {url}"), p.client().username())),
    }
}

/// The event we just wrote: from our own bytes when the server returned a strong ETag (it
/// stored them unchanged, RFC 4791 §5.3.4), else read back.
async fn written(
    p: &CaldavProvider,
    url: &Url,
    id: &str,
    ics: &str,
    resp: &DavResponse,
) -> Result<RemoteEvent, ProviderError> {
    if let Some(etag) = resp.strong_etag() {
        return Ok(remote(id.to_string(), url, Some(etag), parse_ics(ics)?));
    }
    fetch(p, url)
        .await?
        .ok_or_else(|| ProviderError::Transient { message: format!("{url} was written but cannot be read back yet") })
}

fn has_precondition(resp: &DavResponse, name: &str) -> Option<Vec<String>> {
    preconditions(&resp.body).into_iter().find(|(n, _)| n == name).map(|(_, hrefs)| hrefs)
}

pub async fn create(
    p: &CaldavProvider,
    calendar: &str,
    key: &str,
    event: &EventData,
) -> Result<Created, ProviderError> {
    let url = p.resource(calendar, key)?;
    let ics = to_ics(event, Utc::now());
    let resp = p.client().send(Method::PUT, &url, &[(CT, ICS), ("If-None-Match", "*")], Some(&ics)).await?;
    let what = || format!("creating event {key} in {calendar}");
    match resp.status.as_u16() {
        200 | 201 | 204 => {
            let ev = written(p, &url, key, &ics, &resp).await?;
            tracing::debug!(calendar, key, "caldav event created");
            Ok(Created::New(ev))
        }
        // The resource exists: an earlier attempt made it. Adopt it, never write a second one.
        412 => match fetch(p, &url).await? {
            Some(ev) => Ok(Created::Existing(ev)),
            None => Err(ProviderError::Transient {
                message: format!("{url} exists (412) but could not be read; will retry"),
            }),
        },
        // Our UID already lives at another href (RFC 4791 no-uid-conflict; Radicale says 409,
        // others 403): that is our event under another name, so adopt it.
        403 | 409 => match has_precondition(&resp, "no-uid-conflict") {
            Some(hrefs) => {
                // Where it is: the href the server names, else a search by UID.
                let named = match hrefs.first().and_then(|h| url.join(h).ok()) {
                    Some(other) => fetch(p, &other).await?,
                    None => None,
                };
                let found = match named {
                    Some(ev) => Some(ev),
                    None => listing::find_uid(p, &p.collection(calendar)?, &uid_for(event)).await?,
                };
                found.map(Created::Existing).ok_or_else(|| ProviderError::Conflict {
                    message: format!(
                        "the server already holds an event with this event's UID outside this calendar ({})",
                        what()
                    ),
                })
            }
            None => Err(classify(&resp, &what(), p.client().username())),
        },
        _ => Err(classify(&resp, &what(), p.client().username())),
    }
}

pub async fn update(
    p: &CaldavProvider,
    calendar: &str,
    id: &str,
    etag: Option<&str>,
    event: &EventData,
) -> Result<RemoteEvent, ProviderError> {
    let url = p.resource(calendar, id)?;
    let etag = match etag {
        Some(e) => Some(e.to_string()),
        None => {
            // No version given: take the current one, but only for our own event (DESIGN: never
            // overwrite an event we do not own), and still send If-Match so a concurrent edit is
            // not lost.
            let current = fetch(p, &url).await?.ok_or_else(|| ProviderError::NotFound {
                message: format!("event {id} does not exist in {calendar}"),
            })?;
            if current.marker.as_ref().is_none_or(|m| m.uid != event.marker.uid) {
                return Err(ProviderError::Invalid {
                    message: format!(
                        "event {id} in {calendar} was not created by calsync for this task; refusing to overwrite it"
                    ),
                });
            }
            current.etag
        }
    };
    let ics = to_ics(event, Utc::now());
    let mut headers = vec![(CT, ICS)];
    if let Some(e) = etag.as_deref() {
        headers.push(("If-Match", e));
    }
    let resp = p.client().send(Method::PUT, &url, &headers, Some(&ics)).await?;
    match resp.status.as_u16() {
        200 | 201 | 204 => written(p, &url, id, &ics, &resp).await,
        // If-Match fails both when the event changed and when it is gone: tell them apart.
        412 => match fetch(p, &url).await? {
            None => Err(ProviderError::NotFound { message: format!("event {id} does not exist in {calendar}") }),
            Some(cur) => Err(ProviderError::Conflict {
                message: format!(
                    "event {id} was changed in the calendar (version {} is not {})",
                    cur.etag.as_deref().unwrap_or("?"),
                    etag.as_deref().unwrap_or("?")
                ),
            }),
        },
        _ => Err(classify(&resp, &format!("updating event {id} in {calendar}"), p.client().username())),
    }
}

pub async fn delete(p: &CaldavProvider, calendar: &str, id: &str, etag: Option<&str>) -> Result<(), ProviderError> {
    let url = p.resource(calendar, id)?;
    let mut headers = Vec::new();
    if let Some(e) = etag {
        headers.push(("If-Match", e));
    }
    let resp = p.client().send(Method::DELETE, &url, &headers, None).await?;
    match resp.status.as_u16() {
        200 | 202 | 204 => Ok(()),
        // Already gone is success.
        404 | 410 => Ok(()),
        412 => match fetch(p, &url).await? {
            None => Ok(()),
            Some(_) => Err(ProviderError::Conflict {
                message: format!("event {id} was changed in the calendar since calsync last saw it; not deleting it"),
            }),
        },
        _ => Err(classify(&resp, &format!("deleting event {id} in {calendar}"), p.client().username())),
    }
}
