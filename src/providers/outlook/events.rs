//! Single-event calls on Graph: idempotent create (look up by key, then POST with
//! `transactionId`), versioned PATCH and DELETE (`If-Match` on `@odata.etag`), GET and the
//! lookup by our key property.
//!
//! Owns: which answers mean "exists", "conflict", "gone". Must not touch listing.

use reqwest::Method;

use super::client::classify;
use super::wire::{self, GraphEvent};
use super::{OutlookProvider, PREFER, Page};
use crate::providers::{Created, EventData, ProviderError, RemoteEvent};

pub async fn get(p: &OutlookProvider, id: &str) -> Result<Option<RemoteEvent>, ProviderError> {
    let url = p.graph.url(&["me", "events", id], &[("$expand", &wire::expand())]);
    let resp = p.graph.send_event(Method::GET, &url, &[PREFER], None).await?;
    match resp.status.as_u16() {
        200 => wire::to_remote(&resp.parse::<GraphEvent>("reading an event")?, None).map(Some),
        _ => match classify(&resp, &format!("reading event {id}")) {
            ProviderError::NotFound { .. } => Ok(None),
            e => Err(e),
        },
    }
}

pub async fn find_by_key(p: &OutlookProvider, calendar: &str, key: &str) -> Result<Option<RemoteEvent>, ProviderError> {
    let mut path = OutlookProvider::calendar_path(calendar);
    path.push("events");
    let filter = wire::key_filter(key);
    let url = p.graph.url(&path, &[("$filter", &filter), ("$expand", &wire::expand())]);
    let what = format!("looking up event {key} in calendar {calendar}");
    let resp = p.graph.send_event(Method::GET, &url, &[PREFER], None).await?;
    if resp.status.as_u16() != 200 {
        return Err(classify(&resp, &what));
    }
    let page: Page<GraphEvent> = resp.parse(&what)?;
    if page.value.len() > 1 {
        // Only possible if something outside calsync copied our properties; adopt the first,
        // never touch the others.
        tracing::warn!(calendar, key, found = page.value.len(), "several outlook events carry one calsync key");
    }
    page.value.first().map(|g| wire::to_remote(g, None)).transpose()
}

pub async fn create(
    p: &OutlookProvider,
    calendar: &str,
    key: &str,
    event: &EventData,
) -> Result<Created, ProviderError> {
    // Graph does not document what a repeated transactionId does, so an earlier attempt
    // (answer lost, process crashed before recording it) is found by our key first.
    if let Some(existing) = find_by_key(p, calendar, key).await? {
        tracing::debug!(calendar, key, id = %existing.id, "outlook event exists already; adopting it");
        // The same content (a crash after the POST): its occurrences may not have been changed
        // yet. Other content is the engine's to update, occurrences included.
        if existing.marker.as_ref().is_some_and(|m| m.hash == event.marker.hash) {
            let id = existing.id.clone();
            return Ok(Created::Existing(super::series::apply(p, &id, event, existing).await?));
        }
        return Ok(Created::Existing(existing));
    }
    let body = wire::create_body(event, key)?;
    let mut path = OutlookProvider::calendar_path(calendar);
    path.push("events");
    let url = p.graph.url(&path, &[]);
    let resp = p.graph.send_event(Method::POST, &url, &[PREFER], Some(&body)).await?;
    let what = format!("creating event {key} in calendar {calendar}");
    match resp.status.as_u16() {
        200 | 201 => {
            let g: GraphEvent = resp.parse(&what)?;
            // The answer has no extended properties unless expanded; they are what we sent.
            let ev = wire::to_remote(&g, Some(&event.marker))?;
            let ev = super::series::apply(p, &ev.id.clone(), event, ev).await?;
            tracing::debug!(calendar, key, id = %ev.id, "outlook event created");
            Ok(Created::New(ev))
        }
        _ => match classify(&resp, &what) {
            // The lookup just before was allowed, so consent is intact: this calendar does not
            // take writes from this account (a shared or read-only calendar). Reconnecting
            // would not help; choosing another calendar does.
            ProviderError::Revoked { .. } => Err(ProviderError::Invalid {
                message: format!(
                    "Microsoft Graph refused to create event {key} in calendar {calendar} (403): the calendar is read-only for this account; choose a writable calendar"
                ),
            }),
            e => Err(e),
        },
    }
}

pub async fn update(
    p: &OutlookProvider,
    id: &str,
    etag: Option<&str>,
    event: &EventData,
) -> Result<RemoteEvent, ProviderError> {
    let etag = match etag {
        Some(e) => e.to_string(),
        None => {
            // No version given: take the current one, but only for our own event (never
            // overwrite an event we do not own), and still send If-Match so a concurrent edit
            // is not lost.
            let current = get(p, id)
                .await?
                .ok_or_else(|| ProviderError::NotFound { message: format!("Outlook event {id} does not exist") })?;
            if current.marker.as_ref().is_none_or(|m| m.uid != event.marker.uid) {
                return Err(ProviderError::Invalid {
                    message: format!(
                        "Outlook event {id} was not created by calsync for this task; refusing to overwrite it"
                    ),
                });
            }
            current.etag.ok_or_else(|| ProviderError::Invalid {
                message: format!("Microsoft Graph returned event {id} without @odata.etag"),
            })?
        }
    };
    let body = wire::patch_body(event)?;
    let url = p.graph.url(&["me", "events", id], &[]);
    let resp = p.graph.send_event(Method::PATCH, &url, &[PREFER, ("if-match", &etag)], Some(&body)).await?;
    let what = format!("updating Outlook event {id}");
    match resp.status.as_u16() {
        200 => {
            let ev = wire::to_remote(&resp.parse::<GraphEvent>(&what)?, Some(&event.marker))?;
            super::series::apply(p, id, event, ev).await
        }
        412 => Err(ProviderError::Conflict {
            message: format!("Outlook event {id} was changed in the calendar since calsync last saw it (412)"),
        }),
        _ => Err(classify(&resp, &what)),
    }
}

pub async fn delete(p: &OutlookProvider, id: &str, etag: Option<&str>) -> Result<(), ProviderError> {
    let url = p.graph.url(&["me", "events", id], &[]);
    let mut headers = Vec::new();
    if let Some(e) = etag {
        headers.push(("if-match", e));
    }
    let resp = p.graph.send_event(Method::DELETE, &url, &headers, None).await?;
    match resp.status.as_u16() {
        200 | 202 | 204 => Ok(()),
        412 => Err(ProviderError::Conflict {
            message: format!(
                "Outlook event {id} was changed in the calendar since calsync last saw it; not deleting it"
            ),
        }),
        _ => match classify(&resp, &format!("deleting Outlook event {id}")) {
            // Already gone is success.
            ProviderError::NotFound { .. } => Ok(()),
            e => Err(e),
        },
    }
}
