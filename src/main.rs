//! The `calsync` binary: command-line parsing and process set-up only.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use calsync::oauth::config::OAuthConfig;
use calsync::providers::Connector;
use calsync::providers::caldav::guard::AddressPolicy;
use calsync::standalone::cli::{self, ApplyArgs, DeleteArgs, GetArgs};
use calsync::telemetry::{self, LogFormat};

#[path = "cmd/kube.rs"]
mod kube_cmd;
use kube_cmd::{ApiArgs, ControllerArgs};

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
    /// Run the engine and the REST API without a cluster, on SQLite or PostgreSQL (DATABASE_URL).
    Standalone {
        /// sqlite://PATH, sqlite::memory: or postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=...]
        /// (the value is never shown in --help: it may hold a password).
        #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = calsync::standalone::db::DEFAULT_DATABASE_URL)]
        database_url: String,
        /// Reconciles running at once.
        #[arg(long, env = "CALSYNC_CONCURRENCY", default_value_t = 8)]
        concurrency: usize,
        /// Reconciles of one connection's TaskSyncs at once, 0 for no cap (connections take
        /// turns either way, so one busy connection cannot starve the others).
        #[arg(long, env = "CALSYNC_CONNECTION_CONCURRENCY", default_value_t = calsync::standalone::queue::DEFAULT_PER_CONNECTION)]
        connection_concurrency: usize,
        /// Address the REST API listens on.
        #[arg(long, env = "CALSYNC_LISTEN", default_value = "127.0.0.1:5000")]
        listen: String,
    },
    /// Run the Kubernetes controllers (TaskSync and CalendarConnection) against the API server
    /// of the kubeconfig's current context, or in-cluster.
    Controller(ControllerArgs),
    /// Serve the REST API on the Kubernetes API server (objects in one namespace); the
    /// controller does the calendar writes.
    Api(ApiArgs),
    /// Re-encrypt every stored credential under the current ENCRYPTION_KEY (previous keys in
    /// ENCRYPTION_KEYS_PREVIOUS open the old ones) and report counts. Standalone with
    /// --database-url, Kubernetes with --namespace or -A. Safe to run again.
    RotateKeys(RotateArgs),
    /// Copy a standalone SQLite database into PostgreSQL (objects with status and history,
    /// credentials still sealed, Events, the webhook outbox) and print counts. Rows already in
    /// PostgreSQL are left alone, so it is safe to run again.
    Migrate(MigrateArgs),
    /// Dry run: what the engine would do now for every TaskSync (create, update with the field
    /// diff, delete, ...), with provider reads only. Exit 0: nothing to write; 2: writes due; 1: error.
    Plan(calsync::plan::PlanArgs),
}

#[derive(clap::Args, Debug)]
struct MigrateArgs {
    /// The SQLite database to copy (sqlite://PATH).
    #[arg(long, default_value = calsync::standalone::db::DEFAULT_DATABASE_URL)]
    from: String,
    /// The PostgreSQL database to copy into (postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

#[derive(clap::Args, Debug)]
struct RotateArgs {
    /// Standalone: the database (sqlite://PATH or postgresql://...).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Kubernetes: rotate the Secrets in this namespace.
    #[arg(short = 'n', long, conflicts_with = "all_namespaces")]
    namespace: Option<String>,
    /// Kubernetes: rotate the Secrets in every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Seconds to wait for the API server before giving up (Kubernetes).
    #[arg(long, env = "CALSYNC_STARTUP_TIMEOUT_SECONDS", default_value_t = 20)]
    startup_timeout_seconds: u64,
}

fn main() -> ExitCode {
    calsync::alloc::tune();
    let cli = Cli::parse();
    // Keys mounted as files (CALSYNC_SECRETS_DIR), read before anything looks up a variable.
    // Only the Kubernetes processes read them: standalone keeps its keys in its environment or
    // beside its database, and must not silently ignore a key it was given in a file.
    let kube_process = matches!(cli.command, Command::Controller(_) | Command::Api(_));
    let from_files = match calsync::secret_files::load() {
        Ok(names) if names.is_empty() || kube_process => names,
        Ok(_) => {
            eprintln!(
                "error: {} is read by `calsync controller` and `calsync api` only; set these variables in the environment",
                calsync::secret_files::DIR_VARIABLE
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One process-level rustls crypto provider, before anything opens a TLS connection (the
    // trace exporter's client included): kube uses ring and reqwest would pick aws-lc, and with
    // two candidates the first real HTTPS call panics. `Err` means one is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let telemetry = match telemetry::init_with_traces(cli.log_format, &calsync::secret_files::var) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::new(e).context("reading the OpenTelemetry settings"));
            return ExitCode::FAILURE;
        }
    };
    if !from_files.is_empty() {
        tracing::info!(variables = %from_files.join(","), "settings read from {}", calsync::secret_files::DIR_VARIABLE);
    }
    let code = match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // After every runtime is gone: exports the spans still queued.
    drop(telemetry);
    code
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
        Command::Standalone { database_url, concurrency, connection_concurrency, listen } => {
            let mut api_config = calsync::api::ApiConfig::from_env().context("reading the REST API configuration")?;
            let addresses = caldav_addresses(AddressPolicy::local())?;
            api_config.caldav_addresses = addresses.clone();
            let oauth_config = OAuthConfig::from_env().context("reading the OAuth configuration")?;
            let mut config = calsync::standalone::StandaloneConfig { database_url, ..Default::default() };
            config.queue.concurrency = concurrency;
            config.queue.per_connection = connection_concurrency;
            config.engine.live = live_config()?;
            config.engine.deletion_guard = deletion_guard_config()?;
            // The engine and the API must agree on the ownership marker.
            config.engine.owner = api_config.owner.clone();
            let env = |k: &str| std::env::var(k).ok();
            let webhooks =
                calsync::api::app_webhooks::standalone_tap(&env).context("reading the app webhook configuration")?;
            config.status_tap = webhooks.clone().map(|t| calsync::standalone::store::TapHandle(t));
            // The token manager is made with the store (it writes refreshed tokens back) and
            // shared by the engine's connector and the API.
            let tokens = Arc::new(std::sync::OnceLock::new());
            let made = tokens.clone();
            let connector = move |objects: Arc<dyn calsync::engine::Objects>| {
                let (connector, manager) =
                    connectors(&oauth_config, objects, addresses.clone()).map_err(|e| format!("{e:#}"))?;
                if let Some(m) = manager {
                    let _ = made.set(m);
                }
                Ok(connector)
            };
            let serve_api = move |services: calsync::standalone::Services| {
                let oauth = tokens.get().map(|t| {
                    let key = secrecy::SecretString::from(services.secrets.secret_key.clone());
                    Arc::new(calsync::api::OAuthRuntime::new(t.clone(), calsync::oauth::StateSealer::new(&key)))
                });
                let env = |k: &str| std::env::var(k).ok();
                let delivering = match &webhooks {
                    Some(tap) => calsync::api::app_webhooks::start_standalone(&services, tap, &env)
                        .map(|_| ())
                        .map_err(|e| format!("app webhooks: {e}")),
                    None => Ok(()),
                };
                let api = calsync::api::serve_standalone(services, api_config, oauth, listen);
                async move {
                    delivering?;
                    api.await
                }
            };
            runtime()?.block_on(calsync::standalone::run_standalone(
                config,
                connector,
                serve_api,
                shutdown_signal(),
            ))?;
        }
        Command::Controller(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(kube_cmd::controller(args))?;
        }
        Command::Api(args) => runtime()?.block_on(kube_cmd::kube_api(args))?,
        Command::RotateKeys(args) => runtime()?.block_on(rotate_keys(args))?,
        Command::Migrate(args) => runtime()?.block_on(async {
            if !calsync::standalone::pg::is_postgres_url(&args.database_url) {
                anyhow::bail!(
                    "--database-url must be a PostgreSQL URL (postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE)"
                );
            }
            let report = calsync::standalone::pg::import_sqlite(&args.from, &args.database_url).await?;
            print!("{report}");
            anyhow::Ok(())
        })?,
        Command::Plan(args) => std::process::exit(calsync::plan::main(args)),
    }
    Ok(())
}

/// Where CalDAV servers may be reached: `default` for this mode (standalone: this machine too;
/// in a cluster: public addresses only), changed by CALSYNC_CALDAV_ALLOW_PRIVATE and
/// CALSYNC_CALDAV_ALLOWED_HOSTS.
fn caldav_addresses(default: AddressPolicy) -> anyhow::Result<AddressPolicy> {
    let env = |k: &str| calsync::secret_files::var(k).filter(|v| !v.trim().is_empty());
    AddressPolicy::from_lookup(default, &env).map_err(anyhow::Error::msg)
}

/// A process's connector and, when Google/Outlook are configured, its token manager.
type Connectors = (Arc<dyn Connector>, Option<Arc<calsync::oauth::TokenManager>>);

/// Every provider this deployment has: CalDAV always, Google/Outlook when configured, with the
/// token manager that refreshes their tokens and writes them back through `objects`.
fn connectors(
    oauth: &OAuthConfig,
    objects: Arc<dyn calsync::engine::Objects>,
    caldav_addresses: AddressPolicy,
) -> anyhow::Result<Connectors> {
    let vault = Arc::new(calsync::engine::vault::ObjectsVault::new(objects));
    let tokens = calsync::oauth::token_manager(oauth, vault).context("setting up OAuth")?;
    let registry = calsync::providers::registry::Registry::configured(oauth, tokens.clone(), caldav_addresses)
        .context("setting up the calendar providers")?;
    Ok((Arc::new(registry), tokens))
}

/// ENCRYPTION_KEY (required on Kubernetes: the controller and the API seal what they store;
/// push-channel secrets derive from it too) and ENCRYPTION_KEYS_PREVIOUS.
fn encryption_keys() -> anyhow::Result<calsync::credentials::envelope::Keyring> {
    let keys = calsync::credentials::keys::keyring_from_env()?;
    tracing::info!(key_id = %keys.current_id(), accepted_key_ids = %keys.ids().join(","), "credentials encryption keys");
    Ok(keys)
}

/// The credentials envelope over those keys.
fn envelope_sealer(
    keys: &calsync::credentials::envelope::Keyring,
) -> Arc<dyn calsync::controller::secrets::CredentialSealer> {
    Arc::new(calsync::controller::secrets::EnvelopeSealer::new(keys.clone()))
}

/// Live sync settings (CALSYNC_PUBLIC_URL, CALSYNC_*_POLL_SECONDS, ...).
fn deletion_guard_config() -> anyhow::Result<calsync::engine::guard::GuardConfig> {
    calsync::engine::guard::GuardConfig::from_lookup(&|name| std::env::var(name).ok()).map_err(anyhow::Error::msg)
}

fn live_config() -> anyhow::Result<calsync::engine::live::LiveConfig> {
    calsync::engine::live::LiveConfig::from_lookup(&|name| std::env::var(name).ok()).map_err(anyhow::Error::msg)
}

async fn rotate_keys(args: RotateArgs) -> anyhow::Result<()> {
    let report = match (&args.database_url, &args.namespace, args.all_namespaces) {
        (Some(url), None, false) => {
            let path = calsync::standalone::backend::secrets_path(url).map_err(anyhow::Error::msg)?;
            // Never generate a key here: rotating to a fresh random key would lock the data away.
            let key = calsync::standalone::secrets::existing_encryption_key(path.as_deref())?;
            let keys = calsync::standalone::secrets::keyring(key)?;
            let store = calsync::standalone::Store::open(url, keys).await?;
            store.rotate_keys().await?
        }
        (None, namespace, all) if namespace.is_some() || all => {
            let client = calsync::controller::startup::connect(
                std::time::Duration::from_secs(args.startup_timeout_seconds),
                namespace.as_deref(),
            )
            .await?;
            let objects =
                calsync::controller::KubeObjects::new(client, None).with_sealer(envelope_sealer(&encryption_keys()?));
            objects.rotate_keys(namespace.as_deref()).await?
        }
        _ => anyhow::bail!(
            "say where the credentials are: --database-url sqlite://PATH (standalone), or --namespace NS / -A (Kubernetes), not both"
        ),
    };
    println!("{report}");
    anyhow::ensure!(
        report.unreadable.is_empty(),
        "{} Secret(s) could not be opened and were left as they are: set the key they were written with in ENCRYPTION_KEYS_PREVIOUS and run rotate-keys again, or reconnect those calendars",
        report.unreadable.len()
    );
    Ok(())
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
