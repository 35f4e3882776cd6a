//! Scenario 4 (crash): a bench provider server runs in its own process (it outlives every crash);
//! `calsync-bench node` (standalone mode) runs in another. Each round applies a batch of
//! TaskSyncs with the real `calsync apply`, kills the node with SIGKILL at a random moment during
//! the load and sync, restarts it, waits until everything converged, and counts duplicate events
//! and lost tasks over all rounds so far.
//!
//! Owns: this scenario. Must not touch: engine, store or provider code.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;

use crate::fixture::{self, NAMESPACE};
use crate::http;
use crate::procs::{Node, NodeEnv, ProviderServer};
use crate::provider::Profile;
use crate::report;
use calsync::credentials::envelope::Key;
use calsync::engine::{Labels, Objects};
use calsync::standalone::SqliteObjects;

#[derive(Clone, Debug, clap::Args)]
pub struct CrashArgs {
    /// Kill/restart rounds.
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// TaskSyncs applied per round.
    #[arg(long, default_value_t = 200)]
    pub batch: usize,
    #[arg(long, default_value_t = 10)]
    pub connections: usize,
    /// Work-queue concurrency of the node.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// The kill lands uniformly within this many milliseconds after the apply starts.
    #[arg(long, default_value_t = 3000)]
    pub kill_window_ms: u64,
    /// Per round, give up waiting for convergence after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// Directory for the database and logs (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub profile: Profile,
}

fn connections_yaml(n: usize, server: &str) -> String {
    let mut y = String::new();
    for c in 0..n {
        let name = fixture::connection_name(c);
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}-creds\nstringData:\n  username: bench\n  password: bench\n---\n\
             apiVersion: calendar.getitdone.app/v1alpha1\nkind: CalendarConnection\nmetadata:\n  name: {name}\nspec:\n  userId: user-{c:04}\n  provider: caldav\n  serverUrl: {server}\n  credentialsSecretRef:\n    name: {name}-creds\n---\n"
        );
    }
    y
}

fn tasks_yaml(from: usize, to: usize, connections: usize) -> String {
    let mut y = String::new();
    for i in from..to {
        let t = fixture::task(i, connections);
        let _ = write!(
            y,
            "apiVersion: calendar.getitdone.app/v1alpha1\nkind: TaskSync\nmetadata:\n  name: task-{i:06}\nspec:\n  connectionRef:\n    name: {}\n  taskId: {}\n  title: {}\n  start: \"{}\"\n  duration: 45m\n---\n",
            t.spec.connection_ref.name, t.spec.task_id, t.spec.title, t.spec.start
        );
    }
    y
}

fn finish_apply(child: std::process::Child) -> anyhow::Result<()> {
    let out = child.wait_with_output().context("waiting for calsync apply")?;
    anyhow::ensure!(out.status.success(), "calsync apply failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Returns duplicates + lost over all rounds (0 is a pass).
pub async fn run(args: &CrashArgs) -> anyhow::Result<u64> {
    report::heading(
        "scenario 4: crash (kill -9 during bulk sync)",
        &format!(
            "{} rounds x {} TaskSyncs over {} connections, node concurrency {}, kill within {} ms of each apply, provider latency {} ms, quota {} req/s + {} in flight, faults {:.0}%",
            args.rounds,
            args.batch,
            args.connections,
            args.concurrency,
            args.kill_window_ms,
            args.profile.latency_ms,
            args.profile.quota_rps,
            args.profile.quota_concurrency,
            args.profile.fault_total() * 100.0
        ),
    );
    let dir = fixture::workdir(args.dir.as_deref())?;
    let server = ProviderServer::start(&args.profile)?;
    let (key, key_b64) = Key::generate();
    let env = NodeEnv {
        dir: dir.path().to_path_buf(),
        encryption_key: key_b64,
        api_key: format!("bench-{}", uuid::Uuid::new_v4()),
        concurrency: args.concurrency,
        extra: vec![],
    };
    let conns = dir.path().join("connections.yaml");
    std::fs::write(&conns, connections_yaml(args.connections, &server.base))?;
    finish_apply(env.spawn_apply(&conns)?)?;
    let store = SqliteObjects::open(&env.database_url(), calsync::credentials::envelope::Keyring::new(key)).await?;
    let http_client = reqwest::Client::new();
    let mut node = Node::start(&env).await?;
    let (mut kills, mut total_dup, mut total_lost) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    for round in 0..args.rounds {
        let file = dir.path().join(format!("tasks-{round}.yaml"));
        std::fs::write(&file, tasks_yaml(round * args.batch, (round + 1) * args.batch, args.connections))?;
        let applying = env.spawn_apply(&file)?;
        let at = rand::rng().random_range(0..=args.kill_window_ms);
        tokio::time::sleep(Duration::from_millis(at)).await;
        node.kill9();
        kills += 1;
        finish_apply(applying)?;
        let synced_at_kill = fixture::synced(&store).await?;
        node = Node::start(&env).await?;
        let want = (round + 1) * args.batch;
        let t = Instant::now();
        let converged = loop {
            let snap = http::snapshot(&http_client, &server.base).await?;
            let tasks = store.list_task_syncs(Some(NAMESPACE), &Labels::new()).await?;
            let audit = fixture::audit(&tasks, &snap.by_uid);
            let all_recorded = fixture::synced(&store).await? >= want;
            if (all_recorded && audit.lost == 0) || t.elapsed() > Duration::from_secs(args.timeout_secs) {
                break (all_recorded && audit.lost == 0, audit, snap.stats);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let (ok, audit, stats) = converged;
        total_dup = audit.duplicates;
        total_lost = audit.lost + (want as u64).saturating_sub(audit.tasks);
        println!(
            "round {:>3}: killed {at:>5} ms after apply ({synced_at_kill:>5} of {want} recorded), {} in {:>5.1} s; tasks {}, events {}, adopted so far {}, duplicates {}, lost {}",
            round + 1,
            if ok { "converged" } else { "DID NOT CONVERGE" },
            t.elapsed().as_secs_f64(),
            audit.tasks,
            stats.events,
            stats.creates_existing,
            audit.duplicates,
            total_lost
        );
    }
    node.kill9();
    let snap = http::snapshot(&http_client, &server.base).await?;
    report::info("kills", kills);
    report::info("wall time", format!("{:.1} s", started.elapsed().as_secs_f64()));
    report::info("creates answered Existing (adoptions)", snap.stats.creates_existing);
    report::info("429s provoked (quota exceeded)", snap.stats.quota_429);
    report::count("duplicate events", total_dup, 0);
    report::count("lost tasks", total_lost, 0);
    Ok(total_dup + total_lost)
}
