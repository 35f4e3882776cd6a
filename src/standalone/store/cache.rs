//! The SQLite store's object cache: decoded TaskSyncs by key, so `get` of one this process
//! wrote or read before touches no SQL and decodes no JSON (the role the reflector's cache plays
//! on Kubernetes); connections are all kept, in `connections`.
//!
//! Coherence: every write of this process goes through the writer thread, which updates the
//! cache after its COMMIT and before it broadcasts or acknowledges, so a caller always reads its
//! own writes. A read miss fills the cache only when nothing newer landed meanwhile (a higher
//! resourceVersion wins; a removal or invalidation during the read discards the fill). Writes by
//! other processes on the same file are seen by the change-log watcher, which drops their keys
//! here before it broadcasts them: until that poll (≤ 200 ms) a `get` may return the previous
//! version, as an informer lags the API server. Writes never use the cache: they read the row in
//! their transaction.
//!
//! The PostgreSQL store uses it too (`Cache::for_every_kind`: connections in the same map),
//! with several writers on a pool: each write takes the epoch when it begins and hands its
//! objects over after its COMMIT (`committed_since`); a key another process changed meanwhile
//! (its `LISTEN` notification drops the key, `invalidate`) is dropped rather than kept, and a
//! newer resourceVersion already held wins. Removals and invalidations are stamped per key, so a
//! change of one key never discards the reads and writes of others.
//!
//! Bounded: at most `capacity` objects, the oldest inserted evicted first, so 100,000 TaskSyncs
//! do not all sit decoded in memory (a decoded TaskSync is several times its JSON).
//!
//! Owns: the map and its bound. Must not touch: SQL or the write path's decisions.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use super::connections::ConnectionSet;
use crate::engine::{Kind, ObjectKey};
use crate::resources::CalendarConnection;
use crate::standalone::rows::Row;
use crate::standalone::semantics;

/// Objects kept by default: the steady state of a few thousand TaskSyncs fits, and it costs ~15
/// MiB (a decoded TaskSync with status is ~4 KiB; 20,000 cost 76 MiB in the memory bench).
pub(crate) const DEFAULT_CAPACITY: usize = 5_000;

/// What a committed write did to one object.
pub(crate) enum Written {
    Saved {
        key: ObjectKey,
        rv: u64,
        object: Arc<dyn Any + Send + Sync>,
    },
    Removed(ObjectKey),
    /// Rows changed behind the store's back (tests' raw SQL): forget every TaskSync (the
    /// writer reloads the connections in that transaction).
    Everything,
}

impl Written {
    pub(crate) fn saved<K: Row>(object: &K) -> Self {
        Written::Saved { key: semantics::object_key(object), rv: rv_of(object), object: Arc::new(object.clone()) }
    }

    /// The object this write saved or removed; `None` for `Everything`.
    pub(crate) fn key(&self) -> Option<&ObjectKey> {
        match self {
            Written::Saved { key, .. } | Written::Removed(key) => Some(key),
            Written::Everything => None,
        }
    }
}

fn rv_of<K: Row>(object: &K) -> u64 {
    object.meta().resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

struct Entry {
    rv: u64,
    object: Arc<dyn Any + Send + Sync>,
}

/// Removals and invalidations remembered by key before they are forgotten wholesale.
const STAMPS_KEPT: usize = 4096;

#[derive(Default)]
struct State {
    map: HashMap<ObjectKey, Entry>,
    /// Insertion order for eviction; may hold keys already gone from `map`.
    order: VecDeque<ObjectKey>,
    /// Bumped by every removal and invalidation: a read taken before it may be stale.
    epoch: u64,
    /// The epoch each recently removed or invalidated key was dropped at, so that a read of
    /// another key is not discarded for it (with several writers, or other processes' changes
    /// streaming in, a global check would discard nearly every fill).
    stamps: HashMap<ObjectKey, u64>,
    /// Every key dropped at or before this epoch counts as changed (stamps forgotten).
    floor: u64,
}

impl State {
    /// Whether `key` was removed or invalidated after `epoch` was taken.
    fn dropped_since(&self, key: &ObjectKey, epoch: u64) -> bool {
        self.floor > epoch || self.stamps.get(key).is_some_and(|s| *s > epoch)
    }

    fn drop_key(&mut self, key: &ObjectKey) {
        self.map.remove(key);
        self.epoch += 1;
        if self.stamps.len() >= STAMPS_KEPT {
            self.stamps.clear();
            self.floor = self.epoch;
        }
        self.stamps.insert(key.clone(), self.epoch);
    }

    fn drop_all(&mut self) {
        self.map.clear();
        self.order.clear();
        self.stamps.clear();
        self.epoch += 1;
        self.floor = self.epoch;
    }
}

pub(crate) struct Cache {
    state: Mutex<State>,
    capacity: usize,
    /// All connections (unbounded: they are few), kept by the same writes.
    pub(crate) connections: ConnectionSet,
    /// Connections go to `connections` (SQLite, which loads them all) rather than the map.
    connections_apart: bool,
}

impl Cache {
    pub(crate) fn new(capacity: usize) -> Self {
        Cache {
            state: Mutex::new(State::default()),
            capacity,
            connections: ConnectionSet::default(),
            connections_apart: true,
        }
    }

    /// A cache whose map holds both kinds (PostgreSQL: no complete connection set is kept).
    pub(crate) fn for_every_kind(capacity: usize) -> Self {
        Cache { connections_apart: false, ..Cache::new(capacity) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Updates below cannot panic half-way, so a poisoned lock is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the cached object, if any.
    pub(crate) fn get<K: Row>(&self, key: &ObjectKey) -> Option<K> {
        let object = self.lock().map.get(key).map(|e| e.object.clone())?;
        // Cloned outside the lock: readers do not serialise on each other's clones.
        object.downcast_ref::<K>().cloned()
    }

    /// Take before reading a row that may `fill` the cache.
    pub(crate) fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Keep `object`, read from the database after `epoch` was taken, unless something newer
    /// was committed or removed meanwhile.
    pub(crate) fn fill<K: Row>(&self, epoch: u64, object: &K) {
        if self.capacity == 0 {
            return;
        }
        let (key, rv) = (semantics::object_key(object), rv_of(object));
        let mut st = self.lock();
        if st.dropped_since(&key, epoch) || st.map.get(&key).is_some_and(|e| e.rv >= rv) {
            return;
        }
        self.insert(&mut st, key, Entry { rv, object: Arc::new(object.clone()) });
    }

    /// The writes of one committed transaction, in order.
    pub(crate) fn committed(&self, written: &[Written]) {
        if written.is_empty() {
            return;
        }
        let mut st = self.lock();
        for w in written {
            match w {
                // Connections live in their complete set only (`get_connection` reads it): a
                // slot here would be read by no one and would evict a TaskSync.
                Written::Saved { key, object, .. }
                    if self.connections_apart && key.kind == Kind::CalendarConnection =>
                {
                    if let Ok(c) = object.clone().downcast::<CalendarConnection>() {
                        self.connections.saved(c);
                    }
                }
                Written::Saved { key, rv, object } => {
                    if self.capacity > 0 {
                        self.insert(&mut st, key.clone(), Entry { rv: *rv, object: object.clone() });
                    }
                }
                Written::Removed(key) => {
                    if key.kind == Kind::CalendarConnection {
                        self.connections.removed(key);
                    }
                    st.drop_key(key);
                }
                Written::Everything => st.drop_all(),
            }
        }
    }

    /// The writes of one transaction committed by one of several concurrent writers
    /// (PostgreSQL's pool), which began after `epoch` was taken. Their updates may reach the
    /// cache in another order than their commits: a newer resourceVersion already held wins,
    /// and a removal or invalidation since `epoch` may be newer than this write, so the key is
    /// dropped (the next read goes to the database) rather than kept.
    pub(crate) fn committed_since(&self, epoch: u64, written: &[Written]) {
        if written.is_empty() {
            return;
        }
        let mut st = self.lock();
        for w in written {
            match w {
                Written::Saved { key, rv, object } => {
                    if st.map.get(key).is_some_and(|e| e.rv >= *rv) {
                        continue;
                    }
                    if st.dropped_since(key, epoch) {
                        st.drop_key(key);
                    } else if self.capacity > 0 {
                        self.insert(&mut st, key.clone(), Entry { rv: *rv, object: object.clone() });
                    }
                }
                Written::Removed(key) => st.drop_key(key),
                Written::Everything => st.drop_all(),
            }
        }
    }

    /// Another process changed `key`.
    pub(crate) fn invalidate(&self, key: &ObjectKey) {
        self.lock().drop_key(key);
    }

    /// Another process changed `key` to resourceVersion `rv` (`None`: removed, or unknown):
    /// drop it unless that version or a newer one is held. Returns whether it was dropped (the
    /// change is news to this process).
    pub(crate) fn invalidate_unless_held(&self, key: &ObjectKey, rv: Option<u64>) -> bool {
        let mut st = self.lock();
        if let Some(rv) = rv
            && st.map.get(key).is_some_and(|e| e.rv >= rv)
        {
            return false;
        }
        st.drop_key(key);
        true
    }

    /// Forget every object (changes by other processes may have been missed).
    pub(crate) fn clear(&self) {
        self.lock().drop_all();
    }

    /// Objects held now (`SqliteObjects::stats`).
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }

    fn insert(&self, st: &mut State, key: ObjectKey, entry: Entry) {
        if st.map.insert(key.clone(), entry).is_some() {
            return;
        }
        st.order.push_back(key);
        while st.map.len() > self.capacity {
            let Some(oldest) = st.order.pop_front() else { break };
            st.map.remove(&oldest);
        }
        // Keys removed by deletions stay in `order`; drop them before they outnumber the map.
        if st.order.len() > 2 * self.capacity.max(16) {
            let State { map, order, .. } = st;
            order.retain(|k| map.contains_key(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::TaskSync;

    fn ts(name: &str, rv: u64) -> TaskSync {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "TaskSync",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": rv.to_string()},
            "spec": {"connectionRef": {"name": "c"}, "taskId": name, "title": "T", "start": "2026-03-05T14:00:00Z"}
        }))
        .unwrap()
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::task_sync("default", name)
    }

    #[test]
    fn a_fill_never_replaces_a_newer_write_nor_survives_a_removal() {
        let cache = Cache::new(10);
        let epoch = cache.epoch();
        cache.committed(&[Written::saved(&ts("a", 5))]);
        cache.fill(epoch, &ts("a", 4));
        assert_eq!(cache.get::<TaskSync>(&key("a")).unwrap().metadata.resource_version.as_deref(), Some("5"));

        let epoch = cache.epoch();
        cache.committed(&[Written::Removed(key("a"))]);
        cache.fill(epoch, &ts("a", 5));
        assert!(cache.get::<TaskSync>(&key("a")).is_none(), "a read from before the removal is stale");

        let epoch = cache.epoch();
        cache.fill(epoch, &ts("b", 7));
        assert!(cache.get::<TaskSync>(&key("b")).is_some());
        cache.invalidate(&key("b"));
        assert!(cache.get::<TaskSync>(&key("b")).is_none());
    }

    #[test]
    fn a_logged_change_drops_only_what_is_older_and_stops_fills_from_before_it() {
        let cache = Cache::for_every_kind(10);
        cache.committed_since(cache.epoch(), &[Written::saved(&ts("a", 5))]);
        assert!(!cache.invalidate_unless_held(&key("a"), Some(5)), "version 5 is held");
        assert!(!cache.invalidate_unless_held(&key("a"), Some(4)));
        assert!(cache.get::<TaskSync>(&key("a")).is_some());
        assert!(cache.invalidate_unless_held(&key("a"), Some(6)), "version 6 is news");
        assert!(cache.get::<TaskSync>(&key("a")).is_none());

        // Not held: a read that began before the change must not fill it.
        let epoch = cache.epoch();
        assert!(cache.invalidate_unless_held(&key("b"), Some(3)));
        cache.fill(epoch, &ts("b", 2));
        assert!(cache.get::<TaskSync>(&key("b")).is_none());

        // A removal (no version) always drops.
        cache.committed_since(cache.epoch(), &[Written::saved(&ts("c", 9))]);
        assert!(cache.invalidate_unless_held(&key("c"), None));
        assert!(cache.get::<TaskSync>(&key("c")).is_none());
    }

    #[test]
    fn holds_at_most_its_capacity_oldest_out_first() {
        let cache = Cache::new(3);
        for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
            cache.committed(&[Written::saved(&ts(n, i as u64 + 1))]);
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get::<TaskSync>(&key("a")).is_none());
        assert!(cache.get::<TaskSync>(&key("d")).is_some());
        // Rewriting a held key does not grow it.
        cache.committed(&[Written::saved(&ts("d", 9))]);
        assert_eq!(cache.len(), 3);
        cache.committed(&[Written::Everything]);
        assert_eq!(cache.len(), 0);
        assert!(Cache::new(0).get::<TaskSync>(&key("d")).is_none());
    }

    #[test]
    fn a_key_of_another_kind_is_a_miss() {
        let cache = Cache::new(3);
        cache.committed(&[Written::saved(&ts("a", 1))]);
        let k = ObjectKey { kind: crate::engine::Kind::CalendarConnection, ..key("a") };
        assert!(cache.get::<crate::resources::CalendarConnection>(&k).is_none());
        // Same key, wrong type asked: a miss, not a panic.
        assert!(cache.get::<crate::resources::CalendarConnection>(&key("a")).is_none());
    }

    fn rv(t: &TaskSync) -> Option<&str> {
        t.metadata.resource_version.as_deref()
    }

    #[test]
    fn a_concurrent_writers_save_is_dropped_when_its_key_changed_since_the_write_began() {
        let cache = Cache::for_every_kind(10);
        let began = cache.epoch();
        // Another process changed `a` while the write ran: which is newer is unknown.
        cache.invalidate(&key("a"));
        cache.committed_since(began, &[Written::saved(&ts("a", 5)), Written::saved(&ts("b", 6))]);
        assert!(cache.get::<TaskSync>(&key("a")).is_none(), "kept a copy that may be older than the database");
        assert_eq!(rv(&cache.get::<TaskSync>(&key("b")).unwrap()), Some("6"), "another key's change dropped it");

        // Two writers' updates reaching the cache out of commit order: the newer stays.
        let began = cache.epoch();
        cache.committed_since(began, &[Written::saved(&ts("b", 9))]);
        cache.committed_since(began, &[Written::saved(&ts("b", 7))]);
        assert_eq!(rv(&cache.get::<TaskSync>(&key("b")).unwrap()), Some("9"));

        // A removal committed after a write began: that write's later update does not revive it.
        let began = cache.epoch();
        cache.committed_since(cache.epoch(), &[Written::Removed(key("b"))]);
        cache.committed_since(began, &[Written::saved(&ts("b", 8))]);
        assert!(cache.get::<TaskSync>(&key("b")).is_none());

        // Connections share the map here (no complete connection set is kept).
        let c: CalendarConnection = serde_json::from_value(serde_json::json!({
            "apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "CalendarConnection",
            "metadata": {"name": "c", "namespace": "default", "resourceVersion": "3"},
            "spec": {"userId": "u", "provider": "caldav", "credentialsSecretRef": {"name": "s"}}
        }))
        .unwrap();
        cache.committed_since(cache.epoch(), &[Written::saved(&c)]);
        let k = ObjectKey { kind: Kind::CalendarConnection, ..key("c") };
        assert!(cache.get::<CalendarConnection>(&k).is_some());
        cache.clear();
        assert!(cache.get::<CalendarConnection>(&k).is_none());
    }

    #[test]
    fn once_stamps_are_forgotten_every_read_from_before_counts_as_stale() {
        let cache = Cache::new(10);
        let began = cache.epoch();
        for i in 0..=STAMPS_KEPT {
            cache.invalidate(&key(&format!("x{i}")));
        }
        cache.fill(began, &ts("a", 1));
        assert!(cache.get::<TaskSync>(&key("a")).is_none(), "a's own stamp may have been forgotten");
        let began = cache.epoch();
        cache.fill(began, &ts("a", 1));
        assert!(cache.get::<TaskSync>(&key("a")).is_some());
    }
}
