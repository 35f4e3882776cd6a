//! An OTLP/HTTP trace receiver for tests (POST /v1/traces, protobuf decoded with the official
//! OpenTelemetry types), and helpers to read the spans it got. Self-contained: include it with
//! `#[path]`.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value as AnyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

/// A span with its resource's attributes (`service.name`, ...).
pub type Exported = (Vec<KeyValue>, Span);

/// Every span received.
#[derive(Clone, Default)]
pub struct Received(Arc<Mutex<Vec<Exported>>>);

impl Received {
    pub fn spans(&self) -> Vec<Exported> {
        self.0.lock().unwrap().clone()
    }

    /// Wait until the trace `trace_id` holds a span of each name; returns every span received.
    pub async fn wait_for(&self, trace_id: &str, names: &[&str], secs: u64) -> Vec<Exported> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let all = self.spans();
            let has = |name: &&str| all.iter().any(|(_, s)| hex(&s.trace_id) == trace_id && s.name == *name);
            if names.iter().all(has) {
                return all;
            }
            let got: Vec<(String, String)> = all.iter().map(|(_, s)| (hex(&s.trace_id), s.name.clone())).collect();
            assert!(Instant::now() < deadline, "the trace never held all of {names:?}; got {got:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn export(State(received): State<Received>, headers: HeaderMap, body: Bytes) -> (StatusCode, Vec<u8>) {
    assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/x-protobuf"));
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export request");
    let mut all = received.0.lock().unwrap();
    for rs in request.resource_spans {
        let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
        for ss in rs.scope_spans {
            all.extend(ss.spans.into_iter().map(|s| (resource.clone(), s)));
        }
    }
    // An empty ExportTraceServiceResponse: everything accepted.
    (StatusCode::OK, Vec::new())
}

/// Start a receiver on loopback; returns its base URL (for OTEL_EXPORTER_OTLP_ENDPOINT).
pub async fn receiver() -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new().route("/v1/traces", axum::routing::post(export)).with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

pub fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

pub fn attr_str<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attr(span, key) {
        Some(AnyValue::StringValue(s)) => Some(s),
        _ => None,
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans of one trace.
pub fn in_trace<'a>(spans: &'a [Exported], trace_id: &str) -> Vec<&'a Span> {
    spans.iter().map(|(_, s)| s).filter(|s| hex(&s.trace_id) == trace_id).collect()
}

/// The one span named `name` among `spans` (fails on none or several).
pub fn one<'a>(spans: &[&'a Span], name: &str) -> &'a Span {
    let found: Vec<&&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one `{name}` span in the trace: {spans:#?}");
    found[0]
}

/// Whether `child` descends from `ancestor` through `spans` (one trace).
pub fn descends(spans: &[&Span], child: &Span, ancestor: &Span) -> bool {
    let mut at = child;
    for _ in 0..32 {
        if at.parent_span_id == ancestor.span_id {
            return true;
        }
        match spans.iter().find(|s| s.span_id == at.parent_span_id) {
            Some(parent) => at = parent,
            None => return false,
        }
    }
    false
}
