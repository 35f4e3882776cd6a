//! `calsync bench node`: standalone mode exactly as `calsync standalone` runs it (same
//! `run_standalone`, work queue, SQLite store and REST API), except that `caldav` and `apple`
//! connections are served by the bench provider server at their `serverUrl`. The crash and REST
//! scenarios spawn it as a separate process and kill -9 it.
//!
//! Owns: that wiring. Must not touch: engine, store, API or provider code.

use std::sync::Arc;

use anyhow::Context;

use super::http::HttpConnector;
use crate::providers::Connector;
use crate::providers::registry::Registry;
use crate::resources::ProviderKind;
use crate::standalone::{Services, StandaloneConfig};

#[derive(Clone, Debug, clap::Args)]
pub struct NodeArgs {
    /// SQLite database: sqlite://PATH.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Reconciles running at once.
    #[arg(long, env = "CALSYNC_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// Address the REST API listens on.
    #[arg(long, env = "CALSYNC_LISTEN", default_value = "127.0.0.1:5000")]
    pub listen: String,
}

/// Run until SIGTERM/Ctrl-C (or SIGKILL, which is the point).
pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let api_config = crate::api::ApiConfig::from_env().context("reading the REST API configuration")?;
    let mut config = StandaloneConfig { database_url: args.database_url, ..Default::default() };
    config.queue.concurrency = args.concurrency;
    config.engine.owner = api_config.owner.clone();
    let bench: Arc<dyn Connector> = Arc::new(HttpConnector::new()?);
    let connector: Arc<dyn Connector> =
        Arc::new(Registry::new().with(ProviderKind::Caldav, bench.clone()).with(ProviderKind::Apple, bench));
    let api_connector = connector.clone();
    let listen = args.listen;
    let mount = move |services: Services| serve_api(services, api_config, api_connector, listen);
    crate::standalone::run_standalone(config, connector, mount, shutdown()).await?;
    Ok(())
}

/// The REST API on the standalone services: the same steps as `serve_api` in `main.rs`.
async fn serve_api(
    services: Services,
    mut api_config: crate::api::ApiConfig,
    connector: Arc<dyn Connector>,
    listen: String,
) -> Result<(), String> {
    api_config.api_keys = services.secrets.api_keys.iter().map(|k| secrecy::SecretString::from(k.clone())).collect();
    let metrics = Arc::new(crate::api::Metrics::new());
    let objects: Arc<dyn crate::engine::Objects> = Arc::new(services.store.clone());
    let state = crate::api::AppState::new(objects, connector, "default", api_config, metrics);
    let listener =
        tokio::net::TcpListener::bind(&listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let mut stop = services.shutdown.clone();
    axum::serve(listener, crate::api::router(state))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .map_err(|e| format!("the REST API stopped: {e}"))
}

async fn shutdown() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}
