//! Working hours: per-weekday wall-clock ranges in an IANA zone, turned into UTC intervals that
//! are exact through DST changes.
//!
//! Owns: `WorkingHours`, its validation, and the wall-clock → UTC mapping. Must not touch busy
//! time or scoring.
//!
//! Why piecewise: on a spring-forward day a wall-clock time may not exist (02:30 in New York),
//! and on a fall-back day it exists twice. Instead of guessing one instant per boundary, the
//! day's candidate UTC span is cut at every offset change and each piece (a fixed offset, so
//! wall clock and UTC move together) is intersected with the wall-clock range. The result holds
//! exactly the instants whose local date and time fall inside the range: a range that starts in
//! a gap starts when the gap ends, and a repeated hour inside a range counts both times.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

use super::ScheduleError;
use super::interval::{Interval, merge};

/// One wall-clock range of a day, minutes from midnight, `start < end <= 1440` (24:00 allowed
/// as an end; a range crossing midnight is two ranges).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DayRange {
    pub start_min: u32,
    pub end_min: u32,
}

impl DayRange {
    /// `"09:00"`-style bounds; `"24:00"` only as an end.
    pub fn parse(start: &str, end: &str) -> Option<DayRange> {
        let r = DayRange { start_min: parse_hhmm(start)?, end_min: parse_hhmm(end)? };
        (r.start_min < r.end_min && r.start_min < 1440).then_some(r)
    }

    pub fn label(&self) -> String {
        format!("{}–{}", hhmm(self.start_min), hhmm(self.end_min))
    }
}

fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

pub(crate) fn hhmm(min: u32) -> String {
    format!("{:02}:{:02}", min / 60, min % 60)
}

/// Working ranges per weekday, Monday first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkingHours {
    days: [Vec<DayRange>; 7],
}

/// Day names as the REST body and the TaskSync spec spell them, Monday first.
pub const DAY_NAMES: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];

/// A range as text (`"09:00"`, `"17:00"`): the REST body and the resource each have their own
/// type for it.
pub trait TextRange {
    fn bounds(&self) -> (&str, &str);
}

/// The first range of a week that is not `HH:MM` with start before end: its day (a
/// `DAY_NAMES` entry) and index, for the caller to name the field in its own terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadRange {
    pub day: &'static str,
    pub index: usize,
}

impl WorkingHours {
    /// The week from text ranges per day, Monday first, then `new`'s checks. Both the REST
    /// `working_hours` and `spec.schedule.workingHours` come through here, so they agree.
    pub fn parse<R: TextRange>(week: [&[R]; 7]) -> Result<Result<WorkingHours, ScheduleError>, BadRange> {
        let mut days: [Vec<DayRange>; 7] = Default::default();
        for ((out, ranges), day) in days.iter_mut().zip(week).zip(DAY_NAMES) {
            for (index, r) in ranges.iter().enumerate() {
                let (start, end) = r.bounds();
                out.push(DayRange::parse(start, end).ok_or(BadRange { day, index })?);
            }
        }
        Ok(WorkingHours::new(days))
    }

    /// Mon–Fri 09:00–17:00 (the default).
    pub fn office() -> WorkingHours {
        let day = vec![DayRange { start_min: 9 * 60, end_min: 17 * 60 }];
        WorkingHours { days: [day.clone(), day.clone(), day.clone(), day.clone(), day, Vec::new(), Vec::new()] }
    }

    /// Ranges per weekday. Rejects a week with no working time at all and ranges of one day
    /// that overlap (they are almost always a typo; touching ranges are fine).
    pub fn new(mut days: [Vec<DayRange>; 7]) -> Result<WorkingHours, ScheduleError> {
        if days.iter().all(Vec::is_empty) {
            return Err(ScheduleError::invalid("working_hours", "working hours are empty: no day has any time"));
        }
        for (i, ranges) in days.iter_mut().enumerate() {
            ranges.sort();
            if let Some(w) = ranges.windows(2).find(|w| w[1].start_min < w[0].end_min) {
                let day = Weekday::try_from(i as u8).map(|d| d.to_string()).unwrap_or_default();
                return Err(ScheduleError::invalid(
                    "working_hours",
                    &format!("working hours overlap on {day}: {} and {}", w[0].label(), w[1].label()),
                ));
            }
        }
        Ok(WorkingHours { days })
    }

    pub fn on(&self, day: Weekday) -> &[DayRange] {
        &self.days[day.num_days_from_monday() as usize]
    }

    /// The working time inside `span`, as merged UTC intervals, in `zone`.
    pub fn intervals(&self, zone: Tz, span: Interval) -> Vec<Interval> {
        if span.is_empty() {
            return Vec::new();
        }
        // One day of slack on each side: a local day can begin up to 14 h before its UTC date.
        let first = span.start.with_timezone(&zone).date_naive() - Duration::days(1);
        let last = span.end.with_timezone(&zone).date_naive() + Duration::days(1);
        let mut out = Vec::new();
        let mut d = first;
        while d <= last {
            for r in self.on(d.weekday()) {
                out.extend(local_range_to_utc(zone, d, *r));
            }
            d += Duration::days(1);
        }
        super::interval::intersect(&merge(out), &[span])
    }
}

fn wall(d: NaiveDate, min: u32) -> NaiveDateTime {
    d.and_time(chrono::NaiveTime::MIN) + Duration::minutes(i64::from(min))
}

fn offset_at(zone: Tz, t: DateTime<Utc>) -> Duration {
    Duration::seconds(i64::from(zone.offset_from_utc_datetime(&t.naive_utc()).fix().local_minus_utc()))
}

/// The instants (UTC) whose wall clock in `zone` lies in `[d + r.start, d + r.end)`.
pub fn local_range_to_utc(zone: Tz, d: NaiveDate, r: DayRange) -> Vec<Interval> {
    let (lo_wall, hi_wall) = (wall(d, r.start_min), wall(d, r.end_min));
    // Every real offset is within ±15 h, so these bounds hold every candidate instant.
    let lo = lo_wall.and_utc() - Duration::hours(15);
    let hi = hi_wall.and_utc() + Duration::hours(15);
    let mut out = Vec::new();
    for piece in fixed_offset_pieces(zone, lo, hi) {
        let off = offset_at(zone, piece.start);
        // Within a piece wall = utc + off, so the wall range maps back by one subtraction.
        let s = piece.start.max(lo_wall.and_utc() - off);
        let e = piece.end.min(hi_wall.and_utc() - off);
        if s < e {
            out.push(Interval::new(s, e));
        }
    }
    merge(out)
}

/// `[lo, hi)` cut where the zone's UTC offset changes. Offsets are sampled hourly (no zone has
/// had two transitions within an hour) and each change is located to the second.
fn fixed_offset_pieces(zone: Tz, lo: DateTime<Utc>, hi: DateTime<Utc>) -> Vec<Interval> {
    let mut cuts = Vec::new();
    let mut a = lo;
    while a < hi {
        let b = (a + Duration::hours(1)).min(hi);
        if offset_at(zone, a) != offset_at(zone, b) {
            let (mut l, mut h) = (a, b);
            // Invariant: offset(l) == offset(a), offset(h) != offset(a); ends at h = the change.
            while h - l > Duration::seconds(1) {
                let m = l + (h - l) / 2;
                if offset_at(zone, m) == offset_at(zone, a) {
                    l = m;
                } else {
                    h = m;
                }
            }
            cuts.push(h);
        }
        a = b;
    }
    let mut out = Vec::new();
    let mut start = lo;
    for c in cuts {
        out.push(Interval::new(start, c));
        start = c;
    }
    out.push(Interval::new(start, hi));
    out
}
