//! The compiled `calsync controller` against the fake API server served over loopback HTTP:
//! it becomes ready, takes the Lease, and on SIGTERM exits 0 promptly and releases the Lease.

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "support/kube_harness.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use support::*;
use tower::Service;

/// Serve the fake API server over HTTP on a loopback port.
async fn serve(server: FakeApiServer) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let svc = tower::service_fn(move |req: http::Request<axum::body::Body>| {
        let mut server = server.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes: Bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            let req = http::Request::from_parts(parts, kube::client::Body::from(bytes.to_vec()));
            server.call(req).await
        }
    });
    let app = axum::Router::new().fallback_service(svc);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    port
}

fn kubeconfig(port: u16) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("calsync-e2e-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u, namespace: {NS}}}\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    path
}

async fn http_status(port: u16, path: &str) -> Option<u16> {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).ok()?;
        String::from_utf8_lossy(&buf).split(' ').nth(1)?.parse().ok()
    })
    .await
    .ok()?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_gets_ready_holds_the_lease_and_shuts_down_on_sigterm() {
    let server = FakeApiServer::new();
    let port = serve(server.clone()).await;
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(["controller", "--metrics-addr", &format!("127.0.0.1:{metrics_port}"), "--lease-duration-seconds", "6"])
        .env("KUBECONFIG", kubeconfig(port))
        .env("POD_NAME", "calsync-e2e-0")
        .env("POD_NAMESPACE", NS)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    while http_status(metrics_port, "/readyz").await != Some(200) {
        assert!(Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http_status(metrics_port, "/healthz").await, Some(200));
    let lease_path = format!("{}/calsync-controller", leases_path(NS));
    eventually(10, "the binary holds the Lease", || {
        server.get(&lease_path).is_some_and(|l| l["spec"]["holderIdentity"] == "calsync-e2e-0")
    })
    .await;

    // SIGTERM, as the kubelet sends it.
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "exit status {status:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lease = server.get(&lease_path).unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "the Lease is released on shutdown: {lease}");
}
