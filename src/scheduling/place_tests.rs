//! Placing auto-scheduled tasks: first placement, stability, moving off a new meeting within the
//! deadline, blocks under way, no room, and packing several tasks without sharing time.

use chrono::{DateTime, Duration, Utc};

use super::*;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).map(|d| d.with_timezone(&Utc)).unwrap()
}
fn iv(a: &str, b: &str) -> Interval {
    Interval::new(t(a), t(b))
}

/// One hour, this week (Mon 2 – Fri 6 March 2026, New York, EST), deadline Wednesday night.
fn req() -> Request {
    Request {
        now: t("2026-03-01T12:00:00Z"),
        window: iv("2026-03-02T05:00:00Z", "2026-03-07T05:00:00Z"),
        zone: chrono_tz::America::New_York,
        working_hours: WorkingHours::office(),
        duration: Duration::hours(1),
        buffer: Duration::minutes(10),
        earliest_start: None,
        deadline: Some(t("2026-03-05T05:00:00Z")),
        count: 5,
        step: Duration::minutes(DEFAULT_STEP_MINUTES),
    }
}

fn moved(p: Placement) -> Interval {
    match p {
        Placement::Move(s) => Interval::new(s.start, s.end),
        other => panic!("expected a move, got {other:?}"),
    }
}

#[test]
fn first_placement_then_stability_then_moving_off_a_meeting() {
    let r = req();
    // Nothing placed yet: Monday 09:00 EST.
    let first = moved(replan(&r, &[], None).unwrap());
    assert_eq!(first, iv("2026-03-02T14:00:00Z", "2026-03-02T15:00:00Z"));
    // Placed Tuesday 11:00 by an earlier run: it still fits, so it stays (no churn).
    let tuesday = iv("2026-03-03T16:00:00Z", "2026-03-03T17:00:00Z");
    assert_eq!(replan(&r, &[], Some(tuesday)).unwrap(), Placement::Keep(tuesday));
    // A meeting lands on it (10:30–11:30): it moves to the best slot clear of the meeting and
    // its buffer, still before the deadline.
    let meeting = iv("2026-03-03T15:30:00Z", "2026-03-03T16:30:00Z");
    let busy = [iv("2026-03-02T13:00:00Z", "2026-03-02T23:00:00Z"), meeting];
    let to = moved(replan(&r, &busy, Some(tuesday)).unwrap());
    assert_eq!(to, iv("2026-03-03T14:00:00Z", "2026-03-03T15:00:00Z"));
    assert!(to.end <= r.deadline.unwrap());
    // A meeting ending 5 minutes before the block breaks the 10-minute buffer: that moves it too.
    let close = iv("2026-03-03T15:00:00Z", "2026-03-03T15:55:00Z");
    assert!(!place::still_fits(&r, &[close], tuesday));
}

#[test]
fn a_block_under_way_is_kept_and_a_full_week_is_no_room() {
    let mut r = req();
    let block = iv("2026-03-03T16:00:00Z", "2026-03-03T17:00:00Z");
    r.now = t("2026-03-03T16:20:00Z");
    let meeting = iv("2026-03-03T16:00:00Z", "2026-03-03T18:00:00Z");
    assert_eq!(replan(&r, &[meeting], Some(block)).unwrap(), Placement::Keep(block));
    let full = [iv("2026-03-02T00:00:00Z", "2026-03-07T00:00:00Z")];
    let r = req();
    assert!(
        matches!(replan(&r, &full, Some(block)).unwrap(), Placement::NoRoom { message } if message.contains("deadline"))
    );
}

#[test]
fn packing_gives_each_task_its_own_time_by_deadline_then_id() {
    let mut late = req();
    late.deadline = None;
    let tasks = vec![
        AutoTask { id: "b".into(), request: req(), current: None },
        AutoTask { id: "c-no-deadline".into(), request: late, current: None },
        AutoTask { id: "a".into(), request: req(), current: None },
    ];
    let out = pack(&tasks, &[]);
    let slot = |id: &str| moved(out.iter().find(|(i, _)| i == id).unwrap().1.clone().unwrap());
    // Input order kept in the answer; placement order: a, b (same deadline, by id), then c.
    assert_eq!(out.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(), ["b", "c-no-deadline", "a"]);
    assert_eq!(slot("a"), iv("2026-03-02T14:00:00Z", "2026-03-02T15:00:00Z"));
    // The buffer keeps 10 minutes between blocks too; starts stay on the quarter hour.
    assert_eq!(slot("b").start, t("2026-03-02T15:15:00Z"));
    assert_eq!(slot("c-no-deadline").start, t("2026-03-02T16:30:00Z"));
    assert_eq!(pack(&tasks, &[]), out, "deterministic");
}

#[test]
fn a_new_task_never_displaces_a_placed_block_and_a_meeting_moves_only_what_it_hits() {
    // "b" holds Monday 09:00; "a" (first by id, same deadline) is new: it goes elsewhere.
    let monday9 = iv("2026-03-02T14:00:00Z", "2026-03-02T15:00:00Z");
    let tasks = vec![
        AutoTask { id: "a".into(), request: req(), current: None },
        AutoTask { id: "b".into(), request: req(), current: Some(monday9) },
    ];
    let out = pack(&tasks, &[]);
    assert_eq!(out[1].1, Ok(Placement::Keep(monday9)));
    let a = moved(out[0].1.clone().unwrap());
    assert!(!a.overlaps(&monday9) && a.start >= monday9.end + Duration::minutes(10), "{a:?}");

    // Two placed blocks; a meeting lands on the second: only that one moves.
    let tuesday = iv("2026-03-03T16:00:00Z", "2026-03-03T17:00:00Z");
    let tasks = vec![
        AutoTask { id: "a".into(), request: req(), current: Some(monday9) },
        AutoTask { id: "b".into(), request: req(), current: Some(tuesday) },
    ];
    let meeting = iv("2026-03-03T16:30:00Z", "2026-03-03T17:30:00Z");
    let out = pack(&tasks, &[meeting]);
    assert_eq!(out[0].1, Ok(Placement::Keep(monday9)));
    let b = moved(out[1].1.clone().unwrap());
    assert!(!b.overlaps(&meeting) && !b.overlaps(&monday9), "{b:?}");
    // Two blocks on the same time (two replicas raced): the first by order keeps it.
    let tasks = vec![
        AutoTask { id: "a".into(), request: req(), current: Some(tuesday) },
        AutoTask { id: "b".into(), request: req(), current: Some(tuesday) },
    ];
    let out = pack(&tasks, &[]);
    assert_eq!(out[0].1, Ok(Placement::Keep(tuesday)));
    assert!(!moved(out[1].1.clone().unwrap()).overlaps(&tuesday));
}
