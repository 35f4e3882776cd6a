//! Scenario 11: CalDAV import. N events in a real Radicale (started from the test peers'
//! virtualenv, or any server given with `--url`), listed through calsync's CalDAV provider
//! (`Provider::list`: sync-token PROPFIND + `calendar-query` REPORT + parsing; and
//! `Provider::list_window`, the same without the PROPFIND) next to the raw REPORT alone (the
//! same request with plain reqwest, body read, nothing parsed), plus an in-process breakdown of
//! the parse (XML alone, XML + iCalendar) on the captured body.
//!
//! Owns: this scenario and the Radicale process it starts. Must not touch: the provider (it
//! only calls its public interface).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{TimeZone, Utc};
use futures::StreamExt;
use secrecy::SecretString;

use crate::report;
use calsync::credentials::Credentials;
use calsync::providers::caldav::{self, CaldavConnector};
use calsync::providers::{Connector, EventData, EventTime, Marker, Provider, Target, Window};
use calsync::resources::ProviderKind;

/// Options of `calsync-bench caldav-import`.
#[derive(Clone, Debug, clap::Args)]
pub struct CaldavImportArgs {
    /// Events in the calendar.
    #[arg(long, default_value_t = 1000)]
    pub events: usize,
    /// Timed rounds of each measurement (the median is reported).
    #[arg(long, default_value_t = 9)]
    pub rounds: usize,
    /// Use this CalDAV server instead of starting Radicale (`--user`/`--password` needed); a
    /// calendar `calsync-bench-<random>/` is made under `/<user>/` and deleted afterwards.
    #[arg(long)]
    pub url: Option<String>,
    #[arg(long, default_value = "alice")]
    pub user: String,
    #[arg(long)]
    pub password: Option<String>,
    /// Python of a virtualenv with Radicale (default: the one the tests install,
    /// `$CALSYNC_PEERS_DIR` or `~/.cache/calsync/peers`, `radicale-3.9.0/bin/python`).
    #[arg(long)]
    pub python: Option<PathBuf>,
}

/// A Radicale started for the run; killed on drop.
struct Server {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn default_python() -> PathBuf {
    let root = std::env::var_os("CALSYNC_PEERS_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        home.join(".cache").join("calsync").join("peers")
    });
    root.join("radicale-3.9.0").join("bin").join("python")
}

/// Start Radicale as `tests/support/radicale.rs` does (htpasswd plain, owner_only, no auth delay).
async fn start_radicale(python: PathBuf, password: &str) -> anyhow::Result<(Server, String)> {
    if !python.exists() {
        bail!(
            "no Radicale at {}: run `cargo test --test caldav` once (it installs it), pass --python, or --url a server",
            python.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    std::fs::write(dir.path().join("users"), format!("alice:{password}\n"))?;
    let config = format!(
        "[server]\nhosts = 127.0.0.1:{port}\n\n[auth]\ntype = htpasswd\nhtpasswd_filename = {}\nhtpasswd_encryption = plain\ndelay = 0\n\n[rights]\ntype = owner_only\n\n[storage]\nfilesystem_folder = {}\n\n[logging]\nlevel = warning\n",
        dir.path().join("users").display(),
        dir.path().join("collections").display()
    );
    std::fs::write(dir.path().join("config"), config)?;
    let child = Command::new(&python)
        .args(["-m", "radicale", "--config"])
        .arg(dir.path().join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting Radicale with {}", python.display()))?;
    let server = Server { child, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if Instant::now() > deadline {
            bail!("Radicale did not listen on port {port} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((server, format!("http://127.0.0.1:{port}/")))
}

/// Event `i`: a mix of what calendars hold: ours (marker, zoned, with VTIMEZONE), foreign
/// timed ones with long folded descriptions and escaped text, all-day ones, weekly series.
fn event(i: usize) -> EventData {
    let start = Utc.with_ymd_and_hms(2030, 1, 7, 8, 0, 0).single().unwrap_or_default()
        + chrono::Duration::minutes(37 * i as i64);
    let zone = ["Europe/Berlin", "America/New_York", "UTC", ""][i % 4];
    let at = |t: chrono::DateTime<Utc>| EventTime::DateTime {
        utc: t,
        local: t.naive_utc(),
        zone: (!zone.is_empty()).then(|| zone.to_string()),
    };
    let (start_t, end_t) = if i % 5 == 4 {
        (EventTime::Date(start.date_naive()), EventTime::Date(start.date_naive() + chrono::Duration::days(1)))
    } else {
        (at(start), at(start + chrono::Duration::minutes(45)))
    };
    EventData {
        title: format!("Task {i}: review, plan; ship \\ done"),
        description: i
            .is_multiple_of(2)
            .then(|| format!("Notes for task {i}.\n{}", "Long text that folds. ".repeat(8))),
        category: i.is_multiple_of(3).then(|| "Work".to_string()),
        start: start_t,
        end: end_t,
        recurrence: if i.is_multiple_of(7) { vec!["RRULE:FREQ=WEEKLY;COUNT=10".into()] } else { vec![] },
        exceptions: vec![],
        transparent: false,
        marker: Marker {
            owner: "calsync".into(),
            uid: format!("bench-{i}"),
            task_id: i.to_string(),
            hash: format!("{i:016x}"),
        },
    }
}

/// Plain reqwest with Basic auth: the raw requests the import is compared with.
struct Dav {
    http: reqwest::Client,
    user: String,
    password: String,
}

impl Dav {
    fn req(&self, method: &str, url: reqwest::Url) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        self.http.request(method, url).basic_auth(&self.user, Some(&self.password))
    }

    /// The import's REPORT, body read in full and not parsed.
    async fn report(&self, url: &reqwest::Url, query: &str) -> anyhow::Result<(Duration, Vec<u8>)> {
        let t = Instant::now();
        let resp = self
            .req("REPORT", url.clone())
            .header("Depth", "1")
            .header("Content-Type", "application/xml; charset=utf-8")
            .body(query.to_string())
            .send()
            .await?;
        anyhow::ensure!(resp.status().as_u16() == 207, "REPORT answered {}", resp.status());
        let body = resp.bytes().await?;
        let took = t.elapsed();
        Ok((took, body.to_vec()))
    }

    /// The sync-token PROPFIND the import sends first.
    async fn token(&self, url: &reqwest::Url) -> anyhow::Result<Duration> {
        let t = Instant::now();
        self.req("PROPFIND", url.clone())
            .header("Depth", "0")
            .header("Content-Type", "application/xml; charset=utf-8")
            .body(r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:sync-token/></d:prop></d:propfind>"#)
            .send()
            .await?
            .bytes()
            .await?;
        Ok(t.elapsed())
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

pub async fn run(args: &CaldavImportArgs) -> anyhow::Result<u64> {
    report::heading(
        "scenario 11: CalDAV import",
        &format!("{} events in one calendar, median of {} rounds", args.events, args.rounds),
    );
    let (_server, base, password) = match &args.url {
        Some(u) => (None, u.clone(), args.password.clone().context("--url needs --password")?),
        None => {
            let pw = format!("pw-{}", uuid::Uuid::new_v4().simple());
            let (s, u) = start_radicale(args.python.clone().unwrap_or_else(default_python), &pw).await?;
            (Some(s), u, pw)
        }
    };
    let base = reqwest::Url::parse(&base)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dav = Dav {
        http: reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?,
        user: args.user.clone(),
        password: password.clone(),
    };
    let path = format!("/{}/calsync-bench-{}/", args.user, uuid::Uuid::new_v4().simple());
    let collection = base.join(&path)?;
    let made = dav.req("MKCALENDAR", collection.clone()).send().await?;
    anyhow::ensure!(made.status().is_success(), "MKCALENDAR {collection}: {}", made.status());

    let t = Instant::now();
    let now = Utc::now();
    let mut puts = futures::stream::iter((0..args.events).map(|i| {
        let req = dav
            .req("PUT", collection.join(&format!("ev-{i}.ics")).unwrap_or_else(|_| collection.clone()))
            .header("Content-Type", "text/calendar; charset=utf-8")
            .body(caldav::to_ics(&event(i), now));
        async move { req.send().await.map(|r| r.status()) }
    }))
    .buffer_unordered(8);
    while let Some(status) = puts.next().await {
        let status = status?;
        anyhow::ensure!(status.is_success(), "PUT answered {status}");
    }
    report::info("load (PUT, 8 at once; not timed below)", format!("{:.1} s", t.elapsed().as_secs_f64()));

    let window = Window {
        from: Utc.with_ymd_and_hms(2029, 1, 1, 0, 0, 0).single().unwrap_or_default(),
        to: Utc.with_ymd_and_hms(2032, 1, 1, 0, 0, 0).single().unwrap_or_default(),
    };
    let query = caldav::calendar_query_body(window);
    let connector = CaldavConnector::new();
    let target = Target {
        provider: ProviderKind::Caldav,
        server_url: Some(base.to_string()),
        connection: "bench/caldav-import".into(),
    };
    let creds = Credentials::Basic { username: args.user.clone(), password: SecretString::from(password.clone()) };
    let provider: Arc<dyn Provider> = connector.connect(&target, &creds).await?;

    // Warm up both paths (connections, Radicale's caches), then alternate them round by round
    // so load changes on the machine hit both alike.
    let (_, body) = dav.report(&collection, &query).await?;
    let listed = provider.list(&path, window, None).await?;
    anyhow::ensure!(
        listed.events.len() == args.events,
        "the import listed {} of {} events",
        listed.events.len(),
        args.events
    );
    let windowed = provider.list_window(&path, window).await?;
    anyhow::ensure!(windowed.events.len() == args.events, "list_window listed {} events", windowed.events.len());
    let (mut raws, mut tokens, mut imports, mut windows) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.rounds.max(1) {
        raws.push(dav.report(&collection, &query).await?.0);
        tokens.push(dav.token(&collection).await?);
        let t = Instant::now();
        let page = provider.list(&path, window, None).await?;
        imports.push(t.elapsed());
        anyhow::ensure!(page.events.len() == args.events, "an import listed {} events", page.events.len());
        let t = Instant::now();
        let page = provider.list_window(&path, window).await?;
        windows.push(t.elapsed());
        anyhow::ensure!(page.events.len() == args.events, "list_window listed {} events", page.events.len());
    }
    let (mut xml_only, mut parse_all) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds.max(1) {
        let t = Instant::now();
        let n = caldav::count_calendar_data(&body)?;
        xml_only.push(t.elapsed());
        anyhow::ensure!(n == args.events, "the XML pass found {n} calendar-data");
        let t = Instant::now();
        let evs = caldav::parse_report(&body, &collection)?;
        parse_all.push(t.elapsed());
        anyhow::ensure!(evs.len() == args.events, "the parse found {} events", evs.len());
    }
    let _ = dav.req("DELETE", collection.clone()).send().await;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (raw_m, token_m, import_m) = (median(raws), median(tokens), median(imports));
    report::info("REPORT body", format!("{} KiB", body.len() / 1024));
    report::figure("import (Provider::list)", ms(import_m), ms(raw_m), "ms");
    report::figure("cursor-less listing (Provider::list_window)", ms(median(windows)), ms(raw_m), "ms");
    report::info("  of which: raw REPORT alone (the ideal)", format!("{:.1} ms", ms(raw_m)));
    report::info("  sync-token PROPFIND alone", format!("{:.1} ms", ms(token_m)));
    let (x, p) = (median(xml_only), median(parse_all));
    report::info("  parse, in process: XML pass alone", format!("{:.2} ms", ms(x)));
    report::info(
        "  parse, in process: XML + iCalendar",
        format!("{:.2} ms ({:.1} µs per event)", ms(p), ms(p) * 1000.0 / args.events as f64),
    );
    report::info(
        "  rest (client, limiter-free HTTP overhead, noise)",
        format!("{:.1} ms", ms(import_m) - ms(raw_m) - ms(token_m) - ms(p)),
    );
    Ok(0)
}
