//! `calsync-bench node`: standalone mode exactly as `calsync standalone` runs it (same
//! `run_standalone`, work queue, SQLite store and REST API), except that `caldav` and `apple`
//! connections are served by the bench provider server at their `serverUrl`. The crash and REST
//! scenarios spawn it as a separate process and kill -9 it.
//!
//! Owns: that wiring. Must not touch: engine, store, API or provider code.

use std::sync::Arc;

use anyhow::Context;

use super::http::HttpConnector;
use calsync::providers::Connector;
use calsync::providers::limiter::Limited;
use calsync::providers::registry::{Limits, Registry};
use calsync::resources::ProviderKind;
use calsync::standalone::{Services, StandaloneConfig};

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
    let api_config = calsync::api::ApiConfig::from_env().context("reading the REST API configuration")?;
    let mut config = StandaloneConfig { database_url: args.database_url, ..Default::default() };
    config.queue.concurrency = args.concurrency;
    config.engine.owner = api_config.owner.clone();
    // Behind the CalDAV limiter policy, as `Registry::configured` serves caldav/apple.
    let limits = Limits::from_env().context("reading the client-side limiter settings")?;
    let bench: Arc<dyn Connector> = Arc::new(Limited::new(Arc::new(HttpConnector::new()?), limits.caldav()));
    let connector: Arc<dyn Connector> =
        Arc::new(Registry::new().with(ProviderKind::Caldav, bench.clone()).with(ProviderKind::Apple, bench));
    let listen = args.listen;
    let mount = move |services: Services| calsync::api::serve_standalone(services, api_config, None, listen);
    calsync::standalone::run_standalone(config, move |_| Ok(connector), mount, shutdown()).await?;
    Ok(())
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
