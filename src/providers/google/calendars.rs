//! Calsync's own Google calendar (`calendarId: auto`): `calendars.insert`, the calendar list
//! filtered by our marker, `calendars.delete`.
//!
//! Owns: where the marker lives on Google (the calendar's `description`, since calendars have
//! no extended properties; the calendar list returns it). Must not touch events or the
//! find/create/converge rule (`providers::dedicated`).
//!
//! `calendars.insert` needs the `calendar`, `calendar.calendars` or `calendar.app.created`
//! scope; calsync's default grant has none of them, so the OAuth start with
//! `dedicated_calendar: true` asks for `calendar.app.created` too.

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::client::{classify, parse};
use super::{GoogleProvider, MAX_PAGES, api_url};
use crate::providers::dedicated::{DEDICATED_NAME, parse_marker};
use crate::providers::{DedicatedCalendar, MadeCalendar, ProviderError};
use crate::resources::CalendarInfo;

/// The fields of a calendarList entry or a Calendar resource this file reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GCal {
    id: String,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    access_role: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GCalList {
    #[serde(default)]
    items: Vec<GCal>,
    #[serde(default)]
    next_page_token: Option<String>,
}

fn ours(c: GCal) -> Option<DedicatedCalendar> {
    let stamp = parse_marker(c.description.as_deref()?)?;
    // Only a calendar the account owns can be ours (a shared copy of someone else's is not).
    if c.access_role.as_deref().is_some_and(|r| r != "owner") {
        return None;
    }
    let name = c.summary.unwrap_or_else(|| DEDICATED_NAME.to_string());
    Some(DedicatedCalendar { info: CalendarInfo { id: c.id, name, primary: false, writable: true }, stamp })
}

pub async fn dedicated(p: &GoogleProvider) -> Result<Vec<DedicatedCalendar>, ProviderError> {
    let what = "looking for calsync's own calendar in the calendar list";
    let mut found = Vec::new();
    let mut page_token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut url = api_url(&p.base, &["users", "me", "calendarList"])?;
        url.query_pairs_mut().append_pair("maxResults", "250").append_pair("minAccessRole", "owner");
        if let Some(t) = &page_token {
            url.query_pairs_mut().append_pair("pageToken", t);
        }
        let resp = p.client().send(Method::GET, &url, None, None).await?;
        if resp.status.as_u16() != 200 {
            return Err(classify(&resp, what));
        }
        let page: GCalList = parse(&resp, what)?;
        found.extend(page.items.into_iter().filter_map(ours));
        page_token = page.next_page_token.filter(|t| !t.is_empty());
        if page_token.is_none() {
            return Ok(found);
        }
    }
    Err(ProviderError::Invalid {
        message: format!("Google's calendar list did not end after {MAX_PAGES} pages; not following it further"),
    })
}

pub async fn create(p: &GoogleProvider, description: &str) -> Result<MadeCalendar, ProviderError> {
    let what = format!("creating calendar {DEDICATED_NAME:?}");
    let url = api_url(&p.base, &["calendars"])?;
    let body = json!({ "summary": DEDICATED_NAME, "description": description });
    let resp = p.client().send(Method::POST, &url, None, Some(&body)).await?;
    match resp.status.as_u16() {
        200 | 201 => {
            let c: GCal = parse(&resp, &what)?;
            let id = c.id.clone();
            // The answer is the Calendar resource (no accessRole): the creator owns it.
            let made = ours(GCal { access_role: None, ..c }).unwrap_or(DedicatedCalendar {
                info: CalendarInfo { id, name: DEDICATED_NAME.into(), primary: false, writable: true },
                stamp: parse_marker(description).flatten(),
            });
            Ok(MadeCalendar::New(made))
        }
        _ => Err(classify(&resp, &what)),
    }
}

pub async fn delete(p: &GoogleProvider, id: &str) -> Result<(), ProviderError> {
    if id.is_empty() || id == "primary" {
        return Err(ProviderError::Invalid { message: format!("calsync never deletes calendar {id:?}") });
    }
    let url = api_url(&p.base, &["calendars", id])?;
    let resp = p.client().send(Method::DELETE, &url, None, None).await?;
    match resp.status.as_u16() {
        200 | 204 | 404 | 410 => Ok(()),
        _ => Err(classify(&resp, &format!("deleting the extra calendar {id}"))),
    }
}
