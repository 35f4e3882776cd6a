//! Logging and tracing set-up: `tracing` with `RUST_LOG` filtering (text for people, JSON for
//! production), and OpenTelemetry traces over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
//!
//! Owns: the global subscriber, the tracer provider and the span helpers in `spans`. Must not
//! touch: what is logged (each module decides, and never logs secrets). With no endpoint the
//! subscriber is exactly the logging one and no span of `spans` is created (zero cost).

pub mod config;
pub mod spans;

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use config::{OtelConfig, TelemetryError};

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

static TRACES_ON: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported; the span helpers do nothing when not.
pub fn traces_on() -> bool {
    TRACES_ON.load(Ordering::Relaxed)
}

/// Keeps the tracer provider; dropping it exports what is still queued. Drop it outside any
/// async runtime (the exporter's HTTP client is a blocking one).
#[must_use = "dropping it stops trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "could not export the last spans");
        }
    }
}

/// Install the global subscriber for logs only. `RUST_LOG` overrides the default level (`info`).
pub fn init(format: LogFormat) {
    init_logs(format);
}

/// Install the global subscriber, with trace export when `lookup` (the `OTEL_*` variables)
/// names an endpoint. A rustls crypto provider must be installed first (an https collector
/// needs it).
pub fn init_with_traces(
    format: LogFormat,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Telemetry, TelemetryError> {
    let Some(otel) = OtelConfig::from_lookup(lookup)? else {
        init_logs(format);
        return Ok(Telemetry { provider: None });
    };
    let provider = provider(otel)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    // Only calsync's own spans, and its info-and-above log lines as span events (RUST_LOG does
    // not decide which): libraries' spans (kube-runtime's, hyper's) would add noise, and debug
    // lines may name whole URLs, queries included.
    let ours = tracing_subscriber::filter::Targets::new().with_target("calsync", tracing::Level::INFO);
    let traces = tracing_opentelemetry::layer().with_tracer(provider.tracer("calsync")).with_filter(ours);
    // A second init (tests, embedding) keeps the first subscriber.
    if tracing_subscriber::registry().with(logs).with(traces).try_init().is_ok() {
        TRACES_ON.store(true, Ordering::Relaxed);
    }
    Ok(Telemetry { provider: Some(provider) })
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
}

fn provider(otel: OtelConfig) -> Result<SdkTracerProvider, TelemetryError> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(otel.traces_url)
        .with_headers(otel.headers);
    if let Some(t) = otel.timeout {
        exporter = exporter.with_timeout(t);
    }
    // Not the builder's text: it may quote the endpoint, which can carry credentials.
    let exporter = exporter.build().map_err(|_| TelemetryError {
        variable: "OTEL_EXPORTER_OTLP_ENDPOINT",
        reason: "the OTLP/HTTP exporter could not be set up for this endpoint".into(),
    })?;
    let mut resource = Resource::builder();
    if !otel.service_named {
        resource = resource.with_service_name("calsync");
    }
    // The batch processor reads OTEL_BSP_* itself (checked in `config`) and exports from a
    // thread of its own, so the blocking HTTP client never runs on a tokio worker.
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(otel.sampler)
        .with_resource(resource.build())
        .build())
}
