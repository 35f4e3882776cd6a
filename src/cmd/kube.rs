//! The `calsync` binary's Kubernetes commands: `calsync controller` and `calsync api` (their
//! arguments and process set-up). Part of the binary, not the library: errors are `anyhow` here.

use std::sync::Arc;

use anyhow::Context;

use calsync::oauth::config::OAuthConfig;
use calsync::providers::caldav::guard::AddressPolicy;

use super::{
    caldav_addresses, connectors, deletion_guard_config, encryption_keys, envelope_sealer, live_config, shutdown_signal,
};

#[derive(clap::Args, Debug)]
pub struct ApiArgs {
    /// Address the REST API listens on.
    #[arg(long, env = "CALSYNC_LISTEN", default_value = "0.0.0.0:5000")]
    listen: String,
    /// Namespace the API reads and writes objects in (default: POD_NAMESPACE, else the
    /// kubeconfig's namespace).
    #[arg(long, env = "CALSYNC_NAMESPACE")]
    namespace: Option<String>,
    /// This pod's namespace (downward API); the default of --namespace.
    #[arg(long, env = "POD_NAMESPACE", hide = true)]
    pod_namespace: Option<String>,
    /// This replica's name (downward API), for Events.
    #[arg(long, env = "POD_NAME", hide = true)]
    pod_name: Option<String>,
    /// Seconds to wait for the API server at start-up before giving up.
    #[arg(long, env = "CALSYNC_STARTUP_TIMEOUT_SECONDS", default_value_t = 20)]
    startup_timeout_seconds: u64,
}

#[derive(clap::Args, Debug)]
pub struct ControllerArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "CALSYNC_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Address of the /healthz, /readyz and /metrics server.
    #[arg(long, env = "CALSYNC_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
    /// This replica's name: the Lease holder identity and the Events reporter (downward API).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Namespace of the Lease (default: the pod's namespace, else the kubeconfig's).
    #[arg(long, env = "POD_NAMESPACE")]
    pod_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, env = "CALSYNC_LEASE_NAME", default_value = "calsync-controller")]
    lease_name: String,
    /// Lease duration in seconds; the holder renews every third of it.
    #[arg(long, env = "CALSYNC_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Shards the work is split into (1..=256), one Lease each; a replica holds its fair share.
    #[arg(long, env = "CALSYNC_SHARDS", default_value = "1")]
    shards: String,
    /// Run without leader election (only safe with exactly one replica).
    #[arg(long, env = "CALSYNC_NO_LEADER_ELECTION")]
    no_leader_election: bool,
    /// Reconciles at once per kind.
    #[arg(long, env = "CALSYNC_CONCURRENCY", default_value_t = 4)]
    concurrency: u16,
    /// Installation id written into every event calsync creates (ownership marker; no `;`).
    #[arg(long, env = "CALSYNC_OWNER", default_value = "calsync")]
    owner: String,
    /// Seconds to wait for the API server at start-up before giving up.
    #[arg(long, env = "CALSYNC_STARTUP_TIMEOUT_SECONDS", default_value_t = 20)]
    startup_timeout_seconds: u64,
}

pub async fn controller(args: ControllerArgs) -> anyhow::Result<()> {
    use calsync::controller::{self as ctl, KubeObjects, LeaseConfig, Metrics, Settings, ShardElector, Shards};
    use std::sync::Arc;
    use std::time::Duration;

    anyhow::ensure!(!args.owner.contains(';'), "--owner must not contain ';'");
    let shard_count = ctl::shards::parse_shards(&args.shards)?;
    let env = |k: &str| calsync::secret_files::var(k);
    let webhooks = calsync::api::app_webhooks::WebhookConfig::from_lookup(&env, None)
        .context("reading the app webhook configuration (CALSYNC_APP_WEBHOOK_*)")?;
    let client =
        ctl::startup::connect(Duration::from_secs(args.startup_timeout_seconds), args.watch_namespace.as_deref())
            .await?;
    let identity = args.pod_name.clone().unwrap_or_else(|| format!("calsync-{}", uuid::Uuid::new_v4()));
    let keys = encryption_keys()?;
    let objects = KubeObjects::new(client.clone(), Some(identity.clone())).with_sealer(envelope_sealer(&keys));
    let metrics = Arc::new(Metrics::default());
    let (stop, shutdown) = ctl::shutdown_signal();

    let shards = if args.no_leader_election { Shards::all(shard_count) } else { Shards::new(shard_count) };
    let elector = (!args.no_leader_election).then(|| {
        let namespace = args.pod_namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
        let config = LeaseConfig {
            namespace,
            name: args.lease_name.clone(),
            identity: identity.clone(),
            duration: Duration::from_secs(args.lease_duration_seconds.max(3)),
        };
        tracing::info!(lease = %format!("{}/{}", config.namespace, config.name), identity = %identity, shards = shard_count, "shard leases on");
        tokio::spawn(ShardElector::new(client.clone(), config, shards.clone()).run(shutdown.clone()))
    });

    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics server to {}", args.metrics_addr))?;
    let server = tokio::spawn(ctl::metrics::serve(listener, metrics.clone(), shutdown.clone()));
    let settings = Settings {
        watch_namespace: args.watch_namespace.clone(),
        concurrency: args.concurrency.max(1),
        engine: calsync::engine::EngineConfig {
            owner: args.owner.clone(),
            live: calsync::engine::live::LiveConfig { push_keys: Some(keys.push_keys()), ..live_config()? },
            deletion_guard: deletion_guard_config()?,
            ..Default::default()
        },
    };
    let oauth_config = OAuthConfig::from_env().context("reading the OAuth configuration")?;
    let (connector, _) =
        connectors(&oauth_config, Arc::new(objects.clone()), caldav_addresses(AddressPolicy::public_only())?)?;
    // Only shard 0's holder delivers (a singleton duty); what is owed is derived from status
    // (docs/architecture.md).
    let app_webhooks = webhooks.map(|config| {
        tracing::info!(secrets = config.signer.len(), "app webhooks on: the leader delivers what status owes");
        let objects: Arc<dyn calsync::engine::Objects> = Arc::new(objects.clone());
        let namespace = args.watch_namespace.clone();
        let leadership = shards.shard(0).clone();
        let leader = leadership.clone();
        tokio::spawn(calsync::api::app_webhooks::derived::run(
            objects,
            namespace,
            config,
            move || leader.is_leader(),
            Some(leadership.subscribe()),
            shutdown.clone(),
        ))
    });
    let controllers = tokio::spawn(ctl::run(client, objects, connector, shards, metrics, settings, shutdown));

    shutdown_signal().await;
    tracing::info!("termination signal: finishing reconciles in flight, releasing the leases");
    let _ = stop.send(());
    let _ = controllers.await;
    if let Some(hooks) = app_webhooks {
        let _ = hooks.await;
    }
    if let Some(elector) = elector {
        let _ = elector.await;
    }
    if let Ok(Err(e)) = server.await {
        return Err(anyhow::Error::new(e).context(format!("serving metrics on {}", args.metrics_addr)));
    }
    Ok(())
}

pub async fn kube_api(args: ApiArgs) -> anyhow::Result<()> {
    use calsync::controller::{self as ctl, api::ApiSettings};
    use std::time::Duration;

    // CALSYNC_OWNER is read here as by `calsync controller --owner`: both default to `calsync`,
    // so the API recognises the events the controller marks as its own.
    let mut config = calsync::api::ApiConfig::from_env().context("reading the REST API configuration")?;
    config.caldav_addresses = caldav_addresses(AddressPolicy::public_only())?;
    if !config.has_auth() {
        tracing::warn!("neither CALSYNC_API_KEYS nor CALSYNC_JWT_SECRET is set: every API call will answer 401");
    }
    let set = |n: Option<String>| n.filter(|n| !n.trim().is_empty());
    let namespace = set(args.namespace).or(set(args.pod_namespace));
    let (client, namespace) =
        ctl::startup::connect_namespaced(Duration::from_secs(args.startup_timeout_seconds), namespace).await?;
    let keys = encryption_keys()?;
    let sealer = envelope_sealer(&keys);
    let listener = tokio::net::TcpListener::bind(&args.listen).await.with_context(|| {
        format!("cannot listen on {}; set CALSYNC_LISTEN (or --listen) to a free address", args.listen)
    })?;
    tracing::info!(address = %args.listen, namespace = %namespace, "REST API listening");
    let oauth_config = OAuthConfig::from_env().context("reading the OAuth configuration")?;
    // Refreshed tokens go back to the Secrets through a store of their own (the API's watched
    // store lives inside `serve`).
    let vault_store =
        calsync::controller::KubeObjects::new(client.clone(), args.pod_name.clone()).with_sealer(sealer.clone());
    let (connector, tokens) = connectors(&oauth_config, Arc::new(vault_store), config.caldav_addresses.clone())?;
    let oauth = match tokens {
        None => None,
        Some(t) => {
            let key = calsync::secret_files::var("SECRET_KEY").filter(|k| !k.trim().is_empty()).context(
                "SECRET_KEY must be set when Google or Outlook is configured: it seals the OAuth state (any long random string; the chart generates one)",
            )?;
            let state_sealer = calsync::oauth::StateSealer::new(&secrecy::SecretString::from(key));
            Some(Arc::new(calsync::api::OAuthRuntime::new(t, state_sealer)))
        }
    };
    let settings = ApiSettings {
        namespace,
        config,
        connector,
        reporter_instance: args.pod_name,
        oauth,
        sealer,
        push_keys: Some(keys.push_keys()),
    };
    let (stop, shutdown) = ctl::shutdown_signal();
    let mut server = tokio::spawn(ctl::api::serve(client, listener, settings, shutdown));
    let served = tokio::select! {
        () = shutdown_signal() => {
            let _ = stop.send(());
            server.await
        }
        // Serving ended on its own (the listener failed).
        done = &mut server => done,
    };
    served.context("the REST API task")??;
    Ok(())
}
