//! A real PostgreSQL server for tests, started the way `radicale.rs` starts Radicale.
//!
//! The server binaries come from Debian's `postgresql` package (`/usr/lib/postgresql/<ver>/bin`,
//! the newest version found; `CALSYNC_PG_BIN` overrides the directory); `.ci/run` installs the
//! package when `initdb` is missing. A missing or failing server FAILS the test (panics); it
//! never skips.
//!
//! PostgreSQL refuses to run as root, and CI runs as root: the server then runs as the
//! unprivileged system user `nobody`, switched to directly with `CommandExt::uid/gid` (no `su`
//! or `runuser` in between, so no PAM session and no extra process to kill), in a temporary
//! directory it owns. As any other user it runs as that user.
//!
//! `shared()` is one server per test process (initdb once); each test takes a fresh database
//! from it with `database()`, which is fast. A process-lifetime server cannot rely on `Drop`, so
//! it runs under a tiny `sh` watchdog that stops it (fast shutdown) when our end of its stdin
//! pipe closes, which happens however this process ends, kill -9 included, and then deletes
//! the server's temporary directory (about 40 MB). `start()` gives a
//! private server that is also stopped on drop (for tests that stop the server on purpose).
//! The superuser is `postgres` with a random password (scram-sha-256 over TCP on 127.0.0.1).

#![allow(dead_code)]

#[allow(clippy::duplicate_mod)]
#[path = "ports.rs"]
mod ports;
use ports::free_port;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The superuser tests connect as.
pub const USER: &str = "postgres";

/// The directory holding initdb, postgres, pg_isready and psql.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CALSYNC_PG_BIN") {
        return PathBuf::from(d);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries (initdb, postgres) not found under /usr/lib/postgresql/*/bin: \
             install Debian's postgresql package (apt-get install postgresql; .ci/run does) or set CALSYNC_PG_BIN"
        ),
    }
}

/// (uid, gid) of `nobody` when running as root (PostgreSQL refuses root), else `None`.
fn unprivileged() -> Option<(u32, u32)> {
    let me = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid_line = me.lines().find(|l| l.starts_with("Uid:"))?;
    if uid_line.split_whitespace().nth(1)? != "0" {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd.lines().find(|l| l.starts_with("nobody:")).expect("running as root needs the user nobody");
    let mut f = line.split(':').skip(2);
    let uid = f.next().and_then(|v| v.parse().ok()).expect("nobody's uid");
    let gid = f.next().and_then(|v| v.parse().ok()).expect("nobody's gid");
    Some((uid, gid))
}

fn as_server_user(cmd: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = unprivileged() {
        cmd.uid(uid).gid(gid).env("HOME", "/tmp");
    }
    // The server must not inherit the tests' PG* settings.
    for var in ["PGPASSWORD", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSSLMODE"] {
        cmd.env_remove(var);
    }
    cmd
}

fn give_to_server_user(path: &Path) {
    if let Some((uid, gid)) = unprivileged() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to nobody");
    }
}

/// One running server.
pub struct Postgres {
    pub port: u16,
    password: String,
    dir: tempfile::TempDir,
    /// The watchdog; closing its stdin stops the server.
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
    databases: AtomicUsize,
}

impl Postgres {
    /// A private server, stopped on drop.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("calsync-pg-").tempdir().expect("temp dir for PostgreSQL");
        give_to_server_user(dir.path());
        let password = format!("pg-test-{}", uuid::Uuid::new_v4().simple());
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, &password).expect("write the password file");
        give_to_server_user(&pwfile);
        let data = dir.path().join("data");
        let out = as_server_user(&mut Command::new(bin.join("initdb")))
            .args(["-D"])
            .arg(&data)
            .args(["-U", USER, "--pwfile"])
            .arg(&pwfile)
            .args(["--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(&pwfile);
        let log = dir.path().join("server.log");
        // A port taken between free_port() and the bind fails the start: rare enough.
        let port = free_port();
        let script = format!(
            "'{}' -D '{}' -p {port} -h 127.0.0.1 -k '' -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=400 -c shared_buffers=16MB >>'{}' 2>&1 & pid=$!; \
             cat >/dev/null; kill -INT $pid; wait $pid; rm -rf '{}'",
            bin.join("postgres").display(),
            data.display(),
            log.display(),
            // The shared server is never dropped: its directory goes with it here.
            dir.path().display()
        );
        let mut child = as_server_user(Command::new("sh").args(["-c", &script]))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        let stdin = child.stdin.take().expect("watchdog stdin");
        let server = Postgres {
            port,
            password,
            dir,
            watchdog: Mutex::new(Some((child, stdin))),
            databases: AtomicUsize::new(0),
        };
        if !server.wait_ready(Duration::from_secs(30)) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            server.stop();
            panic!("PostgreSQL did not start on 127.0.0.1:{port} (log {}):\n{text}", log.display());
        }
        server
    }

    fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let ok = Command::new(bin_dir().join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return true;
            }
            if let Some((child, _)) = self.watchdog.lock().unwrap_or_else(|e| e.into_inner()).as_mut()
                && child.try_wait().ok().flatten().is_some()
            {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Stop the server (fast shutdown) and wait for it.
    pub fn stop(&self) {
        if let Some((mut child, stdin)) = self.watchdog.lock().unwrap_or_else(|e| e.into_inner()).take() {
            drop(stdin);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The superuser's password (for tests that put it in PGPASSWORD or check it never leaks).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Run SQL as the superuser in database `db` with psql.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(bin_dir().join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", USER, "-d", db, "-c", sql])
            .env("PGPASSWORD", &self.password)
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {sql:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A fresh, empty database; returns its name.
    pub fn create_database(&self) -> String {
        // CREATE DATABASE copies template1, which must have no other session: one at a time.
        static LOCK: Mutex<()> = Mutex::new(());
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let name = format!("t{}_{}", std::process::id(), self.databases.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// `postgresql://` URL of database `db`, password included.
    pub fn url_of(&self, db: &str) -> String {
        format!("postgresql://{USER}:{}@127.0.0.1:{}/{db}?sslmode=disable", self.password, self.port)
    }

    /// URL of a fresh database.
    pub fn database(&self) -> String {
        let db = self.create_database();
        self.url_of(&db)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The test process's shared server (started on first use, stopped when the process ends).
pub fn shared() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(Postgres::start)
}
