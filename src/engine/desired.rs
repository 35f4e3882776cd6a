//! Turns a TaskSync spec into the event it should be: times resolved in IANA zones (DST-correct),
//! all-day events as dates, defaults applied.
//!
//! Owns: spec interpretation. Must not touch: I/O. Every error here is the user's to fix and
//! becomes an `InvalidSpec` condition, never a retry.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::providers::recurrence::{self, instant};
use crate::providers::{EventData, EventTime, Exception, Marker, Window};
use crate::resources::{TaskSync, TaskSyncSpec, Transparency};
use crate::scheduling::Interval;

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

pub(crate) fn resolve_local(t: NaiveDateTime, tz: Tz, field: &str) -> Result<DateTime<Utc>, String> {
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
        (TimeValue::Date(_), _) => {
            return Err(format!("{field} is a date but start is a date-time: use the same form for both"));
        }
    };
    Ok(EventTime::DateTime { utc, local, zone: zone.map(|z| z.name().to_string()) })
}

/// The event a TaskSync describes. `uid` and `owner` go into the ownership marker. A task with
/// `spec.schedule` has no time of its own: see `placed_event` and `event_of`.
pub fn desired_event(spec: &TaskSyncSpec, uid: &str, owner: &str) -> Result<EventData, String> {
    if spec.schedule.is_some() {
        return Err("the task asks calsync to find its time (schedule) and has not been placed yet".into());
    }
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
                let len = d
                    .as_deref()
                    .map(parse_duration)
                    .transpose()?
                    .unwrap_or(Duration::minutes(DEFAULT_DURATION_MINUTES));
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
    let exceptions = exceptions(spec, zone, &start, &end)?;
    Ok(EventData {
        title: spec.title.clone(),
        description: spec.description.clone(),
        category: spec.category.clone(),
        start,
        end,
        transparent: false,
        recurrence: spec.recurrence.clone(),
        exceptions,
        marker: Marker {
            owner: owner.to_string(),
            uid: uid.to_string(),
            task_id: spec.task_id.clone(),
            hash: String::new(),
        },
    })
}

/// The event of a `spec.schedule` task placed at `block`, shown in the spec's zone; free
/// (transparent) unless the schedule says Opaque.
pub fn placed_event(spec: &TaskSyncSpec, uid: &str, owner: &str, block: Interval) -> Result<EventData, String> {
    let Some(schedule) = spec.schedule.as_ref() else { return desired_event(spec, uid, owner) };
    let zone = spec
        .time_zone
        .as_deref()
        .map(parse_zone)
        .transpose()?
        .ok_or("schedule needs timeZone: working hours, earliestStart and deadline are read in it")?;
    let at = |t: DateTime<Utc>| EventTime::DateTime {
        utc: t,
        local: t.with_timezone(&zone).naive_local(),
        zone: Some(zone.name().to_string()),
    };
    Ok(EventData {
        title: spec.title.clone(),
        description: spec.description.clone(),
        category: spec.category.clone(),
        start: at(block.start),
        end: at(block.end),
        transparent: schedule.transparency == Transparency::Transparent,
        recurrence: Vec::new(),
        exceptions: Vec::new(),
        marker: Marker {
            owner: owner.to_string(),
            uid: uid.to_string(),
            task_id: spec.task_id.clone(),
            hash: String::new(),
        },
    })
}

/// Where a `spec.schedule` task's block is, as its status records it (its event is there).
pub fn placed_block(ts: &TaskSync) -> Option<Interval> {
    let st = ts.status.as_ref()?;
    st.event_id.as_ref()?;
    Some(Interval::new(st.scheduled_start?, st.scheduled_end?)).filter(|b| !b.is_empty())
}

/// The event a TaskSync is now: its spec's, or for a `spec.schedule` task the block its status
/// records (an error while it has none).
pub fn event_of(ts: &TaskSync, uid: &str, owner: &str) -> Result<EventData, String> {
    match (&ts.spec.schedule, placed_block(ts)) {
        (None, _) => desired_event(&ts.spec, uid, owner),
        (Some(_), Some(block)) => placed_event(&ts.spec, uid, owner, block),
        (Some(_), None) => desired_event(&ts.spec, uid, owner),
    }
}

/// The spec's exceptions, times read like `start` (in timeZone, DST-correct), each checked to
/// name an occurrence of the rule, in order of original start.
fn exceptions(
    spec: &TaskSyncSpec,
    zone: Option<Tz>,
    start: &EventTime,
    end: &EventTime,
) -> Result<Vec<Exception>, String> {
    if spec.exceptions.is_empty() {
        return Ok(Vec::new());
    }
    if spec.recurrence.is_empty() {
        return Err("exceptions need recurrence: only a recurring task has occurrences to cancel or move".into());
    }
    let length = instant(end) - instant(start);
    let read = |field: &str, v: &str| -> Result<EventTime, String> {
        match (parse_time(field, v)?, start.is_date()) {
            (TimeValue::Date(d), true) => Ok(EventTime::Date(d)),
            (TimeValue::Date(_), false) => {
                Err(format!("{field} is a date but start is a date-time: use the same form"))
            }
            (_, true) => Err(format!("{field} is a date-time but start is a date (all-day): use a date")),
            (t, false) => timed(t, zone, field),
        }
    };
    let mut out: Vec<Exception> = Vec::new();
    for (i, x) in spec.exceptions.iter().enumerate() {
        let field = |n: &str| format!("exceptions[{i}].{n}");
        let original = read(&field("originalStart"), &x.original_start)?;
        let at = instant(&original);
        let around = Window { from: at - Duration::seconds(1), to: at + Duration::seconds(1) };
        let by_rule =
            recurrence::expand(start, end, &spec.recurrence, &around).map_err(|e| format!("recurrence: {e}"))?;
        if !by_rule.iter().any(|(s, _)| instant(s) == at) {
            return Err(format!(
                "{} {:?} is not an occurrence of the recurrence: give the time that occurrence has under the rule",
                field("originalStart"),
                x.original_start
            ));
        }
        if out.iter().any(|o| instant(&o.original_start) == at) {
            return Err(format!("{} {:?} names an occurrence a second time", field("originalStart"), x.original_start));
        }
        if x.cancelled {
            if x.start.is_some() || x.end.is_some() {
                return Err(format!("{}: a cancelled occurrence has no start or end", field("cancelled")));
            }
            out.push(Exception::cancelled(original));
            continue;
        }
        let Some(new_start) = x.start.as_deref() else {
            return Err(format!("{}: give cancelled: true or a start to move the occurrence to", field("start")));
        };
        let s = read(&field("start"), new_start)?;
        let e = match x.end.as_deref() {
            Some(e) => read(&field("end"), e)?,
            None => recurrence::at(instant(&s) + length, &s),
        };
        if instant(&e) <= instant(&s) {
            return Err(format!("{} must be after {}", field("end"), field("start")));
        }
        out.push(Exception::moved(original, s, e));
    }
    out.sort_by_key(|x| instant(&x.original_start));
    Ok(out)
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
            exceptions: Vec::new(),
            calendar_id: None,
            deletion_policy: Default::default(),
            conflict_policy: Default::default(),
            schedule: None,
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
    fn exceptions_are_read_in_the_zone_and_must_name_an_occurrence() {
        use crate::resources::tasksync::OccurrenceException as X;
        let mut s = spec("2027-02-24T09:00:00");
        s.time_zone = Some("America/New_York".into());
        s.recurrence = vec!["RRULE:FREQ=WEEKLY;BYDAY=WE".into()];
        let x = |o: &str, start: Option<&str>, cancelled: bool| X {
            original_start: o.into(),
            start: start.map(String::from),
            end: None,
            cancelled,
        };
        s.exceptions =
            vec![x("2027-03-17T09:00:00", Some("2027-03-18T15:00:00"), false), x("2027-03-03T09:00:00", None, true)];
        let e = desired_event(&s, "u", "o").unwrap();
        let utc = |t: &EventTime| instant(t).to_rfc3339();
        assert_eq!(e.exceptions.len(), 2);
        assert!(e.exceptions[0].cancelled);
        assert_eq!(utc(&e.exceptions[0].original_start), "2027-03-03T14:00:00+00:00");
        // After the DST change: 09:00 New York is 13:00Z; the moved one keeps the hour's length.
        assert_eq!(utc(&e.exceptions[1].original_start), "2027-03-17T13:00:00+00:00");
        assert_eq!(e.exceptions[1].end.as_ref().map(utc).as_deref(), Some("2027-03-18T20:00:00+00:00"));
        s.exceptions = vec![x("2027-03-18T09:00:00", None, true)];
        assert!(desired_event(&s, "u", "o").unwrap_err().contains("is not an occurrence"));
        s.exceptions = vec![x("2027-03-17T09:00:00", None, false)];
        assert!(desired_event(&s, "u", "o").unwrap_err().contains("give cancelled: true or a start"));
        s.recurrence.clear();
        s.exceptions = vec![x("2027-03-17T09:00:00", None, true)];
        assert!(desired_event(&s, "u", "o").unwrap_err().contains("exceptions need recurrence"));
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
