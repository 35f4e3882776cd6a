//! Start-up checks: find the API server, and fail fast with a message that says which server
//! was tried and what to check, instead of hanging or panicking.
//!
//! Owns: client construction and the pre-flight request. Must not touch: controllers.

use std::time::Duration;

use kube::api::{Api, ListParams};
use kube::{Client, Config};

use crate::resources::TaskSync;

/// Why the controller cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(
        "no Kubernetes configuration found ({0}); check KUBECONFIG / ~/.kube/config, or run inside a pod with a service account (KUBERNETES_SERVICE_HOST and /var/run/secrets/kubernetes.io/serviceaccount)"
    )]
    NoConfig(String),
    #[error("cannot build a Kubernetes client for {server}: {reason}")]
    Client { server: String, reason: String },
    #[error(
        "the Kubernetes API server at {server} did not answer ({reason}); check that the server in your kubeconfig (current context) is reachable, or, in a pod, the in-cluster service account and network policy"
    )]
    Unreachable { server: String, reason: String },
    #[error(
        "the Kubernetes API server at {server} has no TaskSync resource: install the CRDs first (`calsync crdgen | kubectl apply -f -`)"
    )]
    CrdMissing { server: String },
    #[error(
        "the Kubernetes API server at {server} refused to list TaskSyncs ({reason}); check the credentials in your kubeconfig, or the service account's RBAC (list/watch tasksyncs.calendar.getitdone.app)"
    )]
    Forbidden { server: String, reason: String },
}

/// Infer the configuration (kubeconfig, then in-cluster), build a client and prove the server
/// answers and serves the CRDs, all within `timeout`. With `namespace`, the check lists only
/// there, so a namespace-scoped Role is enough.
pub async fn connect(timeout: Duration, namespace: Option<&str>) -> Result<Client, StartupError> {
    let config = infer(timeout).await?;
    finish(config, timeout, namespace).await
}

/// Like [`connect`] for a process bound to one namespace: `namespace`, or when `None` the
/// kubeconfig's (or service account's) default namespace, which the pre-flight check then uses,
/// so a namespace-scoped Role is enough. Returns the client and the namespace chosen.
pub async fn connect_namespaced(
    timeout: Duration,
    namespace: Option<String>,
) -> Result<(Client, String), StartupError> {
    let config = infer(timeout).await?;
    let namespace = namespace.unwrap_or_else(|| config.default_namespace.clone());
    let client = finish(config, timeout, Some(&namespace)).await?;
    Ok((client, namespace))
}

async fn infer(timeout: Duration) -> Result<Config, StartupError> {
    match tokio::time::timeout(timeout, Config::infer()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(StartupError::NoConfig(e.to_string())),
        Err(_) => Err(StartupError::NoConfig("reading the configuration timed out".into())),
    }
}

async fn finish(mut config: Config, timeout: Duration, namespace: Option<&str>) -> Result<Client, StartupError> {
    let server = config.cluster_url.to_string();
    // A black-holed address must not eat the whole start-up budget in one connect.
    config.connect_timeout = Some(timeout.min(Duration::from_secs(10)));
    let client =
        Client::try_from(config).map_err(|e| StartupError::Client { server: server.clone(), reason: e.to_string() })?;
    preflight(&client, &server, namespace, timeout).await?;
    Ok(client)
}

/// One cheap LIST (limit 1) of TaskSyncs: reachability, CRDs and RBAC in one request.
pub async fn preflight(
    client: &Client,
    server: &str,
    namespace: Option<&str>,
    timeout: Duration,
) -> Result<(), StartupError> {
    let api: Api<TaskSync> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    match tokio::time::timeout(timeout, api.list_metadata(&ListParams::default().limit(1))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => Err(StartupError::CrdMissing { server: server.into() }),
        Ok(Err(kube::Error::Api(s))) if s.code == 401 || s.code == 403 => {
            Err(StartupError::Forbidden { server: server.into(), reason: s.message })
        }
        Ok(Err(e)) => Err(StartupError::Unreachable { server: server.into(), reason: e.to_string() }),
        Err(_) => Err(StartupError::Unreachable {
            server: server.into(),
            reason: format!("no answer within {} s", timeout.as_secs()),
        }),
    }
}
