//! Scenario 7 (live sync): how fast and how cheaply a change made in the calendar app reaches
//! its TaskSync, and what polling many CalDAV-like connections costs when nothing changes.
//!
//! Part 1 edits synced events in the bench calendar as a user would and then writes the
//! `changed` annotation exactly as the REST webhook does after verifying a notification; the
//! figure is the time until the TaskSync's `status.calendarEdit` shows the edit, and the
//! provider calls it took. A burst of signals on one connection then shows how many listings the
//! engine makes for them. Part 2 polls thousands of Ready connections whose calendars never
//! change: probes and listings per minute, store writes (goal 0), CPU per poll, and how evenly
//! the probes spread over the seconds.
//!
//! Owns: this scenario. Must not touch: engine, queue, store or REST code (it drives them, and
//! plays the webhook's part by writing the annotation itself).

mod polling;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use kube::ResourceExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::broadcast;

use crate::counting::CountingObjects;
use crate::fixture::{self, NAMESPACE};
use crate::provider::{BenchConnector, BenchService, ConnCalls, Profile};
use crate::report;
use calsync::engine::live::{self};
use calsync::engine::{Engine, EngineConfig, Labels, ObjectKey, Objects};
use calsync::providers::limiter::Limited;
use calsync::providers::registry::Limits;
use calsync::resources::push::CHANGED_ANNOTATION;
use calsync::standalone::SqliteObjects;
use calsync::standalone::queue::{self, QueueConfig};

/// Options of `calsync-bench live`.
#[derive(Clone, Debug, clap::Args)]
pub struct LiveArgs {
    /// Part 1: connections, each with `--tasks-per-connection` synced TaskSyncs.
    #[arg(long, default_value_t = 20)]
    pub connections: usize,
    #[arg(long, default_value_t = 10)]
    pub tasks_per_connection: usize,
    /// Part 1: calendar edits, each followed at once by a signal (0 skips them).
    #[arg(long, default_value_t = 200)]
    pub changes: usize,
    /// Part 1: signals of the burst on one connection (0 skips the burst).
    #[arg(long, default_value_t = 1000)]
    pub burst: usize,
    /// Part 1: the burst's signals are spread evenly over this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub burst_ms: u64,
    /// An edit not detected within this many seconds counts as never detected (a failure).
    #[arg(long, default_value_t = 10)]
    pub detect_timeout_secs: u64,
    /// Part 2: Ready connections polled (0 skips part 2).
    #[arg(long, default_value_t = 10_000)]
    pub poll_connections: usize,
    /// Part 2: the CalDAV polling interval (`CALSYNC_CALDAV_POLL_SECONDS`). Part 1 keeps the
    /// default (60 s), so polls rarely mix with the signals it measures.
    #[arg(long, default_value_t = 10)]
    pub caldav_poll_secs: u64,
    /// Part 2: how long polling is measured once every connection is Ready and listed once.
    #[arg(long, default_value_t = 30)]
    pub poll_window_secs: u64,
    /// Work-queue concurrency (`calsync standalone --concurrency`; its default is 8).
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Directory for the SQLite databases (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub profile: Profile,
}

/// The queue driving an engine, until `stop`.
struct Driver {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Driver {
    fn start(store: &SqliteObjects, engine: Engine, concurrency: usize) -> Driver {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = QueueConfig { concurrency, ..QueueConfig::default() };
        let task = tokio::spawn(queue::run_with_secrets(engine, config, store.subscribe_secrets(), async move {
            let _ = stopped.await;
        }));
        Driver { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// As deployed for CalDAV: the provider behind calsync's client-side limiter with its defaults.
fn connector(service: &Arc<BenchService>) -> anyhow::Result<Arc<Limited>> {
    let limits = Limits::from_lookup(|_| None).context("default provider limits")?;
    Ok(Arc::new(Limited::new(Arc::new(BenchConnector { service: service.clone() }), limits.caldav())))
}

fn conn_key(name: &str) -> String {
    format!("{NAMESPACE}/{name}")
}

/// Write the signal the REST webhook writes after verifying a notification.
async fn signal(store: &SqliteObjects, conn: &str, value: &str) -> anyhow::Result<()> {
    let annotations = Labels::from([(CHANGED_ANNOTATION.to_string(), value.to_string())]);
    store.set_annotations(&ObjectKey::connection(NAMESPACE, conn), &annotations).await.context("writing the signal")?;
    Ok(())
}

/// A value no earlier signal had (the webhook writes the time in ms; two in one ms must differ).
fn signal_value(seq: u64) -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    format!("{ms}-{seq}")
}

async fn signal_seen(store: &SqliteObjects, conn: &str) -> anyhow::Result<Option<String>> {
    let c = store.get_connection(NAMESPACE, conn).await?;
    Ok(c.and_then(|c| c.status).and_then(|s| s.push).and_then(|p| p.signal_seen))
}

/// Wait until the engine has acted on signal `value` of `conn`.
async fn wait_seen(store: &SqliteObjects, conn: &str, value: &str, timeout: Duration) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if signal_seen(store, conn).await?.as_deref() == Some(value) {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(false)
}

/// When the TaskSync's status first shows the calendar edit with `etag`, woken by the store's
/// change notifications (with a 5 ms fallback, should one be missed). `None` after `deadline`.
async fn wait_edit(
    store: &SqliteObjects,
    rx: &mut broadcast::Receiver<ObjectKey>,
    name: &str,
    etag: &str,
    deadline: Instant,
) -> anyhow::Result<Option<Instant>> {
    let key = ObjectKey::task_sync(NAMESPACE, name);
    loop {
        let ts = store.get_task_sync(NAMESPACE, name).await?;
        if ts.and_then(|t| t.status).and_then(|s| s.calendar_edit).is_some_and(|e| e.etag == etag) {
            return Ok(Some(Instant::now()));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let tick = tokio::time::Instant::from_std((now + Duration::from_millis(5)).min(deadline));
        loop {
            match tokio::time::timeout_at(tick, rx.recv()).await {
                Ok(Ok(k)) if k != key => continue,
                _ => break,
            }
        }
    }
}

/// A synced TaskSync: its name, connection and event.
struct Synced {
    name: String,
    conn: String,
    event_id: String,
}

async fn synced_tasks(store: &SqliteObjects) -> anyhow::Result<Vec<Synced>> {
    let all = store.list_task_syncs(Some(NAMESPACE), &Labels::new()).await?;
    Ok(all
        .iter()
        .filter_map(|t| {
            let event_id = t.status.as_ref()?.event_id.clone()?;
            Some(Synced { name: t.name_any(), conn: t.spec.connection_ref.name.clone(), event_id })
        })
        .collect())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Run both parts; the number of failed goals (edits never detected, poll writes).
pub async fn run(args: &LiveArgs) -> anyhow::Result<u64> {
    let p = &args.profile;
    report::heading(
        "scenario 7: live sync (calendar edits, signals, polling)",
        &format!(
            "part 1: {} connections x {} TaskSyncs, {} edits + signals, burst of {} signals in {} ms; part 2: {} connections polled every {} s for {} s; queue concurrency {}, latency {} ms, quota {} req/s + {} in flight per connection",
            args.connections,
            args.tasks_per_connection,
            args.changes,
            args.burst,
            args.burst_ms,
            args.poll_connections,
            args.caldav_poll_secs,
            args.poll_window_secs,
            args.concurrency,
            p.latency_ms,
            p.quota_rps,
            p.quota_concurrency
        ),
    );
    let mut failures = 0;
    if args.connections > 0 && (args.changes > 0 || args.burst > 0) {
        failures += notifications(args).await?;
    }
    if args.poll_connections > 0 {
        failures += polling::polling(args).await?;
    }
    Ok(failures)
}

/// Part 1: edit → signal → `status.calendarEdit`, then a burst of signals.
async fn notifications(args: &LiveArgs) -> anyhow::Result<u64> {
    let n = args.connections;
    let tasks = n * args.tasks_per_connection.max(1);
    let dir = fixture::workdir(args.dir.as_deref())?;
    let store = fixture::open_store(dir.path()).await?;
    fixture::load(&calsync::standalone::backend::Store::Sqlite(store.clone()), n, tasks).await?;
    let service = BenchService::new_live(args.profile.clone());
    let counting = Arc::new(CountingObjects::new(Arc::new(store.clone())));
    let engine = Engine::new(counting.clone(), connector(&service)?, EngineConfig::default());
    let driver = Driver::start(&store, engine, args.concurrency);
    let converged = fixture::wait_synced(&store, tasks, Duration::from_secs(600)).await?;
    anyhow::ensure!(converged.is_some(), "the {tasks} TaskSyncs of part 1 did not sync within 600 s");

    // A process lists each calendar in full once before it has a cursor; give every connection
    // that listing first, so the edits below measure the steady state.
    let mut seq = 0u64;
    for c in 0..n {
        seq += 1;
        let name = fixture::connection_name(c);
        let value = signal_value(seq);
        signal(&store, &name, &value).await?;
        anyhow::ensure!(
            wait_seen(&store, &name, &value, Duration::from_secs(30)).await?,
            "connection {name} did not act on its first signal within 30 s"
        );
    }

    let synced = synced_tasks(&store).await?;
    anyhow::ensure!(!synced.is_empty(), "no synced TaskSync to edit");
    let mut rng = StdRng::seed_from_u64(args.profile.seed);
    let timeout = Duration::from_secs(args.detect_timeout_secs);
    let mut failures = 0u64;

    println!("-- part 1a: an edit in the calendar app, then its notification (signal) --");
    let mut latencies = Vec::with_capacity(args.changes);
    let mut calls = ConnCalls::default();
    let mut undetected = 0u64;
    let quota_before = service.stats().quota_429;
    report::info("429s provoked while syncing the TaskSyncs first", quota_before);
    for i in 0..args.changes {
        let t = &synced[rng.random_range(0..synced.len())];
        let key = conn_key(&t.conn);
        let before = service.conn_calls(&key);
        // Later edits of the same event move it further, so each differs from the task.
        let edited = service
            .user_edit(&key, &t.event_id, chrono::Duration::minutes(30))
            .with_context(|| format!("event {} of {} is not in the bench calendar", t.event_id, t.name))?;
        let etag = edited.etag.unwrap_or_default();
        let mut rx = store.subscribe();
        seq += 1;
        let start = Instant::now();
        signal(&store, &t.conn, &signal_value(seq)).await?;
        let found = wait_edit(&store, &mut rx, &t.name, &etag, start + timeout).await?;
        let used = service.conn_calls(&key).since(&before);
        if let Some(at) = found {
            latencies.push(at - start);
        } else {
            undetected += 1;
            let refused = service.stats().quota_429 - quota_before;
            println!(
                "FAIL: edit {i} of {} ({}) not in status.calendarEdit after {timeout:?}; that connection made probe {}, list {}, get {} meanwhile; {refused} calls refused with 429 so far",
                t.name, t.conn, used.probe, used.list, used.get
            );
        }
        calls = ConnCalls {
            probe: calls.probe + used.probe,
            list: calls.list + used.list,
            get: calls.get + used.get,
            other: calls.other + used.other,
        };
    }
    if args.changes > 0 {
        latencies.sort();
        let per = args.changes.max(1) as f64;
        // One service call is the least that can show the edit: a listing that returns it.
        let floor = args.profile.latency_ms as f64;
        report::figure("edit → calendarEdit, p50", ms(report::percentile(&latencies, 50.0)), floor, "ms");
        report::figure("edit → calendarEdit, p99", ms(report::percentile(&latencies, 99.0)), floor, "ms");
        report::figure("edit → calendarEdit, max", ms(latencies.last().copied().unwrap_or_default()), floor, "ms");
        report::figure("provider calls per notification", calls.total() as f64 / per, 1.0, "calls");
        report::info(
            "  by kind, per notification",
            format!(
                "probe {:.2}, list {:.2}, get {:.2}, other {:.2} (signal write to detection, that connection only)",
                calls.probe as f64 / per,
                calls.list as f64 / per,
                calls.get as f64 / per,
                calls.other as f64 / per
            ),
        );
        report::count("edits never detected", undetected, 0);
        failures += undetected;
    }

    report::soft_count("429s provoked by the edits (quota exceeded)", service.stats().quota_429 - quota_before, 0);
    if args.burst > 0 {
        let quota_before = service.stats().quota_429;
        failures += burst(args, &store, &service, &counting, &synced, &mut seq, timeout).await?;
        report::soft_count("429s provoked by the burst (quota exceeded)", service.stats().quota_429 - quota_before, 0);
    }
    driver.stop().await;
    Ok(failures)
}

/// Part 1b: one edit, then `--burst` signals for its connection within `--burst-ms`.
async fn burst(
    args: &LiveArgs,
    store: &SqliteObjects,
    service: &Arc<BenchService>,
    counting: &CountingObjects,
    synced: &[Synced],
    seq: &mut u64,
    timeout: Duration,
) -> anyhow::Result<u64> {
    println!(
        "-- part 1b: a burst of {} signals for one connection within {} ms (after one edit) --",
        args.burst, args.burst_ms
    );
    println!(
        "   (signals go straight to the store: the REST webhook's own coalescing, at most one write per 250 ms per connection, is not in this path)"
    );
    let Some(t) = synced.first() else { return Ok(0) };
    let key = conn_key(&t.conn);
    // Let the connection's last reconcile settle, so the counts below are the burst's own.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = service.conn_calls(&key);
    let writes_before = counting.writes();
    let st = live::stats();
    let (signals_before, unchanged_before) =
        (st.signals.load(Ordering::Relaxed), st.probes_unchanged.load(Ordering::Relaxed));
    let edited = service
        .user_edit(&key, &t.event_id, chrono::Duration::minutes(30))
        .with_context(|| format!("event {} of {} is not in the bench calendar", t.event_id, t.name))?;
    let etag = edited.etag.unwrap_or_default();
    let mut rx = store.subscribe();
    let start = Instant::now();
    // The signals are written on their own task, so the edit's detection is timed as it happens.
    let writer = {
        let (store, conn, count) = (store.clone(), t.conn.clone(), args.burst);
        let spacing = Duration::from_millis(args.burst_ms) / count.max(1) as u32;
        let first = *seq + 1;
        tokio::spawn(async move {
            let mut last = String::new();
            for i in 0..count {
                last = signal_value(first + i as u64);
                signal(&store, &conn, &last).await?;
                tokio::time::sleep_until(tokio::time::Instant::from_std(start + spacing * (i as u32 + 1))).await;
            }
            anyhow::Ok((last, start.elapsed()))
        })
    };
    *seq += args.burst as u64;
    let detected =
        wait_edit(store, &mut rx, &t.name, &etag, start + Duration::from_millis(args.burst_ms) + timeout).await?;
    let (last, written_in) = writer.await.context("the burst's writer task")??;
    let settled = wait_seen(store, &t.conn, &last, timeout).await?;
    // A reconcile that was still due (a dirty re-run) would show up right after.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let used = service.conn_calls(&key).since(&before);
    let syncs = st.signals.load(Ordering::Relaxed) - signals_before;
    let skipped = st.probes_unchanged.load(Ordering::Relaxed) - unchanged_before;

    report::info("signals written", format!("{} in {:.0} ms", args.burst, ms(written_in)));
    match detected {
        Some(at) => report::info("edit → calendarEdit (edit before the burst)", format!("{:.1} ms", ms(at - start))),
        None => println!("FAIL: the edit made before the burst was not detected within {timeout:?}"),
    }
    report::figure("change syncs run for the burst", syncs as f64, 1.0, "syncs");
    report::figure("probes for the burst", used.probe as f64, 1.0, "probes");
    report::info("  probes answering \"unchanged\" (listing skipped)", skipped);
    report::figure("listings for the burst", used.list as f64, 1.0, "listings");
    report::info("provider calls for the burst, by kind", format!("get {}, other {}", used.get, used.other));
    report::info(
        "engine store writes during the burst",
        format!("{} (signalSeen per change sync, plus the TaskSync's edit report)", counting.writes() - writes_before),
    );
    if !settled {
        println!("FAIL: the engine had not acted on the burst's last signal {timeout:?} after it");
    }
    Ok(u64::from(detected.is_none()) + u64::from(!settled))
}
