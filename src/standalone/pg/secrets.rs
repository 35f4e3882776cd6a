//! Secrets and ICS feed records in the PostgreSQL store, sealed exactly as in SQLite: every
//! Secret's data is one AES-256-GCM row bound to its namespace/name (`credentials::envelope`),
//! with the id of the key that sealed it and a version for optimistic concurrency. Feed records
//! are Secrets named `calsync-feed-<id>`.
//!
//! Owns: Secret rows and the credential and feed operations of the `Objects` port on them. Must
//! not touch: objects, or what credentials mean (`credentials`). Never logs or formats secret data.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{PgObjects, Write, rows};
use crate::credentials::envelope::{Keyring, secret_aad};
use crate::credentials::feed::FeedRecord;
use crate::credentials::keys::RotationReport;
use crate::credentials::{self, Credentials};
use crate::engine::{ObjectKey, StoreError};
use crate::resources::SecretRef;
use crate::standalone::rows::{SECRET_KIND, encode_secret_data};
use crate::standalone::store::secrets::{credentials_data, open_row, parse};
use crate::standalone::watch::SecretName;

impl PgObjects {
    fn seal(&self, namespace: &str, name: &str, data: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, StoreError> {
        self.inner
            .keys
            .seal(&encode_secret_data(data), &secret_aad(namespace, name))
            .map_err(|e| StoreError::Invalid(format!("Secret {namespace}/{name}: {e}")))
    }

    /// Lock the Secret's key in `w`, log the change and note it for notification.
    async fn secret_write(&self, w: &mut Write, namespace: &str, name: &str) -> Result<(), StoreError> {
        rows::lock_key(&mut w.tx, SECRET_KIND, namespace, name).await?;
        rows::log_change(&mut w.tx, &self.inner.origin, SECRET_KIND, namespace, name, None).await?;
        w.secrets.push(SecretName { namespace: namespace.into(), name: name.into() });
        Ok(())
    }

    /// Store a Secret's data (as a platform team writes it), sealed. Returns whether it was new.
    pub async fn put_secret(
        &self,
        namespace: &str,
        name: &str,
        data: BTreeMap<String, Vec<u8>>,
    ) -> Result<bool, StoreError> {
        self.put_secret_owned(namespace, name, &data, None).await
    }

    async fn put_secret_owned(
        &self,
        namespace: &str,
        name: &str,
        data: &BTreeMap<String, Vec<u8>>,
        owner: Option<&ObjectKey>,
    ) -> Result<bool, StoreError> {
        let sealed = self.seal(namespace, name, data)?;
        let mut w = self.begin().await?;
        self.secret_write(&mut w, namespace, name).await?;
        let (created, _) =
            rows::save_secret(&mut w.tx, namespace, name, &self.inner.keys.current_id(), &sealed, owner).await?;
        self.commit(w).await?;
        Ok(created)
    }

    /// A Secret's data (`None` when absent); `Unreadable` when it cannot be decrypted.
    pub async fn get_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, StoreError> {
        Ok(self.get_secret_versioned(namespace, name).await?.map(|(data, _)| data))
    }

    async fn get_secret_versioned(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<(BTreeMap<String, Vec<u8>>, i64)>, StoreError> {
        let cached = self.inner.sealed.get(namespace, name);
        let row = match cached {
            Some(row) => row,
            None => {
                let epoch = self.inner.sealed.epoch();
                let mut conn = self.conn().await?;
                let row = rows::load_secret(&mut conn, namespace, name).await?.map(|(s, v)| (Arc::from(s), v));
                self.inner.sealed.fill(epoch, namespace, name, row.clone());
                row
            }
        };
        let Some((sealed, version)) = row else {
            return Ok(None);
        };
        open_row(&self.inner.keys, namespace, name, &sealed).map(|data| Some((data, version)))
    }

    /// Delete a Secret; returns whether it existed.
    pub async fn delete_secret(&self, namespace: &str, name: &str) -> Result<bool, StoreError> {
        let mut w = self.begin().await?;
        self.secret_write(&mut w, namespace, name).await?;
        let n = sqlx::query("DELETE FROM secrets WHERE namespace = $1 AND name = $2")
            .bind(namespace)
            .bind(name)
            .execute(&mut *w.tx)
            .await
            .map_err(super::db_err)?
            .rows_affected();
        self.commit(w).await?;
        Ok(n > 0)
    }

    /// Names of the Secrets in `namespace`.
    pub async fn secret_names(&self, namespace: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<(String,)> = sqlx::query_as("SELECT name FROM secrets WHERE namespace = $1 ORDER BY name")
            .bind(namespace)
            .fetch_all(&mut *conn)
            .await
            .map_err(super::db_err)?;
        Ok(rows.into_iter().map(|(n,)| n).collect())
    }

    pub(super) async fn read_secret_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
    ) -> Result<Option<(Credentials, String)>, StoreError> {
        let Some((data, version)) = self.get_secret_versioned(namespace, &secret.name).await? else {
            return Ok(None);
        };
        parse(namespace, secret, &data).map(|c| Some((c, version.to_string())))
    }

    pub(super) async fn write_secret_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
        credentials: &Credentials,
        owner: &ObjectKey,
    ) -> Result<(), StoreError> {
        let data = credentials_data(secret, credentials)?;
        self.put_secret_owned(namespace, &secret.name, &data, Some(owner)).await.map(|_| ())
    }

    /// Compare-and-swap of a Secret's credentials in one transaction under the Secret's lock.
    pub(super) async fn replace_secret_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
        creds: &Credentials,
        expected: &str,
    ) -> Result<String, StoreError> {
        let keys = &self.inner.keys;
        let name = &secret.name;
        let label = format!("Secret {namespace}/{name}");
        let mut w = self.begin().await?;
        self.secret_write(&mut w, namespace, name).await?;
        let (sealed, version) =
            rows::load_secret(&mut w.tx, namespace, name).await?.ok_or_else(|| StoreError::NotFound(label.clone()))?;
        if version.to_string() != expected {
            // The caller's copy may have come from the cache before a change reached it.
            self.inner.sealed.invalidate(namespace, name);
            return Err(StoreError::Conflict(label));
        }
        let mut data = open_row(keys, namespace, name, &sealed)?;
        // The whole row is sealed below, so calsync's key needs no sealing of its own.
        credentials::form::write_back(&mut data, secret.key.as_deref(), creds, Ok)
            .map_err(|e| StoreError::Invalid(format!("{label}: {e}")))?;
        let sealed = self.seal(namespace, name, &data)?;
        let (_, version) = rows::save_secret(&mut w.tx, namespace, name, &keys.current_id(), &sealed, None).await?;
        self.commit(w).await?;
        Ok(version.to_string())
    }

    /// Ids of the keys the stored Secrets were sealed with (for the start-up key check).
    pub async fn stored_key_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<(String,)> = sqlx::query_as("SELECT DISTINCT key_id FROM secrets ORDER BY key_id")
            .fetch_all(&mut *conn)
            .await
            .map_err(super::db_err)?;
        Ok(rows.into_iter().map(|(k,)| k).collect())
    }

    /// Seal every Secret under the current key (`calsync rotate-keys`), each in its own
    /// transaction under its lock, so a concurrent writer is never lost. Idempotent; a row that
    /// cannot be opened is reported and skipped.
    pub async fn rotate_keys(&self) -> Result<RotationReport, StoreError> {
        let mut report = RotationReport::default();
        let all: Vec<(String, String)> = {
            let mut conn = self.conn().await?;
            sqlx::query_as("SELECT namespace, name FROM secrets ORDER BY namespace, name")
                .fetch_all(&mut *conn)
                .await
                .map_err(super::db_err)?
        };
        let keys: &Keyring = &self.inner.keys;
        for (ns, name) in all {
            let mut w = self.begin().await?;
            rows::lock_key(&mut w.tx, SECRET_KIND, &ns, &name).await?;
            let Some((sealed, _)) = rows::load_secret(&mut w.tx, &ns, &name).await? else {
                continue;
            };
            let data = match open_row(keys, &ns, &name, &sealed) {
                Ok(data) => data,
                Err(e) => {
                    tracing::warn!(secret = %format!("{ns}/{name}"), "cannot open a stored Secret; left as it is");
                    report.unreadable.push(e.to_string());
                    continue;
                }
            };
            if Keyring::key_id_of(&sealed).as_deref() == Some(keys.current_id().as_str()) {
                report.already_current += 1;
                continue;
            }
            let resealed = self.seal(&ns, &name, &data)?;
            self.secret_write(&mut w, &ns, &name).await?;
            rows::save_secret(&mut w.tx, &ns, &name, &keys.current_id(), &resealed, None).await?;
            self.commit(w).await?;
            report.resealed += 1;
        }
        Ok(report)
    }

    pub(super) async fn get_feed_record(&self, namespace: &str, id: &str) -> Result<Option<FeedRecord>, StoreError> {
        let data = self.get_secret(namespace, &FeedRecord::secret_name(id)).await?;
        Ok(data.as_ref().and_then(FeedRecord::from_secret_data))
    }

    /// Insert the row unless it exists, under its lock, so two concurrent creates of one user's
    /// feed cannot both win (the second would leave the first caller a dead URL).
    pub(super) async fn create_feed_record(
        &self,
        namespace: &str,
        record: &FeedRecord,
    ) -> Result<FeedRecord, StoreError> {
        let name = FeedRecord::secret_name(&record.id);
        let sealed = self.seal(namespace, &name, &record.to_secret_data())?;
        let mut w = self.begin().await?;
        rows::lock_key(&mut w.tx, SECRET_KIND, namespace, &name).await?;
        if rows::load_secret(&mut w.tx, namespace, &name).await?.is_none() {
            self.secret_write(&mut w, namespace, &name).await?;
            rows::save_secret(&mut w.tx, namespace, &name, &self.inner.keys.current_id(), &sealed, None).await?;
            self.commit(w).await?;
            return Ok(record.clone());
        }
        drop(w);
        self.get_feed_record(namespace, &record.id)
            .await?
            .ok_or_else(|| StoreError::Conflict(format!("feed {namespace}/{}", record.id)))
    }

    pub(super) async fn delete_feed_record(&self, namespace: &str, id: &str) -> Result<bool, StoreError> {
        self.delete_secret(namespace, &FeedRecord::secret_name(id)).await
    }
}
