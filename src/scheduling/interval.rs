//! Half-open UTC intervals and the set operations the slot search needs: merge, widen,
//! intersect, subtract.
//!
//! Owns: `Interval` and its arithmetic. Must not touch zones, working hours or scoring.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// `[start, end)` in UTC. Empty when `end <= start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Interval {
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Interval {
        Interval { start, end }
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    pub fn len(&self) -> Duration {
        self.end - self.start
    }

    /// Do the two share any instant? Touching intervals (`a.end == b.start`) do not.
    pub fn overlaps(&self, other: &Interval) -> bool {
        self.start < other.end && other.start < self.end
    }

    pub fn contains(&self, other: &Interval) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

/// Sorted, non-overlapping, non-touching intervals covering the same instants as `items`
/// (empty ones dropped). Busy time from several calendars overlaps and repeats; this is the
/// one place that is resolved.
pub fn merge(items: impl IntoIterator<Item = Interval>) -> Vec<Interval> {
    let mut v: Vec<Interval> = items.into_iter().filter(|i| !i.is_empty()).collect();
    v.sort();
    let mut out: Vec<Interval> = Vec::with_capacity(v.len());
    for i in v {
        match out.last_mut() {
            Some(last) if i.start <= last.end => last.end = last.end.max(i.end),
            _ => out.push(i),
        }
    }
    out
}

/// Each interval grown by `pad` on both sides, merged (buffers widen busy time, as Cal.com
/// does, so a slot needs `pad` of clearance from every busy interval).
pub fn widen(items: &[Interval], pad: Duration) -> Vec<Interval> {
    merge(items.iter().map(|i| Interval::new(i.start - pad, i.end + pad)))
}

/// `a ∩ b` for two merged lists.
pub fn intersect(a: &[Interval], b: &[Interval]) -> Vec<Interval> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        let start = a[i].start.max(b[j].start);
        let end = a[i].end.min(b[j].end);
        if start < end {
            out.push(Interval::new(start, end));
        }
        if a[i].end < b[j].end {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// `from − minus` for two merged lists.
pub fn subtract(from: &[Interval], minus: &[Interval]) -> Vec<Interval> {
    let mut out = Vec::new();
    let mut j = 0;
    for f in from {
        let mut cursor = f.start;
        // Busy intervals wholly before this free one can never matter again (both lists sorted).
        while j < minus.len() && minus[j].end <= f.start {
            j += 1;
        }
        let mut k = j;
        while k < minus.len() && minus[k].start < f.end {
            if minus[k].start > cursor {
                out.push(Interval::new(cursor, minus[k].start));
            }
            cursor = cursor.max(minus[k].end);
            k += 1;
        }
        if cursor < f.end {
            out.push(Interval::new(cursor, f.end));
        }
    }
    out
}
