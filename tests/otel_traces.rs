//! Traces end to end: the built `calsync standalone` exports OTLP/HTTP protobuf to a receiver
//! in this test (decoded with the official OpenTelemetry protobuf types). A task declared over
//! REST with a caller's `traceparent` yields one trace: the REST request span, the reconcile it
//! caused, and the CalDAV PUT to Radicale (which really receives a `traceparent` header, seen
//! by a recording proxy in front of it). No span attribute holds a secret; a bad OTEL_* setting
//! stops the binary at start-up naming the variable. On Kubernetes (the strict fake API server),
//! the trace crosses processes: `calsync api` writes the request's context on the TaskSync and
//! `calsync controller`'s reconcile is its child.

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "support/kube_harness.rs"]
mod kube_harness;
#[path = "support/otlp.rs"]
mod otlp;
mod support;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use otlp::{attr, attr_str, descends, hex, in_trace, one};
use serde_json::json;
use support::calsync_bin::{self, Standalone};
use support::radicale::Radicale;

const CAL: &str = "/alice/calendar/";
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// (method, traceparent) of each request the proxy forwarded to Radicale.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    seen: Seen,
}

async fn forward(
    State(p): State<Proxy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let tp = headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string);
    p.seen.lock().unwrap().push((method.to_string(), tp));
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut req = p.http.request(method, format!("{}{}", p.upstream.trim_end_matches('/'), path)).body(body);
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    let resp = req.send().await.expect("Radicale answers");
    let mut out = axum::response::Response::builder().status(resp.status().as_u16());
    for (k, v) in resp.headers() {
        if k != "content-length" && k != "transfer-encoding" {
            out = out.header(k, v);
        }
    }
    out.body(axum::body::Body::from(resp.bytes().await.unwrap())).unwrap()
}

/// The app's webhook endpoint: answers 204 and keeps each delivery's `traceparent`.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: HeaderMap| async move {
            record.lock().unwrap().push(headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string));
            axum::http::StatusCode::NO_CONTENT
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// A recording reverse proxy in front of Radicale: the only way to see the headers calsync sends.
async fn recording_proxy(upstream: &str) -> (String, Seen) {
    let seen = Seen::default();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let state = Proxy { upstream: upstream.to_string(), http, seen: seen.clone() };
    let app = axum::Router::new().fallback(forward).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_from_the_rest_request_to_the_caldav_put() {
    let radicale = Radicale::start();
    radicale.raw().mkcalendar(CAL, "Calendar", &["VEVENT"]).await;
    let (proxy_url, seen) = recording_proxy(&radicale.url).await;
    let (otlp, received) = otlp::receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let (hooks_url, hooks_seen) = webhook_receiver().await;
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
        ("CALSYNC_APP_WEBHOOK_URL", hooks_url),
    ];
    let cs = Standalone::start_with(dir.path(), Standalone::pick_port(), &env).await;
    // Generated beside the database; it must not reach a span either.
    let hook_secret = std::fs::read_to_string(dir.path().join("calsync.db.app-webhook-secret")).unwrap();
    calsync_bin::artifacts::record_secret("app-webhook-secret", hook_secret.trim());
    let user = "otel_user";

    let connect =
        json!({"user_id": user, "apple_id": radicale.user, "app_password": radicale.password, "server_url": proxy_url});
    let (s, body) = cs.call("POST", "/apple/connect", Some(connect)).await;
    assert_eq!(s, 200, "{body}");

    let task = json!({"user_id": user, "task_data": {"id": "task_otel", "name": "Traced task",
        "scheduled_time": "2030-03-04T14:00:00", "timezone": "Europe/Berlin"}});
    let incoming = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let resp = cs
        .http
        .post(format!("{}/api/calendar/task-to-calendar?trace_me=query-value", cs.base))
        .bearer_auth(calsync_bin::API_KEY)
        .header("traceparent", &incoming)
        .json(&task)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());

    // The REST span, the TaskSync reconcile and the CalDAV PUT, all exported (batch delay 100 ms).
    let names = ["POST /api/calendar/task-to-calendar", "reconcile TaskSync", "PUT"];
    let spans = received.wait_for(CALLER_TRACE, &names, 20).await;
    let in_trace = in_trace(&spans, CALLER_TRACE);
    let one = |name: &str| one(&in_trace, name);
    let rest = one("POST /api/calendar/task-to-calendar");
    assert_eq!(hex(&rest.parent_span_id), CALLER_SPAN, "the REST span is the caller's child");
    assert_eq!(rest.kind, SpanKind::Server as i32);
    assert_eq!(attr_str(rest, "http.route"), Some("/api/calendar/task-to-calendar"));
    assert_eq!(attr_str(rest, "http.request.method"), Some("POST"));
    assert_eq!(attr(rest, "http.response.status_code"), Some(&AnyValue::IntValue(200)));

    let reconcile = one("reconcile TaskSync");
    assert!(descends(&in_trace, reconcile, rest), "the reconcile is a child of the request (annotation)");
    assert!(matches!(attr_str(reconcile, "calsync.outcome"), Some("done" | "requeue")), "{reconcile:?}");
    assert!(attr_str(reconcile, "calsync.object").is_some_and(|o| o.starts_with("tasksync/")));

    let put = one("PUT");
    assert!(descends(&in_trace, put, reconcile), "the CalDAV PUT is inside the reconcile");
    assert_eq!(put.kind, SpanKind::Client as i32);
    assert_eq!(attr_str(put, "calsync.peer"), Some("caldav"));
    assert_eq!(attr_str(put, "server.address"), Some("127.0.0.1"));
    assert!(matches!(attr(put, "http.response.status_code"), Some(AnyValue::IntValue(201 | 204))), "{put:?}");
    assert!(spans.iter().all(|(r, _)| r.iter().any(|kv| kv.key == "service.name"
        && kv.value.as_ref().and_then(|v| v.value.as_ref()) == Some(&AnyValue::StringValue("calsync".into())))));

    // One trace: every CalDAV PUT belongs to it, and no other trace holds a TaskSync reconcile
    // that is not linked to it (a later resync is its own root, linked to the request).
    for (_, s) in &spans {
        if s.name == "PUT" {
            assert_eq!(hex(&s.trace_id), CALLER_TRACE, "a PUT outside the request's trace: {s:?}");
        }
        if s.name == "reconcile TaskSync" && hex(&s.trace_id) != CALLER_TRACE {
            assert!(s.links.iter().any(|l| hex(&l.trace_id) == CALLER_TRACE), "an unlinked TaskSync reconcile: {s:?}");
        }
    }

    // Radicale received the PUT's own context as `traceparent`.
    let expected = format!("00-{CALLER_TRACE}-{}-01", hex(&put.span_id));
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().any(|(m, tp)| m == "PUT" && tp.as_deref() == Some(expected.as_str())), "{seen:?}");

    // App webhook deliveries: a client span each, its context sent as `traceparent`.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (spans, hook) = loop {
        let all = received.spans();
        let hook = all.iter().map(|(_, s)| s).find(|s| attr_str(s, "calsync.peer") == Some("webhook")).cloned();
        if let Some(h) = hook {
            break (all, h);
        }
        assert!(Instant::now() < deadline, "no webhook delivery span:\n{}", cs.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((hook.name.as_str(), hook.kind), ("POST", SpanKind::Client as i32));
    assert_eq!(attr(&hook, "http.response.status_code"), Some(&AnyValue::IntValue(204)));
    let expected = format!("00-{}-{}-01", hex(&hook.trace_id), hex(&hook.span_id));
    let hooks_seen = hooks_seen.lock().unwrap().clone();
    assert!(hooks_seen.iter().any(|tp| tp.as_deref() == Some(expected.as_str())), "{hooks_seen:?}");

    // No secret and no query string in any exported attribute; saved for the CI leak check too.
    let text = format!("{spans:?}");
    let saved = calsync_bin::artifacts::path("otlp-spans", "txt");
    std::fs::write(&saved, &text).unwrap();
    for secret in [
        &radicale.password,
        calsync_bin::API_KEY,
        calsync_bin::ENCRYPTION_KEY,
        calsync_bin::SECRET_KEY,
        hook_secret.trim(),
    ] {
        assert!(!text.contains(secret), "a secret is in the exported spans");
    }
    assert!(!text.contains("query-value") && !text.contains("Basic "), "a query or credentials in the spans");
    assert!(!text.contains("caldav request"), "debug log lines (whole URLs) are not exported as span events");
}

/// Start `calsync standalone` with `env`; it must exit non-zero at once, naming `variable`.
fn refuses(env: &[(&str, &str)], variable: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_calsync"))
        .arg("standalone")
        .env("DATABASE_URL", Standalone::database_url(dir.path()))
        .env("CALSYNC_LISTEN", "127.0.0.1:0")
        .env("ENCRYPTION_KEY", calsync_bin::ENCRYPTION_KEY)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("calsync kept running with {env:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned();
    assert!(!status.success(), "{env:?} was accepted");
    assert!(stderr.contains(variable), "the error does not name {variable}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn bad_otel_settings_stop_the_binary_naming_the_variable() {
    refuses(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")], "OTEL_EXPORTER_OTLP_ENDPOINT");
    let ok = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
    refuses(&[ok, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")], "OTEL_EXPORTER_OTLP_PROTOCOL");
    refuses(
        &[ok, ("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "half")],
        "OTEL_TRACES_SAMPLER_ARG",
    );
    let secret = "hdr-secret-value-123";
    calsync_bin::artifacts::record_secret("otlp-header", secret);
    let stderr =
        refuses(&[ok, ("OTEL_EXPORTER_OTLP_HEADERS", &format!("x-key={secret},oops"))], "OTEL_EXPORTER_OTLP_HEADERS");
    assert!(!stderr.contains(secret), "the header value is in the error");
}

/// A spawned `calsync` process, killed when dropped; its output goes to the artifacts directory.
struct Process(std::process::Child, std::path::PathBuf);

impl Process {
    fn spawn(args: &[&str], env: &[(&str, String)]) -> Process {
        let log = calsync_bin::artifacts::path("calsync-otel-kube", "log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_calsync"))
            .args(args)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("CALSYNC_NAMESPACE")
            .env_remove("CALSYNC_LISTEN")
            .env("ENCRYPTION_KEY", kube_harness::TEST_ENCRYPTION_KEY)
            .env("CALSYNC_CALDAV_ALLOWED_HOSTS", "127.0.0.1")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Process(child, log)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn service_of(spans: &[otlp::Exported], span: &opentelemetry_proto::tonic::trace::v1::Span) -> Option<String> {
    let (resource, _) = spans.iter().find(|(_, s)| s.span_id == span.span_id)?;
    resource.iter().find(|kv| kv.key == "service.name").and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn on_kubernetes_the_controllers_reconcile_joins_the_api_request_trace() {
    use kube_harness::*;
    let _ = rustls::crypto::ring::default_provider().install_default();
    calsync_bin::record_test_secrets();
    let radicale = Radicale::start();
    radicale.raw().mkcalendar(CAL, "Calendar", &["VEVENT"]).await;
    let server = FakeApiServer::new();
    let port = serve_http(server.clone()).await;
    let (otlp, received) = otlp::receiver().await;
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (metrics, listen) = (free(), free());
    let controller = Process::spawn(
        &["controller", &format!("--metrics-addr=127.0.0.1:{metrics}"), "--no-leader-election"],
        &[
            ("KUBECONFIG", kubeconfig(port, NS).display().to_string()),
            ("POD_NAME", "calsync-controller-0".into()),
            ("POD_NAMESPACE", NS.into()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.clone()),
            ("OTEL_SERVICE_NAME", "calsync-controller".into()),
        ],
    );
    let api = Process::spawn(
        &["api", &format!("--listen=127.0.0.1:{listen}"), &format!("--namespace={NS}")],
        &[
            ("KUBECONFIG", kubeconfig(port, NS).display().to_string()),
            ("POD_NAME", "calsync-api-0".into()),
            ("CALSYNC_API_KEYS", calsync_bin::API_KEY.into()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp),
            ("OTEL_SERVICE_NAME", "calsync-api".into()),
        ],
    );
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let base = format!("http://127.0.0.1:{listen}/api/calendar");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http.get(format!("http://127.0.0.1:{listen}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "calsync api never became ready:\n{}", api.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connect = json!({"user_id": "kube_user", "apple_id": radicale.user, "app_password": radicale.password, "server_url": radicale.url});
    let r = http
        .post(format!("{base}/apple/connect"))
        .bearer_auth(calsync_bin::API_KEY)
        .json(&connect)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}\n{}", r.text().await.unwrap_or_default(), api.log());
    eventually(30, "the controller marks the connection Ready", || {
        server
            .list(&format!("/apis/calendar.getitdone.app/v1alpha1/namespaces/{NS}/calendarconnections"))
            .iter()
            .any(|c| condition(c, "Ready").is_some_and(|r| r["status"] == "True"))
    })
    .await;

    let task = json!({"user_id": "kube_user", "task_data": {"id": "task_kube", "name": "Traced across processes",
        "scheduled_time": "2030-03-05T09:00:00", "timezone": "Europe/Berlin"}});
    let r = http
        .post(format!("{base}/task-to-calendar"))
        .bearer_auth(calsync_bin::API_KEY)
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .json(&task)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}\ncontroller:\n{}", r.text().await.unwrap_or_default(), controller.log());

    let names = ["POST /api/calendar/task-to-calendar", "reconcile TaskSync", "PUT"];
    let spans = received.wait_for(CALLER_TRACE, &names, 20).await;
    let trace = in_trace(&spans, CALLER_TRACE);
    let (rest, reconcile, put) = (one(&trace, names[0]), one(&trace, names[1]), one(&trace, names[2]));
    assert_eq!(service_of(&spans, rest).as_deref(), Some("calsync-api"));
    assert_eq!(service_of(&spans, reconcile).as_deref(), Some("calsync-controller"));
    assert_eq!(hex(&reconcile.parent_span_id), hex(&rest.span_id), "the controller's reconcile is the request's child");
    assert!(descends(&trace, put, reconcile), "the CalDAV PUT is inside the reconcile");
    // What carried it: the annotation on the TaskSync names the request span.
    let syncs = server.list(&format!("/apis/calendar.getitdone.app/v1alpha1/namespaces/{NS}/tasksyncs"));
    let annotation = syncs[0]["metadata"]["annotations"]["calendar.getitdone.app/traceparent"].as_str();
    assert_eq!(annotation, Some(format!("00-{CALLER_TRACE}-{}-01", hex(&rest.span_id)).as_str()), "{syncs:?}");
    let text = format!("{spans:?}");
    assert!(!text.contains(&radicale.password) && !text.contains(calsync_bin::API_KEY), "a secret in the spans");
}
