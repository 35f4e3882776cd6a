//! Issue 18's replica acceptance at scale: three `calsync standalone` replicas on one PostgreSQL
//! database and a real Radicale, 2,000 TaskSyncs of 20 users declared through all three, one
//! replica killed with -9 in the middle and another restarted: every acknowledged task becomes
//! exactly one event (0 duplicates, 0 lost).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use support::calsync_bin::Standalone;
use support::radicale::{Radicale, RawDav};

const CAL: &str = "/alice/calendar/";
const USERS: usize = 20;
const PER_USER: usize = 100;

async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, secs: u64, mut f: F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// How many event resources the calendar holds (PROPFIND: hrefs only, cheap enough to poll).
async fn count(raw: &RawDav) -> usize {
    let body = r#"<?xml version="1.0"?><propfind xmlns="DAV:"><prop><getetag/></prop></propfind>"#;
    let r =
        raw.request("PROPFIND", CAL, &[("depth", "1"), ("content-type", "application/xml")], Some(body.into())).await;
    assert_eq!(r.status, 207, "PROPFIND: {}", r.body);
    r.body.matches(".ics</").count()
}

/// SUMMARY → how many events carry it, from one calendar-query REPORT (not a GET per event).
async fn summaries(raw: &RawDav) -> BTreeMap<String, usize> {
    let body = r#"<?xml version="1.0" encoding="utf-8"?><C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><C:calendar-data/></D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"/></C:comp-filter></C:filter></C:calendar-query>"#;
    let r = raw.request("REPORT", CAL, &[("depth", "1"), ("content-type", "application/xml")], Some(body.into())).await;
    assert_eq!(r.status, 207, "REPORT: {}", r.body);
    let mut out = BTreeMap::new();
    for line in r.body.lines() {
        if let Some(s) = line.trim_end_matches('\r').strip_prefix("SUMMARY:")
            && s.starts_with("Scale ")
        {
            *out.entry(s.to_string()).or_insert(0) += 1;
        }
    }
    out
}

fn tasks(user: usize) -> serde_json::Value {
    let day = (chrono::Utc::now() + chrono::Duration::days(5)).date_naive();
    let items: Vec<serde_json::Value> = (0..PER_USER)
        .map(|i| {
            json!({"id": format!("t{i:03}"), "name": format!("Scale u{user:02} t{i:03}"),
                "scheduled_time": format!("{day}T{:02}:{:02}:00", 6 + i / 10, (i % 10) * 5), "timezone": "UTC"})
        })
        .collect();
    json!({"user_id": format!("scale-user-{user:02}"), "tasks": items})
}

/// Declare user `u`'s tasks through `via`; the names of the acknowledged ones.
async fn declare(via: &Standalone, u: usize) -> Vec<String> {
    let (s, v) = via.call("POST", "/tasks-to-calendar", Some(tasks(u))).await;
    assert_eq!(s, 200, "{v}");
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["success"] == true)
        .map(|r| format!("Scale u{u:02} {}", r["task_id"].as_str().unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_2000_tasks_a_kill_9_and_a_restart_give_each_task_exactly_one_event() {
    let server = Radicale::start();
    let raw = server.raw();
    raw.mkcalendar(CAL, "Calendar", &["VEVENT"]).await;
    let pg = tokio::task::spawn_blocking(support::postgres::shared).await.expect("start PostgreSQL");
    support::calsync_bin::artifacts::record_secret("postgresql-password", pg.password());
    let db = tokio::task::spawn_blocking(|| support::postgres::shared().create_database()).await.expect("db");
    let env = vec![("DATABASE_URL", pg.url_of(&db)), ("CALSYNC_SYNC_WAIT_SECONDS", "2".to_string())];
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let ports: Vec<u16> = (0..3).map(|_| Standalone::pick_port()).collect();
    let mut replicas = Vec::new();
    for (dir, port) in dirs.iter().zip(&ports) {
        replicas.push(Standalone::start_with(dir.path(), *port, &env).await);
    }
    let holders = move || {
        let db = db.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                support::postgres::shared().psql(
                    &db,
                    "SELECT count(DISTINCT holder) FROM shard_leases WHERE holder <> '' AND expires_at > now()",
                )
            })
            .await
            .expect("psql")
        }
    };
    wait_until("three replicas holding shards", 40, async || holders().await == "3").await;

    // 20 users, each with a connection (the same Radicale account, one calendar): their
    // connections hash to shards all over the three replicas.
    for u in 0..USERS {
        let body = json!({"user_id": format!("scale-user-{u:02}"), "apple_id": server.user,
            "app_password": server.password, "server_url": server.url});
        let (s, v) = replicas[u % 3].call("POST", "/apple/connect", Some(body)).await;
        assert_eq!(s, 200, "{v}");
    }

    // Half the users' tasks through all three replicas at once; then replica 0 is killed -9.
    let mut acked: Vec<String> = Vec::new();
    let first = futures::future::join_all((0..USERS / 2).map(|u| declare(&replicas[u % 3], u))).await;
    acked.extend(first.into_iter().flatten());
    replicas[0].kill9();
    // The rest through the two left; replica 1 restarts in the middle of it.
    let second = futures::future::join_all((USERS / 2..USERS).map(|u| declare(&replicas[1 + u % 2], u))).await;
    acked.extend(second.into_iter().flatten());
    replicas[1].kill9();
    replicas[1] = Standalone::start_with(dirs[1].path(), ports[1], &env).await;
    assert_eq!(acked.len(), USERS * PER_USER, "every declaration acknowledged");

    let started = Instant::now();
    wait_until("2,000 events", 300, async || count(&raw).await >= USERS * PER_USER).await;
    // A little longer: a duplicate would show up now if any replica wrote twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let found = summaries(&raw).await;
    let missing: Vec<&String> = acked.iter().filter(|t| !found.contains_key(*t)).collect();
    let twice: Vec<(&String, &usize)> = found.iter().filter(|(_, n)| **n > 1).collect();
    assert!(missing.is_empty(), "{} acknowledged tasks lost: {:?}", missing.len(), &missing[..missing.len().min(5)]);
    assert!(twice.is_empty(), "{} duplicated: {:?}", twice.len(), &twice[..twice.len().min(5)]);
    assert_eq!(found.values().sum::<usize>(), USERS * PER_USER);
    eprintln!(
        "2,000 events through 3 replicas (one killed, one restarted) in {:?} after the last declaration",
        started.elapsed()
    );
    wait_until("the two live replicas holding every shard", 40, async || holders().await == "2").await;
    for r in &replicas[1..] {
        assert!(!r.log().contains(pg.password()) && !r.log().contains(&server.password));
    }
}
