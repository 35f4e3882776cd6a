//! The work queue's ready set: which waiting object a free worker takes next.
//!
//! Owns: the order. Connections first: a connection's check gates every TaskSync that uses it,
//! so a connection waiting behind thousands of TaskSyncs holds all of its own back (measured:
//! connections whose first check failed became Ready 20-40 s late in a 2,000-task run, as their
//! retries queued behind the backlog). TaskSyncs wait in one lane per connection, served round
//! robin, with at most `per_lane` of a lane running at once: a connection's calls are paced by
//! its client limiter, and workers parked in that pacing are workers other connections lack
//! (measured: all 20 workers parked behind one connection's 10 requests/s while retries of
//! other connections waited 25 s). A lane whose connection the client limiter holds (a
//! Retry-After, or its breaker: `Outcome::Held`) waits as a whole until the hold ends:
//! otherwise its TaskSyncs would each be run into the same hold, written and requeued, and all
//! come back at once when it ends. Within a lane, TaskSyncs whose timer fired (retries, holds
//! that ended, resyncs) go before the rest: a retry's next wait then overlaps the lane's other
//! work instead of starting after it (measured: a first retry waited 16 s at the median behind
//! its lane's backlog, so the unluckiest tasks' failure streaks began late and set the end of
//! the run). Must not touch: timers, triggers, ownership or the engine.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use tokio::time::Instant;

use super::known::Key;
use crate::engine::{Kind, ObjectKey};

/// Waiting objects, deduplicated, in the order workers take them.
pub(super) struct Ready {
    per_lane: usize,
    connections: VecDeque<Key>,
    /// Lane (the connection a TaskSync uses, or the TaskSync itself while that is unknown) →
    /// its waiting TaskSyncs.
    lanes: HashMap<Key, Lane>,
    /// Lanes with waiting TaskSyncs and room to run one, in turn order; `in_turn` mirrors it.
    turn: VecDeque<Key>,
    in_turn: HashSet<Key>,
    /// Running TaskSyncs per lane.
    running: HashMap<Key, usize>,
    /// Lanes held until then; `hold_ends` orders them by that time (an outage can hold
    /// thousands of connections, and the queue asks for the next end on every turn of its loop).
    held: HashMap<Key, Instant>,
    hold_ends: BTreeSet<(Instant, Key)>,
    queued: HashSet<Key>,
}

/// One lane's waiting TaskSyncs: those whose timer fired first.
#[derive(Default)]
struct Lane {
    due: VecDeque<Key>,
    fresh: VecDeque<Key>,
}

impl Lane {
    fn pop(&mut self) -> Option<Key> {
        self.due.pop_front().or_else(|| self.fresh.pop_front())
    }

    fn is_empty(&self) -> bool {
        self.due.is_empty() && self.fresh.is_empty()
    }
}

impl Ready {
    pub fn new(per_lane: usize) -> Self {
        Ready {
            per_lane: if per_lane == 0 { usize::MAX } else { per_lane },
            connections: VecDeque::new(),
            lanes: HashMap::new(),
            turn: VecDeque::new(),
            in_turn: HashSet::new(),
            running: HashMap::new(),
            held: HashMap::new(),
            hold_ends: BTreeSet::new(),
            queued: HashSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.queued.len()
    }

    pub fn contains(&self, key: &ObjectKey) -> bool {
        self.queued.contains(key)
    }

    /// Queue `key` (in `lane`, for a TaskSync; `due`: its timer fired) unless it is queued.
    pub fn push(&mut self, key: Key, lane: Key, due: bool) {
        if !self.queued.insert(key.clone()) {
            return;
        }
        match key.kind {
            Kind::CalendarConnection => self.connections.push_back(key),
            Kind::TaskSync => {
                let waiting = self.lanes.entry(lane.clone()).or_default();
                if due {
                    waiting.due.push_back(key)
                } else {
                    waiting.fresh.push_back(key)
                }
                self.offer(lane);
            }
        }
    }

    /// The next object to run and its lane (`None` for a connection), counted as running in
    /// its lane until `done`.
    pub fn pop(&mut self, now: Instant) -> Option<(Key, Option<Key>)> {
        if let Some(key) = self.connections.pop_front() {
            self.queued.remove(&key);
            return Some((key, None));
        }
        while let Some(lane) = self.turn.pop_front() {
            self.in_turn.remove(&lane);
            if self.held.get(&lane).is_some_and(|until| *until > now) {
                // Leaves the turn; `release_due` puts it back.
                continue;
            }
            let Some(waiting) = self.lanes.get_mut(&lane) else { continue };
            let Some(key) = waiting.pop() else {
                self.lanes.remove(&lane);
                continue;
            };
            if waiting.is_empty() {
                self.lanes.remove(&lane);
            }
            self.queued.remove(&key);
            *self.running.entry(lane.clone()).or_insert(0) += 1;
            self.offer(lane.clone());
            return Some((key, Some(lane)));
        }
        None
    }

    /// A TaskSync of `lane` stopped running: the lane may take its turn again.
    pub fn done(&mut self, lane: &Key) {
        if let Some(n) = self.running.get_mut(lane) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.running.remove(lane);
            }
        }
        self.offer(lane.clone());
    }

    /// Run none of `lane`'s TaskSyncs before `until` (the later of two holds wins).
    pub fn hold(&mut self, lane: &Key, until: Instant) {
        if let Some(at) = self.held.get(lane).copied() {
            if at >= until {
                return;
            }
            self.hold_ends.remove(&(at, lane.clone()));
        }
        self.held.insert(lane.clone(), until);
        self.hold_ends.insert((until, lane.clone()));
    }

    /// End the holds due at `now`.
    pub fn release_due(&mut self, now: Instant) {
        while self.hold_ends.first().is_some_and(|(until, _)| *until <= now) {
            if let Some((_, lane)) = self.hold_ends.pop_first() {
                self.held.remove(&lane);
                self.offer(lane);
            }
        }
    }

    /// When the next hold ends.
    pub fn next_release(&self) -> Option<Instant> {
        self.hold_ends.first().map(|(until, _)| *until)
    }

    /// Put `lane` in turn if it has waiting TaskSyncs, room to run one, no hold and no turn yet.
    fn offer(&mut self, lane: Key) {
        if self.held.contains_key(&lane) {
            return;
        }
        let room = self.running.get(&lane).copied().unwrap_or(0) < self.per_lane;
        let waiting = self.lanes.get(&lane).is_some_and(|w| !w.is_empty());
        if room && waiting && self.in_turn.insert(lane.clone()) {
            self.turn.push_back(lane);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(n: &str) -> Key {
        Key::new(ObjectKey::task_sync("ns", n))
    }
    fn conn(n: &str) -> Key {
        Key::new(ObjectKey::connection("ns", n))
    }

    fn names(ready: &mut Ready, n: usize) -> Vec<String> {
        (0..n).filter_map(|_| ready.pop(Instant::now())).map(|(k, _)| k.name.clone()).collect()
    }

    #[test]
    fn connections_go_before_task_syncs_queued_earlier() {
        let mut r = Ready::new(4);
        r.push(task("t1"), conn("a"), false);
        r.push(task("t2"), conn("a"), false);
        r.push(conn("a"), conn("a"), false);
        assert_eq!(names(&mut r, 3), ["a", "t1", "t2"]);
        assert!(r.pop(Instant::now()).is_none());
    }

    #[test]
    fn lanes_take_turns_and_a_full_lane_waits_for_done() {
        let mut r = Ready::new(2);
        for t in ["a1", "a2", "a3", "a4"] {
            r.push(task(t), conn("a"), false);
        }
        r.push(task("b1"), conn("b"), false);
        // Round robin across lanes, at most two of lane a at once.
        assert_eq!(names(&mut r, 4), ["a1", "b1", "a2"]);
        assert!(r.pop(Instant::now()).is_none(), "lane a is full, lane b empty");
        r.done(&conn("a"));
        assert_eq!(names(&mut r, 2), ["a3"]);
        r.done(&conn("a"));
        r.done(&conn("a"));
        assert_eq!(names(&mut r, 2), ["a4"]);
        assert!(!r.contains(&task("a4")));
    }

    #[test]
    fn zero_means_no_cap() {
        let mut r = Ready::new(0);
        for n in 0..50 {
            r.push(task(&format!("t{n}")), conn("a"), false);
        }
        assert_eq!(names(&mut r, 60).len(), 50);
    }

    #[test]
    fn a_key_is_queued_once() {
        let mut r = Ready::new(4);
        r.push(task("t1"), conn("a"), false);
        r.push(task("t1"), conn("a"), false);
        assert!(r.contains(&task("t1")));
        assert_eq!(names(&mut r, 3), ["t1"]);
        r.push(task("t1"), conn("a"), false);
        assert_eq!(names(&mut r, 3), ["t1"], "queued again once it was taken");
    }

    #[test]
    fn done_for_a_lane_without_waiting_work_keeps_nothing_in_turn() {
        let mut r = Ready::new(1);
        r.push(task("t1"), conn("a"), false);
        assert_eq!(names(&mut r, 1), ["t1"]);
        r.done(&conn("a"));
        assert!(r.pop(Instant::now()).is_none());
        assert!(r.running.is_empty() && r.turn.is_empty() && r.lanes.is_empty());
    }

    #[test]
    fn within_a_lane_fired_timers_go_first() {
        let mut r = Ready::new(4);
        r.push(task("fresh1"), conn("a"), false);
        r.push(task("fresh2"), conn("a"), false);
        r.push(task("retry"), conn("a"), true);
        assert_eq!(names(&mut r, 3), ["retry", "fresh1", "fresh2"]);
    }

    #[test]
    fn a_held_lane_waits_until_its_hold_ends_and_others_go_on() {
        let mut r = Ready::new(4);
        let t0 = Instant::now();
        let secs = std::time::Duration::from_secs;
        r.push(task("a1"), conn("a"), false);
        assert_eq!(names(&mut r, 1), ["a1"]);
        // a1 came back held for 2 s; a2 and a3 queue meanwhile, b1 too.
        r.done(&conn("a"));
        r.hold(&conn("a"), t0 + secs(2));
        r.hold(&conn("a"), t0 + secs(1));
        for t in ["a2", "a3"] {
            r.push(task(t), conn("a"), false);
        }
        r.push(task("b1"), conn("b"), false);
        assert_eq!(r.next_release(), Some(t0 + secs(2)), "the later hold wins");
        let took: Vec<String> = std::iter::from_fn(|| r.pop(t0)).map(|(k, _)| k.name.clone()).collect();
        assert_eq!(took, ["b1"]);
        r.release_due(t0 + secs(1));
        assert!(r.pop(t0 + secs(1)).is_none(), "not before the hold ends");
        r.release_due(t0 + secs(2));
        assert_eq!(r.next_release(), None);
        assert!(r.held.is_empty() && r.hold_ends.is_empty());
        let took: Vec<String> = std::iter::from_fn(|| r.pop(t0 + secs(2))).map(|(k, _)| k.name.clone()).collect();
        assert_eq!(took, ["a2", "a3"]);
    }
}
