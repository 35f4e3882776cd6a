//! Calsync's own CalDAV calendar (`calendarId: auto`): `MKCALENDAR` (RFC 4791 §5.3.1) of a
//! collection at a fixed path under the calendar home.
//!
//! Owns: that path (`COLLECTION`), which is the marker: the name cannot be taken twice, so a
//! second or racing create fails and means "exists" (the server answers 405 per RFC 4918
//! §9.3.1, or 403/409 with `DAV:resource-must-be-null`; whatever it says, a collection then
//! found at the path is ours). Must not touch events or the find/create/converge rule.

use reqwest::{Method, Url};

use super::CaldavProvider;
use super::discovery;
use super::http::{CT, XML, classify};
use crate::providers::dedicated::DEDICATED_NAME;
use crate::providers::{DedicatedCalendar, MadeCalendar, ProviderError};
use crate::resources::CalendarInfo;

/// The collection's name under the calendar home.
pub const COLLECTION: &str = "getitdone-calsync/";

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn mkcalendar_body(description: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:set>
    <D:prop>
      <D:displayname>{}</D:displayname>
      <C:calendar-description>{}</C:calendar-description>
      <C:supported-calendar-component-set><C:comp name="VEVENT"/></C:supported-calendar-component-set>
    </D:prop>
  </D:set>
</C:mkcalendar>"#,
        xml_escape(DEDICATED_NAME),
        xml_escape(description)
    )
}

impl CaldavProvider {
    /// The calendar home (discovered once per connection and cached).
    async fn home(&self) -> Result<Url, ProviderError> {
        if let Some(h) = self.conn.home.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(h);
        }
        let home = discovery::find_home(self.client(), &self.conn.base).await?;
        *self.conn.home.lock().unwrap_or_else(|e| e.into_inner()) = Some(home.url.clone());
        Ok(home.url)
    }

    async fn own_collection(&self) -> Result<Url, ProviderError> {
        let home = self.home().await?;
        home.join(COLLECTION).map_err(|e| ProviderError::Invalid {
            message: format!("cannot name calsync's calendar under the calendar home {home}: {e}"),
        })
    }
}

pub async fn dedicated(p: &CaldavProvider) -> Result<Vec<DedicatedCalendar>, ProviderError> {
    let own = p.own_collection().await?;
    let home = p.home().await?;
    let cols = discovery::list_calendars(p.client(), &home).await?;
    Ok(cols
        .into_iter()
        .filter(|c| c.url.path() == own.path())
        .map(|c| DedicatedCalendar {
            info: CalendarInfo {
                id: p.calendar_id(&c.url),
                name: c.name,
                primary: false,
                writable: c.writable && c.events,
            },
            stamp: None,
        })
        .collect())
}

pub async fn create(p: &CaldavProvider, description: &str) -> Result<MadeCalendar, ProviderError> {
    let url = p.own_collection().await?;
    let method =
        Method::from_bytes(b"MKCALENDAR").map_err(|_| ProviderError::Invalid { message: "MKCALENDAR".into() })?;
    let resp = p.client().send(method, &url, &[(CT, XML)], Some(&mkcalendar_body(description))).await?;
    let what = format!("creating calendar {DEDICATED_NAME:?} at {}", url.path());
    match resp.status.as_u16() {
        201 => {
            let info =
                CalendarInfo { id: p.calendar_id(&url), name: DEDICATED_NAME.into(), primary: false, writable: true };
            Ok(MadeCalendar::New(DedicatedCalendar { info, stamp: None }))
        }
        // Taken: an earlier or a racing create made it. Servers word this differently, so
        // believe the listing, not the status.
        403 | 405 | 409 if dedicated(p).await?.iter().any(|c| c.info.id == p.calendar_id(&url)) => {
            Ok(MadeCalendar::Exists)
        }
        _ => Err(classify(&resp, &what, p.client().username())),
    }
}

pub async fn delete(p: &CaldavProvider, id: &str) -> Result<(), ProviderError> {
    let own = p.own_collection().await?;
    let url = p.collection(id)?;
    // Only ever our fixed collection: never a user's calendar, whatever the caller passes.
    if url.path() != own.path() {
        return Err(ProviderError::Invalid { message: format!("calsync only deletes its own calendar, not {id:?}") });
    }
    let resp = p.client().send(Method::DELETE, &url, &[], None).await?;
    match resp.status.as_u16() {
        200 | 204 | 404 => Ok(()),
        _ => Err(classify(&resp, &format!("deleting calendar {id}"), p.client().username())),
    }
}
