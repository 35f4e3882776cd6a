//! Credentials Secrets for `KubeObjects`: reading both forms (plain keys written by a platform
//! team, or calsync's `credentials` key), writing calsync's form owner-referenced to the
//! connection, sealed with the same AES-256-GCM envelope as the SQLite store (`EnvelopeSealer`).
//!
//! Owns: Secret requests and the sealer trait. Must not touch: what the credentials mean
//! (`credentials` module) or when they are read (engine). Never logs or returns Secret data.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, PostParams};
use kube::{Resource, ResourceExt};

use super::objects::{CONFLICT_RETRIES, KubeObjects};
use super::patches::{is_code, store_error};
use crate::credentials::envelope::{Keyring, secret_aad};
use crate::credentials::{self, Credentials};
use crate::engine::{Kind, ObjectKey, StoreError};
use crate::resources::{CalendarConnection, SecretRef, TaskSync};

/// What calsync writes under its `credentials` key, and how it reads it back. Plain keys written
/// by a platform team are never passed through it. `aad` binds the blob to its Secret.
pub trait CredentialSealer: Send + Sync {
    fn seal(&self, plaintext: Vec<u8>, aad: &[u8]) -> Result<Vec<u8>, StoreError>;
    fn open(&self, stored: Vec<u8>, aad: &[u8]) -> Result<Vec<u8>, StoreError>;
    /// The key id a stored value is sealed with (`None`: not sealed), for `rotate-keys`.
    fn key_id_of(&self, _stored: &[u8]) -> Option<String> {
        None
    }
    /// The id of the key new writes are sealed with (`None`: no sealing).
    fn current_key_id(&self) -> Option<String> {
        None
    }
}

/// Stores the JSON as it is: only for tests of code that does not care about sealing.
pub struct PlainSealer;

impl CredentialSealer for PlainSealer {
    fn seal(&self, plaintext: Vec<u8>, _aad: &[u8]) -> Result<Vec<u8>, StoreError> {
        Ok(plaintext)
    }
    fn open(&self, stored: Vec<u8>, _aad: &[u8]) -> Result<Vec<u8>, StoreError> {
        Ok(stored)
    }
}

/// The AES-256-GCM envelope (`credentials::envelope`), the same as the SQLite store's. Values
/// written before sealing existed (plain JSON, starting with `{`) are still read, and
/// `rotate-keys` seals them.
pub struct EnvelopeSealer {
    keys: Keyring,
}

impl EnvelopeSealer {
    pub fn new(keys: Keyring) -> Self {
        EnvelopeSealer { keys }
    }
}

fn is_legacy_plain(stored: &[u8]) -> bool {
    stored.first() == Some(&b'{')
}

impl CredentialSealer for EnvelopeSealer {
    fn seal(&self, plaintext: Vec<u8>, aad: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.keys.seal(&plaintext, aad).map_err(|e| StoreError::Invalid(e.to_string()))
    }
    fn open(&self, stored: Vec<u8>, aad: &[u8]) -> Result<Vec<u8>, StoreError> {
        if is_legacy_plain(&stored) {
            return Ok(stored);
        }
        self.keys.open(&stored, aad).map_err(|e| {
            StoreError::Unreadable(format!(
                "{e}; reconnect the calendar, or set the key it was written with (ENCRYPTION_KEY, ENCRYPTION_KEYS_PREVIOUS)"
            ))
        })
    }
    fn key_id_of(&self, stored: &[u8]) -> Option<String> {
        Keyring::key_id_of(stored)
    }
    fn current_key_id(&self) -> Option<String> {
        Some(self.keys.current_id())
    }
}

impl KubeObjects {
    pub(super) async fn read_secret_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
    ) -> Result<Option<(Credentials, String)>, StoreError> {
        let Some(s) = self.get::<Secret>(namespace, &secret.name, "Secret").await? else {
            return Ok(None);
        };
        let version = s.metadata.resource_version.clone().unwrap_or_default();
        let mut data = secret_data(s);
        let json_key = secret.key.as_deref().unwrap_or(credentials::CREDENTIALS_KEY);
        if let Some(sealed) = data.remove(json_key) {
            let opened = self
                .sealer
                .open(sealed, &secret_aad(namespace, &secret.name))
                .map_err(|e| with_secret(e, namespace, &secret.name))?;
            data.insert(json_key.to_string(), opened);
        }
        credentials::from_secret_data(&data, secret.key.as_deref())
            .map(|c| Some((c, version)))
            .map_err(|e| StoreError::Invalid(format!("Secret {namespace}/{}: {}", secret.name, e)))
    }

    /// Compare-and-swap on the Secret's resourceVersion: the PUT carries `expected_version`, so
    /// a write in between is a 409 from the API server, never lost.
    pub(super) async fn replace_secret_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
        creds: &Credentials,
        expected_version: &str,
    ) -> Result<String, StoreError> {
        let label = format!("Secret {namespace}/{}", secret.name);
        let api = self.api::<Secret>(namespace);
        let mut s = api
            .get_opt(&secret.name)
            .await
            .map_err(|e| store_error(&label, e))?
            .ok_or_else(|| StoreError::NotFound(label.clone()))?;
        if s.metadata.resource_version.as_deref() != Some(expected_version) {
            return Err(StoreError::Conflict(label));
        }
        let mut data = secret_data(s.clone());
        let sealer = self.sealer.clone();
        let aad = secret_aad(namespace, &secret.name);
        credentials::form::write_back(&mut data, secret.key.as_deref(), creds, |json| {
            sealer.seal(json, &aad).map_err(|e| e.to_string())
        })
        .map_err(|e| StoreError::Invalid(format!("{label}: {e}")))?;
        s.data = Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect());
        s.string_data = None;
        let pp = PostParams { field_manager: Some(self.field_manager.clone()), ..Default::default() };
        match api.replace(&secret.name, &pp, &s).await {
            Ok(written) => Ok(written.metadata.resource_version.unwrap_or_default()),
            Err(e) if is_code(&e, 409) => Err(StoreError::Conflict(label)),
            Err(e) if is_code(&e, 404) => Err(StoreError::NotFound(label)),
            // Never echo the request: the error text is the server's status message only.
            Err(e) => Err(store_error(&label, e)),
        }
    }

    pub(super) async fn write_secret_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
        creds: &Credentials,
        owner: &ObjectKey,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_vec(creds)
            .map_err(|e| StoreError::Invalid(format!("credentials cannot be serialized: {e}")))?;
        let sealed = self.sealer.seal(json, &secret_aad(namespace, &secret.name))?;
        // The REST API writes the credentials before it creates the connection (so the first
        // reconcile finds them): the owner may not exist yet. Then the Secret is written without
        // an owner reference and `adopt_credentials` adds it once the connection is created.
        let owner_ref = self.meta_of(owner).await?.and_then(|m| m.uid).map(|uid| owner_reference(owner, uid));
        let key = secret.key.clone().unwrap_or_else(|| credentials::CREDENTIALS_KEY.to_string());
        let api = self.api::<Secret>(namespace);
        let label = format!("Secret {namespace}/{}", secret.name);
        for _ in 0..CONFLICT_RETRIES {
            let current = api.get_opt(&secret.name).await.map_err(|e| store_error(&label, e))?;
            let mut s = current.clone().unwrap_or_default();
            s.metadata.name = Some(secret.name.clone());
            s.metadata.namespace = Some(namespace.to_string());
            if let Some(owner_ref) = &owner_ref {
                s.metadata.owner_references = Some(vec![owner_ref.clone()]);
            }
            s.metadata.labels.get_or_insert_with(BTreeMap::new).insert(MANAGED_BY.into(), "calsync".into());
            s.type_ = Some(s.type_.unwrap_or_else(|| "Opaque".into()));
            s.data = Some(BTreeMap::from([(key.clone(), ByteString(sealed.clone()))]));
            s.string_data = None;
            let pp = PostParams { field_manager: Some(self.field_manager.clone()), ..Default::default() };
            let r = match current {
                None => api.create(&pp, &s).await,
                Some(_) => api.replace(&secret.name, &pp, &s).await,
            };
            match r {
                Ok(_) => return Ok(()),
                Err(e) if is_code(&e, 409) => continue,
                // Never echo the request: the error text is the server's status message only.
                Err(e) => return Err(store_error(&label, e)),
            }
        }
        Err(StoreError::Conflict(label))
    }

    /// Give a calsync-written credentials Secret that has no owner yet (written before its
    /// connection existed) the connection as owner, so it is garbage-collected with it. Secrets
    /// calsync did not write (platform teams' plain keys) and Secrets already owned are left
    /// alone.
    pub(super) async fn adopt_credentials(&self, connection: &CalendarConnection) -> Result<(), StoreError> {
        let (Some(namespace), Some(uid)) = (connection.metadata.namespace.as_deref(), connection.metadata.uid.clone())
        else {
            return Ok(());
        };
        let name = &connection.spec.credentials_secret_ref.name;
        let owner = ObjectKey::connection(namespace, &connection.name_any());
        let api = self.api::<Secret>(namespace);
        let label = format!("Secret {namespace}/{name}");
        for _ in 0..CONFLICT_RETRIES {
            let Some(mut s) = api.get_opt(name).await.map_err(|e| store_error(&label, e))? else {
                return Ok(());
            };
            let ours = s.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY)).is_some_and(|v| v == "calsync");
            if !ours || s.metadata.owner_references.as_ref().is_some_and(|r| !r.is_empty()) {
                return Ok(());
            }
            s.metadata.owner_references = Some(vec![owner_reference(&owner, uid.clone())]);
            // `replace` sends the resourceVersion just read: a concurrent write is a 409, not lost.
            let pp = PostParams { field_manager: Some(self.field_manager.clone()), ..Default::default() };
            match api.replace(name, &pp, &s).await {
                Ok(_) => return Ok(()),
                Err(e) if is_code(&e, 409) => continue,
                Err(e) => return Err(store_error(&label, e)),
            }
        }
        Err(StoreError::Conflict(label))
    }

    pub(super) async fn delete_secret_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
    ) -> Result<(), StoreError> {
        match self.api::<Secret>(namespace).delete(&secret.name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, 404) => Ok(()),
            Err(e) => Err(store_error(&format!("Secret {namespace}/{}", secret.name), e)),
        }
    }
}

/// Name the Secret in an error about opening its sealed value.
fn with_secret(e: StoreError, namespace: &str, name: &str) -> StoreError {
    match e {
        StoreError::Unreadable(m) => StoreError::Unreadable(format!("Secret {namespace}/{name}: {m}")),
        other => other,
    }
}

/// A Secret's data as bytes, with `stringData` folded in: it is write-only on a real server,
/// but a hand-made object may carry it.
fn secret_data(s: Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
    for (k, v) in s.string_data.unwrap_or_default() {
        data.entry(k).or_insert_with(|| v.into_bytes());
    }
    data
}

pub(super) const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

fn owner_reference(owner: &ObjectKey, uid: String) -> OwnerReference {
    let (api_version, kind) = match owner.kind {
        Kind::CalendarConnection => (CalendarConnection::api_version(&()), CalendarConnection::kind(&())),
        Kind::TaskSync => (TaskSync::api_version(&()), TaskSync::kind(&())),
    };
    OwnerReference {
        api_version: api_version.into_owned(),
        kind: kind.into_owned(),
        name: owner.name.clone(),
        uid,
        ..Default::default()
    }
}
