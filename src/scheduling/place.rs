//! Placing tasks that ask for a place instead of a time (issue 17, part 3's core): keep a placed
//! block while it still fits, move it to the best slot when busy time lands on it, and pack
//! several such tasks of one user so no two take the same time. Pure, like the rest of the core;
//! the engine (`engine::schedule`) supplies busy time, current blocks and `now`, and writes the
//! result.
//!
//! Owns: `replan` (one task) and `pack` (a user's tasks, deterministic order). Must not touch
//! the slot search itself (`slots`) or anything outside the request.

use super::interval::{Interval, merge, widen};
use super::{Outcome, Request, ScheduleError, Slot, suggest};

/// What to do with one auto-placed task.
#[derive(Clone, Debug, PartialEq)]
pub enum Placement {
    /// Its block still fits (or has begun): leave it where it is. Moving a block that fits would
    /// churn the user's calendar for nothing.
    Keep(Interval),
    /// Write it here (first placement, or its old block no longer fits).
    Move(Slot),
    /// Nothing fits before the deadline (`Scheduled=False`, reason `NoRoom`).
    NoRoom { message: String },
}

/// Does `block` still satisfy `req` against `busy`: the task's length, inside working hours,
/// inside the bounds, clear of busy time plus buffer?
pub fn still_fits(req: &Request, busy: &[Interval], block: Interval) -> bool {
    let lower = [Some(req.window.start), req.earliest_start].into_iter().flatten().max().unwrap_or(req.window.start);
    let upper = req.deadline.map_or(req.window.end, |d| d.min(req.window.end));
    block.len() == req.duration
        && block.start >= lower
        && block.end <= upper
        && req.working_hours.intervals(req.zone, block) == vec![block]
        && widen(&merge(busy.iter().copied()), req.buffer).iter().all(|b| !b.overlaps(&block))
}

/// One task: keep `current` while it fits (a block already under way is kept whatever
/// happened: it is being worked on), else the best slot, else no room.
pub fn replan(req: &Request, busy: &[Interval], current: Option<Interval>) -> Result<Placement, ScheduleError> {
    req.validate()?;
    if let Some(block) = current
        && (block.start <= req.now || still_fits(req, busy, block))
    {
        return Ok(Placement::Keep(block));
    }
    let one = Request { count: 1, ..req.clone() };
    Ok(match suggest(&one, busy)? {
        Outcome::Slots(mut s) if !s.is_empty() => Placement::Move(s.remove(0)),
        Outcome::Slots(_) => Placement::NoRoom { message: "no slot fits".into() },
        Outcome::NoRoom { message } => Placement::NoRoom { message },
    })
}

/// One auto-placed task of a user.
#[derive(Clone, Debug)]
pub struct AutoTask {
    /// Stable identity (the TaskSync's name): the tie-break that makes packing deterministic.
    pub id: String,
    pub request: Request,
    /// Where its block is now, if placed.
    pub current: Option<Interval>,
}

/// Place all of a user's auto tasks at once, so none takes another's time. Blocks that still
/// fit are kept first (in the order below), so a new task or a new meeting moves only the blocks
/// it hits and never displaces one that is fine; then the others are placed one by one: the
/// earliest deadline first (no deadline last), then by id, each seeing the busy time plus every
/// block placed before it. Answers in the input's order; the same input gives the same answer.
pub fn pack(tasks: &[AutoTask], busy: &[Interval]) -> Vec<(String, Result<Placement, ScheduleError>)> {
    let mut order: Vec<usize> = (0..tasks.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |t: &AutoTask| (t.request.deadline.is_none(), t.request.deadline, t.id.clone());
        key(&tasks[a]).cmp(&key(&tasks[b]))
    });
    let mut taken: Vec<Interval> = busy.to_vec();
    let mut out: Vec<Option<Result<Placement, ScheduleError>>> = vec![None; tasks.len()];
    for &i in &order {
        let t = &tasks[i];
        if let Some(block) = t.current
            && t.request.validate().is_ok()
            && (block.start <= t.request.now || still_fits(&t.request, &taken, block))
        {
            taken.push(block);
            out[i] = Some(Ok(Placement::Keep(block)));
        }
    }
    for &i in &order {
        if out[i].is_some() {
            continue;
        }
        let t = &tasks[i];
        let placed = replan(&t.request, &taken, t.current);
        match &placed {
            Ok(Placement::Keep(b)) => taken.push(*b),
            Ok(Placement::Move(s)) => taken.push(Interval::new(s.start, s.end)),
            _ => {}
        }
        out[i] = Some(placed);
    }
    tasks
        .iter()
        .zip(out)
        .map(|(t, p)| (t.id.clone(), p.unwrap_or_else(|| Err(ScheduleError::invalid("id", "not placed")))))
        .collect()
}
