//! Times read from iCalendar: DTSTART/DTEND/RECURRENCE-ID values as `EventTime` (dates, UTC,
//! floating, TZID as an IANA zone, an Outlook/Exchange Windows zone name, or else the
//! VTIMEZONE's own offset), DURATION values, and adding a duration to a time.
//!
//! Owns: those conversions. Must not touch: which properties an event has (the parent's).

use chrono::{Duration, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use icalendar::parser::{Calendar, Property};

use super::param;
use crate::providers::EventTime;

/// Windows zone names Outlook/Exchange write as TZID, to their IANA zone (CLDR windowsZones,
/// territory 001). The most common ones only; others fall back to the VTIMEZONE's offset.
const WINDOWS_ZONES: &[(&str, &str)] = &[
    ("UTC", "UTC"),
    ("GMT Standard Time", "Europe/London"),
    ("Greenwich Standard Time", "Atlantic/Reykjavik"),
    ("W. Europe Standard Time", "Europe/Berlin"),
    ("Romance Standard Time", "Europe/Paris"),
    ("Central Europe Standard Time", "Europe/Budapest"),
    ("Central European Standard Time", "Europe/Warsaw"),
    ("E. Europe Standard Time", "Europe/Chisinau"),
    ("FLE Standard Time", "Europe/Kiev"),
    ("GTB Standard Time", "Europe/Bucharest"),
    ("Russian Standard Time", "Europe/Moscow"),
    ("Turkey Standard Time", "Europe/Istanbul"),
    ("Israel Standard Time", "Asia/Jerusalem"),
    ("South Africa Standard Time", "Africa/Johannesburg"),
    ("Arabian Standard Time", "Asia/Dubai"),
    ("India Standard Time", "Asia/Kolkata"),
    ("China Standard Time", "Asia/Shanghai"),
    ("Singapore Standard Time", "Asia/Singapore"),
    ("Tokyo Standard Time", "Asia/Tokyo"),
    ("Korea Standard Time", "Asia/Seoul"),
    ("AUS Eastern Standard Time", "Australia/Sydney"),
    ("New Zealand Standard Time", "Pacific/Auckland"),
    ("Hawaiian Standard Time", "Pacific/Honolulu"),
    ("Alaskan Standard Time", "America/Anchorage"),
    ("Pacific Standard Time", "America/Los_Angeles"),
    ("Mountain Standard Time", "America/Denver"),
    ("US Mountain Standard Time", "America/Phoenix"),
    ("Central Standard Time", "America/Chicago"),
    ("Eastern Standard Time", "America/New_York"),
    ("Atlantic Standard Time", "America/Halifax"),
    ("E. South America Standard Time", "America/Sao_Paulo"),
];

/// A TZID to an IANA zone: the name itself, or the IANA tail of a prefixed one
/// (`/mozilla.org/20050126_1/America/New_York`, `/freeassociation.sourceforge.net/...`).
fn iana(tzid: &str) -> Option<Tz> {
    let tzid = tzid.trim_matches('"');
    if let Ok(tz) = tzid.parse() {
        return Some(tz);
    }
    if let Some((_, name)) = WINDOWS_ZONES.iter().find(|(w, _)| w.eq_ignore_ascii_case(tzid)) {
        return name.parse().ok();
    }
    let parts: Vec<&str> = tzid.split('/').collect();
    (1..parts.len()).find_map(|i| parts[i..].join("/").parse().ok())
}

/// The standard offset a non-IANA VTIMEZONE gives (best effort for e.g. Windows zone names).
fn fixed_offset_from_vtimezone(cal: &Calendar<'_>, tzid: &str) -> Option<chrono::FixedOffset> {
    let vtz = cal
        .components
        .iter()
        .find(|c| c.name == "VTIMEZONE" && c.find_prop("TZID").is_some_and(|p| p.val.as_str() == tzid))?;
    let std = vtz.components.iter().find(|c| c.name == "STANDARD").or_else(|| vtz.components.first())?;
    let off = std.find_prop("TZOFFSETTO")?.val.as_str().trim().to_string();
    let sign = if off.starts_with('-') { -1 } else { 1 };
    let digits: String = off.chars().filter(char::is_ascii_digit).collect();
    let n = |r: std::ops::Range<usize>| digits.get(r).and_then(|s| s.parse::<i32>().ok()).unwrap_or(0);
    chrono::FixedOffset::east_opt(sign * (n(0..2) * 3600 + n(2..4) * 60 + n(4..6)))
}

pub(in crate::providers::caldav) fn parse_time(p: &Property<'_>, cal: &Calendar<'_>) -> Result<EventTime, String> {
    let v = p.val.as_str().trim();
    let is_date = param(p, "VALUE").is_some_and(|x| x.eq_ignore_ascii_case("DATE")) || v.len() == 8;
    if is_date {
        return NaiveDate::parse_from_str(v, "%Y%m%d").map(EventTime::Date).map_err(|_| format!("bad date {v:?}"));
    }
    if let Some(u) = v.strip_suffix('Z') {
        let n = NaiveDateTime::parse_from_str(u, "%Y%m%dT%H%M%S").map_err(|_| format!("bad date-time {v:?}"))?;
        return Ok(EventTime::DateTime { utc: n.and_utc(), local: n, zone: None });
    }
    let local = NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S").map_err(|_| format!("bad date-time {v:?}"))?;
    match param(p, "TZID") {
        Some(tzid) => {
            if let Some(tz) = iana(tzid) {
                // A wall-clock time in a DST gap does not exist: RFC 5545 §3.3.5 says it means the
                // same time after the jump (an hour later for usual gaps).
                let utc = tz
                    .from_local_datetime(&local)
                    .earliest()
                    .or_else(|| tz.from_local_datetime(&(local + Duration::hours(1))).earliest())
                    .map(|d| d.with_timezone(&Utc))
                    .ok_or_else(|| format!("{v} does not exist in {tzid}"))?;
                Ok(EventTime::DateTime { utc, local, zone: Some(tz.name().to_string()) })
            } else {
                // Unknown zone without a usable VTIMEZONE: UTC, the only reading that does not
                // depend on where calsync runs.
                let off = fixed_offset_from_vtimezone(cal, tzid).unwrap_or_else(|| Utc.fix());
                let utc = (local - Duration::seconds(i64::from(off.local_minus_utc()))).and_utc();
                tracing::debug!(tzid, "non-IANA TZID; using the VTIMEZONE's standard offset");
                Ok(EventTime::DateTime { utc, local, zone: None })
            }
        }
        // Floating time: no zone at all. Read as UTC, the only reading that does not depend on
        // where calsync runs.
        None => Ok(EventTime::DateTime { utc: local.and_utc(), local, zone: None }),
    }
}

/// `P1D`, `PT1H30M`, `P2W`, `-PT15M` (RFC 5545 §3.3.6).
pub(super) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let s = s.strip_prefix('P')?;
    let mut total = Duration::zero();
    let mut num = String::new();
    for c in s.chars() {
        match c {
            '0'..='9' => num.push(c),
            'T' => {}
            'W' | 'D' | 'H' | 'M' | 'S' => {
                let n: i64 = num.parse().ok()?;
                num.clear();
                total += match c {
                    'W' => Duration::weeks(n),
                    'D' => Duration::days(n),
                    'H' => Duration::hours(n),
                    'M' => Duration::minutes(n),
                    _ => Duration::seconds(n),
                };
            }
            _ => return None,
        }
    }
    Some(if neg { -total } else { total })
}

pub(super) fn add(t: &EventTime, d: Duration) -> EventTime {
    match t {
        EventTime::Date(day) => EventTime::Date(*day + Duration::days(d.num_days().max(1))),
        EventTime::DateTime { utc, zone, .. } => {
            let end = *utc + d;
            let local = zone
                .as_deref()
                .and_then(|z| z.parse::<Tz>().ok())
                .map(|tz| end.with_timezone(&tz).naive_local())
                .unwrap_or_else(|| end.naive_utc());
            EventTime::DateTime { utc: end, local, zone: zone.clone() }
        }
    }
}
