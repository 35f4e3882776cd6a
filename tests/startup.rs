//! `calsync controller` and `calsync api` without a reachable API server exit non-zero within
//! 30 s, naming the server they tried and what to check; no hang, no panic.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn kubeconfig(dir: &std::path::Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let mut f = std::fs::File::create(&path).unwrap();
    write!(
        f,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: not-a-real-token\ncontexts:\n- name: x\n  context: {{cluster: c, user: u, namespace: default}}\ncurrent-context: x\n"
    )
    .unwrap();
    path
}

fn run(kubeconfig: &std::path::Path, extra: &[&str]) -> (Option<i32>, String, Duration) {
    run_command(&["controller", "--metrics-addr", "127.0.0.1:0"], kubeconfig, extra)
}

fn run_command(command: &[&str], kubeconfig: &std::path::Path, extra: &[&str]) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(command)
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Never hang the test suite: kill after 40 s and fail below.
    loop {
        if child.try_wait().unwrap().is_some() || started.elapsed() > Duration::from_secs(40) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned(), started.elapsed())
}

/// A temp dir removed when the test ends.
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("calsync-startup-{name}-")).tempdir().unwrap()
}

#[test]
fn closed_port_fails_fast_with_the_server_named() {
    // Bind then drop: a loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = scratch("closed");
    let (code, stderr, took) = run(&kubeconfig(dir.path(), &format!("https://127.0.0.1:{port}")), &[]);
    assert_eq!(code, Some(1), "exit code; stderr: {stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "names the server: {stderr}");
    assert!(stderr.contains("kubeconfig") && stderr.contains("service account"), "says what to check: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("not-a-real-token"), "no credentials in the message: {stderr}");
}

#[test]
fn silent_server_times_out_within_the_budget() {
    // Accepts TCP connections (backlog) but never answers: the pre-flight must time out.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = scratch("silent");
    let (code, stderr, took) =
        run(&kubeconfig(dir.path(), &format!("https://127.0.0.1:{port}")), &["--startup-timeout-seconds", "3"]);
    drop(listener);
    assert_eq!(code, Some(1), "exit code; stderr: {stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
}

#[test]
fn no_configuration_at_all_says_what_to_set() {
    let dir = scratch("none");
    let (code, stderr, took) = run(&dir.path().join("missing-kubeconfig"), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(took < Duration::from_secs(30));
    assert!(stderr.contains("KUBECONFIG") && stderr.contains("service account"), "{stderr}");
}

#[test]
fn api_fails_fast_with_the_same_message() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = scratch("api-closed");
    let (code, stderr, took) = run_command(
        &["api", "--listen", "127.0.0.1:0", "--namespace", "team-a"],
        &kubeconfig(dir.path(), &format!("https://127.0.0.1:{port}")),
        &[],
    );
    assert_eq!(code, Some(1), "exit code; stderr: {stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "names the server: {stderr}");
    assert!(stderr.contains("kubeconfig") && stderr.contains("service account"), "says what to check: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("not-a-real-token"), "no credentials in the message: {stderr}");
}
