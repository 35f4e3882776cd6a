//! Sealed Secret rows kept in memory by name, so reading a connection's credentials (every
//! reconcile that calls its provider does) costs no round trip: 10,228 `SELECT sealed, version`
//! in the 10,000-task bulk bench. Rows stay sealed here and are opened on each read, as from the
//! database; an absent Secret is remembered too.
//!
//! Coherence, as the object cache's: this process's writes drop their names after the COMMIT;
//! other processes' writes drop them when their wake-up or change-log row arrives (`listen`,
//! `changes`); a read that began before any drop does not fill (one epoch for all names: Secrets
//! change seldom). Writes never use it: they read the row under the Secret's lock.
//!
//! Owns: the map. Must not touch: SQL, or opening rows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Names kept at most; past it the map starts over (Secrets are few: one per connection, one
/// per feed).
const CAPACITY: usize = 20_000;

/// A stored row: its sealed bytes and version; `None`: no such Secret.
pub(super) type SealedRow = Option<(Arc<[u8]>, i64)>;

#[derive(Default)]
struct State {
    rows: HashMap<(String, String), SealedRow>,
    /// Bumped by every drop.
    epoch: u64,
}

#[derive(Default)]
pub(super) struct SealedCache {
    state: Mutex<State>,
}

impl SealedCache {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing below panics half-way, so a poisoned lock is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The row as last read, if it is kept.
    pub(super) fn get(&self, namespace: &str, name: &str) -> Option<SealedRow> {
        self.lock().rows.get(&(namespace.to_string(), name.to_string())).cloned()
    }

    /// Take before reading a row that may `fill`.
    pub(super) fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Keep `row`, read after `epoch` was taken, unless some Secret was dropped meanwhile.
    pub(super) fn fill(&self, epoch: u64, namespace: &str, name: &str, row: SealedRow) {
        let mut st = self.lock();
        if st.epoch != epoch {
            return;
        }
        if st.rows.len() >= CAPACITY {
            st.rows.clear();
        }
        st.rows.insert((namespace.to_string(), name.to_string()), row);
    }

    /// The Secret changed (or may have).
    pub(super) fn invalidate(&self, namespace: &str, name: &str) {
        let mut st = self.lock();
        st.rows.remove(&(namespace.to_string(), name.to_string()));
        st.epoch += 1;
    }

    /// Forget every row (changes may have been missed).
    pub(super) fn clear(&self) {
        let mut st = self.lock();
        st.rows.clear();
        st.epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: i64) -> SealedRow {
        Some((Arc::from(&b"sealed"[..]), v))
    }

    #[test]
    fn a_read_from_before_a_drop_does_not_fill() {
        let c = SealedCache::default();
        let e = c.epoch();
        c.fill(e, "ns", "a", row(1));
        assert_eq!(c.get("ns", "a").flatten().map(|(_, v)| v), Some(1));
        let e = c.epoch();
        c.invalidate("ns", "b");
        c.fill(e, "ns", "a", row(2));
        assert_eq!(c.get("ns", "a").flatten().map(|(_, v)| v), Some(1), "the stale fill was dropped");
        c.invalidate("ns", "a");
        assert!(c.get("ns", "a").is_none());
        let e = c.epoch();
        c.fill(e, "ns", "gone", None);
        assert_eq!(c.get("ns", "gone"), Some(None), "absence is remembered");
        c.clear();
        assert!(c.get("ns", "gone").is_none());
    }
}
