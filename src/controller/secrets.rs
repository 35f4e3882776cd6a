//! Credentials Secrets for `KubeObjects`: reading both forms (plain keys written by a platform
//! team, or calsync's `credentials` key), writing calsync's form owner-referenced to the
//! connection, and the sealing seam where the envelope encryption plugs in.
//!
//! Owns: Secret requests and the sealer trait. Must not touch: what the credentials mean
//! (`credentials` module) or when they are read (engine). Never logs or returns Secret data.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use kube::api::{DeleteParams, PostParams};

use super::objects::{CONFLICT_RETRIES, KubeObjects};
use super::patches::{is_code, store_error};
use crate::credentials::{self, Credentials};
use crate::engine::{Kind, ObjectKey, StoreError};
use crate::resources::{CalendarConnection, SecretRef, TaskSync};

/// Seam for the credentials envelope (encryption arrives with the credentials issue): what
/// calsync writes under its `credentials` key, and how it reads it back. Plain keys written by
/// a platform team are never passed through it.
pub trait CredentialSealer: Send + Sync {
    fn seal(&self, plaintext: Vec<u8>) -> Result<Vec<u8>, StoreError>;
    fn open(&self, stored: Vec<u8>) -> Result<Vec<u8>, StoreError>;
}

/// Stores the JSON as it is. Replaced by the AES-256-GCM envelope once that lands.
pub struct PlainSealer;

impl CredentialSealer for PlainSealer {
    fn seal(&self, plaintext: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        Ok(plaintext)
    }
    fn open(&self, stored: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        Ok(stored)
    }
}

impl KubeObjects {
    pub(super) async fn read_secret_credentials(
        &self,
        namespace: &str,
        secret: &SecretRef,
    ) -> Result<Option<Credentials>, StoreError> {
        let Some(s) = self.get::<Secret>(namespace, &secret.name, "Secret").await? else {
            return Ok(None);
        };
        let json_key = secret.key.as_deref().unwrap_or(credentials::CREDENTIALS_KEY);
        let mut data: BTreeMap<String, Vec<u8>> =
            s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
        // stringData is write-only on a real server, but a hand-made object may carry it.
        for (k, v) in s.string_data.unwrap_or_default() {
            data.entry(k).or_insert_with(|| v.into_bytes());
        }
        if let Some(sealed) = data.remove(json_key) {
            data.insert(json_key.to_string(), self.sealer.open(sealed)?);
        }
        credentials::from_secret_data(&data, secret.key.as_deref())
            .map(Some)
            .map_err(|e| StoreError::Invalid(format!("Secret {namespace}/{}: {}", secret.name, e)))
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
        let sealed = self.sealer.seal(json)?;
        let owner_meta = self.meta_of(owner).await?.ok_or_else(|| StoreError::NotFound(owner.to_string()))?;
        let (api_version, kind) = match owner.kind {
            Kind::CalendarConnection => (CalendarConnection::api_version(&()), CalendarConnection::kind(&())),
            Kind::TaskSync => (TaskSync::api_version(&()), TaskSync::kind(&())),
        };
        let owner_ref = OwnerReference {
            api_version: api_version.into_owned(),
            kind: kind.into_owned(),
            name: owner.name.clone(),
            uid: owner_meta.uid.unwrap_or_default(),
            ..Default::default()
        };
        let key = secret.key.clone().unwrap_or_else(|| credentials::CREDENTIALS_KEY.to_string());
        let api = self.api::<Secret>(namespace);
        let label = format!("Secret {namespace}/{}", secret.name);
        for _ in 0..CONFLICT_RETRIES {
            let current = api.get_opt(&secret.name).await.map_err(|e| store_error(&label, e))?;
            let mut s = current.clone().unwrap_or_default();
            s.metadata.name = Some(secret.name.clone());
            s.metadata.namespace = Some(namespace.to_string());
            s.metadata.owner_references = Some(vec![owner_ref.clone()]);
            s.metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert("app.kubernetes.io/managed-by".into(), "calsync".into());
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
