//! RFC 5545 RRULE ↔ Microsoft Graph `patternedRecurrence`, for the subset Graph can express.
//!
//! Owns: the translation both ways and the refusal (with the offending rule part named) of
//! everything else: EXDATE/RDATE/EXRULE lines, sub-daily frequencies, BYHOUR & co, lists where
//! Graph takes one value. Must not touch HTTP or the rest of the event.
//!
//! The RRULE written back from Graph is canonical (FREQ, INTERVAL when > 1, BYMONTH,
//! BYMONTHDAY, BYDAY, BYSETPOS, WKST, COUNT/UNTIL), so an event we wrote reads back the same.

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeZone, Utc, Weekday};
use serde::{Deserialize, Serialize};

use crate::providers::{EventTime, ProviderError};

/// Graph's `patternedRecurrence`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatternedRecurrence {
    pub pattern: RecurrencePattern,
    pub range: RecurrenceRange,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecurrencePattern {
    #[serde(rename = "type")]
    pub kind: String,
    pub interval: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub month: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub day_of_month: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days_of_week: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_day_of_week: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecurrenceRange {
    #[serde(rename = "type")]
    pub kind: String,
    pub start_date: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub number_of_occurrences: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence_time_zone: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

const DAYS: [(&str, &str, Weekday); 7] = [
    ("MO", "monday", Weekday::Mon),
    ("TU", "tuesday", Weekday::Tue),
    ("WE", "wednesday", Weekday::Wed),
    ("TH", "thursday", Weekday::Thu),
    ("FR", "friday", Weekday::Fri),
    ("SA", "saturday", Weekday::Sat),
    ("SU", "sunday", Weekday::Sun),
];
const INDEXES: [(i32, &str); 5] = [(1, "first"), (2, "second"), (3, "third"), (4, "fourth"), (-1, "last")];

fn refuse(what: String) -> ProviderError {
    ProviderError::Invalid {
        message: format!("Outlook cannot store this recurrence: {what}; use a simpler rule for Outlook calendars"),
    }
}

fn graph_day(ical: &str) -> Option<&'static str> {
    DAYS.iter().find(|d| d.0.eq_ignore_ascii_case(ical)).map(|d| d.1)
}

fn ical_day(graph: &str) -> Option<&'static str> {
    DAYS.iter().find(|d| d.1.eq_ignore_ascii_case(graph)).map(|d| d.0)
}

fn weekday_name(w: Weekday) -> &'static str {
    DAYS.iter().find(|d| d.2 == w).map(|d| d.1).unwrap_or("monday")
}

/// The local start date and zone the recurrence expands in.
fn anchor(start: &EventTime) -> (NaiveDate, Option<chrono_tz::Tz>) {
    match start {
        EventTime::Date(d) => (*d, None),
        EventTime::DateTime { utc, zone, .. } => match zone.as_deref().and_then(|z| z.parse::<chrono_tz::Tz>().ok()) {
            Some(tz) => (utc.with_timezone(&tz).date_naive(), Some(tz)),
            None => (utc.date_naive(), None),
        },
    }
}

/// A BYDAY entry: optional ordinal and a day.
fn by_day(v: &str) -> Result<(Option<i32>, &'static str), ProviderError> {
    let split = v.len().saturating_sub(2);
    let (n, day) = v.split_at(split);
    let day = graph_day(day).ok_or_else(|| refuse(format!("BYDAY value {v:?} is not a weekday")))?;
    let n = if n.is_empty() {
        None
    } else {
        Some(n.trim_start_matches('+').parse::<i32>().map_err(|_| refuse(format!("BYDAY value {v:?}")))?)
    };
    Ok((n, day))
}

fn index_name(n: i32) -> Result<String, ProviderError> {
    INDEXES
        .iter()
        .find(|i| i.0 == n)
        .map(|i| i.1.to_string())
        .ok_or_else(|| refuse(format!("position {n} (Graph has first..fourth and last only)")))
}

fn single_u32(key: &str, v: &str, max: u32) -> Result<u32, ProviderError> {
    match v.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(refuse(format!("{key}={v} (Graph takes one value between 1 and {max})"))),
    }
}

/// Translate the event's recurrence lines. `Ok(None)` when there are none.
pub fn to_graph(lines: &[String], start: &EventTime) -> Result<Option<PatternedRecurrence>, ProviderError> {
    let mut rrule = None;
    for line in lines {
        let upper = line.to_ascii_uppercase();
        if let Some(rest) = upper.strip_prefix("RRULE:") {
            if rrule.replace(rest.to_string()).is_some() {
                return Err(refuse("more than one RRULE".into()));
            }
        } else {
            let name = upper.split([':', ';']).next().unwrap_or("");
            return Err(refuse(format!("{name} lines (Graph recurrences have no {name})")));
        }
    }
    let Some(rule) = rrule else { return Ok(None) };
    let (start_date, tz) = anchor(start);
    let mut freq = None;
    let (mut interval, mut count, mut until) = (1u32, None, None);
    let (mut byday, mut bymonthday, mut bymonth, mut bysetpos, mut wkst) = (None, None, None, None, None);
    for part in rule.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| refuse(format!("rule part {part:?}")))?;
        match k {
            "FREQ" => freq = Some(v.to_string()),
            "INTERVAL" => interval = single_u32(k, v, 999)?,
            "COUNT" => count = Some(single_u32(k, v, 999)?),
            "UNTIL" => until = Some(parse_until(v, tz)?),
            "BYDAY" => byday = Some(v.split(',').map(by_day).collect::<Result<Vec<_>, _>>()?),
            "BYMONTHDAY" => bymonthday = Some(single_u32(k, v, 31)?),
            "BYMONTH" => bymonth = Some(single_u32(k, v, 12)?),
            "BYSETPOS" => bysetpos = Some(v.parse::<i32>().map_err(|_| refuse(format!("BYSETPOS={v}")))?),
            "WKST" => wkst = Some(graph_day(v).ok_or_else(|| refuse(format!("WKST={v}")))?.to_string()),
            other => return Err(refuse(format!("{other} in RRULE"))),
        }
    }
    if count.is_some() && until.is_some() {
        return Err(refuse("both COUNT and UNTIL (RFC 5545 allows only one)".into()));
    }
    let plain_days = |days: &[(Option<i32>, &'static str)]| -> Result<Vec<String>, ProviderError> {
        days.iter()
            .map(|(n, d)| match n {
                None => Ok(d.to_string()),
                Some(n) => Err(refuse(format!("BYDAY with position {n} for this FREQ"))),
            })
            .collect()
    };
    // A relative (nth weekday) pattern: BYDAY=2TU, or BYDAY=TU + BYSETPOS=2.
    let relative = |days: &[(Option<i32>, &'static str)]| -> Result<(Vec<String>, String), ProviderError> {
        match (days, bysetpos) {
            ([(Some(n), d)], None) => Ok((vec![d.to_string()], index_name(*n)?)),
            (days, Some(n)) => Ok((plain_days(days)?, index_name(n)?)),
            _ => Err(refuse("BYDAY without a position in a monthly/yearly rule".into())),
        }
    };
    let no = |cond: bool, what: &str| if cond { Err(refuse(format!("{what} with this FREQ"))) } else { Ok(()) };
    let mut pattern = RecurrencePattern { interval, ..Default::default() };
    match freq.as_deref() {
        Some("DAILY") => {
            no(bymonthday.is_some() || bymonth.is_some() || bysetpos.is_some(), "BYMONTHDAY/BYMONTH/BYSETPOS")?;
            match &byday {
                // Every weekday and the like: Graph says it as weekly on those days.
                Some(days) if interval == 1 => {
                    pattern.kind = "weekly".into();
                    pattern.days_of_week = plain_days(days)?;
                }
                Some(_) => return Err(refuse("DAILY with BYDAY and INTERVAL > 1".into())),
                None => pattern.kind = "daily".into(),
            }
        }
        Some("WEEKLY") => {
            no(bymonthday.is_some() || bymonth.is_some() || bysetpos.is_some(), "BYMONTHDAY/BYMONTH/BYSETPOS")?;
            pattern.kind = "weekly".into();
            pattern.days_of_week = match &byday {
                Some(days) => plain_days(days)?,
                None => vec![weekday_name(start_date.weekday()).to_string()],
            };
            // RFC 5545's default week start is Monday; Graph's is Sunday. Say it explicitly.
            pattern.first_day_of_week = Some(wkst.clone().unwrap_or_else(|| "monday".into()));
        }
        Some("MONTHLY") => {
            no(bymonth.is_some(), "BYMONTH")?;
            match (&byday, bymonthday) {
                (Some(_), Some(_)) => return Err(refuse("BYDAY together with BYMONTHDAY".into())),
                (Some(days), None) => {
                    let (days, index) = relative(days)?;
                    pattern.kind = "relativeMonthly".into();
                    pattern.days_of_week = days;
                    pattern.index = Some(index);
                }
                (None, day) => {
                    no(bysetpos.is_some(), "BYSETPOS without BYDAY")?;
                    pattern.kind = "absoluteMonthly".into();
                    pattern.day_of_month = day.unwrap_or(start_date.day());
                }
            }
        }
        Some("YEARLY") => {
            pattern.month = bymonth.unwrap_or(start_date.month());
            match (&byday, bymonthday) {
                (Some(_), Some(_)) => return Err(refuse("BYDAY together with BYMONTHDAY".into())),
                (Some(days), None) => {
                    let (days, index) = relative(days)?;
                    pattern.kind = "relativeYearly".into();
                    pattern.days_of_week = days;
                    pattern.index = Some(index);
                }
                (None, day) => {
                    no(bysetpos.is_some(), "BYSETPOS without BYDAY")?;
                    pattern.kind = "absoluteYearly".into();
                    pattern.day_of_month = day.unwrap_or(start_date.day());
                }
            }
        }
        Some(other) => return Err(refuse(format!("FREQ={other} (Graph repeats daily at most)"))),
        None => return Err(refuse("an RRULE without FREQ".into())),
    }
    let mut range = RecurrenceRange {
        kind: "noEnd".into(),
        start_date,
        recurrence_time_zone: Some(tz.map(|t| t.name().to_string()).unwrap_or_else(|| "UTC".into())),
        ..Default::default()
    };
    if let Some(n) = count {
        range.kind = "numbered".into();
        range.number_of_occurrences = n;
    }
    if let Some(d) = until {
        range.kind = "endDate".into();
        range.end_date = Some(d);
    }
    Ok(Some(PatternedRecurrence { pattern, range }))
}

/// UNTIL as the last local date it allows.
fn parse_until(v: &str, tz: Option<chrono_tz::Tz>) -> Result<NaiveDate, ProviderError> {
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y%m%d") {
        return Ok(d);
    }
    let bad = || refuse(format!("UNTIL={v} is not an RFC 5545 date or date-time"));
    let (text, utc) = match v.strip_suffix('Z') {
        Some(t) => (t, true),
        None => (v, false),
    };
    let naive = NaiveDateTime::parse_from_str(text, "%Y%m%dT%H%M%S").map_err(|_| bad())?;
    Ok(match (utc, tz) {
        (true, Some(tz)) => Utc.from_utc_datetime(&naive).with_timezone(&tz).date_naive(),
        _ => naive.date(),
    })
}

/// The RRULE line for a Graph recurrence of an event starting at `start`.
pub fn from_graph(r: &PatternedRecurrence, start: &EventTime) -> Result<Vec<String>, ProviderError> {
    let p = &r.pattern;
    let unknown = || ProviderError::Invalid {
        message: format!("Graph returned a recurrence calsync does not know ({:?}/{:?})", p.kind, r.range.kind),
    };
    let days = || -> Result<String, ProviderError> {
        p.days_of_week
            .iter()
            .map(|d| ical_day(d).ok_or_else(unknown))
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.join(","))
    };
    let pos = || -> Result<i32, ProviderError> {
        let i = p.index.as_deref().unwrap_or("first");
        INDEXES.iter().find(|x| x.1.eq_ignore_ascii_case(i)).map(|x| x.0).ok_or_else(unknown)
    };
    let relative = |parts: &mut Vec<String>| -> Result<(), ProviderError> {
        if p.days_of_week.len() == 1 {
            parts.push(format!("BYDAY={}{}", pos()?, days()?));
        } else {
            parts.push(format!("BYDAY={}", days()?));
            parts.push(format!("BYSETPOS={}", pos()?));
        }
        Ok(())
    };
    let mut parts = Vec::new();
    let freq = match p.kind.as_str() {
        "daily" => "DAILY",
        "weekly" => "WEEKLY",
        "absoluteMonthly" | "relativeMonthly" => "MONTHLY",
        "absoluteYearly" | "relativeYearly" => "YEARLY",
        _ => return Err(unknown()),
    };
    parts.push(format!("FREQ={freq}"));
    if p.interval > 1 {
        parts.push(format!("INTERVAL={}", p.interval));
    }
    match p.kind.as_str() {
        "weekly" => parts.push(format!("BYDAY={}", days()?)),
        "absoluteMonthly" => parts.push(format!("BYMONTHDAY={}", p.day_of_month)),
        "relativeMonthly" => relative(&mut parts)?,
        "absoluteYearly" => {
            parts.push(format!("BYMONTH={}", p.month));
            parts.push(format!("BYMONTHDAY={}", p.day_of_month));
        }
        "relativeYearly" => {
            parts.push(format!("BYMONTH={}", p.month));
            relative(&mut parts)?;
        }
        _ => {}
    }
    // Week start only changes which weeks an INTERVAL > 1 rule picks.
    if p.kind == "weekly" && p.interval > 1 {
        let w = p.first_day_of_week.as_deref().and_then(ical_day).unwrap_or("SU");
        if w != "MO" {
            parts.push(format!("WKST={w}"));
        }
    }
    match r.range.kind.as_str() {
        "numbered" => parts.push(format!("COUNT={}", r.range.number_of_occurrences)),
        "endDate" => {
            let end = r.range.end_date.ok_or_else(unknown)?;
            parts.push(format!("UNTIL={}", until_value(end, start)));
        }
        "noEnd" => {}
        _ => return Err(unknown()),
    }
    Ok(vec![format!("RRULE:{}", parts.join(";"))])
}

/// RFC 5545: UNTIL has DTSTART's value type, and is UTC for a zoned DTSTART; Graph's end date is
/// inclusive, so the last instant of that local day.
fn until_value(end: NaiveDate, start: &EventTime) -> String {
    let (_, tz) = anchor(start);
    match start {
        EventTime::Date(_) => end.format("%Y%m%d").to_string(),
        EventTime::DateTime { .. } => {
            let last = end.and_hms_opt(23, 59, 59).unwrap_or_default();
            let utc = match tz {
                Some(tz) => tz.from_local_datetime(&last).earliest().map(|t| t.with_timezone(&Utc)),
                None => Some(Utc.from_utc_datetime(&last)),
            };
            utc.unwrap_or_else(|| Utc.from_utc_datetime(&last)).format("%Y%m%dT%H%M%SZ").to_string()
        }
    }
}

#[cfg(test)]
#[path = "recurrence_tests.rs"]
mod tests;
