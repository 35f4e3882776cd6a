//! Busy time from Google's `freeBusy.query` (POST /freeBusy): only busy spans, no titles, so it
//! needs only the narrow free/busy scope and honours Google's own rules (transparent events,
//! declined invitations and cancelled events are free there).
//!
//! Limits: at most 50 calendars a call (`calendarExpansionMax`), and a time range Google caps
//! without documenting it (Cal.com reports about 90 days): requests are cut into chunks of
//! `MAX_CALENDARS` calendars and `CHUNK_DAYS` days. Times are always sent with an offset (UTC),
//! since a `timeZone` with offset-less times is a 400. A calendar Google answers with `errors`
//! (notFound, internalError...) fails the whole answer: calsync must not call it free.
//!
//! Owns: the request, the chunking and reading the answer. Must not touch events.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::client::{classify, parse};
use super::{GoogleProvider, api_url};
use crate::providers::busy::BusyQuery;
use crate::providers::{ProviderError, Window};

/// Google's `calendarExpansionMax` maximum.
pub const MAX_CALENDARS: usize = 50;
/// Days per request: below the ~90-day cap Google enforces (undocumented, so with a margin).
pub const CHUNK_DAYS: i64 = 60;

#[derive(Deserialize, Default)]
struct Answer {
    #[serde(default)]
    calendars: HashMap<String, CalendarBusy>,
}

#[derive(Deserialize, Default)]
struct CalendarBusy {
    #[serde(default)]
    busy: Vec<Span>,
    #[serde(default)]
    errors: Vec<CalendarError>,
}

#[derive(Deserialize)]
struct Span {
    start: String,
    end: String,
}

#[derive(Deserialize)]
struct CalendarError {
    #[serde(default)]
    reason: String,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn instant(s: &str) -> Result<DateTime<Utc>, ProviderError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|_| ProviderError::Transient {
        message: format!("Google's free/busy answer has an unreadable time {s:?}; will retry"),
    })
}

/// `window` cut into consecutive pieces of at most `CHUNK_DAYS`.
pub fn chunks(window: Window) -> Vec<Window> {
    let mut out = Vec::new();
    let mut from = window.from;
    while from < window.to {
        let to = (from + Duration::days(CHUNK_DAYS)).min(window.to);
        out.push(Window { from, to });
        from = to;
    }
    out
}

pub async fn busy(p: &GoogleProvider, q: &BusyQuery) -> Result<Vec<Window>, ProviderError> {
    let url = api_url(&p.base, &["freeBusy"])?;
    let mut out = Vec::new();
    for part in chunks(q.window) {
        for calendars in q.calendars.chunks(MAX_CALENDARS) {
            let items: Vec<_> = calendars.iter().map(|c| json!({ "id": c })).collect();
            let body = json!({
                "timeMin": rfc3339(part.from),
                "timeMax": rfc3339(part.to),
                "timeZone": "UTC",
                "calendarExpansionMax": MAX_CALENDARS,
                "items": items,
            });
            let what = format!("reading free/busy of {} calendar(s)", calendars.len());
            let resp = p.client().send(Method::POST, &url, None, Some(&body)).await?;
            if resp.status.as_u16() != 200 {
                return Err(classify(&resp, &what));
            }
            let answer: Answer = parse(&resp, &what)?;
            for id in calendars {
                let Some(cal) = answer.calendars.get(id) else {
                    return Err(ProviderError::Transient {
                        message: format!("Google's free/busy answer left out calendar {id}; will retry"),
                    });
                };
                if let Some(e) = cal.errors.first() {
                    let message = format!("Google cannot tell the free/busy time of calendar {id} ({})", e.reason);
                    return Err(match e.reason.as_str() {
                        "notFound" => ProviderError::NotFound { message },
                        "internalError" | "backendError" => ProviderError::Transient { message },
                        _ => ProviderError::Invalid { message },
                    });
                }
                for s in &cal.busy {
                    out.push(Window { from: instant(&s.start)?, to: instant(&s.end)? });
                }
            }
        }
    }
    Ok(out)
}
