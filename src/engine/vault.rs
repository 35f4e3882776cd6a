//! `ObjectsVault`: the OAuth layer's `CredentialVault` on the `Objects` port, so refreshed and
//! rotated tokens go back to wherever the connection's credentials live (a Kubernetes Secret or a
//! SQLite row), with the store's optimistic concurrency.
//!
//! Owns: resolving `namespace/name` → the connection's `credentialsSecretRef` → versioned
//! credentials. Must not touch: token logic (oauth) or reconcile decisions.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Objects, StoreError};
use crate::credentials::Credentials;
use crate::oauth::{CredentialVault, Versioned};
use crate::providers::ProviderError;
use crate::resources::SecretRef;

pub struct ObjectsVault {
    objects: Arc<dyn Objects>,
}

impl ObjectsVault {
    pub fn new(objects: Arc<dyn Objects>) -> Self {
        ObjectsVault { objects }
    }

    async fn secret(&self, connection: &str) -> Result<Option<(String, SecretRef)>, ProviderError> {
        let Some((namespace, name)) = connection.split_once('/') else {
            return Err(ProviderError::Invalid { message: format!("{connection:?} is not namespace/name") });
        };
        let conn = self.objects.get_connection(namespace, name).await.map_err(store_error)?;
        Ok(conn.map(|c| (namespace.to_string(), c.spec.credentials_secret_ref)))
    }
}

fn store_error(e: StoreError) -> ProviderError {
    match e {
        StoreError::Invalid(m) | StoreError::Unreadable(m) => ProviderError::Invalid { message: m },
        // The tokens could not be read or written now; the engine retries.
        other => ProviderError::Transient { message: other.to_string() },
    }
}

#[async_trait]
impl CredentialVault for ObjectsVault {
    async fn load(&self, connection: &str) -> Result<Option<Versioned>, ProviderError> {
        let Some((namespace, secret)) = self.secret(connection).await? else { return Ok(None) };
        let found = self.objects.read_credentials_versioned(&namespace, &secret).await.map_err(store_error)?;
        Ok(found.map(|(credentials, version)| Versioned { credentials, version }))
    }

    async fn replace(
        &self,
        connection: &str,
        expected_version: &str,
        credentials: &Credentials,
    ) -> Result<Option<String>, ProviderError> {
        let Some((namespace, secret)) = self.secret(connection).await? else {
            return Err(ProviderError::Revoked {
                message: "the connection is gone; connect the calendar again".into(),
            });
        };
        match self.objects.replace_credentials(&namespace, &secret, credentials, expected_version).await {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::Conflict(_)) => Ok(None),
            Err(StoreError::NotFound(_)) => Err(ProviderError::Revoked {
                message: "the connection's credentials were deleted; connect the calendar again".into(),
            }),
            Err(e) => Err(store_error(e)),
        }
    }
}
