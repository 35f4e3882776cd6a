//! Scenario 10: provider batch APIs. N event creates on one connection through the real Google
//! and Outlook clients (behind the client-side limiter, as deployed), `concurrency` at a time
//! as the engine's workers would issue them, against an in-process HTTP service with a fixed
//! round trip per HTTP request and a service time per request (`crate::batch_http`); batching
//! off, then on. The figures: time, tasks/s, HTTP requests, the gain, and Graph 429s (the
//! mailbox's four-at-once limit must hold with batches too).
//!
//! Owns: this scenario. Must not touch: the clients or the lane (it drives them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use secrecy::SecretString;

use crate::batch_http::{BatchService, Counts};
use crate::report;
use calsync::credentials::Credentials;
use calsync::oauth::{AccessTokens, TokenBroker};
use calsync::providers::batch::Batching;
use calsync::providers::google::{GoogleConfig, GoogleConnector};
use calsync::providers::limiter::{Limited, Policy};
use calsync::providers::outlook::{OutlookConfig, OutlookConnector};
use calsync::providers::{Connector, EventData, EventTime, Marker, ProviderError, Target, event_key};
use calsync::resources::ProviderKind;

/// Options of `calsync-bench batch`.
#[derive(Clone, Debug, clap::Args)]
pub struct BatchArgs {
    /// Event creates, all on one connection (a `tasks-to-calendar` import).
    #[arg(long, default_value_t = 300)]
    pub tasks: usize,
    /// Creates issued at once (the engine's work-queue concurrency; standalone's default is 8).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Round trip of every HTTP request, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub rtt_ms: u64,
    /// Service time of every request (alone or inside a batch), in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub service_ms: u64,
    /// The client limiter's Google rate, requests/s per connection (calsync's default is 10,
    /// Google's 600/min/user; 0 = off, to see what batching alone changes).
    #[arg(long, default_value_t = 0.0)]
    pub google_rps: f64,
}

struct Fixed;

#[async_trait]
impl AccessTokens for Fixed {
    async fn access_token(&self) -> Result<SecretString, ProviderError> {
        Ok(SecretString::from("bench-token"))
    }
    async fn refresh_after_rejection(&self, _: &SecretString) -> Result<SecretString, ProviderError> {
        Ok(SecretString::from("bench-token"))
    }
}

#[async_trait]
impl TokenBroker for Fixed {
    async fn tokens(&self, _: &Target, _: &Credentials) -> Result<Arc<dyn AccessTokens>, ProviderError> {
        Ok(Arc::new(Fixed))
    }
}

fn event(i: usize) -> EventData {
    let start =
        Utc.with_ymd_and_hms(2030, 1, 1, 10, 0, 0).single().unwrap_or_default() + chrono::Duration::hours(i as i64);
    let end = start + chrono::Duration::hours(1);
    let at = |t: chrono::DateTime<Utc>| EventTime::DateTime { utc: t, local: t.naive_utc(), zone: None };
    EventData {
        title: format!("bench task {i}"),
        description: None,
        category: None,
        start: at(start),
        end: at(end),
        transparent: false,
        recurrence: vec![],
        exceptions: vec![],
        marker: Marker { owner: "bench".into(), uid: format!("uid-{i}"), task_id: format!("t{i}"), hash: "h".into() },
    }
}

struct Run {
    elapsed: Duration,
    failed: usize,
    counts: Counts,
}

async fn run_one(args: &BatchArgs, kind: ProviderKind, batching: Batching) -> anyhow::Result<Run> {
    let svc = BatchService::start(Duration::from_millis(args.rtt_ms), Duration::from_millis(args.service_ms)).await?;
    let broker: Arc<dyn TokenBroker> = Arc::new(Fixed);
    let (inner, policy, calendar): (Arc<dyn Connector>, Policy, &str) = match kind {
        ProviderKind::Google => {
            let config = GoogleConfig { api_url: format!("http://{}/calendar/v3", svc.addr), ..Default::default() };
            let c = GoogleConnector::new(config, broker)?.with_batching(batching);
            (Arc::new(c), Policy::per_second(args.google_rps), "primary")
        }
        _ => {
            let config = OutlookConfig { api_url: format!("http://{}/v1.0", svc.addr), ..Default::default() };
            let c = OutlookConnector::new(config, broker)?.with_batching(batching);
            (Arc::new(c), Policy::default(), "AAMkCAL")
        }
    };
    let connector = Arc::new(Limited::new(inner, policy));
    let target = Target { provider: kind, server_url: None, connection: "bench/alice".into() };
    let credentials = Credentials::OAuth {
        refresh_token: SecretString::from("r"),
        access_token: None,
        expires_at: None,
        refresh_lease: None,
    };
    let workers = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let started = Instant::now();
    let calls: Vec<_> = (0..args.tasks)
        .map(|i| {
            let (workers, connector, target, credentials) =
                (workers.clone(), connector.clone(), target.clone(), credentials.clone());
            tokio::spawn(async move {
                let _worker = workers.acquire_owned().await.ok();
                // One client per reconcile, as the engine connects.
                let p = connector.connect(&target, &credentials).await?;
                let e = event(i);
                p.create(calendar, &event_key(&e.marker.uid), &e).await
            })
        })
        .collect();
    let mut failed = 0;
    for c in calls {
        if !matches!(c.await, Ok(Ok(_))) {
            failed += 1;
        }
    }
    Ok(Run { elapsed: started.elapsed(), failed, counts: svc.counts() })
}

/// Run the scenario; returns the number of correctness goals missed.
pub async fn run(args: &BatchArgs) -> anyhow::Result<u64> {
    report::heading(
        "scenario 10: provider batch APIs",
        &format!(
            "{} event creates on one connection, {} at once, {} ms round trip per HTTP request + {} ms per request served, client limiter: Google {}, Graph 4 in flight per mailbox",
            args.tasks,
            args.concurrency,
            args.rtt_ms,
            args.service_ms,
            if args.google_rps > 0.0 { format!("{} req/s", args.google_rps) } else { "off".into() }
        ),
    );
    let mut missed = 0;
    for (name, kind) in [("Google", ProviderKind::Google), ("Outlook (Graph)", ProviderKind::Outlook)] {
        let off = run_one(args, kind, Batching::OFF).await?;
        let on = run_one(args, kind, Batching::default()).await?;
        for (mode, r) in [("batching off", &off), ("batching on", &on)] {
            report::info(
                &format!("{name}, {mode}"),
                format!(
                    "{:.2} s, {:.0} tasks/s, {} HTTP requests ({} batches) for {} requests, {} throttled, {} failed",
                    r.elapsed.as_secs_f64(),
                    args.tasks as f64 / r.elapsed.as_secs_f64().max(f64::EPSILON),
                    r.counts.http_requests,
                    r.counts.batches,
                    r.counts.requests,
                    r.counts.throttled,
                    r.failed
                ),
            );
            report::count(&format!("{name}, {mode}: failed creates"), r.failed as u64, 0);
            missed += u64::from(r.failed > 0);
        }
        report::info(
            &format!("{name}: gain"),
            format!(
                "{:.1}x faster, {:.1}x fewer HTTP requests",
                off.elapsed.as_secs_f64() / on.elapsed.as_secs_f64().max(f64::EPSILON),
                off.counts.http_requests as f64 / on.counts.http_requests.max(1) as f64
            ),
        );
        if kind == ProviderKind::Outlook {
            report::soft_count("Graph 429s with batching (four in flight per mailbox)", on.counts.throttled, 0);
        }
    }
    Ok(missed)
}
