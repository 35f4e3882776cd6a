//! Child processes of the cross-process scenarios: the bench provider server (outlives every
//! crash of calsync) and `calsync-bench node` (standalone mode, killed with SIGKILL), both this
//! same executable, and `calsync apply`, the product binary found next to it. Children are
//! killed when their handle drops.
//!
//! Owns: spawning, readiness and killing of those children. Must not touch: what they do.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::provider::Profile;

/// This executable: the bench roles (`provider-server`, `node`) live here.
fn exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("finding the calsync-bench executable to spawn")
}

/// The product binary `calsync` beside this one (cargo builds both into the same directory),
/// so the scenarios measure exactly what users run.
fn product_exe() -> anyhow::Result<PathBuf> {
    let bench = exe()?;
    let dir = bench.parent().context("the calsync-bench executable has no parent directory")?;
    let calsync = dir.join(format!("calsync{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        calsync.is_file(),
        "{} not found: this scenario runs the calsync binary next to calsync-bench; build both with `cargo build --release --bins`",
        calsync.display()
    );
    Ok(calsync)
}

/// A free loopback port (bound and released; the child binds it right after).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    Ok(l.local_addr()?.port())
}

/// `calsync-bench provider-server` with `profile`.
pub struct ProviderServer {
    child: Child,
    pub base: String,
}

impl ProviderServer {
    pub fn start(profile: &Profile) -> anyhow::Result<Self> {
        let mut child = Command::new(exe()?)
            .args(["provider-server", "--listen", "127.0.0.1:0"])
            .args(profile_args(profile))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning the bench provider server")?;
        let stdout = child.stdout.take().context("the provider server's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).context("reading the provider server's address")?;
        let base = line.trim().strip_prefix("listening ").map(str::to_string);
        match base {
            Some(base) => Ok(ProviderServer { child, base }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("the bench provider server did not start (it printed {line:?})")
            }
        }
    }
}

impl Drop for ProviderServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command-line flags that recreate `profile` in a child.
pub fn profile_args(p: &Profile) -> Vec<String> {
    [
        ("--latency-ms", p.latency_ms.to_string()),
        ("--quota-rps", p.quota_rps.to_string()),
        ("--quota-concurrency", p.quota_concurrency.to_string()),
        ("--fault-5xx", p.fault_5xx.to_string()),
        ("--fault-429", p.fault_429.to_string()),
        ("--fault-timeout", p.fault_timeout.to_string()),
        ("--fault-drop", p.fault_drop.to_string()),
        ("--retry-after-ms", p.retry_after_ms.to_string()),
        ("--timeout-ms", p.timeout_ms.to_string()),
        ("--seed", p.seed.to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect()
}

/// Environment shared by a node and the `calsync apply` runs on its database.
#[derive(Clone, Debug)]
pub struct NodeEnv {
    pub dir: PathBuf,
    pub encryption_key: String,
    pub api_key: String,
    pub concurrency: usize,
    /// Extra variables (e.g. the API's rate limit).
    pub extra: Vec<(String, String)>,
}

impl NodeEnv {
    pub fn database_url(&self) -> String {
        format!("sqlite://{}", self.dir.join("calsync.db").display())
    }

    fn apply_env(&self, cmd: &mut Command) {
        cmd.env("DATABASE_URL", self.database_url())
            .env("ENCRYPTION_KEY", &self.encryption_key)
            .env("CALSYNC_API_KEYS", &self.api_key)
            .env("SECRET_KEY", "bench-secret-key")
            .env("RUST_LOG", "warn");
        for (k, v) in &self.extra {
            cmd.env(k, v);
        }
    }

    /// `calsync apply -f file` on this database, as a child to wait for.
    pub fn spawn_apply(&self, file: &Path) -> anyhow::Result<Child> {
        let mut cmd = Command::new(product_exe()?);
        cmd.arg("apply").arg("-f").arg(file).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        self.apply_env(&mut cmd);
        cmd.spawn().context("spawning calsync apply")
    }
}

/// A running `calsync-bench node`.
pub struct Node {
    child: Option<Child>,
    pub base: String,
}

impl Node {
    pub async fn start(env: &NodeEnv) -> anyhow::Result<Node> {
        let port = free_port()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(env.dir.join("node.log"))
            .context("opening the node log")?;
        let mut cmd = Command::new(exe()?);
        cmd.args(["node", "--concurrency", &env.concurrency.to_string()])
            .env("CALSYNC_LISTEN", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        env.apply_env(&mut cmd);
        let child = cmd.spawn().context("spawning calsync-bench node")?;
        let node = Node { child: Some(child), base: format!("http://127.0.0.1:{port}") };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}/healthz", node.base)).send().await
                && r.status().is_success()
            {
                return Ok(node);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "calsync-bench node did not become healthy in 60 s; see {}",
                env.dir.join("node.log").display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}
