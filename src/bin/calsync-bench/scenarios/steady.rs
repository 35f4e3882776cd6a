//! Scenario 2 (steady state): after a bulk sync has converged, reconcile every unchanged
//! TaskSync again, as the periodic re-check does, and measure CPU time per reconcile, provider
//! calls and store writes (goal 0 each). The ideal CPU time is what the two reads a reconcile
//! cannot avoid (the TaskSync and its connection) cost on the same store.
//!
//! Owns: this scenario. Must not touch: engine or store code.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;

use crate::counting::CountingObjects;
use crate::fixture::{self, NAMESPACE};
use crate::provider::{BenchConnector, BenchService, Profile};
use crate::report;
use calsync::engine::{Engine, EngineConfig, Labels, Objects};
use calsync::standalone::queue::{self, QueueConfig};

#[derive(Clone, Debug, clap::Args)]
pub struct SteadyArgs {
    /// TaskSyncs in the steady state.
    #[arg(long, default_value_t = 2000)]
    pub tasks: usize,
    #[arg(long, default_value_t = 20)]
    pub connections: usize,
    /// Times every TaskSync is reconciled.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Directory for the SQLite database (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub async fn run(args: &SteadyArgs) -> anyhow::Result<u64> {
    report::heading(
        "scenario 2: steady state (unchanged TaskSyncs)",
        &format!("{} TaskSyncs over {} connections, {} rounds", args.tasks, args.connections, args.rounds),
    );
    let dir = fixture::workdir(args.dir.as_deref())?;
    let store = fixture::open_store(dir.path()).await?;
    fixture::load(&calsync::standalone::backend::Store::Sqlite(store.clone()), args.connections, args.tasks).await?;
    // Converge quickly first: no latency, no quota, no faults.
    let service =
        BenchService::new(Profile { latency_ms: 0, quota_rps: 0, quota_concurrency: 0, ..Profile::default() });
    let connector = Arc::new(BenchConnector { service: service.clone() });
    let engine = Engine::new(Arc::new(store.clone()), connector.clone(), EngineConfig::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = QueueConfig { concurrency: 16, ..QueueConfig::default() };
    let driver = tokio::spawn(queue::run_with_secrets(engine, config, store.subscribe_secrets(), async move {
        let _ = stopped.await;
    }));
    let converged = fixture::wait_synced(&store, args.tasks, Duration::from_secs(600)).await?;
    let _ = stop.send(());
    let _ = driver.await;
    anyhow::ensure!(converged.is_some(), "the bulk sync before the steady state did not converge");
    // Let second-granular timestamps move on, so a reconcile that rewrote them would show.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let names: Vec<(String, String)> = store
        .list_task_syncs(Some(NAMESPACE), &Labels::new())
        .await?
        .iter()
        .map(|t| (t.name_any(), t.spec.connection_ref.name.clone()))
        .collect();
    let counting = Arc::new(CountingObjects::new(Arc::new(store.clone())));
    let engine = Engine::new(counting.clone(), connector, EngineConfig::default());
    let calls_before = service.stats().total_calls();
    let cpu = report::cpu_time();
    let wall = Instant::now();
    let mut reconciles = 0u64;
    for _ in 0..args.rounds {
        for (name, _) in &names {
            engine.reconcile_task_sync(NAMESPACE, name).await?;
            reconciles += 1;
        }
    }
    let (cpu, wall) = (report::cpu_time() - cpu, wall.elapsed());
    let calls = service.stats().total_calls() - calls_before;
    let writes = counting.writes();

    // The floor: the two reads every reconcile must make.
    let floor = report::cpu_time();
    for _ in 0..args.rounds {
        for (name, conn) in &names {
            store.get_task_sync(NAMESPACE, name).await?;
            store.get_connection(NAMESPACE, conn).await?;
        }
    }
    let floor = report::cpu_time() - floor;

    let per = |d: Duration| d.as_secs_f64() * 1e6 / reconciles.max(1) as f64;
    report::figure("CPU time per reconcile", per(cpu), per(floor), "us");
    report::info("wall time per reconcile (one at a time)", format!("{:.1} us", per(wall)));
    report::info("store reads per reconcile", format!("{:.2}", counting.reads() as f64 / reconciles.max(1) as f64));
    report::count("provider calls", calls, 0);
    report::count("store writes", writes, 0);
    Ok(calls + writes)
}
