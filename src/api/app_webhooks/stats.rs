//! Process-wide counters of app webhook delivery and their Prometheus text, rendered by both
//! binaries' `/metrics` (like `engine::live::stats`).
//!
//! Owns: metric names, labels and buckets. Must not touch: when they are bumped. No label ever
//! carries a URL, a user id or a webhook-id.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms.
const BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0, 3600.0];

/// A fixed-bucket histogram on atomics (cumulative counts are computed when rendering).
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS.iter().position(|b| s <= *b).unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        let mut total = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            total += self.counts[i].load(Ordering::Relaxed);
            out.push_str(&format!("{name}_bucket{{le=\"{b}\"}} {total}\n"));
        }
        total += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {total}\n"));
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        out.push_str(&format!("{name}_sum {sum}\n{name}_count {total}\n"));
    }
}

/// The process's webhook delivery metrics.
#[derive(Default)]
pub struct WebhookStats {
    /// Attempts (HTTP requests made, whatever came of them).
    pub attempts: AtomicU64,
    /// Messages acknowledged with 2xx.
    pub delivered: AtomicU64,
    /// Failed attempts that will be retried.
    pub retried: AtomicU64,
    /// Messages given up on (retried for the whole give-up period).
    pub dead_lettered: AtomicU64,
    /// Attempts answered 410 (the endpoint is disabled after the first).
    pub gone: AtomicU64,
    /// Messages not recorded because the outbox was full.
    pub dropped: AtomicU64,
    /// 1 while the receiver has disabled the endpoint with 410.
    pub endpoint_disabled: AtomicU64,
    /// Messages waiting (last count of the outbox).
    pub pending: AtomicU64,
    /// Age of the oldest waiting message, in ms (0 when none).
    pub oldest_pending_ms: AtomicU64,
    /// One attempt's round trip.
    pub attempt_seconds: Histogram,
    /// From the change being recorded to the receiver's 2xx.
    pub delivery_seconds: Histogram,
}

static STATS: OnceLock<WebhookStats> = OnceLock::new();

/// The process's webhook counters.
pub fn stats() -> &'static WebhookStats {
    STATS.get_or_init(WebhookStats::default)
}

impl WebhookStats {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Text exposition: OpenMetrics family names (`openmetrics`, as the REST API's registry
    /// writes them) or Prometheus 0.0.4 (the controller's).
    pub fn render(&self, openmetrics: bool) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let family = |name: &str| if openmetrics { format!("calsync_{name}") } else { format!("calsync_{name}_total") };
        let f = family("app_webhook_deliveries");
        out.push_str(&format!("# HELP {f} App webhook messages by result: delivered (2xx), retry (a failed attempt to be retried), dead (given up), gone (410, endpoint disabled).\n# TYPE {f} counter\n"));
        for (result, v) in [
            ("delivered", g(&self.delivered)),
            ("retry", g(&self.retried)),
            ("dead", g(&self.dead_lettered)),
            ("gone", g(&self.gone)),
        ] {
            out.push_str(&format!("calsync_app_webhook_deliveries_total{{result=\"{result}\"}} {v}\n"));
        }
        for (name, help, v) in [
            ("app_webhook_attempts", "HTTP requests made to the app's webhook endpoint.", g(&self.attempts)),
            (
                "app_webhook_dead_lettered",
                "App webhook messages given up on after retrying for the whole give-up period.",
                g(&self.dead_lettered),
            ),
            (
                "app_webhook_dropped",
                "App webhook messages not recorded because the outbox was full (CALSYNC_APP_WEBHOOK_MAX_PENDING).",
                g(&self.dropped),
            ),
        ] {
            let f = family(name);
            out.push_str(&format!("# HELP {f} {help}\n# TYPE {f} counter\ncalsync_{name}_total {v}\n"));
        }
        for (name, help, v) in [
            ("app_webhook_pending", "App webhook messages waiting for delivery.", g(&self.pending) as f64),
            (
                "app_webhook_oldest_pending_seconds",
                "Age of the oldest app webhook message waiting for delivery.",
                g(&self.oldest_pending_ms) as f64 / 1000.0,
            ),
            (
                "app_webhook_endpoint_disabled",
                "1 when the receiver disabled the endpoint by answering 410.",
                g(&self.endpoint_disabled) as f64,
            ),
        ] {
            out.push_str(&format!("# HELP calsync_{name} {help}\n# TYPE calsync_{name} gauge\ncalsync_{name} {v}\n"));
        }
        self.attempt_seconds.render(
            &mut out,
            "calsync_app_webhook_attempt_duration_seconds",
            "Round trip of one attempt to the app's webhook endpoint.",
        );
        self.delivery_seconds.render(
            &mut out,
            "calsync_app_webhook_delivery_latency_seconds",
            "From a change being recorded to the receiver acknowledging its message.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(7200));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.05\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"3600\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n") && out.contains("x_count 3\n"), "{out}");
    }
}
