//! Writing single Google events: idempotent insert under our key (409 `duplicate` → adopt,
//! un-cancelling a deleted one), versioned patch and delete (`If-Match`).
//!
//! Owns: which answers of those requests mean "exists", "conflict" and "gone". Must not touch
//! listing, JSON details (see `wire`) or HTTP details (see `client`).

use reqwest::Method;
use serde_json::{Value, json};

use super::client::{classify, parse};
use super::wire::{GEvent, Mode, to_body, to_remote};
use super::{GoogleProvider, series};
use crate::providers::{Created, EventData, ProviderError, RemoteEvent};

fn gone(id: &str, calendar: &str) -> ProviderError {
    ProviderError::NotFound { message: format!("event {id} does not exist in Google calendar {calendar}") }
}

pub async fn create(
    p: &GoogleProvider,
    calendar: &str,
    key: &str,
    event: &EventData,
) -> Result<Created, ProviderError> {
    let url = p.events_url(calendar)?;
    let body = to_body(event, Some(key), Mode::Insert);
    let resp = p.client().send_event(Method::POST, &url, None, Some(&body)).await?;
    let what = || format!("creating event {key} in {calendar}");
    match resp.status.as_u16() {
        200 | 201 => {
            let ev = to_remote(parse::<GEvent>(&resp, &what())?)?;
            let ev = series::apply_moves(p, calendar, key, event, ev).await?;
            tracing::debug!(calendar, key, "google event created");
            Ok(Created::New(ev))
        }
        // The id exists: an earlier attempt made it (Google keeps deleted events as cancelled,
        // so this also answers a re-create after a delete). Adopt it, never make a second one.
        409 => match p.fetch(calendar, key).await? {
            None => Err(ProviderError::Transient {
                message: format!("event {key} exists in {calendar} (409) but cannot be read yet; will retry"),
            }),
            Some(ev) if ev.cancelled => {
                tracing::debug!(calendar, key, "google event was deleted; restoring it");
                let restored = restore(p, calendar, key, ev.etag.as_deref(), event).await?;
                Ok(Created::Existing(restored))
            }
            // The same content (a crash after the insert): its moved occurrences may not have
            // been written yet. Other content is the engine's to update, moves included.
            Some(ev) if ev.marker.as_ref().is_some_and(|m| m.hash == event.marker.hash) => {
                Ok(Created::Existing(series::apply_moves(p, calendar, key, event, ev).await?))
            }
            Some(ev) => Ok(Created::Existing(ev)),
        },
        _ => Err(classify(&resp, &what())),
    }
}

/// Patch a cancelled event back to `confirmed` with our content.
async fn restore(
    p: &GoogleProvider,
    calendar: &str,
    id: &str,
    etag: Option<&str>,
    event: &EventData,
) -> Result<RemoteEvent, ProviderError> {
    let url = p.event_url(calendar, id)?;
    let mut body = to_body(event, None, Mode::Patch);
    if let Value::Object(m) = &mut body {
        m.insert("status".into(), json!("confirmed"));
    }
    let resp = p.client().send_event(Method::PATCH, &url, etag, Some(&body)).await?;
    let what = || format!("restoring deleted event {id} in {calendar}");
    match resp.status.as_u16() {
        200 => to_remote(parse::<GEvent>(&resp, &what())?),
        // Changed between our read and the patch: read it again on the next attempt.
        412 => Err(ProviderError::Transient {
            message: format!("deleted event {id} in {calendar} changed while it was being restored; will retry"),
        }),
        _ => Err(classify(&resp, &what())),
    }
}

pub async fn update(
    p: &GoogleProvider,
    calendar: &str,
    id: &str,
    etag: Option<&str>,
    event: &EventData,
) -> Result<RemoteEvent, ProviderError> {
    let url = p.event_url(calendar, id)?;
    let etag = match etag {
        Some(e) => Some(e.to_string()),
        None => {
            // No version given: take the current one, but only for our own event (DESIGN: never
            // overwrite an event we do not own), and still send If-Match so a concurrent edit is
            // not lost.
            let current = p.fetch(calendar, id).await?.filter(|e| !e.cancelled).ok_or_else(|| gone(id, calendar))?;
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
    let body = to_body(event, None, Mode::Patch);
    let resp = p.client().send_event(Method::PATCH, &url, etag.as_deref(), Some(&body)).await?;
    let what = || format!("updating event {id} in {calendar}");
    match resp.status.as_u16() {
        200 => {
            let ev = to_remote(parse::<GEvent>(&resp, &what())?)?;
            let ev = series::apply_moves(p, calendar, id, event, ev).await?;
            tracing::debug!(calendar, id, "google event updated");
            Ok(ev)
        }
        404 | 410 => Err(gone(id, calendar)),
        // If-Match fails both when the event changed and when it was deleted: tell them apart.
        412 => match p.fetch(calendar, id).await? {
            None => Err(gone(id, calendar)),
            Some(cur) if cur.cancelled => Err(gone(id, calendar)),
            Some(cur) => Err(ProviderError::Conflict {
                message: format!(
                    "event {id} was changed in the calendar (version {} is not {})",
                    cur.etag.as_deref().unwrap_or("?"),
                    etag.as_deref().unwrap_or("?")
                ),
            }),
        },
        _ => Err(classify(&resp, &what())),
    }
}

pub async fn delete(p: &GoogleProvider, calendar: &str, id: &str, etag: Option<&str>) -> Result<(), ProviderError> {
    let url = p.event_url(calendar, id)?;
    let resp = p.client().send_event(Method::DELETE, &url, etag, None).await?;
    match resp.status.as_u16() {
        200 | 202 | 204 => {
            tracing::debug!(calendar, id, "google event deleted");
            Ok(())
        }
        // Already gone (410 `deleted` for a cancelled event) is success.
        404 | 410 => Ok(()),
        412 => match p.fetch(calendar, id).await? {
            None => Ok(()),
            Some(cur) if cur.cancelled => Ok(()),
            Some(_) => Err(ProviderError::Conflict {
                message: format!("event {id} was changed in the calendar since calsync last saw it; not deleting it"),
            }),
        },
        _ => Err(classify(&resp, &format!("deleting event {id} in {calendar}"))),
    }
}
