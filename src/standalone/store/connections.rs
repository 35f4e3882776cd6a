//! Every CalendarConnection of the SQLite database, decoded, with a label index: the store
//! answers `list_connections` (the REST `connection-status` of a user, a connection's
//! dependents) from memory. Connections are few (one or two per user), so all are kept, unlike
//! TaskSyncs (`cache`, bounded).
//!
//! Coherence: loaded when the store opens, before the change-log watcher starts from the
//! position read before the load; the writer thread applies this process's committed writes
//! before it acknowledges them; the watcher re-reads a connection another process changed
//! (`refresh`) before it broadcasts the change. A newer resourceVersion always wins, and a
//! removal seen by the watcher drops only what its snapshot already covered, so a stale
//! re-read never undoes a newer write of this process.
//!
//! Owns: the set and its index. Must not touch: SQL beyond reading one row (`refresh`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use kube::Resource;
use rusqlite::Transaction;

use crate::engine::{Labels, ObjectKey, StoreError};
use crate::resources::CalendarConnection;
use crate::standalone::rows;

type Name = (String, String);

#[derive(Default)]
struct State {
    all: BTreeMap<Name, (u64, Arc<CalendarConnection>)>,
    /// (label key, value) → connections carrying it.
    by_label: HashMap<(String, String), BTreeSet<Name>>,
}

#[derive(Default)]
pub(crate) struct ConnectionSet {
    state: Mutex<State>,
}

fn rv_of(c: &CalendarConnection) -> u64 {
    c.meta().resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn name_of(c: &CalendarConnection) -> Name {
    (c.meta().namespace.clone().unwrap_or_else(|| "default".into()), c.meta().name.clone().unwrap_or_default())
}

impl ConnectionSet {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Updates below cannot panic half-way, so a poisoned lock is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Load them all afresh (the store's opening; tests' raw SQL).
    pub(crate) fn load(&self, tx: &Transaction) -> Result<(), StoreError> {
        let all =
            rows::decode_list::<CalendarConnection>(rows::list_raw::<CalendarConnection>(tx, None, &Labels::new())?);
        let mut st = self.lock();
        *st = State::default();
        for c in all {
            put(&mut st, Arc::new(c));
        }
        Ok(())
    }

    /// The connections in `namespace` (all when `None`) carrying every label of `selector`,
    /// ordered by (namespace, name), as the SQL listing orders them.
    pub(crate) fn list(&self, namespace: Option<&str>, selector: &Labels) -> Vec<CalendarConnection> {
        let found: Vec<Arc<CalendarConnection>> = {
            let st = self.lock();
            let matches = |c: &CalendarConnection| {
                namespace.is_none_or(|ns| c.meta().namespace.as_deref() == Some(ns))
                    && selector.iter().all(|(k, v)| c.meta().labels.as_ref().and_then(|l| l.get(k)) == Some(v))
            };
            match selector.iter().next() {
                Some((k, v)) => st
                    .by_label
                    .get(&(k.clone(), v.clone()))
                    .into_iter()
                    .flatten()
                    .filter_map(|n| st.all.get(n))
                    .filter(|(_, c)| matches(c))
                    .map(|(_, c)| c.clone())
                    .collect(),
                None => st.all.values().filter(|(_, c)| matches(c)).map(|(_, c)| c.clone()).collect(),
            }
        };
        // Deep copies outside the lock.
        found.iter().map(|c| CalendarConnection::clone(c)).collect()
    }

    /// The connection `namespace/name`, if there is one (deep-copied outside the lock).
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<CalendarConnection> {
        let found = self.lock().all.get(&(namespace.to_string(), name.to_string())).map(|(_, c)| c.clone());
        found.map(|c| CalendarConnection::clone(&c))
    }

    /// This process committed `object`.
    pub(crate) fn saved(&self, object: Arc<CalendarConnection>) {
        put(&mut self.lock(), object);
    }

    /// This process committed the removal of `key`.
    pub(crate) fn removed(&self, key: &ObjectKey) {
        take(&mut self.lock(), &(key.namespace.clone(), key.name.clone()));
    }

    /// Another process changed `key`: re-read it in `tx` (a read snapshot).
    pub(crate) fn refresh(&self, tx: &Transaction, key: &ObjectKey) -> Result<(), StoreError> {
        let row = rows::load::<CalendarConnection>(tx, &key.namespace, &key.name);
        let snapshot_rv = rows::current_rv(tx)?;
        let mut st = self.lock();
        let name = (key.namespace.clone(), key.name.clone());
        match row {
            Ok(Some(c)) => put(&mut st, Arc::new(c)),
            // Gone (or unreadable, as a listing would skip it) as of the snapshot: drop what the
            // snapshot covers, not a newer write of ours.
            Ok(None) | Err(StoreError::Invalid(_)) => {
                if st.all.get(&name).is_some_and(|(rv, _)| *rv <= snapshot_rv) {
                    take(&mut st, &name);
                }
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

fn put(st: &mut State, object: Arc<CalendarConnection>) {
    let (name, rv) = (name_of(&object), rv_of(&object));
    if st.all.get(&name).is_some_and(|(held, _)| *held >= rv) {
        return;
    }
    take(st, &name);
    for (k, v) in object.meta().labels.iter().flatten() {
        st.by_label.entry((k.clone(), v.clone())).or_default().insert(name.clone());
    }
    st.all.insert(name, (rv, object));
}

fn take(st: &mut State, name: &Name) {
    let Some((_, old)) = st.all.remove(name) else { return };
    for (k, v) in old.meta().labels.iter().flatten() {
        let label = (k.clone(), v.clone());
        if let Some(set) = st.by_label.get_mut(&label) {
            set.remove(name);
            if set.is_empty() {
                st.by_label.remove(&label);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(name: &str, rv: u64, user: &str) -> Arc<CalendarConnection> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "CalendarConnection",
                "metadata": {"name": name, "namespace": "default", "resourceVersion": rv.to_string(),
                             "labels": {"user": user}},
                "spec": {"userId": user, "provider": "caldav", "credentialsSecretRef": {"name": "s"}}
            }))
            .unwrap(),
        )
    }

    fn names(list: Vec<CalendarConnection>) -> Vec<String> {
        list.into_iter().filter_map(|c| c.metadata.name).collect()
    }

    /// Two store handles on one file stand for two processes (each its own origin, cache and
    /// watcher): what one writes, the other lists once its watcher has polled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_processs_writes_reach_the_listing() {
        use crate::credentials::envelope::{Key, Keyring};
        use crate::engine::Objects;
        use crate::standalone::store::SqliteObjects;

        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let keys = Keyring::new(Key::generate().0);
        let (a, b) =
            (SqliteObjects::open(&url, keys.clone()).await.unwrap(), SqliteObjects::open(&url, keys).await.unwrap());
        let u1 = Labels::from([("user".to_string(), "u1".to_string())]);
        let listed =
            |s: SqliteObjects, sel: Labels| async move { names(s.list_connections(None, &sel).await.unwrap()) };
        let mut c = CalendarConnection::clone(&conn("x", 0, "u1"));
        c.metadata.resource_version = None;
        b.apply_connection(&c).await.unwrap();
        assert_eq!(listed(b.clone(), u1.clone()).await, ["x"], "the writer lists its own write at once");
        let until = |want: Vec<&'static str>, sel: Labels| {
            let a = a.clone();
            async move {
                for _ in 0..50 {
                    if listed(a.clone(), sel.clone()).await == want {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                panic!("the other handle never listed {want:?}");
            }
        };
        until(vec!["x"], u1.clone()).await;
        // Relabelled, then deleted, by the other process.
        let mut moved = b.get_connection("default", "x").await.unwrap().unwrap();
        moved.metadata.labels = Some([("user".to_string(), "u2".to_string())].into());
        b.apply_connection(&moved).await.unwrap();
        until(vec![], u1).await;
        until(vec!["x"], Labels::from([("user".to_string(), "u2".to_string())])).await;
        b.delete(&ObjectKey::connection("default", "x")).await.unwrap();
        until(vec![], Labels::new()).await;
    }

    #[test]
    fn lists_by_label_in_name_order_and_follows_relabels_and_removals() {
        let set = ConnectionSet::default();
        set.saved(conn("b", 1, "u1"));
        set.saved(conn("a", 2, "u1"));
        set.saved(conn("c", 3, "u2"));
        let u1 = Labels::from([("user".to_string(), "u1".to_string())]);
        assert_eq!(names(set.list(Some("default"), &u1)), ["a", "b"]);
        assert_eq!(names(set.list(None, &Labels::new())), ["a", "b", "c"]);
        assert!(set.list(Some("other"), &u1).is_empty());
        // Relabelled: moves between index entries; an older version never replaces a newer one.
        set.saved(conn("b", 4, "u2"));
        set.saved(conn("b", 1, "u1"));
        assert_eq!(names(set.list(None, &u1)), ["a"]);
        set.removed(&ObjectKey::connection("default", "a"));
        assert!(set.list(None, &u1).is_empty());
    }
}
