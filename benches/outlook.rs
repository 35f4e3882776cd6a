//! The Outlook provider against the fake Graph with a simulated network latency (a program that
//! prints figures, not a timed test). There is no real Graph here, so the figures show what the
//! provider's request pattern costs: requests per operation, how the four-request mailbox limit
//! bounds parallel work, and what paging a window costs with Graph's default page size (10).
//!
//! Run: `cargo bench --bench outlook` (optionally `CALSYNC_BENCH_EVENTS=200`,
//! `CALSYNC_BENCH_LATENCY_MS=20`).

#[path = "../tests/support/fake_graph/mod.rs"]
mod fake_graph;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use calsync::credentials::Credentials;
use calsync::oauth::{AccessTokens, TokenBroker};
use calsync::providers::outlook::{OutlookConfig, OutlookConnector};
use calsync::providers::{Connector, EventData, EventTime, Marker, Provider, ProviderError, Target, Window, event_key};
use calsync::resources::ProviderKind;
use chrono::{TimeZone, Utc};
use secrecy::SecretString;

struct Static(String);

#[async_trait]
impl AccessTokens for Static {
    async fn access_token(&self) -> Result<SecretString, ProviderError> {
        Ok(SecretString::from(self.0.clone()))
    }
    async fn refresh_after_rejection(&self, _: &SecretString) -> Result<SecretString, ProviderError> {
        Ok(SecretString::from(self.0.clone()))
    }
}

#[async_trait]
impl TokenBroker for Static {
    async fn tokens(&self, _: &Target, _: &Credentials) -> Result<Arc<dyn AccessTokens>, ProviderError> {
        Ok(Arc::new(Static(self.0.clone())))
    }
}

fn event(i: usize) -> EventData {
    let tz = chrono_tz::Europe::Berlin;
    let start = Utc.with_ymd_and_hms(2031, 6, 2, 6, 0, 0).single().unwrap_or_else(Utc::now)
        + chrono::Duration::minutes(15 * i as i64);
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
        end: t(start + chrono::Duration::minutes(30)),
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
    format!("{n} in {:.2} s = {:.1}/s", d.as_secs_f64(), n as f64 / d.as_secs_f64())
}

#[tokio::main]
async fn main() {
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let n = env("CALSYNC_BENCH_EVENTS", 200) as usize;
    let latency = Duration::from_millis(env("CALSYNC_BENCH_LATENCY_MS", 20));
    let fake = fake_graph::FakeGraph::start("bench-token").await;
    fake.switches(|s| s.delay = latency);
    let config = OutlookConfig { api_url: fake.url.clone(), timeout: Duration::from_secs(30) };
    let connector = OutlookConnector::new(config, Arc::new(Static("bench-token".into()))).expect("connector");
    let target = Target { provider: ProviderKind::Outlook, server_url: None, connection: "bench/outlook".into() };
    let creds = Credentials::OAuth {
        refresh_token: SecretString::from("r"),
        access_token: None,
        expires_at: None,
        refresh_lease: None,
    };
    let p: Arc<dyn Provider> = connector.connect(&target, &creds).await.expect("connect");
    let cal = p.account().await.expect("account").default_calendar().expect("default").id.clone();
    println!("Outlook provider against fake Graph, {} ms per request, {n} events", latency.as_millis());

    let half = n / 2;
    fake.clear_requests();
    let t = Instant::now();
    for i in 0..half {
        p.create(&cal, &event_key(&format!("bench-{i}")), &event(i)).await.expect("create");
    }
    let seq = t.elapsed();
    println!(
        "create, sequential:              {} ({:.1} requests each)",
        rate(half, seq),
        fake.requests().len() as f64 / half as f64
    );

    fake.reset_max_in_flight();
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in half..n {
        // Every create on its own task, all at once: only the provider's limiter holds them back.
        let p = connector.connect(&target, &creds).await.expect("connect");
        let cal = cal.clone();
        set.spawn(async move { p.create(&cal, &event_key(&format!("bench-{i}")), &event(i)).await.map(|_| ()) });
    }
    while let Some(r) = set.join_next().await {
        r.expect("task").expect("create");
    }
    let par = t.elapsed();
    println!(
        "create, {} at once:              {} (max in flight {}, speed-up {:.1}x)",
        n - half,
        rate(n - half, par),
        fake.max_in_flight(),
        (par.as_secs_f64() / (n - half) as f64).recip() / (seq.as_secs_f64() / half as f64).recip()
    );

    let window = Window {
        from: Utc.with_ymd_and_hms(2031, 6, 1, 0, 0, 0).single().unwrap_or_else(Utc::now),
        to: Utc.with_ymd_and_hms(2031, 7, 1, 0, 0, 0).single().unwrap_or_else(Utc::now),
    };
    fake.clear_requests();
    let t = Instant::now();
    let page = p.list(&cal, window, None).await.expect("list");
    assert_eq!(page.events.len(), n);
    println!(
        "full list (delta start + view):  {} ms, {} requests for {n} events",
        t.elapsed().as_millis(),
        fake.requests().len()
    );
    p.create(&cal, "cs-one-more", &event(n)).await.expect("create");
    fake.clear_requests();
    let t = Instant::now();
    let delta = p.list(&cal, window, page.next_cursor.as_deref()).await.expect("incremental");
    println!(
        "incremental list:                {} ms, {} requests, {} changed",
        t.elapsed().as_millis(),
        fake.requests().len(),
        delta.events.len()
    );
}
