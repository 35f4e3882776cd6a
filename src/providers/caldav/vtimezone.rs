//! VTIMEZONE components generated from the IANA database (chrono-tz), because RFC 5545 §3.6.5
//! requires one for every TZID and servers without it show wrong times (Fastmail) or expand
//! recurrences in the wrong offset.
//!
//! chrono-tz has no transition API, so transitions are found by sampling offsets and bisecting
//! to the second. When a zone's transitions of one kind follow a yearly rule ("second Sunday of
//! March at 02:00") for every year of the span, the observance is written with an RRULE (what
//! tzurl.org and Apple emit); otherwise each transition gets its own observance.
//!
//! Owns: turning a `Tz` into a `VTIMEZONE` tree. Must not touch the event itself.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc, Weekday};
use chrono_tz::{OffsetComponents, OffsetName, Tz};
use icalendar::parser::{Component, Property};

/// Years before the event's year covered (so earlier EXDATEs and edits resolve too).
const YEARS_BEFORE: i32 = 1;
/// Years after the event's year checked for a stable yearly rule / written out explicitly.
const YEARS_AFTER: i32 = 10;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Transition {
    at: DateTime<Utc>,
    from: i32,
    to: i32,
    dst: bool,
    abbr: String,
}

type OffsetKey = (i32, i64, String);

fn offset_key(tz: Tz, at: DateTime<Utc>) -> OffsetKey {
    let off = tz.offset_from_utc_datetime(&at.naive_utc());
    let total = (off.base_utc_offset() + off.dst_offset()).num_seconds() as i32;
    (total, off.dst_offset().num_seconds(), off.abbreviation().unwrap_or("").to_string())
}

fn transitions(tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Transition> {
    // Real transitions are months apart; 6-hour steps cannot skip over a pair.
    let step = Duration::hours(6);
    let mut out = Vec::new();
    let mut prev_t = from;
    let mut prev = offset_key(tz, from);
    let mut t = from + step;
    while t <= to {
        let cur = offset_key(tz, t);
        if cur != prev {
            // Bisect (prev_t, t] to the first second with the new offset.
            let (mut lo, mut hi) = (prev_t, t);
            while hi - lo > Duration::seconds(1) {
                let mid = lo + (hi - lo) / 2;
                if offset_key(tz, mid) == prev { lo = mid } else { hi = mid }
            }
            out.push(Transition { at: hi, from: prev.0, to: cur.0, dst: cur.1 != 0, abbr: cur.2.clone() });
            prev = cur;
        }
        prev_t = t;
        t += step;
    }
    out
}

fn fmt_offset(secs: i32) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.abs();
    let (h, m, s) = (a / 3600, (a % 3600) / 60, a % 60);
    if s == 0 { format!("{sign}{h:02}{m:02}") } else { format!("{sign}{h:02}{m:02}{s:02}") }
}

fn local_before(t: &Transition) -> NaiveDateTime {
    t.at.naive_utc() + Duration::seconds(i64::from(t.from))
}

fn days_in_month(d: NaiveDate) -> u32 {
    let (y, m) = if d.month() == 12 { (d.year() + 1, 1) } else { (d.year(), d.month() + 1) };
    NaiveDate::from_ymd_opt(y, m, 1).and_then(|n| n.pred_opt()).map(|n| n.day()).unwrap_or(28)
}

fn byday(w: Weekday) -> &'static str {
    match w {
        Weekday::Mon => "MO",
        Weekday::Tue => "TU",
        Weekday::Wed => "WE",
        Weekday::Thu => "TH",
        Weekday::Fri => "FR",
        Weekday::Sat => "SA",
        Weekday::Sun => "SU",
    }
}

fn prop(name: &str, val: String) -> Property<'static> {
    Property { name: name.to_string().into(), val: val.into(), params: vec![] }
}

fn observance(t: &Transition, rrule: Option<String>) -> Component<'static> {
    let mut props = vec![
        prop("DTSTART", local_before(t).format("%Y%m%dT%H%M%S").to_string()),
        prop("TZOFFSETFROM", fmt_offset(t.from)),
        prop("TZOFFSETTO", fmt_offset(t.to)),
    ];
    if !t.abbr.is_empty() {
        props.push(prop("TZNAME", t.abbr.clone()));
    }
    if let Some(r) = rrule {
        props.push(prop("RRULE", r));
    }
    Component { name: (if t.dst { "DAYLIGHT" } else { "STANDARD" }).into(), properties: props, components: vec![] }
}

/// The yearly rule all of `ts` follow, if they are exactly one a year for `years` years.
fn yearly_rule(ts: &[&Transition], years: usize) -> Option<String> {
    let first = ts.first()?;
    if ts.len() != years {
        return None;
    }
    let l0 = local_before(first);
    let same = |f: &dyn Fn(&Transition) -> bool| ts.iter().all(|t| f(t));
    let base = same(&|t| {
        let l = local_before(t);
        t.from == first.from
            && t.to == first.to
            && l.month() == l0.month()
            && l.weekday() == l0.weekday()
            && l.time() == l0.time()
    });
    if !base {
        return None;
    }
    let years_ok = ts.windows(2).all(|w| local_before(w[1]).year() == local_before(w[0]).year() + 1);
    if !years_ok {
        return None;
    }
    let wd = byday(l0.weekday());
    let m = l0.month();
    if same(&|t| {
        let d = local_before(t).date();
        d.day() + 7 > days_in_month(d)
    }) {
        return Some(format!("FREQ=YEARLY;BYMONTH={m};BYDAY=-1{wd}"));
    }
    let nth = (l0.day() - 1) / 7 + 1;
    same(&|t| (local_before(t).day() - 1) / 7 + 1 == nth).then(|| format!("FREQ=YEARLY;BYMONTH={m};BYDAY={nth}{wd}"))
}

fn build(tz: Tz, year: i32) -> Component<'static> {
    let start = Utc.with_ymd_and_hms(year - YEARS_BEFORE, 1, 1, 0, 0, 0).single().unwrap_or_else(Utc::now);
    let end = Utc.with_ymd_and_hms(year + YEARS_AFTER + 1, 1, 1, 0, 0, 0).single().unwrap_or_else(Utc::now);
    let all = transitions(tz, start, end);
    let years = (YEARS_BEFORE + YEARS_AFTER + 1) as usize;
    let mut components = Vec::new();
    if all.is_empty() {
        // No changes in the span: one standard observance with the fixed offset.
        let (off, _, abbr) = offset_key(tz, start);
        let t = Transition { at: start - Duration::seconds(i64::from(off)), from: off, to: off, dst: false, abbr };
        let mut c = observance(&t, None);
        c.properties[0] = prop("DTSTART", "19700101T000000".into());
        components.push(c);
    } else {
        for dst in [false, true] {
            let kind: Vec<&Transition> = all.iter().filter(|t| t.dst == dst).collect();
            match yearly_rule(&kind, years) {
                Some(rule) => components.push(observance(kind[0], Some(rule))),
                None => components.extend(kind.iter().map(|t| observance(t, None))),
            }
        }
    }
    Component { name: "VTIMEZONE".into(), properties: vec![prop("TZID", tz.name().to_string())], components }
}

/// A VTIMEZONE for `tz` covering the years around `year`. Cached: zones do not change while
/// the process runs.
pub fn vtimezone(tz: Tz, year: i32) -> Component<'static> {
    static CACHE: OnceLock<Mutex<HashMap<(Tz, i32), Component<'static>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().ok().and_then(|m| m.get(&(tz, year)).cloned()) {
        return c;
    }
    let c = build(tz, year);
    if let Ok(mut m) = cache.lock() {
        m.insert((tz, year), c.clone());
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(c: &Component<'_>) -> String {
        let cal = icalendar::parser::Calendar { properties: vec![], components: vec![c.clone()] };
        cal.to_string()
    }

    #[test]
    fn new_york_uses_us_rules() {
        let s = text(&vtimezone(chrono_tz::America::New_York, 2026));
        assert!(s.contains("TZID:America/New_York"), "{s}");
        assert!(s.contains("RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU"), "{s}");
        assert!(s.contains("RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU"), "{s}");
        assert!(s.contains("DTSTART:20250309T020000"), "{s}");
        assert!(s.contains("TZOFFSETFROM:-0500") && s.contains("TZOFFSETTO:-0400"), "{s}");
        assert!(s.contains("TZNAME:EDT"), "{s}");
    }

    #[test]
    fn europe_uses_last_sunday() {
        let s = text(&vtimezone(chrono_tz::Europe::Berlin, 2026));
        assert!(s.contains("BYMONTH=3;BYDAY=-1SU") && s.contains("BYMONTH=10;BYDAY=-1SU"), "{s}");
    }

    #[test]
    fn zones_without_dst_and_irregular_ones() {
        let s = text(&vtimezone(chrono_tz::Asia::Tokyo, 2026));
        assert!(s.contains("BEGIN:STANDARD") && s.contains("TZOFFSETTO:+0900") && !s.contains("DAYLIGHT"), "{s}");
        let s = text(&vtimezone(chrono_tz::Asia::Kolkata, 2026));
        assert!(s.contains("TZOFFSETTO:+0530"), "{s}");
        // Tehran dropped DST in 2022: the rule is not yearly over the span, so explicit observances.
        let s = text(&vtimezone(chrono_tz::Asia::Tehran, 2021));
        assert!(!s.contains("RRULE"), "{s}");
        assert!(s.contains("TZOFFSETTO:+0430"), "{s}");
    }
}
