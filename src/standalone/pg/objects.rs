//! The `Objects` port on PostgreSQL: each write is one transaction that takes the key's lock,
//! reads the object, lets `standalone::semantics` decide, saves and notifies.
//!
//! Owns: the mapping of port calls onto `PgObjects` transactions. Must not touch: row SQL
//! (`rows`) or the semantics themselves (`standalone::semantics`).

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::sync::broadcast;

use super::{PgObjects, Write, outbox, rows};
use crate::credentials::Credentials;
use crate::credentials::feed::FeedRecord;
use crate::engine::{
    Deletion, EventType, Kind, Labels, ObjectEvent, ObjectKey, Objects, ReconcileRecord, Recorded, StoreError,
};
use crate::resources::history::{self, CONNECTION_HISTORY_LIMIT};
use crate::resources::{
    CalendarConnection, CalendarConnectionStatus, HistoryEntry, SecretRef, TaskSync, TaskSyncStatus,
};
use crate::standalone::rows::Row;
use crate::standalone::semantics::{self, MetaOutcome};
use crate::standalone::store::cache::Written;
use crate::standalone::store::{OutboxMessage, StatusTap};
use crate::standalone::watch::SecretName;

/// Events kept (newest), as in the SQLite store.
pub(super) const EVENTS_KEPT: i64 = 1000;

/// An Event's row fields: type, reason, action, note.
pub(super) fn event_fields(event: &ObjectEvent) -> [&str; 4] {
    let type_ = match event.type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    };
    [type_, &event.reason, &event.action, &event.note]
}

impl PgObjects {
    /// From the cache, else read (and cached when nothing newer landed meanwhile).
    async fn get<K: Row>(&self, namespace: &str, name: &str) -> Result<Option<K>, StoreError> {
        let key = ObjectKey { kind: K::KIND, namespace: namespace.to_string(), name: name.to_string() };
        if let Some(hit) = self.inner.cache.get::<K>(&key) {
            return Ok(Some(hit));
        }
        let epoch = self.inner.cache.epoch();
        let found: Option<K> = {
            let mut conn = self.conn().await?;
            rows::load(&mut conn, namespace, name).await?
        };
        if let Some(object) = &found {
            self.inner.cache.fill(epoch, object);
        }
        Ok(found)
    }

    async fn list<K: Row>(&self, namespace: Option<&str>, selector: &Labels) -> Result<Vec<K>, StoreError> {
        let raw = {
            let mut conn = self.conn().await?;
            rows::list_raw::<K>(&mut conn, namespace, selector).await?
        };
        // Decoded after the connection went back to the pool (100,000 TaskSyncs take a while).
        Ok(crate::standalone::rows::decode_list::<K>(raw))
    }

    async fn apply<K: Row>(&self, object: &K) -> Result<K, StoreError> {
        let (ns, name) = semantics::apply_target(object)?;
        let mut w = self.begin().await?;
        let (rv, current) = rows::lock_load::<K>(&mut w.tx, &ns, &name).await?;
        let before =
            current.as_ref().map(|c| rows::Stored::Labels(c.meta().labels.clone())).unwrap_or(rows::Stored::New);
        let out = semantics::applied(current, object, rv)?;
        rows::save(&mut w.tx, &out, before, &self.inner.origin).await?;
        w.written.push(Written::saved(&out));
        self.commit(w).await?;
        Ok(out)
    }

    /// Change an object's metadata with `f` in `w`; delete a marked object once no finalizer
    /// remains. `NotFound` when it does not exist.
    async fn meta_in<K: Row>(
        &self,
        w: &mut Write,
        key: &ObjectKey,
        f: impl FnOnce(&mut ObjectMeta) -> bool,
    ) -> Result<(), StoreError> {
        let (rv, obj) = rows::lock_load::<K>(&mut w.tx, &key.namespace, &key.name).await?;
        let mut obj = obj.ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        let before = rows::Stored::Labels(obj.meta().labels.clone());
        match semantics::change_meta(&mut obj, rv, f) {
            MetaOutcome::Unchanged => return Ok(()),
            MetaOutcome::Save => {
                rows::save(&mut w.tx, &obj, before, &self.inner.origin).await?;
                w.written.push(Written::saved(&obj));
            }
            MetaOutcome::Remove => {
                let secrets = rows::remove(&mut w.tx, key, &self.inner.origin).await?;
                w.written.push(Written::Removed(key.clone()));
                w.secrets.extend(secrets.into_iter().map(|name| SecretName { namespace: key.namespace.clone(), name }));
            }
        }
        Ok(())
    }

    async fn with_meta(&self, key: &ObjectKey, f: impl FnOnce(&mut ObjectMeta) -> bool) -> Result<(), StoreError> {
        let mut w = self.begin().await?;
        match key.kind {
            Kind::CalendarConnection => self.meta_in::<CalendarConnection>(&mut w, key, f).await?,
            Kind::TaskSync => self.meta_in::<TaskSync>(&mut w, key, f).await?,
        }
        self.commit(w).await
    }

    async fn patch_status<K: Row>(
        &self,
        namespace: &str,
        name: &str,
        patch: impl FnOnce(&mut K),
    ) -> Result<K, StoreError> {
        let tap = self.inner.tap.get().cloned();
        let mut w = self.begin().await?;
        let (obj, recorded) = self.status_in(&mut w, tap.as_ref(), namespace, name, patch).await?;
        self.commit(w).await?;
        if let Some(tap) = tap.filter(|_| recorded > 0) {
            tap.recorded(recorded);
        }
        Ok(obj)
    }

    /// Patch the status of `K` `namespace/name` in `w` (NotFound when absent), with the
    /// app-webhook messages the change owes; the count is for `StatusTap::recorded` after the
    /// commit.
    pub(super) async fn status_in<K: Row>(
        &self,
        w: &mut Write,
        tap: Option<&Arc<dyn StatusTap>>,
        namespace: &str,
        name: &str,
        patch: impl FnOnce(&mut K),
    ) -> Result<(K, usize), StoreError> {
        let (rv, obj) = rows::lock_load::<K>(&mut w.tx, namespace, name).await?;
        let obj = obj.ok_or_else(|| {
            StoreError::NotFound(
                ObjectKey { kind: K::KIND, namespace: namespace.into(), name: name.into() }.to_string(),
            )
        })?;
        self.status_save(w, tap, obj, rv, patch).await
    }

    /// The second half of `status_in`: patch `obj`, read by `rows::lock_load` in `w` (which
    /// drew `rv`), and save it.
    pub(super) async fn status_save<K: Row>(
        &self,
        w: &mut Write,
        tap: Option<&Arc<dyn StatusTap>>,
        obj: K,
        rv: u64,
        patch: impl FnOnce(&mut K),
    ) -> Result<(K, usize), StoreError> {
        let (obj, messages) = self.status_patch(w, tap, obj, rv, patch).await?;
        let stored = rows::Stored::Labels(obj.meta().labels.clone());
        rows::save(&mut w.tx, &obj, stored, &self.inner.origin).await?;
        // The messages a status change owes commit with it, or neither does.
        outbox::insert(&mut w.tx, &messages, chrono::Utc::now().timestamp_millis()).await?;
        self.saved(w, &obj);
        Ok((obj, messages.len()))
    }

    /// Patch `obj`'s status (read under its lock in `w`, which drew `rv`) and work out the
    /// app-webhook messages the change owes; saving it is the caller's (`rows::save`, or
    /// `rows::save_all` for a unit), then `saved`.
    pub(super) async fn status_patch<K: Row>(
        &self,
        w: &mut Write,
        tap: Option<&Arc<dyn StatusTap>>,
        mut obj: K,
        rv: u64,
        patch: impl FnOnce(&mut K),
    ) -> Result<(K, Vec<OutboxMessage>), StoreError> {
        let before = tap.map(|_| obj.clone());
        patch(&mut obj);
        obj.meta_mut().resource_version = Some(rv.to_string());
        let messages = match (tap, &before) {
            (Some(tap), Some(before)) => {
                let owners = self.owners_of(w, &obj).await?;
                outbox::messages(tap, before, &obj, &owners)?
            }
            _ => Vec::new(),
        };
        Ok((obj, messages))
    }

    /// Note a saved object for the cache and the broadcast after the COMMIT.
    pub(super) fn saved<K: Row>(&self, w: &mut Write, obj: &K) {
        w.written.push(Written::saved(obj));
    }

    /// The (user id, provider) of the connection a TaskSync names, read in its transaction,
    /// for the status tap (which asks synchronously).
    async fn owners_of<K: Row>(&self, w: &mut Write, obj: &K) -> Result<HashMap<String, (String, String)>, StoreError> {
        let mut owners = HashMap::new();
        if let Some(ts) = (obj as &dyn Any).downcast_ref::<TaskSync>() {
            let ns = ts.metadata.namespace.clone().unwrap_or_else(|| "default".into());
            let name = &ts.spec.connection_ref.name;
            if let Some(c) = rows::load::<CalendarConnection>(&mut w.tx, &ns, name).await? {
                owners.insert(name.clone(), (c.spec.user_id.clone(), c.spec.provider.as_str().to_string()));
            }
        }
        Ok(owners)
    }
}

#[async_trait]
impl Objects for PgObjects {
    async fn get_connection(&self, namespace: &str, name: &str) -> Result<Option<CalendarConnection>, StoreError> {
        self.get(namespace, name).await
    }

    async fn get_task_sync(&self, namespace: &str, name: &str) -> Result<Option<TaskSync>, StoreError> {
        self.get(namespace, name).await
    }

    async fn apply_connection(&self, object: &CalendarConnection) -> Result<CalendarConnection, StoreError> {
        self.apply(object).await
    }

    async fn apply_task_sync(&self, object: &TaskSync) -> Result<TaskSync, StoreError> {
        self.apply(object).await
    }

    async fn patch_connection_status(
        &self,
        namespace: &str,
        name: &str,
        status: &CalendarConnectionStatus,
    ) -> Result<CalendarConnection, StoreError> {
        let mut new = status.clone();
        self.patch_status(namespace, name, move |obj: &mut CalendarConnection| {
            new.history = obj.status.as_ref().map(|st| st.history.clone()).unwrap_or_default();
            obj.status = Some(new);
        })
        .await
    }

    async fn patch_task_sync_status(
        &self,
        namespace: &str,
        name: &str,
        status: &TaskSyncStatus,
    ) -> Result<TaskSync, StoreError> {
        let new = status.clone();
        self.patch_status(namespace, name, move |obj: &mut TaskSync| obj.status = Some(new)).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<Deletion, StoreError> {
        let mut w = self.begin().await?;
        let mut marked = false;
        let f = |m: &mut ObjectMeta| {
            marked = semantics::mark_deleted(m);
            true
        };
        let found = match key.kind {
            Kind::CalendarConnection => self.meta_in::<CalendarConnection>(&mut w, key, f).await,
            Kind::TaskSync => self.meta_in::<TaskSync>(&mut w, key, f).await,
        };
        match found {
            Err(StoreError::NotFound(_)) => return Ok(Deletion::NotFound),
            other => other?,
        }
        self.commit(w).await?;
        Ok(if marked { Deletion::Marked } else { Deletion::Deleted })
    }

    async fn add_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<(), StoreError> {
        self.with_meta(key, |m| semantics::add_finalizer(m, finalizer)).await
    }

    async fn remove_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<(), StoreError> {
        self.with_meta(key, |m| semantics::remove_finalizer(m, finalizer)).await
    }

    async fn set_labels(&self, key: &ObjectKey, labels: &Labels) -> Result<(), StoreError> {
        self.with_meta(key, |m| crate::engine::objects::merge_map(&mut m.labels, labels)).await
    }

    async fn set_labels_and_finalizer(
        &self,
        key: &ObjectKey,
        labels: &Labels,
        finalizer: &str,
    ) -> Result<(), StoreError> {
        self.with_meta(key, |m| semantics::label_and_finalize(m, labels, finalizer)).await
    }

    async fn set_annotations(&self, key: &ObjectKey, annotations: &Labels) -> Result<(), StoreError> {
        self.with_meta(key, |m| crate::engine::objects::merge_map(&mut m.annotations, annotations)).await
    }

    async fn list_connections(
        &self,
        namespace: Option<&str>,
        selector: &Labels,
    ) -> Result<Vec<CalendarConnection>, StoreError> {
        self.list(namespace, selector).await
    }

    async fn list_task_syncs(&self, namespace: Option<&str>, selector: &Labels) -> Result<Vec<TaskSync>, StoreError> {
        self.list(namespace, selector).await
    }

    async fn list_task_syncs_page(
        &self,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<(Vec<TaskSync>, bool), StoreError> {
        let raw = {
            let mut conn = self.conn().await?;
            let after = after.map(|k| (k.namespace.as_str(), k.name.as_str()));
            rows::page_raw::<TaskSync>(&mut conn, after, limit).await?
        };
        let more = raw.len() >= limit;
        Ok((crate::standalone::rows::decode_list::<TaskSync>(raw), more))
    }

    async fn find_task_sync_by_event(&self, namespace: &str, event_id: &str) -> Result<Option<TaskSync>, StoreError> {
        let mut conn = self.conn().await?;
        rows::find_by_event(&mut conn, namespace, event_id).await
    }

    async fn read_credentials(&self, namespace: &str, secret: &SecretRef) -> Result<Option<Credentials>, StoreError> {
        Ok(self.read_secret_credentials(namespace, secret).await?.map(|(c, _)| c))
    }

    async fn write_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
        credentials: &Credentials,
        owner: &ObjectKey,
    ) -> Result<(), StoreError> {
        self.write_secret_credentials(namespace, secret, credentials, owner).await
    }

    async fn delete_credentials(&self, namespace: &str, secret: &SecretRef) -> Result<(), StoreError> {
        self.delete_secret(namespace, &secret.name).await.map(|_| ())
    }

    async fn read_credentials_versioned(
        &self,
        namespace: &str,
        secret: &SecretRef,
    ) -> Result<Option<(Credentials, String)>, StoreError> {
        self.read_secret_credentials(namespace, secret).await
    }

    async fn replace_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
        credentials: &Credentials,
        expected_version: &str,
    ) -> Result<String, StoreError> {
        self.replace_secret_credentials(namespace, secret, credentials, expected_version).await
    }

    async fn append_connection_history(
        &self,
        namespace: &str,
        name: &str,
        entry: HistoryEntry,
    ) -> Result<HistoryEntry, StoreError> {
        let mut pushed = None;
        self.patch_status(namespace, name, |obj: &mut CalendarConnection| {
            let status = obj.status.get_or_insert_with(CalendarConnectionStatus::default);
            pushed = Some(history::push(&mut status.history, entry, CONNECTION_HISTORY_LIMIT));
        })
        .await?;
        pushed.ok_or_else(|| StoreError::Unavailable("history entry was not recorded".into()))
    }

    async fn get_feed(&self, namespace: &str, id: &str) -> Result<Option<FeedRecord>, StoreError> {
        self.get_feed_record(namespace, id).await
    }

    async fn create_feed(&self, namespace: &str, record: &FeedRecord) -> Result<FeedRecord, StoreError> {
        self.create_feed_record(namespace, record).await
    }

    async fn delete_feed(&self, namespace: &str, id: &str) -> Result<bool, StoreError> {
        self.delete_feed_record(namespace, id).await
    }

    async fn publish_event(&self, key: &ObjectKey, event: &ObjectEvent) -> Result<(), StoreError> {
        let mut w = self.begin().await?;
        rows::insert_event(&mut w.tx, key, event_fields(event), EVENTS_KEPT).await?;
        self.commit(w).await
    }

    async fn record_outcome(&self, key: &ObjectKey, record: &ReconcileRecord) -> Result<Recorded, StoreError> {
        self.record_unit(key, record).await
    }

    fn subscribe(&self) -> broadcast::Receiver<ObjectKey> {
        self.inner.changes.subscribe()
    }
}
