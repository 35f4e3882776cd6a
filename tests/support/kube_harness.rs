//! Kubernetes test helpers: fixtures, and a controller harness that runs the real kube-runtime
//! controllers and the real engine against the fake API server. Included by the controller
//! tests with `#[path]` next to `fake_apiserver.rs`.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use calsync::controller::{self as ctl, KubeObjects, Leadership, Metrics, Settings};
use calsync::providers::memory::{MemoryCalendar, MemoryConnector};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

pub use crate::fake_apiserver::*;

pub const NS: &str = "team-a";

/// ENCRYPTION_KEY of the in-process controller and any `calsync api`/`controller` a test spawns
/// (32 bytes of 0x01, base64): they must open what the other sealed.
pub const TEST_ENCRYPTION_KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

/// The envelope sealer for `TEST_ENCRYPTION_KEY`.
pub fn test_sealer() -> Arc<calsync::controller::secrets::EnvelopeSealer> {
    let key = calsync::credentials::envelope::Key::from_base64(TEST_ENCRYPTION_KEY).expect("test key");
    Arc::new(calsync::controller::secrets::EnvelopeSealer::new(calsync::credentials::envelope::Keyring::new(key)))
}

/// One running controller instance.
pub struct Harness {
    pub objects: KubeObjects,
    pub metrics: Arc<Metrics>,
    pub leadership: Leadership,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    elector: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    /// Start the controllers (always leader).
    pub fn start(server: &FakeApiServer, calendar: &MemoryCalendar) -> Harness {
        Self::start_with(server, calendar, Leadership::always(), None)
    }

    /// Start watching only `namespace` (`--watch-namespace`).
    pub fn start_in(server: &FakeApiServer, calendar: &MemoryCalendar, namespace: &str) -> Harness {
        Self::start_with_ns(server, calendar, Leadership::always(), None, Some(namespace.to_string()))
    }

    /// Start with leader election on a Lease in `NS` as `identity` (lease `duration`).
    pub fn start_elected(
        server: &FakeApiServer,
        calendar: &MemoryCalendar,
        identity: &str,
        duration: Duration,
    ) -> Harness {
        let leadership = Leadership::follower();
        let config = ctl::LeaseConfig {
            namespace: NS.into(),
            name: "calsync-controller".into(),
            identity: identity.into(),
            duration,
        };
        Self::start_with(server, calendar, leadership, Some(config))
    }

    fn start_with(
        server: &FakeApiServer,
        calendar: &MemoryCalendar,
        leadership: Leadership,
        lease: Option<ctl::LeaseConfig>,
    ) -> Harness {
        Self::start_with_ns(server, calendar, leadership, lease, None)
    }

    fn start_with_ns(
        server: &FakeApiServer,
        calendar: &MemoryCalendar,
        leadership: Leadership,
        lease: Option<ctl::LeaseConfig>,
        watch_namespace: Option<String>,
    ) -> Harness {
        let connector = Arc::new(MemoryConnector { service: calendar.clone() });
        Self::start_full(server, connector, leadership, lease, watch_namespace)
    }

    /// Start the controllers (always leader) with a real connector, e.g. `Registry::builtin()`.
    pub fn start_connector(server: &FakeApiServer, connector: Arc<dyn calsync::providers::Connector>) -> Harness {
        Self::start_full(server, connector, Leadership::always(), None, None)
    }

    /// Start the controllers (always leader) with `engine` instead of the default engine
    /// settings (e.g. live sync with a public URL and push keys).
    pub fn start_with_engine(
        server: &FakeApiServer,
        connector: Arc<dyn calsync::providers::Connector>,
        engine: calsync::engine::EngineConfig,
    ) -> Harness {
        Self::start_configured(server, connector, Leadership::always(), None, None, engine)
    }

    fn start_full(
        server: &FakeApiServer,
        connector: Arc<dyn calsync::providers::Connector>,
        leadership: Leadership,
        lease: Option<ctl::LeaseConfig>,
        watch_namespace: Option<String>,
    ) -> Harness {
        Self::start_configured(server, connector, leadership, lease, watch_namespace, Default::default())
    }

    fn start_configured(
        server: &FakeApiServer,
        connector: Arc<dyn calsync::providers::Connector>,
        leadership: Leadership,
        lease: Option<ctl::LeaseConfig>,
        watch_namespace: Option<String>,
        engine: calsync::engine::EngineConfig,
    ) -> Harness {
        // Logs only when RUST_LOG asks for them.
        if std::env::var_os("RUST_LOG").is_some() {
            calsync::telemetry::init(calsync::telemetry::LogFormat::Text);
        }
        let client = server.client();
        let objects = KubeObjects::new(client.clone(), Some("calsync-test-pod".into())).with_sealer(test_sealer());
        let metrics = Arc::new(Metrics::default());
        let (stop, shutdown) = ctl::shutdown_signal();
        let elector = lease.map(|config| {
            tokio::spawn(ctl::Elector::new(client.clone(), config, leadership.clone()).run(shutdown.clone()))
        });
        let settings = Settings { watch_namespace, concurrency: 4, engine };
        let task = tokio::spawn(ctl::run(
            client,
            objects.clone(),
            connector,
            leadership.clone(),
            metrics.clone(),
            settings,
            shutdown,
        ));
        Harness { objects, metrics, leadership, stop: Some(stop), task: Some(task), elector }
    }

    /// Graceful stop: reconciles in flight finish, the lease is released.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        if let Some(e) = self.elector.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), e).await;
        }
    }

    /// Calendar writes (create/update/delete) this instance made successfully.
    pub fn calendar_writes(&self) -> u64 {
        let text = self.metrics.render();
        text.lines()
            .filter(|l| l.starts_with("calsync_provider_calls_total"))
            .filter(|l| {
                (l.contains("operation=\"create\"")
                    || l.contains("operation=\"update\"")
                    || l.contains("operation=\"delete\""))
                    && l.contains("outcome=\"ok\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
        if let Some(e) = &self.elector {
            e.abort();
        }
    }
}

/// Create an object through the API (as kubectl would).
pub async fn create<K>(server: &FakeApiServer, object: Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(server.client(), NS);
    let obj: K = serde_json::from_value(object).expect("fixture deserializes");
    api.create(&PostParams::default(), &obj).await.expect("create")
}

pub fn secret(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "data": {"username": b64("user"), "password": b64("secret")},
    })
}

pub fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn connection(name: &str, secret: &str) -> Value {
    json!({
        "apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "CalendarConnection",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"userId": "user-1", "provider": "caldav", "serverUrl": "http://calendar.invalid/",
                 "credentialsSecretRef": {"name": secret}},
    })
}

pub fn task_sync(name: &str, connection: &str, title: &str) -> Value {
    json!({
        "apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "TaskSync",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"connectionRef": {"name": connection}, "taskId": format!("task-{name}"), "title": title,
                 "start": "2026-03-05T14:00:00Z", "duration": "45m"},
    })
}

/// Poll `check` every 25 ms until it is true, or panic after `secs` with `what`.
pub async fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

pub fn is_synced(obj: Option<&Value>) -> bool {
    obj.and_then(|o| condition(o, "Synced")).is_some_and(|c| c["status"] == "True")
}

/// Serve the fake API server over HTTP on a loopback port.
pub async fn serve_http(server: FakeApiServer) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let svc = tower::service_fn(move |req: http::Request<axum::body::Body>| {
        let mut server = server.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes: bytes::Bytes =
                http_body_util::BodyExt::collect(body).await.map(|c| c.to_bytes()).unwrap_or_default();
            let req = http::Request::from_parts(parts, kube::client::Body::from(bytes.to_vec()));
            tower::Service::call(&mut server, req).await
        }
    });
    let app = axum::Router::new().fallback_service(svc);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    port
}

/// A kubeconfig for the server `serve_http` runs on `port`, defaulting to `namespace`.
pub fn kubeconfig(port: u16, namespace: &str) -> std::path::PathBuf {
    // In cargo's scratch dir for integration tests (under the target dir), not /tmp: callers
    // pass the path to a child and keep no guard that could delete it, so the files stay, and
    // there they are bounded by `cargo clean` instead of piling up in the system temp dir.
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kubeconfigs");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}-{port}-{namespace}", std::process::id()));
    // Written aside and renamed over: callers spawn a child per call with the same path, and a
    // rewrite in place truncated the file under a child still reading it (CI: two of three
    // controllers started with an empty kubeconfig, "failed to determine current context").
    static WRITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let aside = dir.join(format!("{}-{port}-{namespace}.{n}.tmp", std::process::id()));
    std::fs::write(
        &aside,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u, namespace: {namespace}}}\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    std::fs::rename(&aside, &path).unwrap();
    path
}
