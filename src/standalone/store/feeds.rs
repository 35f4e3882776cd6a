//! ICS feed records in the SQLite store: one sealed secrets row per feed, named
//! `calsync-feed-<feed id>` (`credentials::feed`), so key rotation, the start-up key check and
//! the change log treat it like any Secret. The record holds no token.
//!
//! Owns: the feed operations of the `Objects` port. Must not touch: credentials rows.

use super::SqliteObjects;
use crate::credentials::envelope::secret_aad;
use crate::credentials::feed::FeedRecord;
use crate::engine::StoreError;
use crate::standalone::rows;

impl SqliteObjects {
    pub(super) async fn get_feed_record(&self, namespace: &str, id: &str) -> Result<Option<FeedRecord>, StoreError> {
        let data = self.get_secret(namespace, &FeedRecord::secret_name(id)).await?;
        Ok(data.as_ref().and_then(FeedRecord::from_secret_data))
    }

    /// Insert the row unless it exists, in one transaction, so two concurrent creates of one
    /// user's feed cannot both win (the second would leave the first caller a dead URL).
    pub(super) async fn create_feed_record(
        &self,
        namespace: &str,
        record: &FeedRecord,
    ) -> Result<FeedRecord, StoreError> {
        let name = FeedRecord::secret_name(&record.id);
        let sealed = self
            .inner
            .keys
            .seal(&rows::encode_secret_data(&record.to_secret_data()), &secret_aad(namespace, &name))
            .map_err(|e| StoreError::Invalid(format!("Secret {namespace}/{name}: {e}")))?;
        let key_id = self.inner.keys.current_id();
        let (ns, n) = (namespace.to_string(), name.clone());
        let created = self
            .tx(move |tx, origin, _| {
                if rows::load_secret(tx, &ns, &n)?.is_some() {
                    return Ok(false);
                }
                rows::log_secret_change(tx, origin, &ns, &n)?;
                rows::save_secret(tx, &ns, &n, &key_id, &sealed, None).map(|(created, _)| created)
            })
            .await?;
        if created {
            return Ok(record.clone());
        }
        self.get_feed_record(namespace, &record.id)
            .await?
            .ok_or_else(|| StoreError::Conflict(format!("feed {namespace}/{}", record.id)))
    }

    pub(super) async fn delete_feed_record(&self, namespace: &str, id: &str) -> Result<bool, StoreError> {
        self.delete_secret(namespace, &FeedRecord::secret_name(id)).await
    }
}
