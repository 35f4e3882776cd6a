//! Scenario 6 (memory): RSS of this process with N TaskSyncs (100,000 by default) in the
//! standalone SQLite store and the work queue holding all of them, while the engine syncs them
//! against a zero-latency bench service. The ideal is the size of the objects themselves (their
//! JSON), the least any process that holds them all could use.
//!
//! The bench service runs in its own process (`provider-server`) and calsync reaches it over
//! HTTP through the client limiter, wired as `calsync-bench node` wires it: the events the fake
//! calendar stores (~0.9 KiB each) are not calsync's memory, and the HTTP client and limiter are.
//!
//! Owns: this scenario. Must not touch: engine, queue or store code.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fixture::{self, NAMESPACE};
use crate::http::{self, HttpConnector};
use crate::procs::ProviderServer;
use crate::provider::Profile;
use crate::report::{self, mib};
use calsync::engine::{Engine, EngineConfig, Labels, Objects};
use calsync::providers::Connector;
use calsync::providers::limiter::Limited;
use calsync::providers::registry::Limits;
use calsync::standalone::queue::{self, QueueConfig};

#[derive(Clone, Debug, clap::Args)]
pub struct MemoryArgs {
    #[arg(long, default_value_t = 100_000)]
    pub tasks: usize,
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Work-queue concurrency.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Directory for the SQLite database (default: the system temp dir; /dev/shm loads faster).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Stop sampling after this many seconds even if not all are synced.
    #[arg(long, default_value_t = 60)]
    pub sample_secs: u64,
}

pub async fn run(args: &MemoryArgs) -> anyhow::Result<()> {
    report::heading(
        "scenario 6: memory",
        &format!(
            "{} TaskSyncs over {} connections in SQLite, queue concurrency {}, zero-latency provider",
            args.tasks, args.connections, args.concurrency
        ),
    );
    let (rss0, _) = report::rss_of("self");
    let dir = fixture::workdir(args.dir.as_deref())?;
    let store = fixture::open_store(dir.path()).await?;
    let server =
        ProviderServer::start(&Profile { latency_ms: 0, quota_rps: 0, quota_concurrency: 0, ..Profile::default() })?;
    let t = Instant::now();
    let sqlite = calsync::standalone::backend::Store::Sqlite(store.clone());
    fixture::load_at(&sqlite, args.connections, args.tasks, Some(&server.base)).await?;
    let (rss_loaded, _) = report::rss_of("self");
    report::info("load into SQLite", format!("{:.1} s", t.elapsed().as_secs_f64()));

    let limits = Limits::from_env()?;
    let connector: Arc<dyn Connector> = Arc::new(Limited::new(Arc::new(HttpConnector::new()?), limits.caldav()));
    let engine = Engine::new(Arc::new(store.clone()), connector, EngineConfig::default());
    let counters = reqwest::Client::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = QueueConfig { concurrency: args.concurrency, ..QueueConfig::default() };
    let driver = tokio::spawn(queue::run_with_secrets(engine, config, store.subscribe_secrets(), async move {
        let _ = stopped.await;
    }));
    let start = Instant::now();
    let mut peak_running = 0u64;
    let mut synced = 0;
    while start.elapsed() < Duration::from_secs(args.sample_secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_running = peak_running.max(report::rss_of("self").0);
        synced = http::counters_of(&counters, &server.base).await?.events as usize;
        if synced >= args.tasks {
            break;
        }
    }
    let (rss_end, hwm) = report::rss_of("self");
    let _ = stop.send(());
    let _ = driver.await;
    let objects = store.list_task_syncs(Some(NAMESPACE), &Labels::new()).await?;
    let bytes: usize = objects.iter().map(|t| serde_json::to_vec(t).map(|v| v.len()).unwrap_or(0)).sum();

    report::info("RSS at start", format!("{:.1} MiB", mib(rss0)));
    report::info("RSS after loading the store", format!("{:.1} MiB", mib(rss_loaded)));
    report::info(
        "TaskSyncs synced while sampling",
        format!("{synced} of {} in {:.0} s", args.tasks, start.elapsed().as_secs_f64()),
    );
    report::figure("RSS with the queue holding all (peak sample)", mib(peak_running), mib(bytes as u64), "MiB");
    report::figure("RSS above start", mib(peak_running.saturating_sub(rss0)), mib(bytes as u64), "MiB");
    report::info("RSS at the end / high-water mark", format!("{:.1} / {:.1} MiB", mib(rss_end), mib(hwm)));
    let st = store.stats();
    report::info(
        "store: decoded objects cached / writes / commits",
        format!("{} / {} / {}", st.cached_objects, st.writes, st.commits),
    );
    report::info(
        "per TaskSync above start",
        format!(
            "{:.0} bytes (JSON of one: {:.0})",
            peak_running.saturating_sub(rss0) as f64 / args.tasks as f64,
            bytes as f64 / objects.len().max(1) as f64
        ),
    );
    Ok(())
}
