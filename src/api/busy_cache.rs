//! A short-lived cache of busy time per connection, for `suggest-times`.
//!
//! Entries live `BUSY_TTL` (60 s): long enough that a user trying a few durations or deadlines
//! in a row costs one provider round, short enough that a meeting just booked elsewhere shows up
//! within a minute even where change detection is not running. The key holds the connection's
//! generation and the sum of its calendars' `status.push.calendars[].changeCount`, so a change
//! live sync has seen is a miss at once. Only complete answers are stored.
//!
//! Owns: the cache. Must not touch providers or objects (the handler fills it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::providers::Window;

/// How long a connection's busy time is reused.
pub const BUSY_TTL: Duration = Duration::from_secs(60);
/// Entries kept at most (expired ones are dropped first).
const MAX_ENTRIES: usize = 10_000;

/// Identifies what a cached answer was computed from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BusyKey {
    /// `namespace/name` of the connection.
    pub connection: String,
    pub generation: i64,
    pub change_count: u64,
    /// Calendars read and the zone all-day events were placed in.
    pub calendars: Vec<String>,
    pub zone: String,
}

/// When it was read, the window it covers, and the busy spans in it.
type Entry = (Instant, Window, Vec<Window>);

#[derive(Default)]
pub struct BusyCache {
    entries: Mutex<HashMap<BusyKey, Entry>>,
}

impl BusyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BusyKey, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Busy spans for `window` when a fresh entry covers it.
    pub fn get(&self, key: &BusyKey, window: &Window) -> Option<Vec<Window>> {
        let map = self.lock();
        let (at, covered, spans) = map.get(key)?;
        (at.elapsed() < BUSY_TTL && covered.from <= window.from && window.to <= covered.to)
            .then(|| spans.iter().filter(|s| s.from < window.to && s.to > window.from).copied().collect())
    }

    pub fn put(&self, key: BusyKey, covered: Window, spans: Vec<Window>) {
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (at, _, _)| at.elapsed() < BUSY_TTL);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(key, (Instant::now(), covered, spans));
    }
}
