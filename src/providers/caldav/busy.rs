//! Busy time from a CalDAV calendar: a time-range `calendar-query` for the window (iCloud has no
//! `free-busy-query`, and server-side `expand` is patchy), then each resource read here: series
//! expanded with their EXDATEs and RECURRENCE-ID overrides, and free events dropped.
//!
//! Free: `TRANSP:TRANSPARENT`, `STATUS:CANCELLED`, and events whose ATTENDEE for the account
//! (its e-mail, else a user name that is one) has `PARTSTAT=DECLINED`. An override that is free
//! frees its occurrence; a free master frees its whole series. Floating times are read as UTC
//! (as the sync listing reads them).
//!
//! Owns: that reading (`resource_busy` is pure, for tests). Must not touch writes or cursors.

use chrono_tz::Tz;
use icalendar::parser::Component;

use super::ical_read::read_calendar;

use super::CaldavProvider;
use super::ical::{param, parse_ics, parse_time};
use super::listing::{ical_utc, report_ms};
use super::xml::{CALDAV, calendar_query};
use crate::providers::busy::{BusyQuery, event_spans};
use crate::providers::recurrence::{instant, merge_exceptions};
use crate::providers::{Exception, ProviderError, RemoteEvent, Window};

fn is_free(c: &Component<'_>, account: Option<&str>) -> bool {
    let is =
        |name: &str, value: &str| c.find_prop(name).is_some_and(|p| p.val.as_str().trim().eq_ignore_ascii_case(value));
    if is("TRANSP", "TRANSPARENT") || is("STATUS", "CANCELLED") {
        return true;
    }
    let Some(account) = account else { return false };
    c.properties.iter().filter(|p| p.name == "ATTENDEE").any(|p| {
        let who = p.val.as_str().trim();
        let who = who.strip_prefix("mailto:").or_else(|| who.strip_prefix("MAILTO:")).unwrap_or(who);
        who.eq_ignore_ascii_case(account) && param(p, "PARTSTAT").is_some_and(|s| s.eq_ignore_ascii_case("DECLINED"))
    })
}

/// The busy spans one resource's iCalendar text holds in `window` (unreadable resources: none,
/// logged; one bad event must not hide the others).
pub fn resource_busy(text: &str, account: Option<&str>, window: &Window, zone: Tz) -> Vec<Window> {
    let parsed = match parse_ics(text) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(error = %e, "skipping a resource that is not a readable event");
            return Vec::new();
        }
    };
    let Ok(cal) = read_calendar(text) else { return Vec::new() };
    let events: Vec<&Component<'_>> = cal.components.iter().filter(|c| c.name == "VEVENT").collect();
    let master = events.iter().find(|c| c.find_prop("RECURRENCE-ID").is_none()).or_else(|| events.first());
    if master.is_none_or(|m| is_free(m, account)) {
        return Vec::new();
    }
    let mut exceptions = merge_exceptions(&parsed.start, &parsed.recurrence, parsed.exceptions);
    // A free override frees its occurrence, moved or not.
    for o in events.iter().filter(|c| is_free(c, account)) {
        let Some(Ok(original)) = o.find_prop("RECURRENCE-ID").map(|p| parse_time(p, &cal)) else { continue };
        exceptions.retain(|x| instant(&x.original_start) != instant(&original));
        exceptions.push(Exception::cancelled(original));
    }
    let ev = RemoteEvent {
        id: parsed.uid.unwrap_or_default(),
        etag: None,
        link: None,
        title: String::new(),
        description: None,
        category: None,
        start: parsed.start,
        end: parsed.end,
        zone: parsed.zone,
        recurrence: parsed.recurrence,
        marker: parsed.marker,
        cancelled: false,
        created: None,
        exceptions,
    };
    event_spans(&ev, window, zone)
}

pub async fn busy(p: &CaldavProvider, q: &BusyQuery) -> Result<Vec<Window>, ProviderError> {
    let account = q.account.clone().or_else(|| Some(p.client().username().to_string()).filter(|u| u.contains('@')));
    let body = calendar_query(&ical_utc(q.window.from), &ical_utc(q.window.to));
    let mut out = Vec::new();
    for calendar in &q.calendars {
        let url = p.collection(calendar)?;
        let ms = report_ms(p, &url, "1", &body, &format!("reading busy time in {url}")).await?;
        for r in &ms.responses {
            if let Some(data) = r.prop(CALDAV, "calendar-data") {
                out.extend(resource_busy(&data.text, account.as_deref(), &q.window, q.zone));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "busy_tests.rs"]
mod tests;
