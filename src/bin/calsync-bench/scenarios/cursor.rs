//! Scenario 9 (cursor pull): `calendar-to-tasks` with a cursor on unchanged calendars, through
//! the real router in this process (no HTTP stack): latency and provider requests per pull,
//! for calendars that are polled (one incremental listing each; ideal: the provider latency)
//! and for calendars a live push watch covers (no provider request; ideal: 0).
//!
//! Owns: this scenario. Must not touch: API, engine or store code.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::fixture::{self, NAMESPACE, connection, connection_name};
use crate::provider::{BenchConnector, BenchService, CALENDAR, Profile};
use crate::report::{self, percentile};
use calsync::api::{ApiConfig, AppState, Metrics, router};
use calsync::credentials::envelope::{Key, Keyring};
use calsync::engine::Objects;
use calsync::resources::{CalendarConnectionStatus, ProviderKind, PushMode, PushStatus, WatchedCalendar};

#[derive(Clone, Debug, clap::Args)]
pub struct CursorArgs {
    /// Users, one connection each.
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Cursor pulls per user and mode.
    #[arg(long, default_value_t = 5)]
    pub pulls: usize,
    /// Pulls in flight.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Latency of the bench provider.
    #[arg(long, default_value_t = 20)]
    pub provider_latency_ms: u64,
    /// Directory for the SQLite database (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

const API_KEY: &str = "bench-cursor-key";

async fn post(app: &axum::Router, body: Value) -> anyhow::Result<Value> {
    let request = Request::post("/api/calendar/calendar-to-tasks")
        .header("authorization", format!("Bearer {API_KEY}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))?;
    let response = app.clone().oneshot(request).await?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
    anyhow::ensure!(status.is_success(), "calendar-to-tasks answered {status}: {}", String::from_utf8_lossy(&bytes));
    Ok(serde_json::from_slice(&bytes)?)
}

/// Give every connection a push status: polled, or covered by a live watch.
async fn set_mode(store: &dyn Objects, users: usize, mode: PushMode) -> anyhow::Result<()> {
    for c in 0..users {
        let mut w = WatchedCalendar::polled(CALENDAR);
        if mode == PushMode::Push {
            w.mode = PushMode::Push;
            w.watch_id = Some(format!("watch-{c}"));
            w.expiration = Some(chrono::Utc::now() + chrono::Duration::hours(1));
        }
        let st = CalendarConnectionStatus {
            default_calendar_id: Some(CALENDAR.into()),
            push: Some(PushStatus { calendars: vec![w], ..PushStatus::default() }),
            ..CalendarConnectionStatus::default()
        };
        store.patch_connection_status(NAMESPACE, &connection_name(c), &st).await?;
    }
    Ok(())
}

/// Every user pulls `pulls` times with its cursor, `clients` at a time: latencies, failures.
async fn pull_all(app: &axum::Router, cursors: &mut [String], pulls: usize, clients: usize) -> (Vec<Duration>, u64) {
    let (mut lat, mut failed) = (Vec::new(), 0u64);
    for _ in 0..pulls {
        let jobs: Vec<(usize, String)> = cursors.iter().cloned().enumerate().collect();
        for chunk in jobs.chunks(clients.max(1)) {
            let mut set = tokio::task::JoinSet::new();
            for (u, cursor) in chunk.iter().cloned() {
                let app = app.clone();
                set.spawn(async move {
                    let t = Instant::now();
                    let r = post(&app, json!({"user_id": format!("user-{u:04}"), "cursor": cursor})).await;
                    (u, t.elapsed(), r)
                });
            }
            while let Some(Ok((u, took, r))) = set.join_next().await {
                match r.ok().and_then(|v| v["cursor"].as_str().map(str::to_string)) {
                    Some(next) => {
                        lat.push(took);
                        cursors[u] = next;
                    }
                    None => failed += 1,
                }
            }
        }
    }
    lat.sort();
    (lat, failed)
}

pub async fn run(args: &CursorArgs) -> anyhow::Result<u64> {
    report::heading(
        "scenario 9: calendar-to-tasks with a cursor, unchanged calendars (in process)",
        &format!(
            "{} users, {} pulls each per mode, {} in flight, provider latency {} ms",
            args.users, args.pulls, args.clients, args.provider_latency_ms
        ),
    );
    let dir = fixture::workdir(args.dir.as_deref())?;
    let store = fixture::open_store(dir.path()).await?;
    for c in 0..args.users {
        let creds = std::collections::BTreeMap::from([
            ("username".to_string(), b"bench".to_vec()),
            ("password".to_string(), b"bench".to_vec()),
        ]);
        store.put_secret(NAMESPACE, &format!("{}-creds", connection_name(c)), creds).await?;
        let mut conn = connection(c, ProviderKind::Caldav, None);
        // The REST API finds a user's connections by this label (the engine adds it; no engine
        // runs here).
        let label = calsync::resources::user_label_value(&conn.spec.user_id);
        conn.metadata.labels = Some([(calsync::resources::USER_LABEL.to_string(), label)].into());
        store.apply_connection(&conn).await?;
    }
    let objects: Arc<dyn Objects> = Arc::new(store.clone());
    set_mode(objects.as_ref(), args.users, PushMode::Poll).await?;
    let profile =
        Profile { latency_ms: args.provider_latency_ms, quota_rps: 0, quota_concurrency: 0, ..Profile::default() };
    let service = BenchService::new_live(profile);
    let connector = Arc::new(BenchConnector { service: service.clone() });
    let config = ApiConfig {
        api_keys: vec![API_KEY.to_string().into()],
        rate_limit_per_minute: 100_000_000,
        ..ApiConfig::default()
    };
    let keys = Keyring::new(Key::generate().0).push_keys();
    let state =
        AppState::new(objects.clone(), connector, NAMESPACE, config, Arc::new(Metrics::new())).with_push_keys(keys);
    let app = router(state);

    let mut cursors = Vec::with_capacity(args.users);
    for u in 0..args.users {
        let v = post(&app, json!({"user_id": format!("user-{u:04}")})).await?;
        cursors.push(v["cursor"].as_str().map(str::to_string).ok_or_else(|| anyhow::anyhow!("no cursor: {v}"))?);
    }

    let before = service.stats().total_calls();
    let (polled, failed_polled) = pull_all(&app, &mut cursors, args.pulls, args.clients).await;
    let polled_calls = service.stats().total_calls() - before;

    // Push: one pull records the watch in each cursor, then pulls need no provider request.
    set_mode(objects.as_ref(), args.users, PushMode::Push).await?;
    let (_, failed_first) = pull_all(&app, &mut cursors, 1, args.clients).await;
    let before = service.stats().total_calls();
    let (pushed, failed_pushed) = pull_all(&app, &mut cursors, args.pulls, args.clients).await;
    let pushed_calls = service.stats().total_calls() - before;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let provider = Duration::from_millis(args.provider_latency_ms);
    let n = |l: &[Duration]| l.len().max(1) as f64;
    report::figure("polled calendar: p50", ms(percentile(&polled, 50.0)), ms(provider), "ms");
    report::figure("polled calendar: p99", ms(percentile(&polled, 99.0)), ms(provider), "ms");
    report::figure("polled calendar: provider requests per pull", polled_calls as f64 / n(&polled), 1.0, "");
    report::figure("push-covered calendar: p50", ms(percentile(&pushed, 50.0)), 0.0, "ms");
    report::figure("push-covered calendar: p99", ms(percentile(&pushed, 99.0)), 0.0, "ms");
    report::count("push-covered calendar: provider requests", pushed_calls, 0);
    let failed = failed_polled + failed_first + failed_pushed;
    report::count("failed pulls", failed, 0);
    Ok(failed + pushed_calls)
}
