//! CalDAV throughput against a real Radicale (a program that prints figures, not a timed test).
//!
//! Run: `cargo bench --bench caldav` (optionally `CALSYNC_BENCH_EVENTS=1000`). It starts its own
//! Radicale (installed on first use, see `tests/support/radicale.rs`), then measures, on one
//! server with fresh calendars:
//! - creating N events through calsync's CalDAV provider, one after another;
//! - the same N resources as raw sequential PUTs (plain reqwest, same bytes), the baseline;
//! - N minimal events (UTC, no VTIMEZONE) as raw PUTs, to show what the server costs per event;
//! - N creates through the provider with 4 in flight;
//! - listing the N events with one calendar-query, and an incremental (sync-collection) listing.

#[path = "../tests/support/radicale.rs"]
mod radicale;

use std::sync::Arc;
use std::time::{Duration, Instant};

use calsync::providers::caldav::{CaldavProvider, to_ics};
use calsync::providers::{EventData, EventTime, Marker, Provider, Window, event_key};
use chrono::{TimeZone, Utc};
use secrecy::SecretString;

fn event(i: usize) -> EventData {
    let tz = chrono_tz::Europe::Berlin;
    let start = Utc.with_ymd_and_hms(2031, 6, 2, 6, 0, 0).single().unwrap_or_else(Utc::now)
        + chrono::Duration::minutes(15 * i as i64);
    let end = start + chrono::Duration::minutes(30);
    let t = |u: chrono::DateTime<Utc>| EventTime::DateTime {
        utc: u,
        local: u.with_timezone(&tz).naive_local(),
        zone: Some("Europe/Berlin".into()),
    };
    EventData {
        title: format!("Task {i}"),
        description: Some("benchmark event".into()),
        category: Some("Bench".into()),
        start: t(start),
        end: t(end),
        transparent: false,
        recurrence: vec![],
        exceptions: Vec::new(),
        marker: Marker {
            owner: "calsync".into(),
            uid: format!("bench-{i}"),
            task_id: format!("t{i}"),
            hash: "h".into(),
        },
    }
}

fn rate(n: usize, d: Duration) -> String {
    format!("{n} in {:.2} s = {:.1} events/s", d.as_secs_f64(), n as f64 / d.as_secs_f64())
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("CALSYNC_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    let server = radicale::Radicale::start();
    let raw = server.raw();
    for cal in ["/alice/ours/", "/alice/raw/", "/alice/parallel/"] {
        raw.mkcalendar(cal, cal, &["VEVENT"]).await;
    }
    let p: Arc<dyn Provider> = Arc::new(
        CaldavProvider::new(&server.url, &server.user, &SecretString::from(server.password.clone())).expect("provider"),
    );
    p.account().await.expect("account");
    println!("CalDAV benchmark against Radicale {} on {} ({n} events each)", radicale::RADICALE_VERSION, server.url);

    let t = Instant::now();
    for i in 0..n {
        p.create("/alice/ours/", &event_key(&format!("bench-{i}")), &event(i)).await.expect("create");
    }
    let ours = t.elapsed();
    println!("calsync create, sequential:      {}", rate(n, ours));

    let bodies: Vec<(String, String)> = (0..n)
        .map(|i| {
            let key = event_key(&format!("bench-{i}"));
            (format!("/alice/raw/{key}.ics"), to_ics(&event(i), Utc::now()))
        })
        .collect();
    let t = Instant::now();
    for (path, ics) in &bodies {
        let r = raw.put(path, ics, ("If-None-Match", "*")).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let raw_t = t.elapsed();
    println!("raw PUT (reqwest), sequential:    {}", rate(n, raw_t));
    println!("calsync rate / raw rate:          {:.2}", raw_t.as_secs_f64() / ours.as_secs_f64());

    // The same count of minimal events (UTC times, no VTIMEZONE): what the server costs per
    // event when it has less to parse.
    raw.mkcalendar("/alice/minimal/", "minimal", &["VEVENT"]).await;
    let t = Instant::now();
    for i in 0..n {
        let ics = format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bench//EN\r\nBEGIN:VEVENT\r\nUID:min-{i}\r\nDTSTAMP:20310101T000000Z\r\nDTSTART:20310602T{:02}0000Z\r\nDTEND:20310602T{:02}3000Z\r\nSUMMARY:Task {i}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
            i % 24,
            i % 24
        );
        let r = raw.put(&format!("/alice/minimal/min-{i}.ics"), &ics, ("If-None-Match", "*")).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    println!("raw PUT, minimal UTC events:      {}", rate(n, t.elapsed()));

    let t = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(4));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let (p, sem) = (p.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire().await;
            p.create("/alice/parallel/", &event_key(&format!("bench-{i}")), &event(i)).await.map(|_| ())
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("task").expect("create");
    }
    println!("calsync create, 4 in flight:     {}", rate(n, t.elapsed()));

    let window = Window {
        from: Utc.with_ymd_and_hms(2031, 6, 1, 0, 0, 0).single().unwrap_or_else(Utc::now),
        to: Utc.with_ymd_and_hms(2031, 7, 1, 0, 0, 0).single().unwrap_or_else(Utc::now),
    };
    let t = Instant::now();
    let page = p.list("/alice/ours/", window, None).await.expect("list");
    let list_t = t.elapsed();
    assert_eq!(page.events.len(), n);
    println!(
        "calsync list (calendar-query):   {} ms for {} events = {:.0} events/s",
        list_t.as_millis(),
        page.events.len(),
        n as f64 / list_t.as_secs_f64()
    );
    p.create("/alice/ours/", "one-more", &event(n)).await.expect("create");
    let t = Instant::now();
    let delta = p.list("/alice/ours/", window, page.next_cursor.as_deref()).await.expect("incremental");
    println!("calsync incremental list:        {} ms ({} changed)", t.elapsed().as_millis(), delta.events.len());
}
