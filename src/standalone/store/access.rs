//! How `SqliteObjects` reaches the database: reads in a DEFERRED transaction on the blocking
//! pool, writes through the group-commit writer (`tx`), and the generic get, list, apply,
//! metadata and status writes the `Objects` methods are made of, on the shared Kubernetes
//! semantics (`standalone::semantics`).
//!
//! Owns: those helpers. Must not touch: the `Objects` contract's choices (the parent's `impl`),
//! the writer thread (`commit`) or the cache's coherence rules (`cache`).

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rusqlite::{Transaction, TransactionBehavior};

use super::cache::Written;
use super::commit::{Effects, Output};
use super::{SqliteObjects, StatusTap, outbox, rows, semantics};
use crate::engine::{Kind, Labels, ObjectKey, StoreError};
use crate::resources::{CalendarConnection, TaskSync};
use crate::standalone::rows::{Row, db_err};
use crate::standalone::semantics::MetaOutcome;

impl SqliteObjects {
    /// Run the read-only `f` in one DEFERRED transaction (a consistent snapshot that does not
    /// take the write lock) on the blocking pool.
    pub(super) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.read_conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred).map_err(db_err)?;
            let out = f(&tx)?;
            tx.commit().map_err(db_err)?;
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    /// List objects of kind `K`: rows are read under the connection lock, decoded after it is
    /// released, so a listing of 100,000 objects does not stall every writer while it decodes.
    pub(super) async fn list<K: Row>(&self, namespace: Option<&str>, selector: &Labels) -> Result<Vec<K>, StoreError> {
        let (ns, selector) = (namespace.map(str::to_string), selector.clone());
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let rows = {
                let mut conn = inner.read_conn();
                let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred).map_err(db_err)?;
                let rows = rows::list_raw::<K>(&tx, ns.as_deref(), &selector)?;
                tx.commit().map_err(db_err)?;
                rows
            };
            Ok(rows::decode_list::<K>(rows))
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    /// Up to `limit` objects of kind `K` after `after`, in key order, and whether more may follow.
    pub(super) async fn page<K: Row>(
        &self,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<(Vec<K>, bool), StoreError> {
        let after = after.map(|k| (k.namespace.clone(), k.name.clone()));
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let rows = {
                let mut conn = inner.read_conn();
                let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred).map_err(db_err)?;
                let rows = rows::page_raw::<K>(&tx, after.as_ref().map(|(ns, n)| (ns.as_str(), n.as_str())), limit)?;
                tx.commit().map_err(db_err)?;
                rows
            };
            let more = rows.len() >= limit;
            Ok((rows::decode_list::<K>(rows), more))
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    /// Run `f` as one write of the next group commit (its own savepoint); the keys and objects
    /// it reports in its `Effects` are broadcast and cached after the durable COMMIT, before
    /// this returns.
    pub(super) async fn tx<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction, &str, &mut Effects) -> Result<T, StoreError> + Send + 'static,
    {
        let work = Box::new(move |tx: &Transaction, origin: &str, fx: &mut Effects| {
            f(tx, origin, fx).map(|out| Box::new(out) as Output)
        });
        let out = self.inner.committer.submit(work).await?;
        // The writer hands back what `work` returned, so the type always matches.
        out.downcast::<T>()
            .map(|out| *out)
            .map_err(|_| StoreError::Unavailable("a store write returned an unexpected value".into()))
    }

    /// `get` by key: from the cache, else read (and cached when nothing newer landed meanwhile).
    pub(super) async fn get<K: Row>(&self, namespace: &str, name: &str) -> Result<Option<K>, StoreError> {
        let key = ObjectKey { kind: K::KIND, namespace: namespace.to_string(), name: name.to_string() };
        if let Some(hit) = self.inner.cache.get::<K>(&key) {
            return Ok(Some(hit));
        }
        let epoch = self.inner.cache.epoch();
        let found: Option<K> = self.read(move |tx| rows::load(tx, &key.namespace, &key.name)).await?;
        if let Some(object) = &found {
            self.inner.cache.fill(epoch, object);
        }
        Ok(found)
    }

    pub(super) async fn apply<K: Row>(&self, object: &K) -> Result<K, StoreError> {
        let object = object.clone();
        self.tx(move |tx, origin, fx| {
            let (ns, name) = semantics::apply_target(&object)?;
            let rv = rows::next_rv(tx)?;
            let stored = rows::load::<K>(tx, &ns, &name)?;
            let labels = stored.as_ref().and_then(|o| o.meta().labels.clone());
            let out = semantics::applied(stored, &object, rv)?;
            rows::save(tx, &out, origin, labels.as_ref())?;
            fx.keys.push(semantics::object_key(&out));
            fx.written.push(Written::saved(&out));
            Ok(out)
        })
        .await
    }

    /// Change an object's metadata with `f` (which says whether it changed anything); delete a
    /// marked object once no finalizer remains. Same rules as the in-memory store.
    pub(super) async fn with_meta(
        &self,
        key: &ObjectKey,
        f: impl FnOnce(&mut ObjectMeta) -> bool + Send + 'static,
    ) -> Result<(), StoreError> {
        let key = key.clone();
        self.tx(move |tx, origin, fx| match key.kind {
            Kind::CalendarConnection => meta_in::<CalendarConnection>(tx, origin, &key, f, fx),
            Kind::TaskSync => meta_in::<TaskSync>(tx, origin, &key, f, fx),
        })
        .await
    }

    pub(super) async fn patch_status<K: Row>(
        &self,
        namespace: &str,
        name: &str,
        patch: impl FnOnce(&mut K) + Send + 'static,
    ) -> Result<K, StoreError> {
        let (ns, name) = (namespace.to_string(), name.to_string());
        let tap = self.inner.tap.get().cloned();
        let tap_in = tap.clone();
        let (obj, recorded) =
            self.tx(move |tx, origin, fx| status_in::<K>(tx, origin, fx, tap_in.as_ref(), &ns, &name, patch)).await?;
        if let Some(tap) = tap.filter(|_| recorded > 0) {
            tap.recorded(recorded);
        }
        Ok(obj)
    }
}

/// Patch the status of `K` `ns/name` in `tx` (NotFound when absent), with the app-webhook
/// messages the change owes (the count is returned for `StatusTap::recorded` after the commit).
pub(super) fn status_in<K: Row>(
    tx: &Transaction,
    origin: &str,
    fx: &mut Effects,
    tap: Option<&Arc<dyn StatusTap>>,
    ns: &str,
    name: &str,
    patch: impl FnOnce(&mut K),
) -> Result<(K, usize), StoreError> {
    let key = ObjectKey { kind: K::KIND, namespace: ns.to_string(), name: name.to_string() };
    let rv = rows::next_rv(tx)?;
    let mut obj = rows::load::<K>(tx, ns, name)?.ok_or_else(|| StoreError::NotFound(key.to_string()))?;
    let before = tap.map(|_| obj.clone());
    let labels = obj.meta().labels.clone();
    patch(&mut obj);
    obj.meta_mut().resource_version = Some(rv.to_string());
    rows::save(tx, &obj, origin, labels.as_ref())?;
    // The messages a status change owes commit with it, or neither does.
    let recorded = match (tap, &before) {
        (Some(tap), Some(before)) => outbox::record(tap, tx, before, &obj, chrono::Utc::now().timestamp_millis())?,
        _ => 0,
    };
    fx.keys.push(key);
    fx.written.push(Written::saved(&obj));
    Ok((obj, recorded))
}

pub(super) fn meta_in<K: Row>(
    tx: &Transaction,
    origin: &str,
    key: &ObjectKey,
    f: impl FnOnce(&mut ObjectMeta) -> bool,
    fx: &mut Effects,
) -> Result<(), StoreError> {
    let rv = rows::next_rv(tx)?;
    let mut obj =
        rows::load::<K>(tx, &key.namespace, &key.name)?.ok_or_else(|| StoreError::NotFound(key.to_string()))?;
    let labels = obj.meta().labels.clone();
    match semantics::change_meta(&mut obj, rv, f) {
        MetaOutcome::Unchanged => return Ok(()),
        MetaOutcome::Save => {
            rows::save(tx, &obj, origin, labels.as_ref())?;
            fx.written.push(Written::saved(&obj));
        }
        MetaOutcome::Remove => {
            rows::remove(tx, key, origin)?;
            fx.written.push(Written::Removed(key.clone()));
        }
    }
    fx.keys.push(key.clone());
    Ok(())
}
