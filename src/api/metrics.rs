//! Prometheus metrics: a small registry the API records requests in and the engine side (the
//! drivers) can bump reconcile and provider-call counters in; rendered by `GET /metrics`.
//!
//! Owns: metric names, labels and the text encoding. Must not touch: request handling. Label
//! values are bounded (route templates, status codes, PascalCase reasons), never user ids.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabels {
    provider: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
    operation: String,
    outcome: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new([0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0])
}

/// The process's metrics. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    reconciles: Family<ReconcileLabels, Counter>,
    provider_calls: Family<ProviderLabels, Counter>,
    sync_waits: Family<OutcomeLabels, Counter>,
    notifications: Family<NotificationLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("calsync");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram);
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let provider_calls = Family::<ProviderLabels, Counter>::default();
        let sync_waits = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served, by route template, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template",
            request_seconds.clone(),
        );
        registry.register("reconciles", "Reconciles run, by kind and outcome", reconciles.clone());
        registry.register(
            "provider_calls",
            "Calendar provider calls, by provider, operation and outcome (ok or a PascalCase error reason)",
            provider_calls.clone(),
        );
        registry.register(
            "api_sync_waits",
            "Bounded waits of the REST API for the engine: synced, failed, or pending (answered 202)",
            sync_waits.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "push_notifications",
            "Provider notifications received, by provider and outcome (accepted, sync, unknown_watch, forged, malformed)",
            notifications.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            requests,
            request_seconds,
            reconciles,
            provider_calls,
            sync_waits,
            notifications,
        }
    }

    /// One served request. `route` is the route template (`/api/calendar/sync-history/{user_id}`),
    /// never the concrete path, so user ids never become label values.
    pub fn record_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let labels = RequestLabels { route: route.into(), method: method.into(), status: status.to_string() };
        self.requests.get_or_create(&labels).inc();
        self.request_seconds.get_or_create(&RouteLabels { route: route.into() }).observe(elapsed.as_secs_f64());
    }

    /// One reconcile finished: `kind` is `TaskSync` or `CalendarConnection`, `outcome` e.g.
    /// `done`, `requeue`, `error`.
    pub fn record_reconcile(&self, kind: &str, outcome: &str) {
        self.reconciles.get_or_create(&ReconcileLabels { kind: kind.into(), outcome: outcome.into() }).inc();
    }

    /// One provider call: `outcome` is `ok` or the error's PascalCase reason.
    pub fn record_provider_call(&self, provider: &str, operation: &str, outcome: &str) {
        let labels = ProviderLabels { provider: provider.into(), operation: operation.into(), outcome: outcome.into() };
        self.provider_calls.get_or_create(&labels).inc();
    }

    /// How one bounded wait for the engine ended: `synced`, `failed` or `pending`.
    pub fn record_sync_wait(&self, outcome: &str) {
        self.sync_waits.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }

    /// One provider notification: `provider` is `google` or `outlook`.
    pub fn record_notification(&self, provider: &str, outcome: &str) {
        self.notifications
            .get_or_create(&NotificationLabels { provider: provider.into(), outcome: outcome.into() })
            .inc();
    }

    /// The OpenMetrics text exposition, with the engine's live-sync counters of this process.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        let mut live = crate::engine::live::stats().render(true);
        live.push_str(&super::app_webhooks::stats().render(true));
        match out.rfind("# EOF") {
            Some(at) => out.insert_str(at, &live),
            None => out.push_str(&live),
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters() {
        let m = Metrics::new();
        m.record_request("/healthz", "GET", 200, Duration::from_millis(3));
        m.record_reconcile("TaskSync", "done");
        m.record_provider_call("apple", "create", "ok");
        m.record_sync_wait("pending");
        let text = m.render().unwrap();
        assert!(
            text.contains("calsync_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(text.contains("calsync_reconciles_total"), "{text}");
        assert!(text.contains("calsync_provider_calls_total"), "{text}");
        assert!(text.contains("calsync_api_sync_waits_total{outcome=\"pending\"} 1"), "{text}");
    }
}
