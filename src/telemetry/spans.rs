//! The spans calsync exports and how their trace context travels: W3C `traceparent` in on REST
//! requests, out on provider and webhook requests, and through the TaskSync annotation
//! [`TRACEPARENT_ANNOTATION`] from the REST request that changed it to the reconcile it causes.
//!
//! Owns: span names and attributes. Must not touch: anything that may hold a secret or user
//! data: no query strings, bodies, Authorization or other headers become attributes. Every
//! helper returns a disabled span and does nothing else when traces are off.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use reqwest::header::HeaderValue;
use tracing::field::Empty;
use tracing::{Instrument as _, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::traces_on;

/// The trace context of the REST request that last declared or changed a TaskSync.
pub const TRACEPARENT_ANNOTATION: &str = "calendar.getitdone.app/traceparent";

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// The context a `traceparent` (and `tracestate`) value names; empty when absent or malformed.
pub fn context_from(traceparent: Option<&str>, tracestate: Option<&str>) -> Context {
    let mut carrier = HashMap::new();
    if let Some(tp) = traceparent {
        carrier.insert(TRACEPARENT.to_string(), tp.to_string());
    }
    if let Some(ts) = tracestate {
        carrier.insert(TRACESTATE.to_string(), ts.to_string());
    }
    TraceContextPropagator::new().extract(&carrier)
}

/// The `traceparent` value of a context, if it holds a valid span.
pub fn traceparent_of(cx: &Context) -> Option<String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Record the current span's context on a TaskSync about to be written by a REST request, so
/// the reconcile it causes joins the request's trace. Leaves `annotations` alone when off.
pub fn stamp(annotations: &mut Option<BTreeMap<String, String>>) {
    if !traces_on() {
        return;
    }
    let map = annotations.get_or_insert_with(BTreeMap::new);
    match traceparent_of(&Span::current().context()) {
        Some(tp) => map.insert(TRACEPARENT_ANNOTATION.to_string(), tp),
        // An older request's trace is not this change's.
        None => map.remove(TRACEPARENT_ANNOTATION),
    };
}

/// axum middleware: one server span per REST request, named by route template and method,
/// child of the caller's `traceparent` when it sends one.
pub async fn server_span(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let method = request.method().as_str().to_string();
    let name = match &route {
        Some(r) => format!("{method} {r}"),
        None => method.clone(),
    };
    let span = tracing::info_span!(
        "http.server",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = Empty,
        "http.request.method" = %method,
        "http.route" = route.as_deref().unwrap_or("unmatched"),
        "http.response.status_code" = Empty,
    );
    // In a block: the body is not Sync, so no borrow of the request may live across the await.
    {
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        let _ = span.set_parent(context_from(header(TRACEPARENT), header(TRACESTATE)));
    }
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", i64::from(status));
    // A 4xx is the caller's mistake, not the server's (OpenTelemetry HTTP conventions).
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
    response
}

/// The span of one reconcile of `object` (`tasksync/ns/name`). A TaskSync whose annotation
/// names a request trace: child of that request while the change it made is not yet observed
/// (`pending`), otherwise a root span linked to it (a resync is not part of the request).
pub fn reconcile_span(
    kind: &'static str,
    object: &dyn std::fmt::Display,
    traceparent: Option<&str>,
    pending: bool,
) -> Span {
    if !traces_on() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "reconcile",
        otel.name = %format!("reconcile {kind}"),
        otel.kind = "internal",
        otel.status_code = Empty,
        "calsync.kind" = kind,
        "calsync.object" = %object,
        "calsync.outcome" = Empty,
    );
    let from = context_from(traceparent, None);
    let parent = if pending && from.has_active_span() {
        from
    } else {
        if from.has_active_span() {
            span.add_link(from.span().span_context().clone());
        }
        Context::new()
    };
    let _ = span.set_parent(parent);
    span
}

/// Record how a reconcile ended on its span.
pub fn reconcile_outcome<E: std::fmt::Display>(span: &Span, result: &Result<crate::engine::Outcome, E>) {
    if span.is_disabled() {
        return;
    }
    match result {
        Ok(crate::engine::Outcome::Done) => span.record("calsync.outcome", "done"),
        Ok(crate::engine::Outcome::Requeue(_)) => span.record("calsync.outcome", "requeue"),
        Ok(crate::engine::Outcome::Held(_)) => span.record("calsync.outcome", "held"),
        Err(_) => span.record("calsync.outcome", "error").record("otel.status_code", "error"),
    };
}

/// One outgoing HTTP request (a provider call or a webhook delivery): a client span with the
/// method, host and status, and the `traceparent` to send along.
pub struct ClientCall {
    span: Span,
}

impl ClientCall {
    /// `peer` names the service ("caldav", "google", "graph", "webhook").
    pub fn start(peer: &'static str, method: &reqwest::Method, url: &reqwest::Url) -> Self {
        if !traces_on() {
            return ClientCall { span: Span::none() };
        }
        let span = tracing::info_span!(
            "http.client",
            otel.name = %method,
            otel.kind = "client",
            otel.status_code = Empty,
            "http.request.method" = %method,
            "server.address" = url.host_str().unwrap_or(""),
            "server.port" = i64::from(url.port_or_known_default().unwrap_or(0)),
            "calsync.peer" = peer,
            "http.response.status_code" = Empty,
            "error.type" = Empty,
        );
        ClientCall { span }
    }

    pub fn span(&self) -> &Span {
        &self.span
    }

    /// The `traceparent` header value for the request; `None` when off.
    pub fn traceparent(&self) -> Option<HeaderValue> {
        if self.span.is_disabled() {
            return None;
        }
        traceparent_of(&self.span.context()).and_then(|tp| HeaderValue::from_str(&tp).ok())
    }

    /// The answer's status (errors from 400 up, as the HTTP client conventions say). Numbers are
    /// recorded as i64: tracing-opentelemetry exports unsigned ones as text.
    pub fn status(&self, status: u16) {
        if self.span.is_disabled() {
            return;
        }
        self.span.record("http.response.status_code", i64::from(status));
        if status >= 400 {
            self.span.record("otel.status_code", "error").record("error.type", status.to_string());
        }
    }

    /// No answer: `kind` is a class ("timeout", "connect", "transport"), never reqwest's text.
    pub fn failed(&self, e: &reqwest::Error) {
        if self.span.is_disabled() {
            return;
        }
        let kind = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect"
        } else {
            "transport"
        };
        self.span.record("otel.status_code", "error").record("error.type", kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn the_annotation_round_trips() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t")));
        tracing::subscriber::with_default(subscriber, || {
            let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let request = tracing::info_span!("request");
            request.set_parent(context_from(Some(incoming), None)).unwrap();
            // What `stamp` writes: the request span's own context, same trace.
            let written = request.in_scope(|| traceparent_of(&Span::current().context())).unwrap();
            assert!(written.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{written}");
            assert_ne!(written, incoming, "the annotation names the request span, not its caller");
            // What the reconcile reads back.
            let read = context_from(Some(&written), None);
            let (w, r) = (request.context().span().span_context().clone(), read.span().span_context().clone());
            assert_eq!((r.trace_id(), r.span_id(), r.is_sampled()), (w.trace_id(), w.span_id(), true));
            assert!(r.is_remote());
        });
        assert!(!context_from(Some("not-a-traceparent"), None).has_active_span());
        assert!(!context_from(None, None).has_active_span());
        assert_eq!(traceparent_of(&Context::new()), None);
    }

    #[test]
    fn helpers_do_nothing_when_traces_are_off() {
        assert!(!traces_on());
        let mut annotations = None;
        stamp(&mut annotations);
        assert_eq!(annotations, None);
        assert!(reconcile_span("tasksync", &"ns/x", None, true).is_disabled());
        let url = reqwest::Url::parse("https://dav.example/cal/?token=x").unwrap();
        let call = ClientCall::start("caldav", &reqwest::Method::PUT, &url);
        assert!(call.span().is_disabled() && call.traceparent().is_none());
    }
}
