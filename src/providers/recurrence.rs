//! RFC 5545 recurrence on the neutral model: expanding a series (its RRULE/RDATE/EXDATE lines
//! from its first start) into occurrences, DST-correct in the series' IANA zone, and the
//! exceptions (moved or cancelled occurrences) every provider reports the same way.
//!
//! Owns: expansion (on the `rrule` crate), reading EXDATE values as cancelled occurrences,
//! merging a provider's exceptions with them, and "does the series occur in this window".
//! Must not touch wire formats or HTTP: providers hand in `EventTime`s and lines.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use rrule::RRuleSet;

use super::{EventTime, Exception, Provider, ProviderError, RemoteEvent, Window};

/// Most occurrences one expansion returns: a weekly series over 20 years, or a daily one over
/// two and a half; more means the window is far too wide for the rule.
pub const MAX_OCCURRENCES: u16 = 1000;

/// Why a series could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot expand the recurrence: {0}")]
pub struct ExpandError(pub String);

/// One occurrence: its start and end.
pub type Occurrence = (EventTime, EventTime);

fn zone_of(t: &EventTime) -> Option<Tz> {
    match t {
        EventTime::DateTime { zone, .. } => zone.as_deref().and_then(|z| z.parse().ok()),
        EventTime::Date(_) => None,
    }
}

/// The instant an `EventTime` stands for (dates: midnight UTC, as series of dates are expanded).
pub fn instant(t: &EventTime) -> DateTime<Utc> {
    match t {
        EventTime::Date(d) => d.and_time(chrono::NaiveTime::MIN).and_utc(),
        EventTime::DateTime { utc, .. } => *utc,
    }
}

/// A point of the series as an `EventTime` of the same kind as its start (`like`).
pub fn at(utc: DateTime<Utc>, like: &EventTime) -> EventTime {
    match like {
        EventTime::Date(_) => EventTime::Date(utc.date_naive()),
        EventTime::DateTime { zone, .. } => {
            let local = zone_of(like).map(|tz| utc.with_timezone(&tz).naive_local()).unwrap_or_else(|| utc.naive_utc());
            EventTime::DateTime { utc, local, zone: zone.clone() }
        }
    }
}

/// `VALUE=DATE` values as midnight UTC, matching the DTSTART used for a series of dates.
fn date_values_to_utc(head: &str, values: &str) -> String {
    let name = head.split(';').next().unwrap_or(head);
    let values: Vec<String> = values.split(',').map(|v| format!("{}T000000Z", v.trim())).collect();
    format!("{name}:{}", values.join(","))
}

/// The rule set text: a DTSTART from `start` and the lines, each readable by `rrule`.
fn rule_text(start: &EventTime, lines: &[String]) -> String {
    let zone = zone_of(start);
    let mut text = match (start, zone) {
        (EventTime::Date(d), _) => format!("DTSTART:{}T000000Z", d.format("%Y%m%d")),
        (EventTime::DateTime { utc, .. }, Some(tz)) => {
            format!("DTSTART;TZID={}:{}", tz.name(), utc.with_timezone(&tz).format("%Y%m%dT%H%M%S"))
        }
        (EventTime::DateTime { utc, .. }, None) => format!("DTSTART:{}", utc.format("%Y%m%dT%H%M%SZ")),
    };
    for line in lines {
        let line = line.trim();
        let Some((head, values)) = line.split_once(':') else { continue };
        let upper = head.to_ascii_uppercase();
        let name = upper.split(';').next().unwrap_or("");
        let dated = matches!(name, "EXDATE" | "RDATE");
        text.push('\n');
        if dated && start.is_date() && upper.contains("VALUE=DATE") {
            text.push_str(&date_values_to_utc(head, values));
        } else if dated && !upper.contains("TZID=") && !values.trim_end().ends_with('Z') {
            // A floating date-time names the series' own wall-clock time.
            match zone {
                Some(tz) => text.push_str(&format!("{head};TZID={}:{values}", tz.name())),
                None => {
                    let utc: Vec<String> = values.split(',').map(|v| format!("{}Z", v.trim())).collect();
                    text.push_str(&format!("{head}:{}", utc.join(",")));
                }
            }
        } else {
            text.push_str(line);
        }
    }
    text
}

/// The occurrences of the series starting at `start`–`end` with `lines` that overlap `window`
/// (by the rule alone: exceptions are not applied). Times are in the series' zone, so a 09:00
/// weekly series stays at 09:00 local across DST.
pub fn expand(
    start: &EventTime,
    end: &EventTime,
    lines: &[String],
    window: &Window,
) -> Result<Vec<Occurrence>, ExpandError> {
    let set: RRuleSet = rule_text(start, lines).parse().map_err(|e: rrule::RRuleError| ExpandError(e.to_string()))?;
    let length = instant(end) - instant(start);
    let utc = rrule::Tz::UTC;
    // An occurrence starting before the window can still end inside it.
    let set = set
        .after((window.from - length - Duration::days(1)).with_timezone(&utc))
        .before((window.to + Duration::days(1)).with_timezone(&utc));
    let result = set.all(MAX_OCCURRENCES);
    let mut out = Vec::new();
    for d in result.dates {
        let s = d.with_timezone(&Utc);
        let e = s + length;
        if overlaps(s, e, window) {
            out.push((at(s, start), at(e, end)));
        }
    }
    Ok(out)
}

fn overlaps(s: DateTime<Utc>, e: DateTime<Utc>, w: &Window) -> bool {
    s < w.to && (e > w.from || (e == s && s >= w.from))
}

/// The series' occurrences in `window` as they really are: the rule's, minus cancelled ones,
/// moved ones at their new time (a moved occurrence counts where it is now).
pub fn occurrences(ev: &RemoteEvent, window: &Window) -> Result<Vec<Occurrence>, ExpandError> {
    let is_exception = |s: &EventTime| ev.exceptions.iter().any(|x| instant(&x.original_start) == instant(s));
    let mut out: Vec<Occurrence> =
        expand(&ev.start, &ev.end, &ev.recurrence, window)?.into_iter().filter(|(s, _)| !is_exception(s)).collect();
    // A moved occurrence counts where it is now, wherever its original start was.
    for x in ev.exceptions.iter().filter(|x| !x.cancelled) {
        if let (Some(s), Some(e)) = (&x.start, &x.end)
            && overlaps(instant(s), instant(e), window)
        {
            out.push((s.clone(), e.clone()));
        }
    }
    out.sort_by_key(|(s, _)| instant(s));
    Ok(out)
}

/// Does the series occur in `window`? When the rule cannot be expanded here, the provider's own
/// time-range selection is trusted (it listed the series for this window).
pub fn occurs_in(ev: &RemoteEvent, window: &Window) -> bool {
    match occurrences(ev, window) {
        Ok(o) => !o.is_empty(),
        Err(e) => {
            tracing::debug!(id = %ev.id, error = %e, "recurrence not expandable here; trusting the provider's window");
            true
        }
    }
}

/// One EXDATE value as the occurrence start it cancels.
fn exdate_value(value: &str, tzid: Option<&str>, is_date: bool, series: &EventTime) -> Option<EventTime> {
    let v = value.trim();
    if is_date || v.len() == 8 {
        let d = NaiveDate::parse_from_str(v, "%Y%m%d").ok()?;
        return Some(match series {
            EventTime::Date(_) => EventTime::Date(d),
            // A date EXDATE on a timed series cancels that day's occurrence at the series' time.
            EventTime::DateTime { local, .. } => {
                let tz = zone_of(series);
                let naive = d.and_time(local.time());
                let utc = match tz {
                    Some(tz) => tz.from_local_datetime(&naive).earliest()?.with_timezone(&Utc),
                    None => naive.and_utc(),
                };
                at(utc, series)
            }
        });
    }
    let utc = if let Some(u) = v.strip_suffix('Z') {
        NaiveDateTime::parse_from_str(u, "%Y%m%dT%H%M%S").ok()?.and_utc()
    } else {
        let local = NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S").ok()?;
        let tz: Option<Tz> = tzid.and_then(|z| z.trim_matches('"').parse().ok()).or_else(|| zone_of(series));
        match tz {
            Some(tz) => tz.from_local_datetime(&local).earliest()?.with_timezone(&Utc),
            None => local.and_utc(),
        }
    };
    Some(at(utc, series))
}

/// The occurrences the series' EXDATE lines cancel, as exceptions.
pub fn exdate_exceptions(start: &EventTime, lines: &[String]) -> Vec<Exception> {
    let mut out = Vec::new();
    for line in lines {
        let Some((head, values)) = line.trim().split_once(':') else { continue };
        let mut params = head.split(';');
        if !params.next().is_some_and(|n| n.eq_ignore_ascii_case("EXDATE")) {
            continue;
        }
        let (mut tzid, mut is_date) = (None, false);
        for p in params {
            match p.split_once('=') {
                Some((k, v)) if k.eq_ignore_ascii_case("TZID") => tzid = Some(v),
                Some((k, v)) if k.eq_ignore_ascii_case("VALUE") => is_date = v.eq_ignore_ascii_case("DATE"),
                _ => {}
            }
        }
        out.extend(values.split(',').filter_map(|v| exdate_value(v, tzid, is_date, start)).map(Exception::cancelled));
    }
    out
}

/// `found` (a provider's exceptions) plus the EXDATE cancellations of the series, one per
/// original start (the provider's wins), in order of original start.
pub fn merge_exceptions(start: &EventTime, lines: &[String], found: Vec<Exception>) -> Vec<Exception> {
    let mut out = found;
    for x in exdate_exceptions(start, lines) {
        if !out.iter().any(|o| instant(&o.original_start) == instant(&x.original_start)) {
            out.push(x);
        }
    }
    out.sort_by_key(|x| instant(&x.original_start));
    out.dedup_by_key(|x| instant(&x.original_start));
    out
}

/// The EXDATE line that cancels the occurrence starting at `original`: a date for all-day
/// series, the wall-clock time with TZID for zoned ones, UTC otherwise.
pub fn exdate_line(original: &EventTime) -> String {
    match (original, zone_of(original)) {
        (EventTime::Date(d), _) => format!("EXDATE;VALUE=DATE:{}", d.format("%Y%m%d")),
        (EventTime::DateTime { utc, .. }, Some(tz)) => {
            format!("EXDATE;TZID={}:{}", tz.name(), utc.with_timezone(&tz).format("%Y%m%dT%H%M%S"))
        }
        (EventTime::DateTime { utc, .. }, None) => format!("EXDATE:{}", utc.format("%Y%m%dT%H%M%SZ")),
    }
}

/// `ev` with its exceptions filled in (a no-op for single events): what the provider reports
/// for `window`, plus the EXDATE cancellations.
pub async fn with_exceptions(
    provider: &dyn Provider,
    calendar: &str,
    mut ev: RemoteEvent,
    window: Window,
) -> Result<RemoteEvent, ProviderError> {
    if ev.recurrence.is_empty() || ev.cancelled {
        return Ok(ev);
    }
    let found = provider.series_exceptions(calendar, &ev, window).await?;
    ev.exceptions = merge_exceptions(&ev.start, &ev.recurrence, found);
    Ok(ev)
}

#[cfg(test)]
#[path = "recurrence_tests.rs"]
mod tests;
