//! Busy time of one account: what `Provider::busy` answers, and the listing-based default.
//!
//! What counts as busy, the same for every provider (DESIGN §8, issue 17): an event's occurrences
//! in the window, except cancelled ones, transparent/free ones (Google `transparency:
//! transparent`, Graph `showAs` free or workingElsewhere, iCalendar `TRANSP:TRANSPARENT`), and
//! ones the account declined. calsync's own task blocks count by the same flag as everyone's
//! events: a block written free is not busy, one written busy is (Google's freeBusy cannot tell
//! events apart, so a rule that depended on the marker could not hold for Google). All-day
//! events count from midnight to midnight in the query's zone (the user's) when they are busy.
//!
//! Owns: `BusyQuery`, turning event times into busy spans, and the default (listing) answer.
//! Must not touch scheduling decisions (`scheduling`) or merging across connections (the API).

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::{EventTime, Provider, ProviderError, RemoteEvent, Window, recurrence};

/// What to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusyQuery {
    /// Calendar ids of this account to read.
    pub calendars: Vec<String>,
    pub window: Window,
    /// The user's zone: where an all-day date begins and ends.
    pub zone: Tz,
    /// The account's e-mail, when known: whose `PARTSTAT=DECLINED` makes an event free.
    pub account: Option<String>,
}

/// Midnight of `d` in `zone` (a midnight in a DST gap: the first instant after it).
pub fn local_midnight(d: NaiveDate, zone: Tz) -> DateTime<Utc> {
    let naive = d.and_time(NaiveTime::MIN);
    zone.from_local_datetime(&naive)
        .earliest()
        .or_else(|| zone.from_local_datetime(&(naive + Duration::hours(1))).earliest())
        .map_or_else(|| naive.and_utc(), |t| t.with_timezone(&Utc))
}

/// The span an event occupies: dates from local midnight to local midnight in `zone`.
pub fn span(start: &EventTime, end: &EventTime, zone: Tz) -> Window {
    let at = |t: &EventTime| match t {
        EventTime::Date(d) => local_midnight(*d, zone),
        EventTime::DateTime { utc, .. } => *utc,
    };
    Window { from: at(start), to: at(end) }
}

/// `w` cut to `window`; `None` when nothing of it is inside.
pub fn clip(w: Window, window: &Window) -> Option<Window> {
    let c = Window { from: w.from.max(window.from), to: w.to.min(window.to) };
    (c.from < c.to).then_some(c)
}

/// The busy spans of `ev` in `window` (a series expanded, exceptions applied). A series the
/// rule engine cannot read is busy over its listed first occurrence only, and logged.
pub fn event_spans(ev: &RemoteEvent, window: &Window, zone: Tz) -> Vec<Window> {
    if ev.cancelled {
        return Vec::new();
    }
    // A day of slack: an all-day occurrence in a zone east of UTC begins before its UTC date.
    let wide = Window { from: window.from - Duration::days(1), to: window.to + Duration::days(1) };
    let occurrences = if ev.recurrence.is_empty() {
        vec![(ev.start.clone(), ev.end.clone())]
    } else {
        match recurrence::occurrences(ev, &wide) {
            Ok(o) => o,
            Err(e) => {
                tracing::info!(id = %ev.id, error = %e, "recurring event not expandable; counting its first occurrence");
                vec![(ev.start.clone(), ev.end.clone())]
            }
        }
    };
    occurrences.iter().filter_map(|(s, e)| clip(span(s, e, zone), window)).collect()
}

/// The default `Provider::busy`: list each calendar in the window and count every live event
/// (the neutral model carries no free/busy flag, so this is the conservative answer; the
/// Google, Graph and CalDAV providers read the flags).
pub async fn from_listing<P: Provider + ?Sized>(p: &P, q: &BusyQuery) -> Result<Vec<Window>, ProviderError> {
    let mut out = Vec::new();
    for calendar in &q.calendars {
        let page = p.list_window(calendar, q.window).await?;
        for mut ev in page.events.into_iter().filter(|e| !e.cancelled) {
            // As `recurrence::with_exceptions`, which takes a `dyn Provider` this cannot be.
            if !ev.recurrence.is_empty() {
                let found = p.series_exceptions(calendar, &ev, q.window).await?;
                ev.exceptions = recurrence::merge_exceptions(&ev.start, &ev.recurrence, found);
            }
            out.extend(event_spans(&ev, &q.window, q.zone));
        }
    }
    Ok(out)
}
