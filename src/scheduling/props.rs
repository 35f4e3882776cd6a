//! Property tests for the scheduling core: whatever the busy time, zone (DST-change weeks in
//! New York, London, Sydney and Lord Howe's half-hour shift included), hours and bounds, every
//! slot is clear of busy time plus buffer, inside working hours on the wall clock, inside the
//! bounds, distinct from the others, and the answer does not depend on the busy list's order.

use chrono::{Datelike, Duration, Timelike, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;

use super::*;

const ZONES: [Tz; 6] = [
    chrono_tz::America::New_York,
    chrono_tz::Europe::London,
    chrono_tz::Australia::Sydney,
    chrono_tz::Australia::Lord_Howe,
    chrono_tz::Asia::Kolkata,
    chrono_tz::UTC,
];

/// Week starts around the 2026 DST changes of the zones above, and an ordinary week.
const STARTS: [&str; 5] = [
    "2026-03-05T00:00:00Z",
    "2026-03-26T00:00:00Z",
    "2026-04-02T00:00:00Z",
    "2026-10-01T00:00:00Z",
    "2026-10-29T00:00:00Z",
];

fn ranges() -> impl Strategy<Value = Vec<DayRange>> {
    // Up to two ranges a day on a 15-minute grid; the second begins after the first ends.
    (0u32..96, 1u32..40, 0u32..20, 1u32..40, any::<bool>()).prop_map(|(a, la, gap, lb, two)| {
        let first = DayRange { start_min: a * 15, end_min: ((a + la) * 15).min(1440) };
        let mut v = vec![first];
        let b = (a + la + gap) * 15;
        if two && b < 1440 {
            v.push(DayRange { start_min: b, end_min: (b + lb * 15).min(1440) });
        }
        v.retain(|r| r.start_min < r.end_min);
        v
    })
}

fn request() -> impl Strategy<Value = (Request, Vec<Interval>)> {
    (
        0usize..ZONES.len(),
        0usize..STARTS.len(),
        proptest::collection::vec(ranges(), 7),
        (1i64..=16, 0i64..=4, 1usize..=6, 0i64..=3 * 24 * 60, proptest::option::of(0i64..=6 * 24 * 60)),
        proptest::option::of(0i64..=4 * 24 * 60),
        proptest::collection::vec((0i64..=7 * 24 * 60, 1i64..=300), 0..25),
    )
        .prop_filter_map(
            "empty week or bounds inverted",
            |(z, s, days, (dur, buf, count, now, ddl), earliest, busy)| {
                let days: [Vec<DayRange>; 7] = days.try_into().ok()?;
                let hours = WorkingHours::new(days).ok()?;
                let start: DateTime<Utc> = STARTS[s].parse().ok()?;
                let m = |x: i64| start + Duration::minutes(x);
                let req = Request {
                    now: m(now),
                    window: Interval::new(start, start + Duration::days(7)),
                    zone: ZONES[z],
                    working_hours: hours,
                    duration: Duration::minutes(dur * 15),
                    buffer: Duration::minutes(buf * 5),
                    earliest_start: earliest.map(m),
                    deadline: ddl.map(m),
                    count,
                    step: Duration::minutes(DEFAULT_STEP_MINUTES),
                };
                req.validate().ok()?;
                let busy = busy.into_iter().map(|(a, len)| Interval::new(m(a), m(a + len))).collect();
                Some((req, busy))
            },
        )
}

fn in_working_hours(req: &Request, t: DateTime<Utc>) -> bool {
    let l = t.with_timezone(&req.zone);
    let min = l.hour() * 60 + l.minute();
    req.working_hours.on(l.weekday()).iter().any(|r| r.start_min <= min && min < r.end_min)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn slots_respect_busy_hours_bounds_and_are_deterministic((req, busy) in request()) {
        let out = suggest(&req, &busy).unwrap();
        let mut reversed = busy.clone();
        reversed.reverse();
        prop_assert_eq!(&out, &suggest(&req, &reversed).unwrap());
        let Outcome::Slots(slots) = out else { return Ok(()) };
        prop_assert!(!slots.is_empty() && slots.len() <= req.count);
        let lower = [Some(req.now), Some(req.window.start), req.earliest_start].into_iter().flatten().max().unwrap();
        let upper = req.deadline.map_or(req.window.end, |d| d.min(req.window.end));
        for (i, s) in slots.iter().enumerate() {
            let slot = Interval::new(s.start, s.end);
            prop_assert_eq!(slot.len(), req.duration);
            prop_assert!(s.start >= lower && s.end <= upper, "{:?} outside [{}, {})", slot, lower, upper);
            for b in &busy {
                let padded = Interval::new(b.start - req.buffer, b.end + req.buffer);
                prop_assert!(!slot.overlaps(&padded), "{:?} overlaps busy {:?} + buffer", slot, b);
            }
            // Every minute of the slot is working time on the zone's wall clock.
            let mut t = s.start;
            while t < s.end {
                prop_assert!(in_working_hours(&req, t), "{} ({}) not in working hours", t, t.with_timezone(&req.zone));
                t += Duration::minutes(1);
            }
            for o in &slots[i + 1..] {
                prop_assert!(!slot.overlaps(&Interval::new(o.start, o.end)));
                prop_assert!(o.score <= s.score);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// Three auto tasks of one user with the same request: every placement is clear of busy time
    /// plus buffer, inside working hours, and no two share time; packing twice gives the same.
    #[test]
    fn packed_tasks_never_share_time((req, busy) in request()) {
        let tasks: Vec<place::AutoTask> = ["x", "y", "z"]
            .iter()
            .map(|id| place::AutoTask { id: (*id).to_string(), request: req.clone(), current: None })
            .collect();
        let out = pack(&tasks, &busy);
        prop_assert_eq!(&out, &pack(&tasks, &busy));
        let placed: Vec<Interval> = out
            .iter()
            .filter_map(|(_, p)| match p {
                Ok(Placement::Move(s)) => Some(Interval::new(s.start, s.end)),
                _ => None,
            })
            .collect();
        for (i, a) in placed.iter().enumerate() {
            prop_assert!(place::still_fits(&req, &busy, *a), "{:?}", a);
            for b in &placed[i + 1..] {
                prop_assert!(!a.overlaps(b), "{:?} and {:?} share time", a, b);
            }
        }
    }
}
