//! A real Radicale CalDAV server for tests and benchmarks.
//!
//! On first use Radicale is installed into a virtualenv under `~/.cache/calsync/peers/`
//! (keyed by version; override the root with `CALSYNC_PEERS_DIR`). Each `Radicale::start()` runs
//! its own server on a free loopback port with its own temporary storage, htpasswd auth (plain),
//! `owner_only` rights and `strict_preconditions = True` (a PUT over an existing item without
//! `If-Match` fails, which proves the client always sends it). The server is killed on drop.
//! A peer that cannot be installed or started FAILS the test (panics); it never skips.

#![allow(dead_code)]

// Self-contained, included where needed (test crates include these helpers by path).
#[allow(clippy::duplicate_mod)]
#[path = "artifacts.rs"]
mod artifacts;

#[allow(clippy::duplicate_mod)]
#[path = "ports.rs"]
mod ports;
use ports::free_port;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const RADICALE_VERSION: &str = "3.9.0";
pub const USER: &str = "alice";

fn peers_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CALSYNC_PEERS_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("calsync").join("peers")
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: could not run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The venv's python with Radicale installed (installing it on first use).
pub fn python() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let venv = peers_dir().join(format!("radicale-{RADICALE_VERSION}"));
    let py = venv.join("bin").join("python");
    if venv.join(".installed").exists() {
        return py;
    }
    std::fs::create_dir_all(peers_dir()).expect("create the peers cache dir");
    // Build in a private directory and rename it into place, so parallel test binaries never see
    // a half-installed venv. `python -m radicale` (not the bin/radicale script) keeps working
    // after the rename: a venv's python finds its site-packages through pyvenv.cfg next to it.
    let tmp = peers_dir().join(format!("radicale-{RADICALE_VERSION}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    run(Command::new("python3").args(["-m", "venv"]).arg(&tmp), "python3 -m venv (is python3-venv installed?)");
    run(
        Command::new(tmp.join("bin").join("pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("radicale=={RADICALE_VERSION}"),
        ]),
        "pip install radicale",
    );
    std::fs::write(tmp.join(".installed"), RADICALE_VERSION).expect("mark the venv installed");
    if std::fs::rename(&tmp, &venv).is_ok() {
        return py;
    }
    if venv.join(".installed").exists() {
        // Another process won the race; use its venv.
        let _ = std::fs::remove_dir_all(&tmp);
        return py;
    }
    // Something else occupies the cache path (an interrupted or foreign install): use ours.
    tmp.join("bin").join("python")
}

/// A running Radicale.
pub struct Radicale {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
    /// `http://127.0.0.1:PORT/`
    pub url: String,
    pub user: String,
    pub password: String,
}

impl Radicale {
    /// Start a fresh server with one user (`alice`, random password).
    pub fn start() -> Radicale {
        let py = python();
        let dir = tempfile::tempdir().expect("temp dir for Radicale");
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        artifacts::record_secret("radicale-password", &password);
        std::fs::write(dir.path().join("users"), format!("{USER}:{password}\n")).expect("write htpasswd");
        let port = free_port();
        let config = format!(
            "[server]\nhosts = 127.0.0.1:{port}\n\n\
             [auth]\ntype = htpasswd\nhtpasswd_filename = {users}\nhtpasswd_encryption = plain\ndelay = 0\n\n\
             [rights]\ntype = owner_only\n\n\
             [storage]\nfilesystem_folder = {storage}\nstrict_preconditions = True\n\n\
             [logging]\nlevel = warning\n",
            users = dir.path().join("users").display(),
            storage = dir.path().join("collections").display(),
        );
        let config_path = dir.path().join("config");
        std::fs::write(&config_path, config).expect("write Radicale config");
        let log = std::fs::File::create(dir.path().join("radicale.log")).expect("log file");
        let child = Command::new(&py)
            .args(["-m", "radicale", "--config"])
            .arg(&config_path)
            .args(["--logging-level", "warning"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start Radicale with {}: {e}", py.display()));
        let mut r =
            Radicale { child, dir, port, url: format!("http://127.0.0.1:{port}/"), user: USER.into(), password };
        r.wait_ready();
        r
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("radicale.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Radicale exited early ({status}):\n{}", self.log());
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 12];
                if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| n > 0) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "Radicale did not answer on port {} within 30 s:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn storage(&self) -> &Path {
        self.dir.path()
    }

    /// A raw HTTP client for requests that bypass calsync's CalDAV client.
    pub fn raw(&self) -> RawDav {
        let _ = rustls::crypto::ring::default_provider().install_default();
        RawDav {
            // Generous: Radicale serves one request at a time per collection, and a PROPFIND of
            // a 2,000-event calendar can wait behind many writes from several replicas (a 30 s
            // limit failed `e2e_replicas` once while three processes were writing).
            http: reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("raw client"),
            base: self.url.trim_end_matches('/').to_string(),
            user: self.user.clone(),
            password: self.password.clone(),
        }
    }
}

impl Drop for Radicale {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Plain reqwest against the peer, with Basic auth; paths are absolute (`/alice/calendar/`).
#[derive(Clone)]
pub struct RawDav {
    pub http: reqwest::Client,
    pub base: String,
    user: String,
    password: String,
}

pub struct RawResponse {
    pub status: u16,
    pub etag: Option<String>,
    pub body: String,
}

/// An error with its causes ("error sending request" alone does not say refused, reset or timed out).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

impl RawDav {
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") { path.to_string() } else { format!("{}{path}", self.base) }
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> RawResponse {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        // Reads are retried on transport errors. Radicale accepts at most 8 connections and
        // leaves the rest in a listen backlog of 5; while several calsync processes write, a
        // test's own read can be refused or reset there (CI failed `e2e_replicas` once on
        // "error sending request"). calsync retries such errors itself; an oracle that polls
        // must too, or it fails the test for the peer's queue. Writes are sent once: a retried
        // write could have landed the first time.
        let retries = if matches!(method, "GET" | "HEAD" | "OPTIONS" | "PROPFIND" | "REPORT") { 5 } else { 0 };
        let mut attempt = 0;
        let resp = loop {
            let mut req = self.http.request(m.clone(), self.url(path)).basic_auth(&self.user, Some(&self.password));
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            match req.send().await {
                Ok(resp) => break resp,
                Err(e) if attempt < retries => {
                    attempt += 1;
                    eprintln!("raw {method} {path}: {} (attempt {attempt}; retrying)", chain(&e));
                    tokio::time::sleep(Duration::from_secs(attempt)).await;
                }
                Err(e) => panic!("raw {method} {path}: {}", chain(&e)),
            }
        };
        let status = resp.status().as_u16();
        let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = resp.text().await.unwrap_or_default();
        RawResponse { status, etag, body }
    }

    /// MKCALENDAR `path` with a display name and the component types it accepts.
    pub async fn mkcalendar(&self, path: &str, name: &str, comps: &[&str]) {
        let comps: String = comps.iter().map(|c| format!("<C:comp name=\"{c}\"/>")).collect();
        let body = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop><D:displayname>{name}</D:displayname><C:supported-calendar-component-set>{comps}</C:supported-calendar-component-set></D:prop></D:set></C:mkcalendar>"#
        );
        let r = self.request("MKCALENDAR", path, &[("content-type", "application/xml")], Some(body)).await;
        assert_eq!(r.status, 201, "MKCALENDAR {path}: {}", r.body);
    }

    pub async fn get(&self, path: &str) -> Option<RawResponse> {
        let r = self.request("GET", path, &[], None).await;
        match r.status {
            200 => Some(r),
            404 => None,
            s => panic!("raw GET {path}: {s} {}", r.body),
        }
    }

    pub async fn put(&self, path: &str, ics: &str, precondition: (&str, &str)) -> RawResponse {
        self.request(
            "PUT",
            path,
            &[("content-type", "text/calendar; charset=utf-8"), precondition],
            Some(ics.to_string()),
        )
        .await
    }
}

/// Unfolded content lines of an iCalendar text (test-side reading, independent of calsync).
pub fn ics_lines(ics: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in ics.split('\n') {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix(' ').or_else(|| line.strip_prefix('\t')) {
            if let Some(last) = out.last_mut() {
                last.push_str(rest);
            }
        } else if !line.is_empty() {
            out.push(line.to_string());
        }
    }
    out
}

/// The value of the first property `name` (any parameters), as written.
pub fn ics_value(ics: &str, name: &str) -> Option<String> {
    ics_lines(ics).into_iter().find_map(|l| {
        let (head, value) = l.split_once(':')?;
        (head.split(';').next() == Some(name)).then(|| value.to_string())
    })
}

/// The VEVENT's own lines (a VTIMEZONE has DTSTART and RRULE lines too).
pub fn vevent_lines(ics: &str) -> Vec<String> {
    ics_lines(ics).into_iter().skip_while(|l| l != "BEGIN:VEVENT").take_while(|l| l != "END:VEVENT").collect()
}

/// The value of property `name` in already unfolded lines (any parameters).
pub fn line_value<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
    lines.iter().find_map(|l| {
        let (head, value) = l.split_once(':')?;
        (head.split(';').next() == Some(name)).then_some(value)
    })
}

impl RawDav {
    /// Every `.ics` resource in the collection `calendar` (PROPFIND depth 1, then a GET each):
    /// href → the VEVENT's unfolded lines. Independent of calsync's client.
    pub async fn vevents(&self, calendar: &str) -> std::collections::BTreeMap<String, Vec<String>> {
        let r = self
            .request(
                "PROPFIND",
                calendar,
                &[("depth", "1"), ("content-type", "application/xml")],
                Some(r#"<?xml version="1.0"?><propfind xmlns="DAV:"><prop><getetag/></prop></propfind>"#.into()),
            )
            .await;
        assert_eq!(r.status, 207, "PROPFIND {calendar}: {}", r.body);
        let mut out = std::collections::BTreeMap::new();
        for part in r.body.split("href>").filter(|p| p.contains(".ics<")) {
            let Some(href) = part.split('<').next().filter(|h| h.ends_with(".ics")) else { continue };
            if let Some(got) = self.get(href).await {
                out.insert(href.to_string(), vevent_lines(&got.body));
            }
        }
        out
    }
}
