//! Runs the built `calsync` binary in standalone mode for end-to-end tests, and talks to it
//! over HTTP as the app's frontend would.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

// Self-contained, included where needed (test crates include these helpers by path).
#[allow(clippy::duplicate_mod)]
#[path = "artifacts.rs"]
pub mod artifacts;
#[allow(clippy::duplicate_mod)]
#[path = "ports.rs"]
mod ports;
use ports::free_port;

pub const API_KEY: &str = "e2e-test-api-key";
/// 32 zero bytes, base64: a fixed test key.
pub const ENCRYPTION_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// A `calsync standalone` process with its own database directory.
pub struct Standalone {
    child: Option<Child>,
    pub dir: PathBuf,
    pub port: u16,
    pub base: String,
    pub http: reqwest::Client,
    /// This process's log, in the artifacts directory the CI leak check reads.
    pub log_path: PathBuf,
    /// API responses this test saw (also read by the leak check).
    pub responses: PathBuf,
}

/// The test's secrets, recorded for the CI leak check.
pub fn record_test_secrets() {
    artifacts::record_secret("api-key", API_KEY);
    artifacts::record_secret("encryption-key", ENCRYPTION_KEY);
    artifacts::record_secret("secret-key", SECRET_KEY);
}

pub const SECRET_KEY: &str = "e2e-secret-key";

impl Standalone {
    pub fn database_url(dir: &Path) -> String {
        format!("sqlite://{}", dir.join("calsync.db").display())
    }

    /// Start (or restart) standalone on the database in `dir`.
    pub async fn start(dir: &Path) -> Standalone {
        Self::start_with(dir, free_port(), &[]).await
    }

    /// A free loopback port to pass to `start_with` (when a peer must know it first, e.g. an
    /// OAuth server that redirects to calsync's callbacks).
    pub fn pick_port() -> u16 {
        free_port()
    }

    /// Start standalone on `port` with extra environment variables.
    pub async fn start_with(dir: &Path, port: u16, env: &[(&str, String)]) -> Standalone {
        let _ = rustls::crypto::ring::default_provider().install_default();
        record_test_secrets();
        let log_path = artifacts::path("calsync-standalone", "log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_calsync"));
        command
            .arg("standalone")
            .env("DATABASE_URL", Self::database_url(dir))
            .env("CALSYNC_LISTEN", format!("127.0.0.1:{port}"))
            .env("CALSYNC_API_KEYS", API_KEY)
            .env("ENCRYPTION_KEY", ENCRYPTION_KEY)
            .env("SECRET_KEY", SECRET_KEY)
            .env("RUST_LOG", "info")
            // After the defaults, so a test can override them (e.g. DATABASE_URL=postgresql://...).
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn calsync standalone");
        let s = Standalone {
            child: Some(child),
            dir: dir.to_path_buf(),
            port,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client"),
            log_path,
            responses: artifacts::path("api-responses", "txt"),
        };
        s.wait_healthy().await;
        s
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "calsync standalone did not become healthy:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// kill -9: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Call `/api/calendar{path}` with the test API key; returns (status, JSON body).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(m, format!("{}/api/calendar{path}", self.base)).bearer_auth(API_KEY);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        artifacts::save_response(&self.responses, method, path, status, &text);
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Run `calsync <args>` on this database; returns (success, stdout, stderr).
    pub fn cli(dir: &Path, args: &[&str]) -> (bool, String, String) {
        record_test_secrets();
        let out = Command::new(env!("CARGO_BIN_EXE_calsync"))
            .args(args)
            .env("DATABASE_URL", Self::database_url(dir))
            .env("ENCRYPTION_KEY", ENCRYPTION_KEY)
            .output()
            .expect("run calsync");
        // What the command printed is checked for leaks like the server's log.
        let saved = artifacts::path("calsync-cli", "log");
        let _ = std::fs::write(&saved, [out.stdout.as_slice(), out.stderr.as_slice()].concat());
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
