//! The `calsync-bench` binary: benchmarks that print figures next to their physical ideal, and
//! fault injection. Scenarios run the real engine, SQLite store and work queue (in process), or
//! the `calsync` binary in standalone mode (spawned, for kill -9 and REST load), against the
//! bench calendar service (`provider`), which enforces per-connection quotas and injects faults.
//! It is a binary of its own so the product binary `calsync` and the library carry none of it.
//!
//! Owns: the bench command line, its provider, scenarios and output. Must not touch: engine,
//! stores, providers or API code; it only drives them through the library's public interfaces.

mod batch_http;
mod counting;
mod fixture;
mod http;
mod node;
mod procs;
mod provider;
mod report;
mod scenarios;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use calsync::telemetry::{self, LogFormat};

use scenarios::{batch, bulk, caldav_import, crash, cursor, live, memory, rest, schedule, steady, webhooks};

/// calsync-bench: benchmarks of calsync that print figures next to their ideal, and fault
/// injection (README "Performance").
#[derive(Parser, Debug)]
#[command(name = "calsync-bench", version)]
struct Cli {
    /// Log format: text for people, json for log pipelines.
    #[arg(long, global = true, value_enum, default_value = "text", env = "CALSYNC_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: BenchCommand,
}

fn main() -> ExitCode {
    calsync::alloc::tune();
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    // One process-level rustls crypto provider before any TLS, as in `calsync` (see its main.rs).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The scenarios and the helper processes they spawn.
#[derive(Debug, clap::Subcommand)]
enum BenchCommand {
    /// Scenario 1: 10,000 TaskSyncs over 100 connections at 50 ms latency and 10 requests/s per
    /// connection; time to converge vs the quota-bound ideal, 429s provoked.
    Bulk(bulk::BulkArgs),
    /// Scenario 2: CPU time, provider calls and store writes per reconcile of unchanged TaskSyncs.
    Steady(steady::SteadyArgs),
    /// Scenario 3: the bulk run with injected faults (default 30%): every task converges, no
    /// duplicates, Retry-After honoured.
    Faults {
        /// Total fault rate, split evenly over 5xx, 429 + Retry-After, timeouts and drops.
        #[arg(long, default_value_t = 0.3)]
        fault_rate: f64,
        #[command(flatten)]
        bulk: bulk::BulkArgs,
    },
    /// Scenario 4: kill -9 the standalone process at random points during bulk syncs.
    Crash(crash::CrashArgs),
    /// Scenario 5: REST throughput and p50/p99 under load from this process.
    Rest(rest::RestArgs),
    /// Scenario 6: RSS with 100,000 TaskSyncs loaded and queued.
    Memory(memory::MemoryArgs),
    /// Scenario 7: live sync. Calendar edit + signal → `status.calendarEdit` latency and provider
    /// calls, listings for a burst of signals, and polling 10,000 unchanged CalDAV connections
    /// (probes and listings per minute, store writes, CPU per poll, spread over the seconds).
    Live(live::LiveArgs),
    /// Scenario 9: calendar-to-tasks with a cursor on unchanged calendars: latency and provider
    /// requests per pull, polled and push-covered.
    Cursor(cursor::CursorArgs),
    /// Scenario 8: app webhooks. Throughput and record→2xx latency (p50/p99) of 10,000 events
    /// from the durable outbox to a local receiver, and what a dead receiver costs the writers.
    Webhooks(webhooks::WebhooksArgs),
    /// Scenario 10: provider batch APIs. N creates on one connection through the real Google
    /// and Outlook clients, batching off vs on: time, HTTP requests, Graph 429s.
    Batch(batch::BatchArgs),
    /// Scenario 11: CalDAV import. N events in a real Radicale listed through calsync's CalDAV
    /// provider next to the raw REPORT alone, with the parse's breakdown.
    CaldavImport(caldav_import::CaldavImportArgs),
    /// Scenario 12: suggest-times for a user with 3 connections and 2,000 events: latency with
    /// the busy cache warm and cold, provider requests per answer; the scheduling core's time on
    /// 10,000 busy intervals.
    Schedule(schedule::ScheduleArgs),
    /// Helper: serve the bench calendar service over HTTP (prints `listening URL` first).
    #[command(hide = true)]
    ProviderServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        #[command(flatten)]
        profile: provider::Profile,
    },
    /// Helper: standalone mode with caldav/apple connections served by a provider server.
    #[command(hide = true)]
    Node(node::NodeArgs),
}

/// Run one bench command to completion. Fails (non-zero exit) when a scenario's correctness
/// goal is missed (duplicates, lost tasks, unconverged tasks, failed requests).
fn run(command: BenchCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(dispatch(command))
}

async fn dispatch(command: BenchCommand) -> anyhow::Result<()> {
    let failures = match command {
        BenchCommand::Bulk(args) => {
            let r = bulk::run("scenario 1: bulk", &args).await?;
            u64::from(r.converged.is_none()) + r.audit.duplicates + r.audit.lost
        }
        BenchCommand::Faults { fault_rate, mut bulk } => {
            if fault_rate > 0.0 {
                bulk.profile = bulk.profile.with_faults(fault_rate);
            }
            let r = bulk::run("scenario 3: bulk with injected faults", &bulk).await?;
            u64::from(r.converged.is_none()) + r.audit.duplicates + r.audit.lost + r.stats.early_retries
        }
        BenchCommand::Steady(args) => steady::run(&args).await?,
        BenchCommand::Crash(args) => crash::run(&args).await?,
        BenchCommand::Rest(args) => rest::run(&args).await?,
        BenchCommand::Live(args) => live::run(&args).await?,
        BenchCommand::Cursor(args) => cursor::run(&args).await?,
        BenchCommand::Webhooks(args) => webhooks::run(&args).await?,
        BenchCommand::Batch(args) => batch::run(&args).await?,
        BenchCommand::CaldavImport(args) => caldav_import::run(&args).await?,
        BenchCommand::Schedule(args) => schedule::run(&args).await?,
        BenchCommand::Memory(args) => {
            memory::run(&args).await?;
            0
        }
        BenchCommand::ProviderServer { listen, profile } => {
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}; pass a free --listen address"))?;
            // The parent reads this first line to learn the address.
            println!("listening http://{}", listener.local_addr()?);
            http::serve(listener, provider::BenchService::new(profile)).await?;
            0
        }
        BenchCommand::Node(args) => {
            node::run(args).await?;
            0
        }
    };
    anyhow::ensure!(failures == 0, "{failures} correctness goal(s) missed (see FAIL lines above)");
    Ok(())
}
