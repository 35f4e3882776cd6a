//! Busy time from Microsoft Graph: `calendarView` over the window (Graph expands series into
//! their occurrences and exceptions itself) with only the fields free/busy needs. `getSchedule`
//! is not used: it is not available to personal Microsoft accounts, and calendarView answers
//! every account the same way.
//!
//! Busy: `showAs` busy, tentative, oof and unknown (a value Graph may add later counts as busy:
//! the safe side). Free: `showAs` free and workingElsewhere, `isCancelled`, and invitations the
//! account declined (`responseStatus.response = declined`).
//!
//! Owns: that request and reading its items. Must not touch writes or the sync listing.

use serde::Deserialize;

use super::client::classify;
use super::wire::{DateTimeTimeZone, event_time};
use super::{OutlookProvider, PAGE, PREFER_PAGED};
use crate::providers::busy::{BusyQuery, clip, span};
use crate::providers::{ProviderError, Window};

/// The fields asked for: nothing personal (no subject or body) is read to compute busy time.
const SELECT: &str = "showAs,start,end,isAllDay,isCancelled,responseStatus";

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Item {
    #[serde(default)]
    show_as: Option<String>,
    start: Option<DateTimeTimeZone>,
    end: Option<DateTimeTimeZone>,
    #[serde(default)]
    is_all_day: Option<bool>,
    #[serde(default)]
    is_cancelled: Option<bool>,
    #[serde(default)]
    response_status: Option<ResponseStatus>,
}

#[derive(Deserialize, Debug)]
struct ResponseStatus {
    #[serde(default)]
    response: Option<String>,
}

impl Item {
    fn is_busy(&self) -> bool {
        let free_show = matches!(self.show_as.as_deref(), Some("free" | "workingElsewhere"));
        let declined = self.response_status.as_ref().and_then(|r| r.response.as_deref()) == Some("declined");
        !free_show && !declined && !self.is_cancelled.unwrap_or(false)
    }
}

fn iso(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub async fn busy(p: &OutlookProvider, q: &BusyQuery) -> Result<Vec<Window>, ProviderError> {
    let mut out = Vec::new();
    let (from, to, top) = (iso(q.window.from), iso(q.window.to), PAGE.to_string());
    for calendar in &q.calendars {
        let mut path = OutlookProvider::calendar_path(calendar);
        path.push("calendarView");
        let query =
            [("startDateTime", from.as_str()), ("endDateTime", to.as_str()), ("$select", SELECT), ("$top", &top)];
        let what = format!("reading busy time of calendar {calendar}");
        let items: Vec<Item> = match p.pages(p.graph.url(&path, &query), &[PREFER_PAGED], &what).await? {
            Ok((items, _)) => items,
            Err(resp) => return Err(classify(&resp, &what)),
        };
        for item in items.iter().filter(|i| i.is_busy()) {
            let (Some(s), Some(e)) = (&item.start, &item.end) else { continue };
            let all_day = item.is_all_day.unwrap_or(false);
            let w = span(&event_time(s, all_day, None)?, &event_time(e, all_day, None)?, q.zone);
            out.extend(clip(w, &q.window));
        }
    }
    Ok(out)
}
