//! The slot search: free time = working hours ∩ [earliest, deadline) − (busy widened by the
//! buffer); candidate starts on a grid; ranked by a fixed score; the "why" in words.
//!
//! Owns: candidate enumeration, the score and the explanation. Must not touch validation (done
//! by `Request::validate` before this runs) or anything outside the request.
//!
//! The score (0..=1) is `0.85 × earliness + 0.15 × snugness`: earlier is better (a task placed
//! sooner leaves room to move it before its deadline), and a slot that starts or ends against
//! busy time or the edge of working hours (to the grid) does not cut free time into unusable
//! pieces; earliness dominates, so snugness only reorders slots about a sixth of the window
//! apart. Ties go to the earlier start, so the order is total and the answer deterministic.

use chrono::{DateTime, Duration, Utc};

use super::interval::{Interval, merge, subtract, widen};
use super::{Outcome, Request, Slot};

const EARLY_WEIGHT: f64 = 0.85;
const SNUG_WEIGHT: f64 = 0.15;

fn ceil_to(t: DateTime<Utc>, step: Duration) -> DateTime<Utc> {
    let (secs, step_s) = (t.timestamp(), step.num_seconds().max(1));
    let rem = secs.rem_euclid(step_s);
    let base = t - Duration::nanoseconds(i64::from(t.timestamp_subsec_nanos()));
    if rem == 0 && t.timestamp_subsec_nanos() == 0 { t } else { base + Duration::seconds(step_s - rem) }
}

struct Candidate {
    slot: Interval,
    free: Interval,
    score: f64,
}

pub(super) fn search(req: &Request, busy: &[Interval]) -> Outcome {
    let mut from = req.window.start.max(req.now);
    if let Some(e) = req.earliest_start {
        from = from.max(e);
    }
    let from = ceil_to(from, req.step);
    let to = req.deadline.map_or(req.window.end, |d| d.min(req.window.end));
    if from + req.duration > to {
        return Outcome::NoRoom { message: no_room(req, from, to, "the time between them is shorter than the task") };
    }
    let span = Interval::new(from, to);
    let blocked = widen(&merge(busy.iter().copied()), req.buffer);
    let free = subtract(&req.working_hours.intervals(req.zone, span), &blocked);

    let room = (to - from - req.duration).num_seconds().max(1) as f64;
    let mut candidates = Vec::new();
    for f in &free {
        let mut s = ceil_to(f.start, req.step);
        while s + req.duration <= f.end {
            let slot = Interval::new(s, s + req.duration);
            let earliness = 1.0 - ((s - from).num_seconds() as f64 / room).clamp(0.0, 1.0);
            // The first grid start of a free stretch counts as against its edge.
            let snug = if s == ceil_to(f.start, req.step) || slot.end == f.end { 1.0 } else { 0.0 };
            let score = ((EARLY_WEIGHT * earliness + SNUG_WEIGHT * snug) * 1000.0).round() / 1000.0;
            candidates.push(Candidate { slot, free: *f, score });
            s += req.step;
        }
    }
    if candidates.is_empty() {
        return Outcome::NoRoom { message: no_room(req, from, to, "every working hour between them is busy") };
    }
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.slot.start.cmp(&b.slot.start)));
    let first_start = free.first().map(|f| ceil_to(f.start, req.step));
    let mut picked: Vec<&Candidate> = Vec::new();
    for c in &candidates {
        if picked.len() == req.count {
            break;
        }
        // Alternatives, not variations: no two suggestions share time.
        if picked.iter().all(|p| !p.slot.overlaps(&c.slot)) {
            picked.push(c);
        }
    }
    Outcome::Slots(
        picked
            .into_iter()
            .map(|c| Slot {
                start: c.slot.start,
                end: c.slot.end,
                score: c.score,
                why: why(req, c, &blocked, first_start == Some(c.slot.start)),
            })
            .collect(),
    )
}

fn local(req: &Request, t: DateTime<Utc>, fmt: &str) -> String {
    t.with_timezone(&req.zone).format(fmt).to_string()
}

fn no_room(req: &Request, from: DateTime<Utc>, to: DateTime<Utc>, detail: &str) -> String {
    let bound =
        if req.deadline.is_some_and(|d| d <= req.window.end) { "the deadline" } else { "the end of the window" };
    format!(
        "no free {} min inside working hours between {} and {} ({}, {bound}) with a {} min buffer: {detail}",
        req.duration.num_minutes(),
        local(req, from, "%a %d %b %Y %H:%M"),
        local(req, to, "%a %d %b %Y %H:%M"),
        req.zone.name(),
        req.buffer.num_minutes(),
    )
}

fn span_words(d: Duration) -> String {
    let (days, hours) = (d.num_days(), d.num_hours() % 24);
    match (days, hours) {
        (0, 0) => format!("{} min", d.num_minutes()),
        (0, h) => format!("{h} h"),
        (d, 0) => format!("{d} day{}", if d == 1 { "" } else { "s" }),
        (d, h) => format!("{d} day{} {h} h", if d == 1 { "" } else { "s" }),
    }
}

fn why(req: &Request, c: &Candidate, blocked: &[Interval], earliest: bool) -> String {
    let mut reasons = Vec::new();
    if earliest {
        reasons.push("the earliest free time".to_string());
    }
    let after_busy = blocked.iter().any(|b| b.end == c.free.start);
    let before_busy = blocked.iter().any(|b| b.start == c.free.end);
    let buffer = if req.buffer > Duration::zero() {
        format!(" (with the {} min buffer)", req.buffer.num_minutes())
    } else {
        String::new()
    };
    if c.slot.start == ceil_to(c.free.start, req.step) {
        reasons.push(if after_busy {
            format!("right after busy time{buffer}")
        } else {
            "at the start of free working time".to_string()
        });
    } else if c.slot.end == c.free.end {
        reasons.push(if before_busy {
            format!("ends right before busy time{buffer}")
        } else {
            "ends with the working day".to_string()
        });
    }
    if let Some(d) = req.deadline {
        reasons.push(format!("{} before the deadline", span_words(d - c.slot.end)));
    }
    format!(
        "{}–{} {}: {}",
        local(req, c.slot.start, "%a %d %b %H:%M"),
        local(req, c.slot.end, "%H:%M"),
        req.zone.name(),
        if reasons.is_empty() { "free inside working hours".to_string() } else { reasons.join("; ") }
    )
}
