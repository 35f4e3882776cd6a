//! Scenario 12 (smart scheduling): `POST /suggest-times` for one user with three connections
//! holding 2,000 events in the 90-day window (a tenth of them weekly series), through the real
//! router in this process (no HTTP stack) and the bench calendar service: latency with the busy
//! cache warm, and the provider requests per answer (ideal: none while warm, one per connection
//! when not); then the pure core (`scheduling::suggest`, `scheduling::pack`) over 10,000 busy
//! intervals, no I/O.
//!
//! Owns: this scenario. Must not touch: API, engine or store code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use chrono::{DateTime, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::fixture::{NAMESPACE, connection, connection_name};
use crate::provider::{BenchConnector, BenchService, CALENDAR, Profile};
use crate::report::{self, percentile};
use calsync::api::{ApiConfig, AppState, Metrics, router};
use calsync::credentials::Credentials;
use calsync::engine::Objects;
use calsync::engine::memory::MemoryObjects;
use calsync::providers::{Connector, EventData, EventTime, Marker, Target};
use calsync::resources::{CalendarConnectionStatus, ProviderKind};
use calsync::scheduling::{self, AutoTask, Interval, Request as Ask, WorkingHours};

#[derive(Clone, Debug, clap::Args)]
pub struct ScheduleArgs {
    /// Events in the window, spread over the user's connections.
    #[arg(long, default_value_t = 2000)]
    pub events: usize,
    /// The user's connections.
    #[arg(long, default_value_t = 3)]
    pub connections: usize,
    /// Answers measured with the cache warm.
    #[arg(long, default_value_t = 500)]
    pub requests: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Latency of the bench provider (one busy read per connection when the cache is cold).
    #[arg(long, default_value_t = 50)]
    pub provider_latency_ms: u64,
    /// Busy intervals the pure core is timed on.
    #[arg(long, default_value_t = 10_000)]
    pub busy_intervals: usize,
}

const API_KEY: &str = "bench-schedule-key";
const USER: &str = "user-0000";
/// The window searched: 90 days from here.
fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 3, 4, 5, 0, 0).single().unwrap_or_default()
}

async fn post(app: &axum::Router, body: Value) -> anyhow::Result<Value> {
    let request = Request::post("/api/calendar/suggest-times")
        .header("authorization", format!("Bearer {API_KEY}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))?;
    let response = app.clone().oneshot(request).await?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
    anyhow::ensure!(status.is_success(), "suggest-times answered {status}: {}", String::from_utf8_lossy(&bytes));
    Ok(serde_json::from_slice(&bytes)?)
}

fn at(t: DateTime<Utc>) -> EventTime {
    EventTime::DateTime { utc: t, local: t.naive_utc(), zone: Some("UTC".into()) }
}

/// Event `i`: 15–120 minutes starting on a quarter hour anywhere in the 90 days, weekly for 4
/// weeks one time in ten.
fn event(i: usize, rng: &mut StdRng) -> EventData {
    let quarter = rng.random_range(0..90 * 24 * 4) as i64;
    let s = start() + chrono::Duration::minutes(15 * quarter);
    let e = s + chrono::Duration::minutes(15 * rng.random_range(1..=8) as i64);
    EventData {
        title: format!("Meeting {i}"),
        description: None,
        category: None,
        start: at(s),
        end: at(e),
        transparent: false,
        recurrence: if i.is_multiple_of(10) { vec!["RRULE:FREQ=WEEKLY;COUNT=4".into()] } else { vec![] },
        exceptions: vec![],
        marker: Marker {
            owner: "bench".into(),
            uid: format!("ev-{i}"),
            task_id: format!("ev-{i}"),
            hash: String::new(),
        },
    }
}

fn body(zone: &str, duration: u32) -> Value {
    let window = json!({"start": start().to_rfc3339(), "end": (start() + chrono::Duration::days(90)).to_rfc3339()});
    json!({"user_id": USER, "duration_minutes": duration, "timezone": zone, "window": window, "count": 5,
        "buffer_minutes": 10})
}

/// `requests` answers, `clients` at a time: latencies and failures.
async fn ask_all(app: &axum::Router, bodies: Vec<Value>, clients: usize) -> (Vec<Duration>, u64) {
    let (mut lat, mut failed) = (Vec::new(), 0u64);
    for chunk in bodies.chunks(clients.max(1)) {
        let mut set = tokio::task::JoinSet::new();
        for b in chunk.iter().cloned() {
            let app = app.clone();
            set.spawn(async move {
                let t = Instant::now();
                let r = post(&app, b).await;
                (t.elapsed(), r)
            });
        }
        while let Some(Ok((took, r))) = set.join_next().await {
            match r {
                Ok(v) if v["slots"].as_array().is_some_and(|s| !s.is_empty()) => lat.push(took),
                other => {
                    if failed == 0 {
                        eprintln!("first failed answer: {other:?}");
                    }
                    failed += 1;
                }
            }
        }
    }
    lat.sort();
    (lat, failed)
}

/// The pure core on `n` busy intervals: (median time of one `suggest`, of one `pack` of 20 tasks).
fn core(n: usize) -> anyhow::Result<(Duration, Duration, usize)> {
    let mut rng = StdRng::seed_from_u64(11);
    let from = start();
    let busy: Vec<Interval> = (0..n)
        .map(|_| {
            let s = from + chrono::Duration::minutes(rng.random_range(0..90 * 24 * 60));
            Interval::new(s, s + chrono::Duration::minutes(rng.random_range(5..=15)))
        })
        .collect();
    let ask = Ask {
        now: from,
        window: Interval::new(from, from + chrono::Duration::days(90)),
        zone: chrono_tz::America::New_York,
        working_hours: WorkingHours::office(),
        duration: chrono::Duration::minutes(15),
        buffer: chrono::Duration::zero(),
        earliest_start: None,
        deadline: None,
        count: 5,
        step: chrono::Duration::minutes(scheduling::DEFAULT_STEP_MINUTES),
    };
    let mut suggest = Vec::new();
    let mut slots = 0;
    for _ in 0..20 {
        let t = Instant::now();
        if let scheduling::Outcome::Slots(s) = scheduling::suggest(&ask, &busy)? {
            slots = s.len();
        }
        suggest.push(t.elapsed());
    }
    suggest.sort();
    let tasks: Vec<AutoTask> = (0..20)
        .map(|i| AutoTask {
            id: format!("task-{i:02}"),
            request: Ask { count: 1, deadline: Some(from + chrono::Duration::days(3 + i)), ..ask.clone() },
            current: None,
        })
        .collect();
    let mut packs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let placed = scheduling::pack(&tasks, &busy);
        packs.push(t.elapsed());
        anyhow::ensure!(placed.len() == tasks.len(), "pack lost a task");
    }
    packs.sort();
    Ok((percentile(&suggest, 50.0), percentile(&packs, 50.0), slots))
}

pub async fn run(args: &ScheduleArgs) -> anyhow::Result<u64> {
    report::heading(
        "scenario 12: suggest-times across a user's connections, and the scheduling core",
        &format!(
            "{} events over {} connections in 90 days, {} warm answers ({} in flight), provider latency {} ms; core on {} busy intervals",
            args.events, args.connections, args.requests, args.clients, args.provider_latency_ms, args.busy_intervals
        ),
    );
    let store = MemoryObjects::new();
    let profile =
        Profile { latency_ms: args.provider_latency_ms, quota_rps: 0, quota_concurrency: 0, ..Profile::default() };
    let service = BenchService::new(profile);
    let connector = Arc::new(BenchConnector { service: service.clone() });
    let creds = Credentials::Basic { username: "bench".into(), password: "bench".to_string().into() };
    let mut rng = StdRng::seed_from_u64(7);
    let mut loads = Vec::new();
    for c in 0..args.connections {
        let name = connection_name(c);
        store.put_secret(
            NAMESPACE,
            &format!("{name}-creds"),
            [("username".to_string(), b"bench".to_vec()), ("password".to_string(), b"bench".to_vec())].into(),
        );
        let mut conn = connection(c, ProviderKind::Caldav, Some("http://127.0.0.1:1/".into()));
        conn.spec.user_id = USER.into();
        let label = calsync::resources::user_label_value(USER);
        conn.metadata.labels = Some([(calsync::resources::USER_LABEL.to_string(), label)].into());
        store.apply_connection(&conn).await?;
        let st = CalendarConnectionStatus { default_calendar_id: Some(CALENDAR.into()), ..Default::default() };
        store.patch_connection_status(NAMESPACE, &name, &st).await?;
        let target =
            Target { provider: ProviderKind::Caldav, server_url: None, connection: format!("{NAMESPACE}/{name}") };
        let p = connector.connect(&target, &creds).await?;
        let mine: Vec<EventData> =
            (0..args.events).filter(|i| i % args.connections == c).map(|i| event(i, &mut rng)).collect();
        loads.push(async move {
            let writes = mine.iter().map(|e| p.create(CALENDAR, &e.marker.uid, e));
            futures::future::join_all(writes).await.into_iter().collect::<Result<Vec<_>, _>>()
        });
    }
    for r in futures::future::join_all(loads).await {
        r?;
    }
    let objects: Arc<dyn Objects> = Arc::new(store);
    let config = ApiConfig {
        api_keys: vec![API_KEY.to_string().into()],
        rate_limit_per_minute: 100_000_000,
        ..ApiConfig::default()
    };
    let app = router(AppState::new(objects, connector, NAMESPACE, config, Arc::new(Metrics::new())));

    // Cold: every answer in a zone not asked before misses the cache (its key holds the zone).
    let zones = [
        "America/New_York",
        "Europe/Berlin",
        "Asia/Tokyo",
        "America/Los_Angeles",
        "Europe/London",
        "Australia/Sydney",
        "America/Sao_Paulo",
        "Asia/Kolkata",
        "Africa/Nairobi",
        "Pacific/Auckland",
    ];
    let before = service.stats().total_calls();
    let (cold, failed_cold) = ask_all(&app, zones.iter().map(|z| body(z, 30)).collect(), 1).await;
    let cold_calls = service.stats().total_calls() - before;
    // Warm: the same user asking again and again (other lengths, same zone), within the TTL.
    let bodies: Vec<Value> = (0..args.requests).map(|i| body("America/New_York", [30, 45, 60, 90][i % 4])).collect();
    let before = service.stats().total_calls();
    let started = Instant::now();
    let (warm, failed_warm) = ask_all(&app, bodies, args.clients).await;
    let elapsed = started.elapsed();
    let warm_calls = service.stats().total_calls() - before;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let n = |l: &[Duration]| l.len().max(1) as f64;
    let provider = Duration::from_millis(args.provider_latency_ms);
    report::figure("cold cache: p50", ms(percentile(&cold, 50.0)), ms(provider), "ms");
    report::figure(
        "cold cache: provider requests per answer",
        cold_calls as f64 / n(&cold),
        args.connections as f64,
        "",
    );
    report::figure("warm cache: p50", ms(percentile(&warm, 50.0)), 0.0, "ms");
    report::figure("warm cache: p99", ms(percentile(&warm, 99.0)), 0.0, "ms");
    report::figure("warm cache: answers per second", warm.len() as f64 / elapsed.as_secs_f64(), 0.0, "/s");
    report::count("warm cache: provider requests", warm_calls, 0);
    report::count("failed answers (or no slot found)", failed_cold + failed_warm, 0);

    let (suggest, pack, slots) = core(args.busy_intervals)?;
    report::figure(&format!("core: suggest, {} busy, 90 days", args.busy_intervals), ms(suggest), 0.0, "ms");
    report::figure("core: pack 20 tasks on the same busy time", ms(pack), 0.0, "ms");
    report::info("core: slots found", slots);
    Ok(failed_cold + failed_warm + warm_calls)
}
