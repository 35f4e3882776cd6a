//! Scenario 5 (REST): throughput and p50/p99 latency of `connection-status` and
//! `task-to-calendar` on a spawned `calsync-bench node`, loaded from this process over loopback
//! by a tokio + reqwest load generator. The ideal is `/healthz` measured the same way (what the
//! HTTP stack and this load generator cost on this machine); `task-to-calendar` also waits for
//! the engine's one provider call, so its ideal latency adds the provider latency.
//!
//! Owns: this scenario. Must not touch: API or engine code.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fixture;
use crate::procs::{Node, NodeEnv, ProviderServer};
use crate::provider::Profile;
use crate::report::{self, percentile};
use calsync::credentials::envelope::Key;

#[derive(Clone, Debug, clap::Args)]
pub struct RestArgs {
    /// Users (each with its own connection).
    #[arg(long, default_value_t = 50)]
    pub users: usize,
    /// Requests in flight from the load generator.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds of load per endpoint.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Latency of the bench provider behind task-to-calendar.
    #[arg(long, default_value_t = 20)]
    pub provider_latency_ms: u64,
    /// Work-queue concurrency of the node.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Directory for the database and logs (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Latencies and errors of one load run.
struct Load {
    lat: Vec<Duration>,
    errors: u64,
    elapsed: Duration,
}

impl Load {
    fn rps(&self) -> f64 {
        self.lat.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Run `clients` loops of `request(n)` for `seconds`; `request` returns whether it succeeded.
async fn load<F, Fut>(clients: usize, seconds: u64, request: F) -> Load
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (request, counter) = (request.clone(), counter.clone());
        set.spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < until {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                if request(n).await {
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        });
    }
    let mut out = Load { lat: Vec::new(), errors: 0, elapsed: Duration::ZERO };
    while let Some(Ok((lat, errors))) = set.join_next().await {
        out.lat.extend(lat);
        out.errors += errors;
    }
    out.elapsed = start.elapsed();
    out.lat.sort();
    out
}

fn print(name: &str, l: &Load, ideal: &Load, extra: Duration, clients: usize) {
    // With `extra` spent per request, `clients` loops cannot go faster than this.
    let bound = clients as f64 / (percentile(&ideal.lat, 50.0) + extra).as_secs_f64().max(f64::EPSILON);
    report::figure(&format!("{name}: throughput"), l.rps(), ideal.rps().min(bound), "req/s");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    report::figure(
        &format!("{name}: p50"),
        ms(percentile(&l.lat, 50.0)),
        ms(percentile(&ideal.lat, 50.0) + extra),
        "ms",
    );
    report::figure(
        &format!("{name}: p99"),
        ms(percentile(&l.lat, 99.0)),
        ms(percentile(&ideal.lat, 99.0) + extra),
        "ms",
    );
    report::count(&format!("{name}: failed requests"), l.errors, 0);
}

pub async fn run(args: &RestArgs) -> anyhow::Result<u64> {
    report::heading(
        "scenario 5: REST under load (separate process, loopback)",
        &format!(
            "{} users, {} requests in flight, {} s per endpoint, provider latency {} ms, node concurrency {}",
            args.users, args.clients, args.seconds, args.provider_latency_ms, args.concurrency
        ),
    );
    let dir = fixture::workdir(args.dir.as_deref())?;
    let profile =
        Profile { latency_ms: args.provider_latency_ms, quota_rps: 0, quota_concurrency: 0, ..Profile::default() };
    let server = ProviderServer::start(&profile)?;
    let env = NodeEnv {
        dir: dir.path().to_path_buf(),
        encryption_key: Key::generate().1,
        api_key: format!("bench-{}", uuid::Uuid::new_v4()),
        concurrency: args.concurrency,
        // The per-user limit (100/min by default) would measure the limiter, not the service.
        extra: vec![("CALSYNC_RATE_LIMIT_PER_MINUTE".into(), "100000000".into())],
    };
    let node = Node::start(&env).await?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.clients).build()?;
    let api = format!("{}/api/calendar", node.base);
    for u in 0..args.users {
        let body = json!({"user_id": format!("user-{u}"), "apple_id": "bench", "app_password": "bench", "server_url": server.base});
        let r = http
            .post(format!("{api}/apple/connect"))
            .bearer_auth(&env.api_key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        let status = r.status();
        anyhow::ensure!(status.is_success(), "apple/connect answered {status}: {}", r.text().await.unwrap_or_default());
    }

    let (h, base) = (http.clone(), node.base.clone());
    let healthz = load(args.clients, args.seconds, move |_| {
        let (h, url) = (h.clone(), format!("{base}/healthz"));
        async move { h.get(url).send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;

    let (h, a, key, users) = (http.clone(), api.clone(), env.api_key.clone(), args.users as u64);
    let status = load(args.clients, args.seconds, move |n| {
        let url = format!("{a}/connection-status/user-{}", n % users);
        let (h, key) = (h.clone(), key.clone());
        async move { h.get(url).bearer_auth(key).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;

    let (h, a, key) = (http.clone(), api.clone(), env.api_key.clone());
    let create = load(args.clients, args.seconds, move |n| {
        let body = json!({"user_id": format!("user-{}", n % users), "task_data": {
            "id": format!("load-{n}"), "name": format!("Load task {n}"),
            "scheduled_time": format!("2030-04-{:02}T10:00:00Z", 1 + n % 28)}});
        let (h, key, url) = (h.clone(), key.clone(), format!("{a}/task-to-calendar"));
        async move {
            // 200 = the event exists; a 202 "pending" counts as a failure here.
            h.post(url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;

    let c = args.clients;
    print("healthz (the ideal)", &healthz, &healthz, Duration::ZERO, c);
    print("connection-status", &status, &healthz, Duration::ZERO, c);
    print("task-to-calendar", &create, &healthz, Duration::from_millis(args.provider_latency_ms), c);
    drop(node);
    Ok(status.errors + create.errors)
}
