//! Scenarios 1 (bulk) and 3 (bulk with injected faults): the real engine, the real SQLite store
//! and the standalone work queue sync N TaskSyncs over C connections against the bench service;
//! the figure is the time to converge next to the quota-bound ideal, plus 429s provoked,
//! Retry-Afters ignored, duplicates and lost tasks.
//!
//! Owns: these two scenarios. Must not touch: engine, queue or store code (it drives them).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fixture::{self, NAMESPACE};
use crate::provider::{BenchConnector, BenchService, Op, Profile, Stats};
use crate::report;
use calsync::engine::{Backoff, Engine, EngineConfig, Labels, Objects, RetryPolicy};
use calsync::providers::limiter::{Limited, Policy};
use calsync::standalone::backend::Store;
use calsync::standalone::queue::{self, QueueConfig};

use anyhow::Context;

/// Options of `calsync-bench bulk` / `calsync-bench faults`.
#[derive(Clone, Debug, clap::Args)]
pub struct BulkArgs {
    /// TaskSyncs to sync.
    #[arg(long, default_value_t = 10_000)]
    pub tasks: usize,
    /// Connections they are spread over (round-robin).
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Work-queue concurrency (`calsync standalone --concurrency`; its default is 8).
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Reconciles of one connection's TaskSyncs at once, 0: no cap (`CALSYNC_CONNECTION_CONCURRENCY`).
    #[arg(long, default_value_t = calsync::standalone::queue::DEFAULT_PER_CONNECTION)]
    pub per_connection: usize,
    /// Directory for the SQLite database (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Run on this database instead of a fresh SQLite file, e.g. an empty PostgreSQL database
    /// (`postgres://user@127.0.0.1:5432/bench`), to compare the stores.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Replicas on that PostgreSQL database, each with its own store handle, engine, client
    /// limiter and queue, sharing the work through shard leases as `calsync standalone`
    /// processes do (on PostgreSQL the leases are used even for one).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Give up waiting for convergence after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
    /// The engine's retry backoff for passing failures (5xx, timeouts, dropped connections):
    /// base in ms, doubling per failure, jittered down to half (engine default: 1000). A 429's
    /// Retry-After is kept exactly whatever this says.
    #[arg(long, default_value_t = 1000)]
    pub backoff_base_ms: u64,
    /// The cap of that backoff, in ms (engine default: 2000).
    #[arg(long, default_value_t = 2_000)]
    pub backoff_cap_ms: u64,
    /// calsync's client-side limiter, requests/s per connection (default: `--quota-rps`; 0 = off,
    /// to measure calsync without it). It also caps calls in flight at `--quota-concurrency`.
    #[arg(long)]
    pub client_rps: Option<f64>,
    /// The longest provider pause (Retry-After) a call waits out inside the limiter before the
    /// engine requeues it instead (calsync's default: 250; 5000 was the default before).
    #[arg(long, default_value_t = calsync::providers::limiter::DEFAULT_MAX_WAIT.as_millis() as u64)]
    pub limiter_max_wait_ms: u64,
    #[command(flatten)]
    pub profile: Profile,
}

/// The client-side limiter a deployment would configure for a provider with this quota. The
/// bench quota is a one-second sliding window, so calls are spaced evenly (burst 1): a burst of
/// N at N/s would put up to 2N calls in one second.
pub fn client_policy(profile: &Profile, client_rps: Option<f64>) -> Policy {
    let rate = client_rps.unwrap_or(f64::from(profile.quota_rps));
    Policy::default().with_rate(rate, 1).with_max_in_flight(profile.quota_concurrency as usize)
}

/// What a bulk run measured.
pub struct BulkResult {
    pub converged: Option<Duration>,
    pub stats: Stats,
    pub audit: fixture::Audit,
}

/// Run a bulk sync and print its figures. `title` names the scenario.
pub async fn run(title: &str, args: &BulkArgs) -> anyhow::Result<BulkResult> {
    let p = &args.profile;
    let policy = client_policy(p, args.client_rps).with_max_wait(Duration::from_millis(args.limiter_max_wait_ms));
    let client = match policy.quota {
        Some(q) => format!("{:.1} req/s", 1.0 / q.replenish_interval().as_secs_f64()),
        None => "off".to_string(),
    };
    report::heading(
        title,
        &format!(
            "{} TaskSyncs over {} connections, queue concurrency {} (per connection: {}), engine retry backoff {}..{} ms (Retry-After exact), client limiter {} + {} in flight, latency {} ms, quota {} req/s + {} in flight per connection, faults {:.0}% (5xx {:.0}%, 429 {:.0}% Retry-After {} ms, timeout {:.0}%, drop {:.0}%)",
            args.tasks,
            args.connections,
            args.concurrency,
            if args.per_connection == 0 { "no cap".to_string() } else { args.per_connection.to_string() },
            args.backoff_base_ms,
            args.backoff_cap_ms,
            client,
            policy.max_in_flight.map_or("any".to_string(), |n| n.to_string()),
            p.latency_ms,
            p.quota_rps,
            p.quota_concurrency,
            p.fault_total() * 100.0,
            p.fault_5xx * 100.0,
            p.fault_429 * 100.0,
            p.retry_after_ms,
            p.fault_timeout * 100.0,
            p.fault_drop * 100.0
        ),
    );
    let dir = fixture::workdir(args.dir.as_deref())?;
    let keys = calsync::credentials::envelope::Keyring::new(calsync::credentials::envelope::Key::generate().0);
    let (store, kind) = match &args.database_url {
        Some(url) => {
            let store = Store::open(url, keys.clone()).await.context("opening the bench database")?;
            let kind = if matches!(store, Store::Postgres(_)) { "PostgreSQL" } else { "SQLite" };
            (store, kind)
        }
        None => (Store::Sqlite(fixture::open_store(dir.path()).await?), "SQLite"),
    };
    if args.replicas > 1 && !matches!(store, Store::Postgres(_)) {
        anyhow::bail!("--replicas needs --database-url postgres://... (replicas share a PostgreSQL database)");
    }
    let t = Instant::now();
    fixture::load(&store, args.connections, args.tasks).await?;
    if let Store::Postgres(pg) = &store {
        // As a database that has been running: autovacuum would have analyzed these tables.
        pg.analyze().await.context("analyzing the bench database")?;
    }
    report::info(&format!("load into {kind} (not timed below)"), format!("{:.1} s", t.elapsed().as_secs_f64()));
    report::info("replicas", args.replicas.max(1));

    let service = BenchService::new(p.clone());
    let transient =
        Backoff { base: Duration::from_millis(args.backoff_base_ms), cap: Duration::from_millis(args.backoff_cap_ms) };
    let engine_config =
        EngineConfig { retry: RetryPolicy { transient, ..RetryPolicy::default() }, ..EngineConfig::default() };
    let start = Instant::now();
    let (mut stops, mut drivers, mut leases) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..args.replicas.max(1) {
        let replica = match (&args.database_url, r) {
            (Some(url), 1..) => Store::open(url, keys.clone()).await.context("opening a replica's store")?,
            _ => store.clone(),
        };
        // As deployed: the engine's connector is the provider behind calsync's client-side
        // limiter, one per process.
        let connector = Limited::new(Arc::new(BenchConnector { service: service.clone() }), policy);
        let engine = Engine::new(Arc::new(replica.clone()), Arc::new(connector), engine_config.clone());
        let mut config = QueueConfig {
            concurrency: args.concurrency,
            per_connection: args.per_connection,
            ..QueueConfig::default()
        };
        if let Store::Postgres(pg) = &replica {
            let shards = pg.shards().await.context("taking shard leases")?;
            let owner = shards.clone();
            config.ownership = Some(queue::Ownership {
                owns: Arc::new(move |key: &calsync::engine::ObjectKey| owner.owns(key)),
                gained: shards.gained(),
            });
            leases.push(shards);
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        drivers.push(tokio::spawn(queue::run_with_secrets(engine, config, replica.subscribe_secrets(), async move {
            let _ = stopped.await;
        })));
    }
    let timeout = Duration::from_secs(args.timeout_secs);
    let converged = fixture::wait_synced_after(&store, args.tasks, timeout, || service.events_held()).await?;
    for stop in stops {
        let _ = stop.send(());
    }
    for driver in drivers {
        let _ = driver.await;
    }
    drop(leases);
    let stats = service.stats();
    service.write_trace().context("writing CALSYNC_BENCH_TRACE")?;
    let tasks = store.list_task_syncs(Some(NAMESPACE), &Labels::new()).await?;
    let audit = fixture::audit(&tasks, &service.events_by_uid());

    // Every call a fault spoils must be repeated: 1/(1-f) calls per task on average.
    let calls_per_task = 1.0 / (1.0 - p.fault_total().min(0.99));
    let ideal_calls = args.tasks as f64 * calls_per_task + args.connections as f64;
    let ideal = if p.quota_rps > 0 {
        ideal_calls / (args.connections as f64 * f64::from(p.quota_rps))
    } else {
        ideal_calls * p.latency_ms as f64 / 1000.0 / args.concurrency.max(1) as f64
    };
    match converged {
        Some(d) => report::figure("time to converge", d.as_secs_f64(), ideal, "s"),
        None => report::info(
            "time to converge",
            format!("DID NOT CONVERGE within {} s (ideal {ideal:.1} s)", start.elapsed().as_secs()),
        ),
    }
    if let Some(d) = converged {
        report::figure(
            "throughput",
            args.tasks as f64 / d.as_secs_f64(),
            args.tasks as f64 / ideal.max(f64::EPSILON),
            "tasks/s",
        );
    }
    report::figure("provider calls", stats.total_calls() as f64, ideal_calls, "calls");
    report::info(
        "calls by kind",
        format!(
            "create {} (existing {}), update {}, get {}, find {}, delete {}, account {}",
            stats.calls_of(Op::Create),
            stats.creates_existing,
            stats.calls_of(Op::Update),
            stats.calls_of(Op::Get),
            stats.calls_of(Op::FindByKey),
            stats.calls_of(Op::Delete),
            stats.calls_of(Op::Account)
        ),
    );
    report::info(
        "faults injected",
        format!(
            "5xx {}, 429 {}, timeout {}, dropped {}",
            stats.injected_5xx, stats.injected_429, stats.injected_timeout, stats.injected_drop
        ),
    );
    report::info("max calls in flight on one connection", stats.max_in_flight);
    report::soft_count("429s provoked (quota exceeded)", stats.quota_429, 0);
    report::count("retries before Retry-After", stats.early_retries, 0);
    if let Store::Sqlite(s) = &store {
        let st = s.stats();
        report::info(
            "SQLite writes / commits (group commit)",
            format!(
                "{} / {} ({:.1} writes per commit)",
                st.writes,
                st.commits,
                st.writes as f64 / st.commits.max(1) as f64
            ),
        );
    }
    report::count("duplicate events", audit.duplicates, 0);
    report::count("lost tasks (no event)", audit.lost, 0);
    Ok(BulkResult { converged, stats, audit })
}
