//! `calsync api` on Kubernetes: the REST API (the same handlers as standalone) on `KubeObjects`
//! in one namespace, kept current by watches so handlers that wait for the controller wake on
//! its status writes.
//!
//! Owns: wiring `KubeObjects`, `feed::run_watches_with_ready` and `api::router` together, and the
//! readiness gate. Must not touch: reconciles or calendar writes (only the controller writes to
//! calendars; this process declares desired state and reads status). The API layer itself
//! stays free of kube: this driver-level module is where the two meet.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use kube::Client;

use super::feed;
use super::objects::KubeObjects;
use super::run::Shutdown;
use super::secrets::CredentialSealer;
use crate::api::{self, ApiConfig, ApiError, AppState};
use crate::engine::Objects;
use crate::providers::Connector;

/// The REST API stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the REST API stopped: {0}")]
    Serve(#[from] std::io::Error),
}

/// What [`serve`] needs besides the client and the listener.
pub struct ApiSettings {
    /// The one namespace objects are read from and written to.
    pub namespace: String,
    pub config: ApiConfig,
    /// Used only to check credentials on connect and to read for `calendar-to-tasks`.
    pub connector: Arc<dyn Connector>,
    /// Names this pod in Events the API might publish (POD_NAME).
    pub reporter_instance: Option<String>,
    /// Google/Outlook connections (`None`: not configured).
    pub oauth: Option<Arc<api::OAuthRuntime>>,
    /// Seals the credentials the REST connect stores (`EnvelopeSealer` with ENCRYPTION_KEY; the
    /// controller must open them with the same keys).
    pub sealer: Arc<dyn CredentialSealer>,
    /// Checks provider notifications (derived from ENCRYPTION_KEY, like the controller's).
    pub push_keys: Option<crate::credentials::push::PushKeys>,
}

/// Serve the REST API on `listener` until `shutdown` resolves, then finish requests in flight.
///
/// `/readyz` answers 503 until the watches of the namespace have listed everything once (before
/// that, a handler waiting for the controller could miss a change and `find_task_sync_by_event`
/// could miss an existing TaskSync), then asks the API's own probe (the API server answers).
pub async fn serve(
    client: Client,
    listener: tokio::net::TcpListener,
    settings: ApiSettings,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    let ApiSettings { namespace, config, connector, reporter_instance, oauth, sealer, push_keys } = settings;
    let kube_objects = KubeObjects::new(client, reporter_instance).with_sealer(sealer);
    let ready = Arc::new(AtomicBool::new(false));
    let watches = tokio::spawn(feed::run_watches_with_ready(
        kube_objects.clone(),
        Some(namespace.clone()),
        ready.clone(),
        shutdown.clone(),
    ));
    let objects: Arc<dyn Objects> = Arc::new(kube_objects);
    let metrics = Arc::new(api::Metrics::new());
    let mut state = AppState::new(objects, connector, namespace, config, metrics);
    if let Some(oauth) = oauth {
        state = state.with_oauth(oauth);
    }
    if let Some(keys) = push_keys {
        state = state.with_push_keys(keys);
    }
    let streams = state.clone();
    let app = api::router(state).layer(middleware::from_fn(move |request: Request, next: Next| {
        let ready = ready.clone();
        async move { readiness_gate(&ready, request, next).await }
    }));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            streams.close_streams();
        })
        .await;
    // The watches end with the same shutdown signal; wait so nothing outlives the server.
    let _ = watches.await;
    served.map_err(ServeError::from)
}

async fn readiness_gate(ready: &AtomicBool, request: Request, next: Next) -> Response {
    if request.uri().path() == "/readyz" && !ready.load(Ordering::Relaxed) {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the watch caches are not synced yet")
            .into_response();
    }
    next.run(request).await
}
