//! `calsync rotate-keys` on Kubernetes: seal every calsync-written credentials Secret under the
//! current `ENCRYPTION_KEY`, through the same `KubeObjects` Secret code the controller uses.
//!
//! Owns: finding the Secrets to rotate (those calsync wrote, labelled
//! `app.kubernetes.io/managed-by=calsync`, and those CalendarConnections point to, with their
//! `credentialsSecretRef.key`) and counting outcomes. Must not touch: plain keys a platform team
//! wrote (Kubernetes' own encryption at rest covers those). Never logs or returns Secret data.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};

use super::objects::{CONFLICT_RETRIES, KubeObjects};
use super::patches::{is_code, store_error};
use crate::credentials;
use crate::credentials::envelope::secret_aad;
use crate::credentials::keys::RotationReport;
use crate::engine::{Labels, Objects, StoreError};

enum Outcome {
    Resealed,
    Current,
    Plain,
    Unreadable(String),
    Gone,
}

impl KubeObjects {
    /// Re-seal calsync's credentials in `namespace` (all namespaces when `None`). Idempotent;
    /// an unreadable Secret is counted and skipped.
    pub async fn rotate_keys(&self, namespace: Option<&str>) -> Result<RotationReport, StoreError> {
        // (namespace, name) → the data key holding calsync's form.
        let mut targets: BTreeMap<(String, String), String> = BTreeMap::new();
        for conn in self.list_connections(namespace, &Labels::new()).await? {
            let ns = conn.namespace().unwrap_or_default();
            let r = &conn.spec.credentials_secret_ref;
            let key = r.key.clone().unwrap_or_else(|| credentials::CREDENTIALS_KEY.into());
            targets.insert((ns, r.name.clone()), key);
        }
        let api: Api<Secret> = match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let lp = ListParams::default().labels(&format!("{}=calsync", super::secrets::MANAGED_BY));
        let ours = api.list(&lp).await.map_err(|e| store_error("Secrets", e))?;
        for s in ours {
            let ns = s.namespace().unwrap_or_default();
            targets.entry((ns, s.name_any())).or_insert_with(|| credentials::CREDENTIALS_KEY.into());
        }
        let mut report = RotationReport::default();
        for ((ns, name), key) in targets {
            match self.reseal(&ns, &name, &key).await? {
                Outcome::Resealed => report.resealed += 1,
                Outcome::Current => report.already_current += 1,
                Outcome::Plain => report.plain_left_alone += 1,
                Outcome::Unreadable(why) => {
                    tracing::warn!(secret = %format!("{ns}/{name}"), "cannot open a credentials Secret; left as it is");
                    report.unreadable.push(why);
                }
                Outcome::Gone => {}
            }
        }
        Ok(report)
    }

    async fn reseal(&self, namespace: &str, name: &str, key: &str) -> Result<Outcome, StoreError> {
        let api = self.api::<Secret>(namespace);
        let label = format!("Secret {namespace}/{name}");
        let aad = secret_aad(namespace, name);
        for _ in 0..CONFLICT_RETRIES {
            let Some(mut s) = api.get_opt(name).await.map_err(|e| store_error(&label, e))? else {
                return Ok(Outcome::Gone);
            };
            let Some(stored) = s.data.as_ref().and_then(|d| d.get(key)).map(|v| v.0.clone()) else {
                return Ok(Outcome::Plain);
            };
            let current = self.sealer.current_key_id();
            let is_current = current.is_some() && self.sealer.key_id_of(&stored) == current;
            let plain = match self.sealer.open(stored, &aad) {
                Ok(p) => p,
                Err(e) => return Ok(Outcome::Unreadable(format!("{label}: {e}"))),
            };
            if is_current {
                return Ok(Outcome::Current);
            }
            let sealed = self.sealer.seal(plain, &aad)?;
            s.data.get_or_insert_with(BTreeMap::new).insert(key.to_string(), ByteString(sealed));
            s.string_data = None;
            // The PUT carries the resourceVersion just read: a concurrent write is a 409, and we
            // read again rather than overwrite it.
            let pp = PostParams { field_manager: Some(self.field_manager.clone()), ..Default::default() };
            match api.replace(name, &pp, &s).await {
                Ok(_) => return Ok(Outcome::Resealed),
                Err(e) if is_code(&e, 409) => continue,
                Err(e) if is_code(&e, 404) => return Ok(Outcome::Gone),
                Err(e) => return Err(store_error(&label, e)),
            }
        }
        Err(StoreError::Conflict(label))
    }
}
