//! Controller metrics in the Prometheus text format, and the small HTTP server for `/healthz`,
//! `/readyz` and `/metrics`.
//!
//! Owns: the counters and their rendering. Must not touch: reconciles (they report here through
//! `Metrics` methods). Hand-written rather than a registry crate: a handful of families, and the
//! text format is stable and simple.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// Upper bounds (seconds) of the reconcile duration histogram.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Families {
    /// (kind, result) → count.
    reconciles: BTreeMap<(String, String), u64>,
    /// (kind, reason) → count.
    errors: BTreeMap<(String, String), u64>,
    durations: BTreeMap<String, Histogram>,
    /// (provider, operation, outcome) → count.
    provider_calls: BTreeMap<(String, String, String), u64>,
}

/// Process-wide controller metrics.
#[derive(Default)]
pub struct Metrics {
    families: Mutex<Families>,
    in_flight: AtomicI64,
    leader: AtomicBool,
    ready: AtomicBool,
    /// (held by this replica, configured).
    shards: Mutex<(usize, u32)>,
}

/// Measures one reconcile; records when `finish` is called (or as an error when dropped early,
/// e.g. the reconcile future was cancelled at shutdown).
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    kind: &'static str,
    started: Instant,
    done: bool,
}

impl ReconcileTimer<'_> {
    pub fn finish(mut self, result: Result<(), &str>) {
        self.done = true;
        self.metrics.record(self.kind, self.started.elapsed(), result);
    }
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.metrics.record(self.kind, self.started.elapsed(), Err("Cancelled"));
        }
    }
}

fn lock(m: &Mutex<Families>) -> std::sync::MutexGuard<'_, Families> {
    // Counters stay meaningful even if a panic interrupted an update.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    pub fn start(&self, kind: &'static str) -> ReconcileTimer<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        ReconcileTimer { metrics: self, kind, started: Instant::now(), done: false }
    }

    fn record(&self, kind: &str, took: Duration, result: Result<(), &str>) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let mut f = lock(&self.families);
        let outcome = if result.is_ok() { "success" } else { "error" };
        *f.reconciles.entry((kind.into(), outcome.into())).or_default() += 1;
        if let Err(reason) = result {
            *f.errors.entry((kind.into(), reason.into())).or_default() += 1;
        }
        let h = f.durations.entry(kind.into()).or_default();
        let secs = took.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// A reconcile error counted outside a timed reconcile (error_policy).
    pub fn error(&self, kind: &str, reason: &str) {
        *lock(&self.families).errors.entry((kind.into(), reason.into())).or_default() += 1;
    }

    pub fn provider_call(&self, provider: &str, operation: &str, outcome: &str) {
        *lock(&self.families).provider_calls.entry((provider.into(), operation.into(), outcome.into())).or_default() +=
            1;
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    /// Shards this replica holds now, of `count`.
    pub fn set_shards(&self, held: usize, count: u32) {
        *self.shards.lock().unwrap_or_else(|e| e.into_inner()) = (held, count);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let f = lock(&self.families);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP calsync_reconciles_total Reconciles finished, by kind and result.");
        let _ = writeln!(out, "# TYPE calsync_reconciles_total counter");
        for ((kind, result), n) in &f.reconciles {
            let _ = writeln!(
                out,
                "calsync_reconciles_total{{kind=\"{}\",result=\"{}\"}} {n}",
                escape(kind),
                escape(result)
            );
        }
        let _ = writeln!(out, "# HELP calsync_reconcile_errors_total Reconcile errors, by kind and PascalCase reason.");
        let _ = writeln!(out, "# TYPE calsync_reconcile_errors_total counter");
        for ((kind, reason), n) in &f.errors {
            let _ = writeln!(
                out,
                "calsync_reconcile_errors_total{{kind=\"{}\",reason=\"{}\"}} {n}",
                escape(kind),
                escape(reason)
            );
        }
        let _ = writeln!(out, "# HELP calsync_reconcile_duration_seconds Time one reconcile took.");
        let _ = writeln!(out, "# TYPE calsync_reconcile_duration_seconds histogram");
        for (kind, h) in &f.durations {
            let k = escape(kind);
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "calsync_reconcile_duration_seconds_bucket{{kind=\"{k}\",le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(out, "calsync_reconcile_duration_seconds_bucket{{kind=\"{k}\",le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "calsync_reconcile_duration_seconds_sum{{kind=\"{k}\"}} {}", h.sum);
            let _ = writeln!(out, "calsync_reconcile_duration_seconds_count{{kind=\"{k}\"}} {}", h.count);
        }
        let _ = writeln!(
            out,
            "# HELP calsync_provider_calls_total Calendar provider calls, by provider, operation and outcome."
        );
        let _ = writeln!(out, "# TYPE calsync_provider_calls_total counter");
        for ((p, op, outcome), n) in &f.provider_calls {
            let _ = writeln!(
                out,
                "calsync_provider_calls_total{{provider=\"{}\",operation=\"{}\",outcome=\"{}\"}} {n}",
                escape(p),
                escape(op),
                escape(outcome)
            );
        }
        let _ = writeln!(
            out,
            "# HELP calsync_reconciles_in_flight Reconciles running now (kube-runtime does not expose its queue)."
        );
        let _ = writeln!(out, "# TYPE calsync_reconciles_in_flight gauge");
        let _ = writeln!(out, "calsync_reconciles_in_flight {}", self.in_flight.load(Ordering::Relaxed));
        let (held, count) = *self.shards.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            out,
            "# HELP calsync_shards_held Shards whose Lease this replica holds (it reconciles their objects)."
        );
        let _ = writeln!(out, "# TYPE calsync_shards_held gauge");
        let _ = writeln!(out, "calsync_shards_held {held}");
        let _ = writeln!(out, "# HELP calsync_shards Shards configured (CALSYNC_SHARDS).");
        let _ = writeln!(out, "# TYPE calsync_shards gauge");
        let _ = writeln!(out, "calsync_shards {count}");
        let _ = writeln!(
            out,
            "# HELP calsync_leader 1 when this replica holds shard 0's lease (with one shard: the lease); it also sends app webhooks."
        );
        let _ = writeln!(out, "# TYPE calsync_leader gauge");
        let _ = writeln!(out, "calsync_leader {}", u8::from(self.leader.load(Ordering::Relaxed)));
        let _ = writeln!(out, "# HELP calsync_ready 1 once the watch caches are synced.");
        let _ = writeln!(out, "# TYPE calsync_ready gauge");
        let _ = writeln!(out, "calsync_ready {}", u8::from(self.is_ready()));
        out.push_str(&crate::engine::live::stats().render(false));
        out.push_str(&crate::api::app_webhooks::stats().render(false));
        out
    }
}

/// `/healthz` (process up), `/readyz` (caches synced), `/metrics`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(m): State<Arc<Metrics>>| async move {
                if m.is_ready() {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "watch caches not synced yet")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], m.render()).into_response()
            }),
        )
        .with_state(metrics)
}

/// Serve the router on a bound listener until `shutdown` resolves. Binding is the caller's
/// step so a taken port fails start-up at once instead of at shutdown.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, router(metrics)).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.start("tasksync").finish(Ok(()));
        m.start("tasksync").finish(Err("StoreUnavailable"));
        m.provider_call("google", "create", "ok");
        m.set_leader(true);
        m.set_shards(4, 12);
        let text = m.render();
        assert!(text.contains("calsync_reconciles_total{kind=\"tasksync\",result=\"success\"} 1"), "{text}");
        assert!(text.contains("calsync_reconcile_errors_total{kind=\"tasksync\",reason=\"StoreUnavailable\"} 1"));
        assert!(text.contains("calsync_reconcile_duration_seconds_count{kind=\"tasksync\"} 2"));
        assert!(
            text.contains("calsync_provider_calls_total{provider=\"google\",operation=\"create\",outcome=\"ok\"} 1")
        );
        assert!(text.contains("calsync_leader 1"));
        assert!(text.contains("calsync_shards_held 4\n"), "{text}");
        assert!(text.contains("calsync_shards 12\n"), "{text}");
        assert!(text.contains("calsync_reconciles_in_flight 0"));
    }
}

#[cfg(test)]
mod http_tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let resp = router.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn readyz_follows_cache_sync_and_metrics_render() {
        let m = Arc::new(Metrics::default());
        assert_eq!(get(router(m.clone()), "/healthz").await.0, StatusCode::OK);
        assert_eq!(get(router(m.clone()), "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        m.set_ready(true);
        assert_eq!(get(router(m.clone()), "/readyz").await.0, StatusCode::OK);
        let (status, body) = get(router(m), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("calsync_ready 1"), "{body}");
    }
}

impl crate::providers::gate::CallCounter for Metrics {
    fn provider_call(&self, provider: &str, operation: &str, outcome: &str) {
        Metrics::provider_call(self, provider, operation, outcome);
    }
}
