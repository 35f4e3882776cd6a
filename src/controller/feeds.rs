//! ICS feed records for `KubeObjects`: one Secret per feed, `calsync-feed-<feed id>` in the
//! API's namespace, labelled `calendar.getitdone.app/ics-feed=true`, with the record's JSON
//! under `feed` (`credentials::feed`). The record holds no token, so it is not sealed; it is a
//! Secret so that the rights calsync already has (and nobody else needs) cover it.
//!
//! Owns: the feed operations of the `Objects` port on Kubernetes. Must not touch: credentials
//! Secrets. Never logs Secret data.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};

use super::objects::KubeObjects;
use super::patches::{is_code, store_error};
use crate::credentials::feed::FeedRecord;
use crate::engine::StoreError;

/// Label on every feed Secret (so an operator can list them: `kubectl get secret -l ...`).
pub const FEED_LABEL: &str = "calendar.getitdone.app/ics-feed";

fn record_of(s: Secret) -> Option<FeedRecord> {
    let data: BTreeMap<String, Vec<u8>> = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
    FeedRecord::from_secret_data(&data)
}

impl KubeObjects {
    pub(super) async fn get_feed_secret(&self, namespace: &str, id: &str) -> Result<Option<FeedRecord>, StoreError> {
        let name = FeedRecord::secret_name(id);
        Ok(self.get::<Secret>(namespace, &name, "Secret").await?.and_then(record_of))
    }

    /// Create-only (POST): when the Secret exists the API server answers 409 and the record
    /// already there wins, so concurrent creates on any replicas agree on one URL.
    pub(super) async fn create_feed_secret(
        &self,
        namespace: &str,
        record: &FeedRecord,
    ) -> Result<FeedRecord, StoreError> {
        let name = FeedRecord::secret_name(&record.id);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.to_string()),
                labels: Some(BTreeMap::from([
                    (FEED_LABEL.to_string(), "true".to_string()),
                    ("app.kubernetes.io/part-of".to_string(), "calsync".to_string()),
                ])),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            data: Some(record.to_secret_data().into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
            ..Secret::default()
        };
        let pp = PostParams { field_manager: Some(self.field_manager.clone()), ..Default::default() };
        let label = format!("Secret {namespace}/{name}");
        match self.api::<Secret>(namespace).create(&pp, &secret).await {
            Ok(_) => Ok(record.clone()),
            Err(e) if is_code(&e, 409) => {
                self.get_feed_secret(namespace, &record.id).await?.ok_or(StoreError::Conflict(label))
            }
            // Never echo the request: the error text is the server's status message only.
            Err(e) => Err(store_error(&label, e)),
        }
    }

    pub(super) async fn delete_feed_secret(&self, namespace: &str, id: &str) -> Result<bool, StoreError> {
        let name = FeedRecord::secret_name(id);
        match self.api::<Secret>(namespace).delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, 404) => Ok(false),
            Err(e) => Err(store_error(&format!("Secret {namespace}/{name}"), e)),
        }
    }
}
