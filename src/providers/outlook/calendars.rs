//! Calsync's own Outlook calendar (`calendarId: auto`): `POST /me/calendars`, the mailbox's
//! calendars filtered by name, `DELETE /me/calendars/{id}`.
//!
//! Owns: how the calendar is recognised on Graph. A Graph calendar has no description or
//! extended property we could list by, so the marker is the name: Exchange keeps calendar
//! (folder) names unique and answers a second create of the same name with 409
//! `ErrorFolderExists`, which makes the create atomic (two racing creators get one calendar;
//! the loser finds it by name). A calendar the user named "Get It Done!" is adopted, which is
//! what they would want. Must not touch events or the find/create/converge rule.

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::OutlookProvider;
use super::client::classify;
use crate::providers::dedicated::DEDICATED_NAME;
use crate::providers::{DedicatedCalendar, MadeCalendar, ProviderError};
use crate::resources::CalendarInfo;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphCal {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    can_edit: bool,
}

fn ours(c: GraphCal) -> Option<DedicatedCalendar> {
    // Exchange compares folder names case-insensitively.
    if !(c.name.trim().eq_ignore_ascii_case(DEDICATED_NAME) && c.can_edit) {
        return None;
    }
    Some(DedicatedCalendar {
        info: CalendarInfo { id: c.id, name: c.name, primary: false, writable: true },
        stamp: None,
    })
}

pub async fn dedicated(p: &OutlookProvider) -> Result<Vec<DedicatedCalendar>, ProviderError> {
    let what = "looking for calsync's own calendar among the mailbox's calendars";
    let url = p.graph.url(&["me", "calendars"], &[]);
    match p.pages::<GraphCal>(url, &[], what).await? {
        Ok((cals, _)) => Ok(cals.into_iter().filter_map(ours).collect()),
        Err(resp) => Err(classify(&resp, what)),
    }
}

pub async fn create(p: &OutlookProvider) -> Result<MadeCalendar, ProviderError> {
    let what = format!("creating calendar {DEDICATED_NAME:?}");
    let url = p.graph.url(&["me", "calendars"], &[]);
    let resp = p.graph.send(Method::POST, &url, &[], Some(&json!({ "name": DEDICATED_NAME }))).await?;
    match resp.status.as_u16() {
        200 | 201 => {
            let c: GraphCal = resp.parse(&what)?;
            let info = CalendarInfo { id: c.id, name: c.name, primary: false, writable: true };
            Ok(MadeCalendar::New(DedicatedCalendar { info, stamp: None }))
        }
        409 if resp.error().0 == "ErrorFolderExists" => Ok(MadeCalendar::Exists),
        _ => Err(classify(&resp, &what)),
    }
}

pub async fn delete(p: &OutlookProvider, id: &str) -> Result<(), ProviderError> {
    let url = p.graph.url(&["me", "calendars", id], &[]);
    let resp = p.graph.send(Method::DELETE, &url, &[], None).await?;
    match resp.status.as_u16() {
        200 | 204 | 404 => Ok(()),
        _ => Err(classify(&resp, &format!("deleting the extra calendar {id}"))),
    }
}
