//! What the work queue knows of each object: its trigger fingerprints, the connection a
//! TaskSync uses (the dependents index), and the one shared copy of its key.
//!
//! Keys are shared (`Key`, an `Arc`): the scheduler's maps (ready lanes, timers, running,
//! failures) hold one object's key several times over, and with 100,000 TaskSyncs separate
//! copies (two strings each) were the largest part of the queue's memory (heaptrack: 42 MiB of
//! an 80 MiB live heap, with `seen` and the ready set the largest). `key` hands out the copy
//! kept here; a key not known yet gets its own until it is remembered.
//!
//! Owns: the index and the key copies. Must not touch: scheduling (the queue) or the store.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::trigger::Trigger;
use crate::engine::{Kind, ObjectKey};

/// An object's key, shared by every map of the queue that holds it.
pub(super) type Key = Arc<ObjectKey>;

/// A trigger's fingerprints: what a notification compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Prints {
    pub own: u64,
    pub dependents: Option<u64>,
}

struct Seen {
    prints: Prints,
    /// For a TaskSync: the key of the connection it uses.
    uses: Option<Key>,
}

#[derive(Default)]
pub(super) struct Known {
    seen: HashMap<Key, Seen>,
    /// Connection → the TaskSyncs that use it, from `seen`.
    users: HashMap<Key, BTreeSet<Key>>,
}

impl Known {
    /// The shared copy of `key` (a new one when it is not known). A connection not seen yet
    /// but used by TaskSyncs already has one, in `users`.
    pub fn key(&self, key: &ObjectKey) -> Key {
        let known =
            self.seen.get_key_value(key).map(|(k, _)| k).or_else(|| self.users.get_key_value(key).map(|(k, _)| k));
        match known {
            Some(k) => k.clone(),
            None => Arc::new(key.clone()),
        }
    }

    /// The connection a TaskSync uses, when known.
    pub fn uses(&self, key: &ObjectKey) -> Option<&Key> {
        self.seen.get(key).and_then(|s| s.uses.as_ref())
    }

    /// Record an object's trigger; returns its key and the previous fingerprints.
    pub fn remember(&mut self, key: &ObjectKey, trigger: Trigger) -> (Key, Option<Prints>) {
        let prints = Prints { own: trigger.own, dependents: trigger.dependents };
        let uses = trigger.uses.map(|c| self.key(&ObjectKey::connection(&key.namespace, &c)));
        let (key, before, used) = match self.seen.get_key_value(key) {
            Some((k, s)) => (k.clone(), Some(s.prints), s.uses.clone()),
            None => (Arc::new(key.clone()), None, None),
        };
        if used != uses {
            self.unlink(&key, used);
            if let Some(conn) = &uses {
                self.users.entry(conn.clone()).or_default().insert(key.clone());
            }
        }
        self.seen.insert(key.clone(), Seen { prints, uses });
        (key, before)
    }

    /// Forget an object (deleted); returns its last fingerprints.
    pub fn forget(&mut self, key: &ObjectKey) -> Option<Prints> {
        let (key, before) = self.seen.remove_entry(key)?;
        self.unlink(&key, before.uses);
        Some(before.prints)
    }

    fn unlink(&mut self, key: &Key, used: Option<Key>) {
        if let Some(conn) = used
            && let Some(names) = self.users.get_mut(&conn)
        {
            names.remove(key);
            if names.is_empty() {
                self.users.remove(&conn);
            }
        }
    }

    /// Forget the objects of `kind` that a complete listing no longer has.
    pub fn forget_missing(&mut self, kind: Kind, listed: &HashSet<Key>) {
        let gone: Vec<Key> = self.seen.keys().filter(|k| k.kind == kind && !listed.contains(*k)).cloned().collect();
        for key in gone {
            self.forget(&key);
        }
    }

    /// The TaskSyncs that use `conn`, in name order.
    pub fn users_of(&self, conn: &ObjectKey) -> Vec<Key> {
        self.users.get(conn).map(|u| u.iter().cloned().collect()).unwrap_or_default()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    #[cfg(test)]
    pub fn connections_used(&self) -> usize {
        self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uses(c: &str) -> Trigger {
        Trigger { own: 1, dependents: None, uses: Some(c.into()) }
    }

    #[test]
    fn one_copy_of_each_key_and_of_each_connection() {
        let mut k = Known::default();
        let (a, _) = k.remember(&ObjectKey::task_sync("ns", "a"), uses("c1"));
        let (b, _) = k.remember(&ObjectKey::task_sync("ns", "b"), uses("c1"));
        assert!(Arc::ptr_eq(&a, &k.key(&ObjectKey::task_sync("ns", "a"))), "the remembered copy is handed out");
        let (ca, cb) = (k.uses(&a).cloned().unwrap(), k.uses(&b).cloned().unwrap());
        assert!(Arc::ptr_eq(&ca, &cb), "TaskSyncs of one connection share its key");
        // Once the connection itself is remembered, TaskSyncs remembered after share its copy.
        let (c1, _) =
            k.remember(&ObjectKey::connection("ns", "c1"), Trigger { own: 2, dependents: Some(3), uses: None });
        let (d, _) = k.remember(&ObjectKey::task_sync("ns", "d"), uses("c1"));
        assert!(Arc::ptr_eq(&c1, k.uses(&d).unwrap()));
        assert_eq!(k.users_of(&c1).len(), 3);
    }

    #[test]
    fn remembering_again_returns_the_previous_prints_and_keeps_the_key() {
        let mut k = Known::default();
        let key = ObjectKey::task_sync("ns", "a");
        let (first, before) = k.remember(&key, uses("c1"));
        assert_eq!(before, None);
        let (again, before) = k.remember(&key, Trigger { own: 9, dependents: None, uses: Some("c2".into()) });
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(before, Some(Prints { own: 1, dependents: None }));
        assert!(k.users_of(&ObjectKey::connection("ns", "c1")).is_empty(), "moved to c2");
        assert_eq!(k.users_of(&ObjectKey::connection("ns", "c2")), vec![first]);
        assert_eq!(k.forget(&key), Some(Prints { own: 9, dependents: None }));
        assert_eq!(k.connections_used(), 0);
    }
}
