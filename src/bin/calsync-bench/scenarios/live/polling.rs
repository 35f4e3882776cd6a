//! Scenario 7, part 2: many Ready CalDAV-like connections whose calendars never change, polled
//! on the engine's schedule: probes and listings per minute, store writes (goal 0), CPU per
//! poll, and how evenly the probes spread over the seconds.
//!
//! Owns: part 2. Must not touch: part 1 (the parent module), engine, queue or store code.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Driver, LiveArgs, connector};
use crate::counting::CountingObjects;
use crate::fixture::{self, NAMESPACE};
use crate::provider::{BenchService, Op};
use crate::report;
use calsync::engine::live::{self, LiveConfig};
use calsync::engine::{Engine, EngineConfig, Labels, Objects};
use calsync::resources::condition;

/// Part 2: many Ready connections, nothing changes, polls every `--caldav-poll-secs`.
pub(super) async fn polling(args: &LiveArgs) -> anyhow::Result<u64> {
    let n = args.poll_connections;
    let interval = Duration::from_secs(args.caldav_poll_secs.max(1));
    println!("-- part 2: {n} Ready CalDAV-like connections polled every {} s, nothing changes --", interval.as_secs());
    let dir = fixture::workdir(args.dir.as_deref())?;
    let store = fixture::open_store(dir.path()).await?;
    let t = Instant::now();
    fixture::load(&calsync::standalone::backend::Store::Sqlite(store.clone()), n, 0).await?;
    report::info("load into SQLite (not timed below)", format!("{:.1} s", t.elapsed().as_secs_f64()));

    let service = BenchService::new_live(args.profile.clone());
    let counting = Arc::new(CountingObjects::new(Arc::new(store.clone())));
    let config =
        EngineConfig { live: LiveConfig { caldav_poll: interval, ..LiveConfig::default() }, ..EngineConfig::default() };
    let engine = Engine::new(counting.clone(), connector(&service)?, config);
    let st = live::stats();
    let full_before = st.full_listings.load(Ordering::Relaxed);
    let start = Instant::now();
    let driver = Driver::start(&store, engine, args.concurrency);

    let ready_timeout = Duration::from_secs(900);
    loop {
        let all = store.list_connections(Some(NAMESPACE), &Labels::new()).await?;
        let ready = all
            .iter()
            .filter(|c| c.status.as_ref().is_some_and(|s| condition::is_true(&s.conditions, "Ready")))
            .count();
        if ready >= n {
            break;
        }
        if start.elapsed() > ready_timeout {
            driver.stop().await;
            anyhow::bail!("only {ready} of {n} connections were Ready after {} s", ready_timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    report::info("all connections Ready after", format!("{:.1} s", start.elapsed().as_secs_f64()));
    // Each calendar's first poll is a full listing that sets its cursor; measure after those.
    let first_deadline = Instant::now() + interval * 3;
    while st.full_listings.load(Ordering::Relaxed) - full_before < n as u64 && Instant::now() < first_deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    report::info(
        "first (full) listings done after",
        format!(
            "{:.1} s ({} of {n})",
            start.elapsed().as_secs_f64(),
            st.full_listings.load(Ordering::Relaxed) - full_before
        ),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    let writes0 = counting.writes();
    let (probes0, lists0) = (service.calls_of(Op::Probe), service.calls_of(Op::List));
    let (polls0, unchanged0) = (st.polls.load(Ordering::Relaxed), st.probes_unchanged.load(Ordering::Relaxed));
    let cpu0 = report::cpu_time();
    let t0 = Instant::now();
    // Probes per second, read on the second (the service counts every call as it arrives).
    let mut per_second: Vec<u64> = Vec::with_capacity(args.poll_window_secs as usize);
    let mut last = probes0;
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..args.poll_window_secs.max(1) {
        tick.tick().await;
        let now = service.calls_of(Op::Probe);
        per_second.push(now - last);
        last = now;
    }
    let window = t0.elapsed();
    let cpu = report::cpu_time() - cpu0;
    let writes = counting.writes() - writes0;
    let probes = service.calls_of(Op::Probe) - probes0;
    let lists = service.calls_of(Op::List) - lists0;
    let polls = st.polls.load(Ordering::Relaxed) - polls0;
    let unchanged = st.probes_unchanged.load(Ordering::Relaxed) - unchanged0;
    driver.stop().await;

    // The floor of a poll: what it cannot avoid reading to call the provider (the connection
    // and its credentials), on the same store.
    let floor0 = report::cpu_time();
    for c in 0..n {
        let conn = store.get_connection(NAMESPACE, &fixture::connection_name(c)).await?;
        if let Some(conn) = conn {
            store.read_credentials(NAMESPACE, &conn.spec.credentials_secret_ref).await?;
        }
    }
    let floor = report::cpu_time() - floor0;

    let per_min = |x: u64| x as f64 * 60.0 / window.as_secs_f64();
    let ideal_per_min = n as f64 * 60.0 / interval.as_secs_f64();
    report::info("measured window", format!("{:.1} s", window.as_secs_f64()));
    report::figure("probes per minute", per_min(probes), ideal_per_min, "/min");
    report::info("  polls (change syncs) / probes answering \"unchanged\"", format!("{polls} / {unchanged}"));
    report::figure("listings per minute", per_min(lists), 0.0, "/min");
    report::figure(
        "CPU time per poll",
        cpu.as_secs_f64() * 1e6 / polls.max(1) as f64,
        floor.as_secs_f64() * 1e6 / n.max(1) as f64,
        "us",
    );
    report::info("  ideal: reading the connection + credentials", "what a poll cannot avoid on this store");
    report::info(
        "  CPU use while polling",
        format!("{:.1} % of one core", cpu.as_secs_f64() * 100.0 / window.as_secs_f64()),
    );
    let mean = probes as f64 / per_second.len().max(1) as f64;
    let max = per_second.iter().copied().max().unwrap_or(0);
    report::figure("probes in the busiest second", max as f64, mean, "probes");
    report::info(
        "  busiest second's share of the window",
        format!(
            "{:.1} % (even: {:.1} %)",
            max as f64 * 100.0 / probes.max(1) as f64,
            100.0 / per_second.len().max(1) as f64
        ),
    );
    report::info("  probes per second", spread(&per_second));
    let series: Vec<String> = per_second.iter().map(u64::to_string).collect();
    report::info("  probes in each second (cycle = the interval)", series.join(" "));
    report::soft_count("429s provoked (quota exceeded)", service.stats().quota_429, 0);
    report::count("store writes caused by polls", writes, 0);
    Ok(writes)
}

/// Min, quartiles and max of the per-second counts: the shape without 30 numbers.
fn spread(per_second: &[u64]) -> String {
    let mut v = per_second.to_vec();
    v.sort_unstable();
    let at = |q: f64| v.get((v.len().saturating_sub(1) as f64 * q).round() as usize).copied().unwrap_or(0);
    format!("min {}, p25 {}, p50 {}, p75 {}, max {}", at(0.0), at(0.25), at(0.5), at(0.75), at(1.0))
}
