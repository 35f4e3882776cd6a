//! Turns a TaskSync spec into the event it should be: times resolved in IANA zones (DST-correct),
//! all-day events as dates, defaults applied.
//!
//! Owns: spec interpretation. Must not touch: I/O. Every error here is the user's to fix and
//! becomes an `InvalidSpec` condition, never a retry.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::providers::{EventData, EventTime, Marker};
use crate::resources::TaskSyncSpec;

/// Default event length when neither duration nor end is given (DESIGN §6).
pub const DEFAULT_DURATION_MINUTES: i64 = 60;

/// Parse an IANA zone name.
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>()
        .map_err(|_| format!("unknown time zone {name:?}: use an IANA name such as America/New_York or Europe/Berlin"))
}

/// A parsed start/end value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeValue {
    Date(NaiveDate),
    /// Has an explicit offset.
    Absolute(DateTime<chrono::FixedOffset>),
    /// Wall-clock time that needs a zone.
    Local(NaiveDateTime),
}

/// Parse the formats `start`/`end` accept: RFC 3339 with offset, local date-time, or date.
pub fn parse_time(field: &str, value: &str) -> Result<TimeValue, String> {
    let v = value.trim();
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(TimeValue::Date(d));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(TimeValue::Absolute(t));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(v, fmt) {
            return Ok(TimeValue::Local(t));
        }
    }
    Err(format!(
        "{field} {value:?} is not a time: use RFC 3339 (2026-03-05T14:00:00Z), a local date-time with timeZone (2026-03-05T14:00:00), or a date (2026-03-05)"
    ))
}

/// Parse a Go-style duration (`90m`, `1h30m`, `45s`).
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let bad = || format!("duration {value:?} is not valid: use hours, minutes and seconds such as 45m or 1h30m");
    let mut total = 0i64;
    let mut digits = String::new();
    for c in value.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        total = n.checked_mul(unit).and_then(|x| total.checked_add(x)).ok_or_else(bad)?;
    }
    if !digits.is_empty() || total <= 0 || total > 366 * 24 * 3600 {
        return Err(bad());
    }
    Ok(Duration::seconds(total))
}

fn resolve_local(t: NaiveDateTime, tz: Tz, field: &str) -> Result<DateTime<Utc>, String> {
    match tz.from_local_datetime(&t) {
        chrono::LocalResult::Single(d) => Ok(d.with_timezone(&Utc)),
        // The repeated hour when clocks go back: the first occurrence, as calendar apps do.
        chrono::LocalResult::Ambiguous(first, _) => Ok(first.with_timezone(&Utc)),
        chrono::LocalResult::None => Err(format!(
            "{field} {t} does not exist in {tz} (clocks skip that hour for daylight saving time): pick another time"
        )),
    }
}

fn timed(t: TimeValue, zone: Option<Tz>, field: &str) -> Result<EventTime, String> {
    let (utc, local) = match (t, zone) {
        (TimeValue::Absolute(a), Some(tz)) => (a.with_timezone(&Utc), a.with_timezone(&tz).naive_local()),
        (TimeValue::Absolute(a), None) => (a.with_timezone(&Utc), a.with_timezone(&Utc).naive_local()),
        (TimeValue::Local(l), Some(tz)) => (resolve_local(l, tz, field)?, l),
        (TimeValue::Local(_), None) => {
            return Err(format!(
                "{field} has no UTC offset, so timeZone is required to read it (e.g. America/New_York)"
            ));
        }
        (TimeValue::Date(_), _) => return Err(format!("{field} is a date but start is a date-time: use the same form for both")),
    };
    Ok(EventTime::DateTime { utc, local, zone: zone.map(|z| z.name().to_string()) })
}

/// The event a TaskSync describes. `uid` and `owner` go into the ownership marker.
pub fn desired_event(spec: &TaskSyncSpec, uid: &str, owner: &str) -> Result<EventData, String> {
    let zone = spec.time_zone.as_deref().map(parse_zone).transpose()?;
    let start = parse_time("start", &spec.start)?;
    let all_day = matches!(start, TimeValue::Date(_));
    if spec.all_day == Some(true) && !all_day {
        return Err("allDay is true but start is a date-time: give start as a date (2026-03-05)".into());
    }
    if spec.all_day == Some(false) && all_day {
        return Err("start is a date, which makes an all-day event, but allDay is false: give a date-time".into());
    }
    if spec.duration.is_some() && spec.end.is_some() {
        return Err("set either duration or end, not both".into());
    }
    let (start, end) = if let TimeValue::Date(day) = start {
        let end_day = match (&spec.end, &spec.duration) {
            (Some(end), _) => match parse_time("end", end)? {
                TimeValue::Date(d) => d,
                _ => return Err("end must be a date (the day after the last day) for an all-day event".into()),
            },
            (None, Some(d)) => {
                let d = parse_duration(d)?;
                if d.num_seconds() % 86_400 != 0 {
                    return Err("an all-day event's duration must be whole days (24h, 48h, ...)".into());
                }
                day + Duration::days(d.num_days())
            }
            (None, None) => day + Duration::days(1),
        };
        (EventTime::Date(day), EventTime::Date(end_day))
    } else {
        let start = timed(start, zone, "start")?;
        let end = match (&spec.end, &spec.duration) {
            (Some(end), _) => timed(parse_time("end", end)?, zone, "end")?,
            (None, d) => {
                let len = d.as_deref().map(parse_duration).transpose()?.unwrap_or(Duration::minutes(DEFAULT_DURATION_MINUTES));
                let EventTime::DateTime { utc, .. } = &start else {
                    return Err("start is not a date-time".into());
                };
                let end_utc = *utc + len;
                let local = match zone {
                    Some(tz) => end_utc.with_timezone(&tz).naive_local(),
                    None => end_utc.naive_utc(),
                };
                EventTime::DateTime { utc: end_utc, local, zone: zone.map(|z| z.name().to_string()) }
            }
        };
        (start, end)
    };
    let ordered = match (&start, &end) {
        (EventTime::Date(a), EventTime::Date(b)) => b > a,
        (EventTime::DateTime { utc: a, .. }, EventTime::DateTime { utc: b, .. }) => b > a,
        _ => false,
    };
    if !ordered {
        return Err("end must be after start".into());
    }
    for line in &spec.recurrence {
        let ok = ["RRULE:", "EXRULE:", "RDATE", "EXDATE"].iter().any(|p| line.starts_with(p));
        if !ok || line.contains(['\r', '\n']) {
            return Err(format!("recurrence line {line:?} is not an RFC 5545 RRULE, EXRULE, RDATE or EXDATE line"));
        }
        if line.starts_with("RRULE:") && !line.contains("FREQ=") {
            return Err(format!("recurrence line {line:?} has no FREQ= part"));
        }
    }
    if !spec.recurrence.is_empty() && zone.is_none() && !all_day {
        return Err("a recurring timed event needs timeZone so it repeats at the same local time across DST".into());
    }
    Ok(EventData {
        title: spec.title.clone(),
        description: spec.description.clone(),
        category: spec.category.clone(),
        start,
        end,
        recurrence: spec.recurrence.clone(),
        marker: Marker { owner: owner.to_string(), uid: uid.to_string(), task_id: spec.task_id.clone(), hash: String::new() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{ConnectionRef, TaskSyncSpec};

    fn spec(start: &str) -> TaskSyncSpec {
        TaskSyncSpec {
            connection_ref: ConnectionRef { name: "c".into() },
            task_id: "t1".into(),
            title: "Homework".into(),
            start: start.into(),
            time_zone: None,
            duration: None,
            end: None,
            all_day: None,
            category: None,
            description: None,
            recurrence: vec![],
            calendar_id: None,
            deletion_policy: Default::default(),
            conflict_policy: Default::default(),
        }
    }

    #[test]
    fn local_time_is_read_in_zone_with_default_hour() {
        let mut s = spec("2025-10-17T14:00:00");
        s.time_zone = Some("America/New_York".into());
        let e = desired_event(&s, "uid", "calsync").unwrap();
        assert_eq!(e.start.to_rfc3339_or_date(), "2025-10-17T18:00:00Z");
        assert_eq!(e.end.to_rfc3339_or_date(), "2025-10-17T19:00:00Z");
    }

    #[test]
    fn all_day_is_a_date_in_every_zone() {
        for tz in [None, Some("Pacific/Kiritimati"), Some("Pacific/Pago_Pago")] {
            let mut s = spec("2026-03-05");
            s.time_zone = tz.map(String::from);
            let e = desired_event(&s, "uid", "o").unwrap();
            assert_eq!(e.start, EventTime::Date(NaiveDate::from_ymd_opt(2026, 3, 5).unwrap()));
            assert_eq!(e.end, EventTime::Date(NaiveDate::from_ymd_opt(2026, 3, 6).unwrap()));
        }
    }

    #[test]
    fn bad_input_is_explained() {
        let mut s = spec("2026-03-05T10:00:00");
        assert!(desired_event(&s, "u", "o").unwrap_err().contains("timeZone is required"));
        s.time_zone = Some("Mars/Olympus".into());
        assert!(desired_event(&s, "u", "o").unwrap_err().contains("unknown time zone"));
        s.time_zone = Some("Europe/Berlin".into());
        s.end = Some("2026-03-05T09:00:00".into());
        assert!(desired_event(&s, "u", "o").unwrap_err().contains("end must be after start"));
        s.end = None;
        s.start = "2026-03-29T02:30:00".into();
        assert!(desired_event(&s, "u", "o").unwrap_err().contains("does not exist"));
        s.start = "2026-13-40T00:00:00".into();
        assert!(desired_event(&s, "u", "o").unwrap_err().contains("is not a time"));
        for d in ["0m", "m", "5x", "99999999999999h"] {
            assert!(parse_duration(d).is_err(), "{d}");
        }
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::minutes(90));
    }

    #[test]
    fn offset_start_keeps_display_zone() {
        let mut s = spec("2026-07-01T09:00:00-04:00");
        s.time_zone = Some("America/New_York".into());
        s.duration = Some("30m".into());
        let e = desired_event(&s, "u", "o").unwrap();
        match e.start {
            EventTime::DateTime { local, zone, .. } => {
                assert_eq!(local.to_string(), "2026-07-01 09:00:00");
                assert_eq!(zone.as_deref(), Some("America/New_York"));
            }
            other => panic!("{other:?}"),
        }
    }
}
