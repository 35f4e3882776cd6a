//! The `calsync` binary: command-line parsing and process set-up only.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use calsync::providers::Connector;
use calsync::standalone::cli::{self, ApplyArgs, DeleteArgs, GetArgs};
use calsync::telemetry::{self, LogFormat};

/// calsync: sync Get It Done! tasks with Google, Outlook and Apple/CalDAV calendars.
#[derive(Parser, Debug)]
#[command(name = "calsync", version, about, long_about = None)]
struct Cli {
    /// Log format: text for people, json for log pipelines.
    #[arg(long, global = true, value_enum, default_value = "text", env = "CALSYNC_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the CustomResourceDefinitions of CalendarConnection and TaskSync as YAML.
    Crdgen,
    /// Create or update objects from YAML (CalendarConnection, TaskSync, v1 Secret) in the
    /// standalone database, validated as the Kubernetes API server would.
    Apply(ApplyArgs),
    /// Show CalendarConnections or TaskSyncs from the standalone database.
    Get(GetArgs),
    /// Delete objects from the standalone database (a running standalone finalizes them).
    Delete(DeleteArgs),
    /// Run the engine and the REST API without a cluster, on the SQLite database (DATABASE_URL).
    Standalone {
        /// SQLite database: sqlite://PATH or sqlite::memory:.
        #[arg(long, env = "DATABASE_URL", default_value = calsync::standalone::db::DEFAULT_DATABASE_URL)]
        database_url: String,
        /// Reconciles running at once.
        #[arg(long, env = "CALSYNC_CONCURRENCY", default_value_t = 8)]
        concurrency: usize,
        /// Address the REST API listens on.
        #[arg(long, env = "CALSYNC_LISTEN", default_value = "127.0.0.1:5000")]
        listen: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    // One process-level rustls crypto provider, before anything opens a TLS connection: kube
    // uses ring and reqwest would pick aws-lc, and with two candidates the first real HTTPS
    // call panics. `Err` means one is already installed, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crdgen => {
            let yaml = calsync::resources::crds_yaml().context("rendering the CRDs as YAML")?;
            std::io::stdout().write_all(yaml.as_bytes()).context("writing the CRDs to stdout")?;
        }
        Command::Apply(args) => runtime()?.block_on(async {
            let store = cli::open_store(&args.store, &mut std::io::stderr()).await?;
            cli::apply(&store, &args, &mut std::io::stdout(), &mut std::io::stderr()).await
        })?,
        Command::Get(args) => runtime()?.block_on(async {
            let store = cli::open_store(&args.store, &mut std::io::stderr()).await?;
            cli::get(&store, &args, &mut std::io::stdout(), &mut std::io::stderr()).await
        })?,
        Command::Delete(args) => runtime()?.block_on(async {
            let store = cli::open_store(&args.store, &mut std::io::stderr()).await?;
            cli::delete(&store, &args, &mut std::io::stdout(), &mut std::io::stderr()).await
        })?,
        Command::Standalone { database_url, concurrency, listen } => {
            let api_config = calsync::api::ApiConfig::from_env().context("reading the REST API configuration")?;
            let mut config = calsync::standalone::StandaloneConfig { database_url, ..Default::default() };
            config.queue.concurrency = concurrency;
            // The engine and the API must agree on the ownership marker.
            config.engine.owner = api_config.owner.clone();
            let connector: Arc<dyn Connector> = Arc::new(calsync::providers::registry::Registry::builtin());
            let api_connector = connector.clone();
            let serve_api =
                move |services: calsync::standalone::Services| serve_api(services, api_config, api_connector, listen);
            runtime()?.block_on(calsync::standalone::run_standalone(
                config,
                connector,
                serve_api,
                shutdown_signal(),
            ))?;
        }
    }
    Ok(())
}

/// The REST API on the standalone services, until standalone shuts down.
async fn serve_api(
    services: calsync::standalone::Services,
    mut api_config: calsync::api::ApiConfig,
    connector: Arc<dyn Connector>,
    listen: String,
) -> Result<(), String> {
    // CALSYNC_API_KEYS, or the keys standalone generated beside the database.
    api_config.api_keys = services.secrets.api_keys.iter().map(|k| secrecy::SecretString::from(k.clone())).collect();
    let metrics = Arc::new(calsync::api::Metrics::new());
    let objects: Arc<dyn calsync::engine::Objects> = Arc::new(services.store.clone());
    let state = calsync::api::AppState::new(objects, connector, "default", api_config, metrics);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}; set CALSYNC_LISTEN (or --listen) to a free address"))?;
    tracing::info!(address = %listen, "REST API listening");
    let mut shutdown = services.shutdown.clone();
    axum::serve(listener, calsync::api::router(state))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
        .map_err(|e| format!("the REST API stopped: {e}"))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
