//! Table tests for the scheduling core: interval arithmetic, working hours through DST,
//! buffers, bounds, ranking and "no room".

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use super::hours::local_range_to_utc;
use super::interval::{intersect, merge, subtract, widen};
use super::*;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).map(|d| d.with_timezone(&Utc)).unwrap()
}
fn iv(a: &str, b: &str) -> Interval {
    Interval::new(t(a), t(b))
}
fn ny() -> Tz {
    chrono_tz::America::New_York
}

fn req(zone: Tz, from: &str, to: &str, minutes: i64) -> Request {
    Request {
        now: t(from),
        window: iv(from, to),
        zone,
        working_hours: WorkingHours::office(),
        duration: Duration::minutes(minutes),
        buffer: Duration::zero(),
        earliest_start: None,
        deadline: None,
        count: 3,
        step: Duration::minutes(DEFAULT_STEP_MINUTES),
    }
}

fn slots(r: &Request, busy: &[Interval]) -> Vec<Slot> {
    match suggest(r, busy).unwrap() {
        Outcome::Slots(s) => s,
        Outcome::NoRoom { message } => panic!("no room: {message}"),
    }
}

#[test]
fn interval_set_operations() {
    let m = merge([
        iv("2026-03-02T10:00:00Z", "2026-03-02T11:00:00Z"),
        iv("2026-03-02T09:00:00Z", "2026-03-02T10:00:00Z"),
        iv("2026-03-02T10:30:00Z", "2026-03-02T10:45:00Z"),
        iv("2026-03-02T12:00:00Z", "2026-03-02T12:00:00Z"),
    ]);
    assert_eq!(m, vec![iv("2026-03-02T09:00:00Z", "2026-03-02T11:00:00Z")]);
    let day = [iv("2026-03-02T08:00:00Z", "2026-03-02T18:00:00Z")];
    assert_eq!(
        subtract(&day, &m),
        vec![iv("2026-03-02T08:00:00Z", "2026-03-02T09:00:00Z"), iv("2026-03-02T11:00:00Z", "2026-03-02T18:00:00Z")]
    );
    assert_eq!(intersect(&day, &m), m);
    assert_eq!(widen(&m, Duration::minutes(15)), vec![iv("2026-03-02T08:45:00Z", "2026-03-02T11:15:00Z")]);
}

#[test]
fn working_hours_through_dst_changes() {
    // (zone, local date, range, expected UTC intervals)
    let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    let r = |a: &str, b: &str| DayRange::parse(a, b).unwrap();
    let cases: Vec<(Tz, NaiveDate, DayRange, Vec<Interval>)> = vec![
        // Ordinary days either side of the March change: 09:00 EST = 14:00Z, 09:00 EDT = 13:00Z.
        (ny(), d("2026-03-06"), r("09:00", "17:00"), vec![iv("2026-03-06T14:00:00Z", "2026-03-06T22:00:00Z")]),
        (ny(), d("2026-03-09"), r("09:00", "17:00"), vec![iv("2026-03-09T13:00:00Z", "2026-03-09T21:00:00Z")]),
        // The spring-forward day itself: 02:00–03:00 does not exist; 01:00–04:00 is 2 real hours.
        (ny(), d("2026-03-08"), r("01:00", "04:00"), vec![iv("2026-03-08T06:00:00Z", "2026-03-08T08:00:00Z")]),
        // A range starting inside the gap starts when the gap ends (03:00 EDT = 07:00Z).
        (ny(), d("2026-03-08"), r("02:30", "05:00"), vec![iv("2026-03-08T07:00:00Z", "2026-03-08T09:00:00Z")]),
        // Fall back: 01:00–02:00 happens twice, so 00:00–03:00 is 4 real hours.
        (ny(), d("2026-11-01"), r("00:00", "03:00"), vec![iv("2026-11-01T04:00:00Z", "2026-11-01T08:00:00Z")]),
        // A range inside the repeated hour counts both passes.
        (
            ny(),
            d("2026-11-01"),
            r("01:15", "01:45"),
            vec![
                iv("2026-11-01T05:15:00Z", "2026-11-01T05:45:00Z"),
                iv("2026-11-01T06:15:00Z", "2026-11-01T06:45:00Z"),
            ],
        ),
        // London: BST starts 29 Mar 2026 at 01:00 GMT.
        (
            chrono_tz::Europe::London,
            d("2026-03-29"),
            r("00:00", "24:00"),
            vec![iv("2026-03-29T00:00:00Z", "2026-03-29T23:00:00Z")],
        ),
        (
            chrono_tz::Europe::London,
            d("2026-10-25"),
            r("09:00", "17:00"),
            vec![iv("2026-10-25T09:00:00Z", "2026-10-25T17:00:00Z")],
        ),
        // A half-hour zone.
        (
            chrono_tz::Asia::Kolkata,
            d("2026-03-02"),
            r("09:00", "17:00"),
            vec![iv("2026-03-02T03:30:00Z", "2026-03-02T11:30:00Z")],
        ),
    ];
    for (zone, day, range, want) in cases {
        assert_eq!(local_range_to_utc(zone, day, range), want, "{zone} {day} {}", range.label());
    }
}

#[test]
fn first_slot_is_the_start_of_the_day_and_slots_do_not_overlap() {
    // Monday 2 March 2026, New York (EST, -05:00).
    let r = req(ny(), "2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z", 60);
    let s = slots(&r, &[]);
    assert_eq!(s[0].start, t("2026-03-02T14:00:00Z"));
    assert!(s[0].why.contains("the earliest free time"), "{}", s[0].why);
    assert!(s[0].why.starts_with("Mon 02 Mar 09:00–10:00 America/New_York"), "{}", s[0].why);
    for (i, a) in s.iter().enumerate() {
        for b in &s[i + 1..] {
            assert!(!Interval::new(a.start, a.end).overlaps(&Interval::new(b.start, b.end)));
        }
        assert!(a.score >= s.last().unwrap().score);
    }
}

#[test]
fn busy_time_and_buffer_are_avoided() {
    let mut r = req(ny(), "2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z", 60);
    r.buffer = Duration::minutes(15);
    r.count = 1;
    // Meetings 09:00–10:00 and 10:30–11:00 local: with 15 min buffers the first hour that fits
    // starts at 11:15.
    let busy = [iv("2026-03-02T14:00:00Z", "2026-03-02T15:00:00Z"), iv("2026-03-02T15:30:00Z", "2026-03-02T16:00:00Z")];
    let s = slots(&r, &busy);
    assert_eq!(s[0].start, t("2026-03-02T16:15:00Z"));
    assert!(s[0].why.contains("right after busy time (with the 15 min buffer)"), "{}", s[0].why);
}

#[test]
fn earliest_start_now_and_deadline_bound_the_search() {
    let mut r = req(ny(), "2026-03-02T00:00:00Z", "2026-03-06T00:00:00Z", 30);
    r.now = t("2026-03-02T15:07:00Z"); // 10:07 local: the grid moves it to 10:15
    assert_eq!(slots(&r, &[])[0].start, t("2026-03-02T15:15:00Z"));
    r.earliest_start = Some(t("2026-03-03T18:00:00Z"));
    assert_eq!(slots(&r, &[])[0].start, t("2026-03-03T18:00:00Z"));
    r.deadline = Some(t("2026-03-03T18:45:00Z"));
    r.count = 5;
    let s = slots(&r, &[]);
    assert!(s.iter().all(|s| s.end <= t("2026-03-03T18:45:00Z") && s.start >= t("2026-03-03T18:00:00Z")));
    assert!(s[0].why.contains("before the deadline"), "{}", s[0].why);
}

#[test]
fn no_room_is_explicit() {
    let mut r = req(ny(), "2026-03-02T00:00:00Z", "2026-03-07T00:00:00Z", 60);
    r.deadline = Some(t("2026-03-04T00:00:00Z"));
    // Busy every working hour Monday and Tuesday.
    let busy = [iv("2026-03-02T13:00:00Z", "2026-03-02T23:00:00Z"), iv("2026-03-03T13:00:00Z", "2026-03-03T23:00:00Z")];
    match suggest(&r, &busy).unwrap() {
        Outcome::NoRoom { message } => {
            assert!(message.contains("the deadline") && message.contains("busy"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // The weekend has no working hours at all.
    let r = req(ny(), "2026-03-07T05:00:00Z", "2026-03-09T05:00:00Z", 30);
    assert!(matches!(suggest(&r, &[]).unwrap(), Outcome::NoRoom { .. }));
}

#[test]
fn bad_requests_name_the_field() {
    let base = req(ny(), "2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z", 60);
    let field = |f: fn(&mut Request)| {
        let mut r = base.clone();
        f(&mut r);
        suggest(&r, &[]).unwrap_err().field
    };
    assert_eq!(field(|r| r.duration = Duration::zero()), "duration_minutes");
    assert_eq!(field(|r| r.duration = Duration::days(2)), "duration_minutes");
    assert_eq!(field(|r| r.window.end = r.window.start), "window");
    assert_eq!(field(|r| r.window.end = r.window.start + Duration::days(91)), "window");
    assert_eq!(field(|r| r.count = 0), "count");
    assert_eq!(field(|r| r.buffer = Duration::minutes(-5)), "buffer_minutes");
    assert_eq!(
        field(|r| {
            r.earliest_start = Some(r.window.end);
            r.deadline = Some(r.window.start);
        }),
        "deadline"
    );
    let r = |a: &str, b: &str| DayRange::parse(a, b).unwrap();
    assert_eq!(WorkingHours::new(Default::default()).unwrap_err().field, "working_hours");
    let mut days: [Vec<DayRange>; 7] = Default::default();
    days[0] = vec![r("09:00", "12:00"), r("11:00", "13:00")];
    assert!(WorkingHours::new(days).unwrap_err().message.contains("overlap on Mon"));
    assert!(DayRange::parse("17:00", "09:00").is_none());
    assert!(DayRange::parse("24:00", "24:00").is_none());
    assert!(DayRange::parse("9:00", "10:00").is_none());
}

#[test]
fn the_same_input_gives_the_same_answer() {
    let mut r = req(Tz::Europe__London, "2026-03-27T00:00:00Z", "2026-04-03T00:00:00Z", 45);
    r.count = 10;
    r.buffer = Duration::minutes(10);
    let busy = [iv("2026-03-30T09:30:00Z", "2026-03-30T11:00:00Z")];
    assert_eq!(suggest(&r, &busy).unwrap(), suggest(&r, &busy).unwrap());
    let _ = Utc.timestamp_opt(0, 0);
}

#[test]
fn ten_thousand_busy_intervals_over_ninety_days() {
    // The benchmark size: the whole search stays linear in the busy list (merge, widen,
    // subtract) plus the candidate grid; printed for the record, bounded loosely for debug builds.
    let mut r = req(ny(), "2026-01-05T00:00:00Z", "2026-04-05T00:00:00Z", 15);
    r.count = 10;
    r.buffer = Duration::minutes(1);
    let start = t("2026-01-05T00:00:00Z");
    // Fixed: 10,000 short, overlapping meetings crowding every day's 09:00–13:00 (14:00–18:00Z),
    // afternoons free.
    let busy: Vec<Interval> = (0..10_000i64)
        .map(|i| {
            let at = start + Duration::days(i % 90) + Duration::minutes(14 * 60 + (i * 37) % 235);
            Interval::new(at, at + Duration::minutes(1 + (i * 31) % 5))
        })
        .collect();
    let began = std::time::Instant::now();
    let out = suggest(&r, &busy).unwrap();
    let took = began.elapsed();
    eprintln!("10,000 busy intervals, 90 days: {took:?}");
    assert!(matches!(&out, Outcome::Slots(s) if s.len() == 10), "{out:?}");
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
}
