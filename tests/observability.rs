//! What the chart's monitoring and RBAC promise, checked against the real processes: the
//! compiled `calsync controller` and `calsync api` run against the strict fake API server
//! (loopback HTTP, one front per process so each one's requests are told apart), reading their
//! keys from a `CALSYNC_SECRETS_DIR` directory as the chart mounts them (no key in their
//! environment).
//!
//! - Every `calsync_*` metric that the alert rules (charts/calsync/files/alerts.yaml) or the
//!   Grafana dashboard (charts/calsync/files/dashboard.json) name is in the `/metrics` output of
//!   one of the two processes (both scrapes are saved as test artifacts).
//! - Every Kubernetes API request each process made is allowed by its rows of the README's RBAC
//!   table (the table `scripts/check-chart.sh` holds the chart's rules to).
//! - Other commands refuse `CALSYNC_SECRETS_DIR` rather than ignore a key given there.

#[path = "support/artifacts.rs"]
mod artifacts;
#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "support/kube_harness.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

const API_KEY: &str = "observability-test-api-key";
const STATE_KEY: &str = "observability-test-state-key-0123456789";

type Log = Arc<Mutex<Vec<(String, String, String)>>>;

/// Serve the shared fake API server on a port of its own, recording (method, path, query) of
/// every request that comes through this port.
async fn serve_recorded(server: FakeApiServer, log: Log) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let svc = tower::service_fn(move |req: http::Request<axum::body::Body>| {
        let mut server = server.clone();
        let log = log.clone();
        async move {
            let (parts, body) = req.into_parts();
            log.lock().unwrap().push((
                parts.method.to_string(),
                parts.uri.path().to_string(),
                parts.uri.query().unwrap_or_default().to_string(),
            ));
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Process {
    name: &'static str,
    child: Child,
    log: std::path::PathBuf,
}

impl Process {
    fn spawn(name: &'static str, args: &[String], kube_port: u16, secrets: &Path) -> Process {
        let log = artifacts::path(&format!("observability-{name}"), "log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_calsync"))
            .args(args)
            .env("KUBECONFIG", kubeconfig(kube_port, NS))
            .env("CALSYNC_SECRETS_DIR", secrets)
            .env("POD_NAME", format!("calsync-{name}-0"))
            .env("POD_NAMESPACE", NS)
            .env("RUST_LOG", "info")
            .env("CALSYNC_SYNC_WAIT_SECONDS", "5")
            .env_remove("ENCRYPTION_KEY")
            .env_remove("CALSYNC_API_KEYS")
            .env_remove("SECRET_KEY")
            .env_remove("CALSYNC_NAMESPACE")
            .env_remove("CALSYNC_LISTEN")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Process { name, child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_ready(&mut self, http: &reqwest::Client, base: &str) {
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited with {status} before it was ready:\n{}", self.name, self.log());
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{} not ready in 60 s:\n{}", self.name, self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let started = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "{} did not exit after SIGTERM", self.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let log = self.log();
        assert!(status.success(), "{} exit status {status:?}:\n{log}", self.name);
        assert!(!log.contains("panicked"), "{log}");
    }
}

/// Names a Prometheus text exposition offers to queries: every sample name, plus what each
/// declared family yields even before it has samples (a histogram's `_bucket`/`_sum`/`_count`,
/// a counter's `_total`).
fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(family), Some(kind)) = (parts.next(), parts.next()) else { continue };
            names.insert(family.to_string());
            match kind {
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{family}{suffix}"));
                    }
                }
                "counter" if !family.ends_with("_total") => {
                    names.insert(format!("{family}_total"));
                }
                _ => {}
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// Every `calsync_*` metric name in a rules or dashboard file.
fn referenced_names(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"calsync_[a-z0-9_]*[a-z0-9]").unwrap();
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

/// (API group, resource, verb) → allowed, per ServiceAccount, from the README's RBAC table.
fn readme_rbac() -> BTreeMap<String, BTreeSet<(String, String, String)>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("<!-- rbac-rules").expect("README has the RBAC table");
    let end = readme.find("<!-- /rbac-rules -->").expect("README's RBAC table ends");
    let mut out: BTreeMap<String, BTreeSet<(String, String, String)>> = BTreeMap::new();
    for line in readme[start..end].lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(|c| c.trim().trim_matches('`')).collect();
        if cells.len() != 5 || cells[0] == "ServiceAccount" || cells[0].starts_with('-') {
            continue;
        }
        let group = if cells[2] == "core" { "" } else { cells[2] };
        for resource in cells[3].split(',') {
            for verb in cells[4].split(',') {
                out.entry(cells[0].to_string()).or_default().insert((
                    group.to_string(),
                    resource.trim().to_string(),
                    verb.trim().to_string(),
                ));
            }
        }
    }
    out
}

/// The RBAC (group, resource, verb) a request needs, from its method, path and query.
fn rbac_of(method: &str, path: &str, query: &str) -> (String, String, String) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/GROUP/VERSION/...
    let (group, rest) = match parts.first() {
        Some(&"api") => ("", &parts[2..]),
        Some(&"apis") => (parts[1], &parts[3..]),
        _ => panic!("not a resource path: {path}"),
    };
    let rest = if rest.first() == Some(&"namespaces") && rest.len() >= 3 { &rest[2..] } else { rest };
    let resource = match rest {
        [r] | [r, _] => r.to_string(),
        [r, _, sub] => format!("{r}/{sub}"),
        _ => panic!("unexpected resource path: {path}"),
    };
    let named = rest.len() >= 2;
    let watch = query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match method {
        "GET" if watch => "watch",
        "GET" if named => "get",
        "GET" => "list",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" if named => "delete",
        "DELETE" => "deletecollection",
        m => panic!("unexpected method {m}"),
    };
    (group.to_string(), resource, verb.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_named_by_alerts_and_dashboard_exist_and_requests_stay_within_the_readme_rbac() {
    let server = FakeApiServer::new();
    let controller_requests: Log = Arc::default();
    let api_requests: Log = Arc::default();
    let controller_kube = serve_recorded(server.clone(), controller_requests.clone()).await;
    let api_kube = serve_recorded(server.clone(), api_requests.clone()).await;

    // Keys as the chart mounts them: files named like the variables (plus the `..data` link
    // layout of a mounted Secret, which must be skipped).
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("ENCRYPTION_KEY"), format!("{TEST_ENCRYPTION_KEY}\n")).unwrap();
    std::fs::write(secrets.path().join("CALSYNC_API_KEYS"), API_KEY).unwrap();
    std::fs::write(secrets.path().join("SECRET_KEY"), STATE_KEY).unwrap();
    std::fs::create_dir(secrets.path().join("..data")).unwrap();
    artifacts::record_secret("observability-api-key", API_KEY);
    artifacts::record_secret("observability-state-key", STATE_KEY);

    let metrics_port = free_port();
    let api_port = free_port();
    let mut controller = Process::spawn(
        "controller",
        &["controller".into(), format!("--metrics-addr=127.0.0.1:{metrics_port}"), "--lease-duration-seconds=6".into()],
        controller_kube,
        secrets.path(),
    );
    let mut api = Process::spawn(
        "api",
        &["api".into(), format!("--listen=127.0.0.1:{api_port}"), format!("--namespace={NS}")],
        api_kube,
        secrets.path(),
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let controller_base = format!("http://127.0.0.1:{metrics_port}");
    let api_base = format!("http://127.0.0.1:{api_port}");
    controller.wait_ready(&http, &controller_base).await;
    api.wait_ready(&http, &api_base).await;

    // The API key came from the file: an authenticated read works, a wrong key does not.
    let ok = http
        .get(format!("{api_base}/api/calendar/connection-status/obs_user"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(ok, 200, "the API key from CALSYNC_SECRETS_DIR is accepted");
    let refused = http
        .get(format!("{api_base}/api/calendar/connection-status/obs_user"))
        .bearer_auth("not-the-key")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(refused, 401);

    // Traffic that makes the API's families appear (prometheus-client writes a family only once
    // it has a sample): a provider notification for an unknown channel, and a delete-event whose
    // bounded wait for the engine is counted. The TaskSync's connection does not exist, so the
    // controller (once it leads) releases the finalizer with a Warning Event: its
    // finalizer, status and Event requests are checked against the RBAC table below too.
    let hook = http
        .post(format!("{api_base}/api/calendar/webhooks/google"))
        .header("x-goog-channel-id", "no-such-channel")
        .header("x-goog-channel-token", "x")
        .send()
        .await
        .unwrap()
        .status();
    assert!(hook.is_client_error(), "a notification of an unknown channel is refused: {hook}");
    let (user, task) = ("obs_user", "obs-task-1");
    let mut labels = serde_json::Map::new();
    labels.insert(calsync::resources::USER_LABEL.into(), calsync::resources::user_label_value(user).into());
    create::<calsync::resources::TaskSync>(
        &server,
        serde_json::json!({
            "apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "TaskSync",
            "metadata": {"name": calsync::resources::task_sync_name(user, task), "namespace": NS, "labels": labels},
            "spec": {"connectionRef": {"name": "obs-gone"}, "taskId": task, "title": "Observed", "start": "2026-03-05"},
        }),
    )
    .await;

    // The controller takes the Lease (it read ENCRYPTION_KEY from the file, or it would not
    // have started).
    let started = Instant::now();
    loop {
        let text = http.get(format!("{controller_base}/metrics")).send().await.unwrap().text().await.unwrap();
        if text.contains("calsync_leader 1") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no leadership in 30 s:\n{}", controller.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ts_path = task_sync_path(NS, &calsync::resources::task_sync_name(user, task));
    eventually(30, "the controller reconciled the TaskSync", || {
        server.get(&ts_path).is_some_and(|o| o.get("status").is_some_and(|st| !st.is_null()))
    })
    .await;
    let deleted = http
        .delete(format!("{api_base}/api/calendar/delete-event"))
        .bearer_auth(API_KEY)
        .json(&serde_json::json!({"user_id": user, "task_id": task}))
        .send()
        .await
        .unwrap()
        .status();
    assert!(deleted == 200 || deleted == 202, "delete-event: {deleted}");
    // Without its connection the finalizer is released with a Warning Event.
    eventually(30, "the TaskSync is gone", || server.get(&ts_path).is_none()).await;
    for p in [&controller, &api] {
        let log = p.log();
        assert!(log.contains("settings read from CALSYNC_SECRETS_DIR"), "{}: {log}", p.name);
        assert!(!log.contains(TEST_ENCRYPTION_KEY) && !log.contains(API_KEY), "{} logged a key", p.name);
    }

    let mut exposed = BTreeSet::new();
    for (name, base) in [("controller", &controller_base), ("api", &api_base)] {
        let text = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        std::fs::write(artifacts::path(&format!("observability-{name}-metrics"), "txt"), &text).unwrap();
        exposed.extend(exposed_names(&text));
    }

    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/calsync/files");
    let alerts = std::fs::read_to_string(format!("{chart}/alerts.yaml")).unwrap();
    let dashboard = std::fs::read_to_string(format!("{chart}/dashboard.json")).unwrap();
    let dashboard_json: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is valid JSON");
    assert!(dashboard_json["panels"].as_array().is_some_and(|p| !p.is_empty()));
    for (file, text) in [("alerts.yaml", &alerts), ("dashboard.json", &dashboard)] {
        let named = referenced_names(text);
        assert!(named.len() >= 10, "{file} names {named:?}");
        let missing: Vec<&String> = named.difference(&exposed).collect();
        assert!(
            missing.is_empty(),
            "{file} names metrics no calsync process exposes: {missing:?}\nexposed: {exposed:?}"
        );
    }

    controller.stop().await;
    api.stop().await;

    // Each process's requests, against its rows of the README's RBAC table.
    let rbac = readme_rbac();
    for (account, log) in [("controller", &controller_requests), ("api", &api_requests)] {
        let allowed = &rbac[account];
        let requests = log.lock().unwrap().clone();
        assert!(!requests.is_empty(), "{account} made no API request");
        let needed: BTreeSet<(String, String, String)> = requests.iter().map(|(m, p, q)| rbac_of(m, p, q)).collect();
        eprintln!("{account} made requests needing {needed:?}");
        let denied: Vec<_> = needed.difference(allowed).collect();
        assert!(denied.is_empty(), "{account} needed {denied:?}, which its README RBAC rows do not grant");
    }
}

#[test]
fn request_to_rbac_mapping() {
    assert_eq!(
        rbac_of("GET", "/apis/calendar.getitdone.app/v1alpha1/namespaces/a/tasksyncs", "watch=true&resourceVersion=1"),
        ("calendar.getitdone.app".into(), "tasksyncs".into(), "watch".into())
    );
    assert_eq!(
        rbac_of("PATCH", "/apis/calendar.getitdone.app/v1alpha1/namespaces/a/tasksyncs/t/status", ""),
        ("calendar.getitdone.app".into(), "tasksyncs/status".into(), "patch".into())
    );
    assert_eq!(rbac_of("GET", "/api/v1/namespaces/a/secrets/s", ""), ("".into(), "secrets".into(), "get".into()));
    assert_eq!(
        rbac_of("GET", "/apis/calendar.getitdone.app/v1alpha1/calendarconnections", "limit=1"),
        ("calendar.getitdone.app".into(), "calendarconnections".into(), "list".into())
    );
    assert_eq!(
        rbac_of("PUT", "/apis/coordination.k8s.io/v1/namespaces/a/leases/l", ""),
        ("coordination.k8s.io".into(), "leases".into(), "update".into())
    );
}

#[test]
fn exposition_names_include_declared_families() {
    let text = "# TYPE calsync_x_seconds histogram\n# TYPE calsync_y counter\ncalsync_y_total{a=\"b\"} 1\n# TYPE calsync_z gauge\ncalsync_z 0\n";
    let names = exposed_names(text);
    for n in ["calsync_x_seconds_bucket", "calsync_x_seconds_count", "calsync_y_total", "calsync_z"] {
        assert!(names.contains(n), "{n} in {names:?}");
    }
    assert!(!names.contains("calsync_w"));
}

#[test]
fn commands_other_than_controller_and_api_refuse_a_secrets_dir() {
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("ENCRYPTION_KEY"), TEST_ENCRYPTION_KEY).unwrap();
    let db = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(["get", "tsync", "-A"])
        .env("CALSYNC_SECRETS_DIR", secrets.path())
        .env("DATABASE_URL", format!("sqlite://{}", db.path().join("c.db").display()))
        .env_remove("ENCRYPTION_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("CALSYNC_SECRETS_DIR is read by `calsync controller` and `calsync api` only"), "{stderr}");
    assert!(!stderr.contains(TEST_ENCRYPTION_KEY), "{stderr}");
    assert!(!db.path().join("c.db").exists(), "nothing was created");
}
