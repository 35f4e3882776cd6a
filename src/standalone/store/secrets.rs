//! Secrets in the SQLite store: every Secret's data is one sealed row (AES-256-GCM, bound to
//! its namespace/name), with a version for optimistic concurrency and the id of the key that
//! sealed it (for key rotation and the start-up key check).
//!
//! Owns: Secret rows and the credential operations of the `Objects` port on them. Must not
//! touch: objects, or what credentials mean (`credentials`). Never logs or formats secret data.

use std::collections::BTreeMap;

use super::{SecretName, SqliteObjects, rows};
use crate::credentials::envelope::{Keyring, secret_aad};
use crate::credentials::keys::RotationReport;
use crate::credentials::{self, Credentials};
use crate::engine::{ObjectKey, StoreError};
use crate::resources::SecretRef;

/// Open a sealed row into the Secret's data map.
pub(in crate::standalone) fn open_row(
    keys: &Keyring,
    namespace: &str,
    name: &str,
    sealed: &[u8],
) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
    let unreadable = |why: String| {
        StoreError::Unreadable(format!(
            "Secret {namespace}/{name}: {why}; reconnect the calendar or apply the Secret again (calsync apply -f), or set the key it was written with (ENCRYPTION_KEY, ENCRYPTION_KEYS_PREVIOUS)"
        ))
    };
    let plain = keys.open(sealed, &secret_aad(namespace, name)).map_err(|e| unreadable(e.to_string()))?;
    rows::decode_secret_data(&plain).ok_or_else(|| unreadable("the decrypted data is not a Secret map".into()))
}

pub(in crate::standalone) fn parse(
    namespace: &str,
    secret: &SecretRef,
    data: &BTreeMap<String, Vec<u8>>,
) -> Result<Credentials, StoreError> {
    credentials::from_secret_data(data, secret.key.as_deref())
        .map_err(|e| StoreError::Invalid(format!("Secret {namespace}/{}: {e}", secret.name)))
}

/// The Secret data calsync writes for `credentials` (the inverse of `parse`), in either store.
pub(in crate::standalone) fn credentials_data(
    secret: &SecretRef,
    credentials: &Credentials,
) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
    let json = serde_json::to_vec(credentials)
        .map_err(|e| StoreError::Invalid(format!("credentials cannot be serialized: {e}")))?;
    let key = secret.key.clone().unwrap_or_else(|| credentials::CREDENTIALS_KEY.to_string());
    Ok(BTreeMap::from([(key, json)]))
}

impl SqliteObjects {
    /// Store a Secret's data (as a platform team writes it), encrypted. Returns whether it was new.
    pub async fn put_secret(
        &self,
        namespace: &str,
        name: &str,
        data: BTreeMap<String, Vec<u8>>,
    ) -> Result<bool, StoreError> {
        self.put_secret_owned(namespace, name, &data, None).await
    }

    pub(super) async fn put_secret_owned(
        &self,
        namespace: &str,
        name: &str,
        data: &BTreeMap<String, Vec<u8>>,
        owner: Option<ObjectKey>,
    ) -> Result<bool, StoreError> {
        let sealed = self
            .inner
            .keys
            .seal(&rows::encode_secret_data(data), &secret_aad(namespace, name))
            .map_err(|e| StoreError::Invalid(format!("Secret {namespace}/{name}: {e}")))?;
        let key_id = self.inner.keys.current_id();
        let (ns, n) = (namespace.to_string(), name.to_string());
        let created = self
            .tx(move |tx, origin, _| {
                rows::log_secret_change(tx, origin, &ns, &n)?;
                rows::save_secret(tx, &ns, &n, &key_id, &sealed, owner.as_ref()).map(|(created, _)| created)
            })
            .await?;
        self.secret_changed(namespace, name);
        Ok(created)
    }

    fn secret_changed(&self, namespace: &str, name: &str) {
        // No subscribers is fine.
        let _ = self.inner.secret_changes.send(SecretName { namespace: namespace.into(), name: name.into() });
    }

    /// Secrets written or deleted (by any process on this database), so a driver can re-check
    /// the connections that use them.
    pub fn subscribe_secrets(&self) -> tokio::sync::broadcast::Receiver<SecretName> {
        self.inner.secret_changes.subscribe()
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
        let (ns, n) = (namespace.to_string(), name.to_string());
        let Some((sealed, version)) = self.read(move |tx| rows::load_secret_versioned(tx, &ns, &n)).await? else {
            return Ok(None);
        };
        open_row(&self.inner.keys, namespace, name, &sealed).map(|data| Some((data, version)))
    }

    /// Delete a Secret; returns whether it existed.
    pub async fn delete_secret(&self, namespace: &str, name: &str) -> Result<bool, StoreError> {
        let (ns, n) = (namespace.to_string(), name.to_string());
        let existed = self
            .tx(move |tx, origin, _| {
                rows::log_secret_change(tx, origin, &ns, &n)?;
                rows::delete_secret(tx, &ns, &n)
            })
            .await?;
        self.secret_changed(namespace, name);
        Ok(existed)
    }

    /// Names of the Secrets in `namespace`.
    pub async fn secret_names(&self, namespace: &str) -> Result<Vec<String>, StoreError> {
        let ns = namespace.to_string();
        self.read(move |tx| rows::secret_names(tx, &ns)).await
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
        self.put_secret_owned(namespace, &secret.name, &data, Some(owner.clone())).await.map(|_| ())
    }

    /// Compare-and-swap of a Secret's credentials in one transaction: open the row, check its
    /// version, write the credentials back in the row's form, seal and save with a new version.
    pub(super) async fn replace_secret_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
        credentials: &Credentials,
        expected_version: &str,
    ) -> Result<String, StoreError> {
        let keys = self.inner.keys.clone();
        let (ns, secret_ref, creds, expected) =
            (namespace.to_string(), secret.clone(), credentials.clone(), expected_version.to_string());
        let version = self
            .tx(move |tx, origin, _| {
                let name = &secret_ref.name;
                let label = format!("Secret {ns}/{name}");
                let (sealed, version) =
                    rows::load_secret_versioned(tx, &ns, name)?.ok_or_else(|| StoreError::NotFound(label.clone()))?;
                if version.to_string() != expected {
                    return Err(StoreError::Conflict(label));
                }
                let mut data = open_row(&keys, &ns, name, &sealed)?;
                // The whole row is sealed below, so calsync's key needs no sealing of its own.
                credentials::form::write_back(&mut data, secret_ref.key.as_deref(), &creds, Ok)
                    .map_err(|e| StoreError::Invalid(format!("{label}: {e}")))?;
                let sealed = keys
                    .seal(&rows::encode_secret_data(&data), &secret_aad(&ns, name))
                    .map_err(|e| StoreError::Invalid(format!("{label}: {e}")))?;
                rows::log_secret_change(tx, origin, &ns, name)?;
                rows::save_secret(tx, &ns, name, &keys.current_id(), &sealed, None).map(|(_, v)| v)
            })
            .await?;
        self.secret_changed(namespace, &secret.name);
        Ok(version.to_string())
    }

    /// Ids of the keys the stored Secrets were sealed with (for the start-up key check).
    pub async fn stored_key_ids(&self) -> Result<Vec<String>, StoreError> {
        self.read(rows::secret_key_ids).await
    }

    /// Seal every Secret under the current key (`calsync rotate-keys`). Each row is opened and
    /// re-sealed in its own transaction, so a concurrent writer is never lost (its write bumps
    /// the version, and it is sealed with whatever key that process has). Idempotent. A row
    /// that cannot be opened is reported and skipped.
    pub async fn rotate_keys(&self) -> Result<RotationReport, StoreError> {
        let mut report = RotationReport::default();
        for (ns, name) in self.read(rows::all_secrets).await? {
            let keys = self.inner.keys.clone();
            let (n, nm) = (ns.clone(), name.clone());
            let outcome = self
                .tx(move |tx, origin, _| {
                    let Some((sealed, _)) = rows::load_secret_versioned(tx, &n, &nm)? else {
                        return Ok(None);
                    };
                    let data = match open_row(&keys, &n, &nm, &sealed) {
                        Ok(data) => data,
                        Err(e) => return Ok(Some(Err(e.to_string()))),
                    };
                    if Keyring::key_id_of(&sealed).as_deref() == Some(keys.current_id().as_str()) {
                        return Ok(Some(Ok(false)));
                    }
                    let sealed = keys
                        .seal(&rows::encode_secret_data(&data), &secret_aad(&n, &nm))
                        .map_err(|e| StoreError::Invalid(format!("Secret {n}/{nm}: {e}")))?;
                    rows::log_secret_change(tx, origin, &n, &nm)?;
                    rows::save_secret(tx, &n, &nm, &keys.current_id(), &sealed, None)?;
                    Ok(Some(Ok(true)))
                })
                .await?;
            match outcome {
                // Deleted meanwhile: nothing to rotate.
                None => {}
                Some(Ok(true)) => {
                    report.resealed += 1;
                    self.secret_changed(&ns, &name);
                }
                Some(Ok(false)) => report.already_current += 1,
                Some(Err(why)) => {
                    tracing::warn!(secret = %format!("{ns}/{name}"), "cannot open a stored Secret; left as it is");
                    report.unreadable.push(why);
                }
            }
        }
        Ok(report)
    }
}
