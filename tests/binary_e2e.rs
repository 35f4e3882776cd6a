//! The compiled `calsync controller` against the fake API server served over loopback HTTP:
//! it becomes ready, takes the Lease, and on SIGTERM exits 0 promptly and releases the Lease.

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[allow(clippy::duplicate_mod)]
#[path = "support/ports.rs"]
mod ports;
#[path = "support/kube_harness.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

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
    let port = serve_http(server.clone()).await;
    let metrics_port = ports::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(["controller", "--metrics-addr", &format!("127.0.0.1:{metrics_port}"), "--lease-duration-seconds", "6"])
        .env("KUBECONFIG", kubeconfig(port, NS))
        .env("POD_NAME", "calsync-e2e-0")
        .env("ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
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
