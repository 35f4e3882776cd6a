//! Scenario 8 (app webhooks): delivery throughput and record→acknowledge latency of 10,000
//! events from the durable SQLite outbox (`synchronous=FULL`, outcomes settled in batches) to a
//! local receiver, by the real dispatcher. Three runs: a burst (all recorded at once:
//! throughput), a steady rate below capacity, one transaction per event as status writes make
//! them (latency), and the same steady rate with a dead receiver and the default retry schedule
//! (what a failing endpoint costs the writers). Ideals: the receiver under plain POSTs at the same concurrency (throughput) and
//! one at a time (latency).
//!
//! Owns: this scenario. Must not touch: webhook or store code (it drives their public API).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use tokio::sync::{Notify, watch};

use crate::fixture;
use crate::report::{self, percentile};
use calsync::api::app_webhooks::{Dispatcher, Secret, Signer, WebhookConfig};
use calsync::credentials::envelope::{Key, Keyring};
use calsync::standalone::SqliteObjects;
use calsync::standalone::store::OutboxMessage;

#[derive(Clone, Debug, clap::Args)]
pub struct WebhooksArgs {
    /// Events per run.
    #[arg(long, default_value_t = 10_000)]
    pub events: usize,
    /// Attempts in flight (CALSYNC_APP_WEBHOOK_CONCURRENCY).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Events recorded per second in the steady runs.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Directory for the database (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A receiver that answers 200 at once and notes, per webhook-id, how often it came and how
/// long after it was recorded (the body carries the record time).
#[derive(Default)]
struct Seen {
    count: HashMap<String, u32>,
    latency: Vec<Duration>,
}

async fn receiver() -> anyhow::Result<(String, Arc<Mutex<Seen>>)> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let seen = s.clone();
            async move {
                let now = now_us();
                let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                let t = serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|b| b["data"]["t_us"].as_i64());
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                *seen.count.entry(id).or_default() += 1;
                if let Some(t) = t {
                    seen.latency.push(Duration::from_micros(u64::try_from(now - t).unwrap_or(0)));
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, seen))
}

fn message(run: &str, n: usize) -> OutboxMessage {
    let body = serde_json::json!({"type": "task.synced", "timestamp": chrono::Utc::now().to_rfc3339(),
        "data": {"user_id": "bench", "task_id": format!("{run}-{n}"), "t_us": now_us()}});
    OutboxMessage { id: format!("msg_{run}_{n}"), body: body.to_string() }
}

fn config(url: &str, concurrency: usize) -> anyhow::Result<WebhookConfig> {
    Ok(WebhookConfig {
        url: reqwest::Url::parse(url)?,
        signer: Signer::parse(&Secret::generate())?,
        timeout: Duration::from_secs(10),
        concurrency,
        retry_min: Duration::from_millis(5),
        retry_max: Duration::from_millis(50),
        give_up: Duration::from_secs(86_400),
        max_pending: u64::MAX,
    })
}

/// The receiver alone: `events` plain POSTs, `concurrency` in flight.
async fn ideal(url: &str, events: usize, concurrency: usize) -> anyhow::Result<(f64, Vec<Duration>)> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (http, url, next) = (http.clone(), url.to_string(), next.clone());
        set.spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < events {
                let t = Instant::now();
                let m = message("ideal", 0);
                if http.post(&url).header("webhook-id", "ideal").body(m.body).send().await.is_ok() {
                    lat.push(t.elapsed());
                }
            }
            lat
        });
    }
    let mut lat = Vec::new();
    while let Some(Ok(l)) = set.join_next().await {
        lat.extend(l);
    }
    lat.sort();
    Ok((lat.len() as f64 / start.elapsed().as_secs_f64(), lat))
}

/// Record `events` (all at once in batches of 500, or one per transaction at `rate`/s) while a
/// dispatcher delivers to `url`; the store's insert latencies.
async fn record(
    store: &SqliteObjects,
    wake: &Notify,
    run: &str,
    events: usize,
    rate: Option<u64>,
) -> anyhow::Result<Vec<Duration>> {
    let mut inserts = Vec::with_capacity(events);
    let start = Instant::now();
    match rate {
        None => {
            for chunk in (0..events).collect::<Vec<_>>().chunks(500) {
                store.outbox_push(chunk.iter().map(|n| message(run, *n)).collect()).await?;
                wake.notify_one();
            }
        }
        Some(rate) => {
            for n in 0..events {
                let due = start + Duration::from_secs_f64(n as f64 / rate.max(1) as f64);
                tokio::time::sleep_until(due.into()).await;
                let t = Instant::now();
                store.outbox_push(vec![message(run, n)]).await?;
                inserts.push(t.elapsed());
                wake.notify_one();
            }
        }
    }
    inserts.sort();
    Ok(inserts)
}

async fn wait_delivered(seen: &Mutex<Seen>, prefix: &str, events: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let n = seen.lock().unwrap_or_else(|e| e.into_inner()).count.keys().filter(|k| k.starts_with(prefix)).count();
        if n >= events {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn run(args: &WebhooksArgs) -> anyhow::Result<u64> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    report::heading(
        "scenario 8: app webhooks from the durable outbox (in process, loopback receiver)",
        &format!("{} events per run, {} in flight, steady rate {}/s", args.events, args.concurrency, args.rate),
    );
    let dir = fixture::workdir(args.dir.as_deref())?;
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = SqliteObjects::open(&url, Keyring::new(Key::generate().0)).await?;
    let (hook, seen) = receiver().await?;
    let (ideal_rps, _) = ideal(&hook, args.events, args.concurrency).await?;
    // One request at a time: a round trip without queueing, the floor of a message's latency.
    let (_, ideal_lat) = ideal(&hook, args.events.min(2000), 1).await?;
    seen.lock().unwrap_or_else(|e| e.into_inner()).latency.clear();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut failures = 0;

    let wake = Arc::new(Notify::new());
    let (stop, stopped) = watch::channel(false);
    let dispatcher = Dispatcher::new(Arc::new(store.clone()), config(&hook, args.concurrency)?, wake.clone())
        .map_err(anyhow::Error::msg)?;
    let task = tokio::spawn(dispatcher.run(stopped));

    // Burst: throughput.
    let start = Instant::now();
    record(&store, &wake, "burst", args.events, None).await?;
    let ok = wait_delivered(&seen, "msg_burst_", args.events, Duration::from_secs(600)).await;
    let took = start.elapsed();
    report::figure("burst: throughput", args.events as f64 / took.as_secs_f64(), ideal_rps, "msg/s");
    failures += u64::from(!ok);

    // Steady: latency.
    seen.lock().unwrap_or_else(|e| e.into_inner()).latency.clear();
    let inserts = record(&store, &wake, "steady", args.events, Some(args.rate)).await?;
    let ok = wait_delivered(&seen, "msg_steady_", args.events, Duration::from_secs(120)).await;
    failures += u64::from(!ok);
    let mut lat = std::mem::take(&mut seen.lock().unwrap_or_else(|e| e.into_inner()).latency);
    lat.sort();
    let p = |l: &[Duration], q| ms(percentile(l, q));
    report::figure("steady: record → 2xx p50", p(&lat, 50.0), p(&ideal_lat, 50.0), "ms");
    report::figure("steady: record → 2xx p99", p(&lat, 99.0), p(&ideal_lat, 99.0), "ms");
    report::info(
        "steady: recording (1 tx + fsync) p50 / p99",
        format!("{:.2} / {:.2} ms", p(&inserts, 50.0), p(&inserts, 99.0)),
    );
    let _ = stop.send(true);
    let _ = task.await;

    let (dup, lost) = {
        let s = seen.lock().unwrap_or_else(|e| e.into_inner());
        let dup = s.count.iter().filter(|(k, v)| k.starts_with("msg_") && **v > 1).count() as u64;
        let lost = (0..args.events)
            .flat_map(|n| [format!("msg_burst_{n}"), format!("msg_steady_{n}")])
            .filter(|k| !s.count.contains_key(k))
            .count() as u64;
        (dup, lost)
    };
    report::count("messages lost", lost, 0);
    report::count("messages delivered twice", dup, 0);
    failures += lost + dup;

    // A dead receiver (connection refused) with the default retry schedule: what it costs the
    // writers.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("http://{}/hook", l.local_addr()?)
    };
    let (stop, stopped) = watch::channel(false);
    let mut dead_config = config(&dead, args.concurrency)?;
    (dead_config.retry_min, dead_config.retry_max) = (Duration::from_secs(5), Duration::from_secs(3600));
    let dispatcher = Dispatcher::new(Arc::new(store.clone()), dead_config, wake.clone()).map_err(anyhow::Error::msg)?;
    let task = tokio::spawn(dispatcher.run(stopped));
    let slow = record(&store, &wake, "dead", args.events, Some(args.rate)).await?;
    report::figure("dead receiver: recording p99", p(&slow, 99.0), p(&inserts, 99.0), "ms");
    let (pending, _) = store.outbox_depth().await?;
    report::info("dead receiver: messages kept pending", pending);
    let _ = stop.send(true);
    let _ = task.await;
    Ok(failures)
}
