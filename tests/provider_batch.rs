//! Provider batch APIs against the strict fakes: concurrent event requests of one connection go
//! out as Google batch / Graph `$batch` requests (counted on the fakes), every caller gets its
//! own answer judged as a single request's (per-part 404/412/429 with Retry-After), Graph
//! batches stay within 20 parts and the mailbox's four in flight, create stays idempotent in a
//! batch, a rejected token is refreshed once for a batch, and a lone call goes out alone.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use calsync::credentials::Credentials;
use calsync::oauth::{AccessTokens, TokenBroker};
use calsync::providers::batch::Batching;
use calsync::providers::google::{GoogleConfig, GoogleConnector};
use calsync::providers::limiter::{Limited, Policy};
use calsync::providers::outlook::{OutlookConfig, OutlookConnector};
use calsync::providers::{Connector, Created, Provider, ProviderError, Target, event_key};
use calsync::resources::ProviderKind;
use secrecy::{ExposeSecret, SecretString};
use support::contract;
use support::fake_google::{Failure, FakeGoogle, FakeGoogleOptions};
use support::fake_graph::FakeGraph;

/// The token the peer accepts now; a refresh reads it again.
struct Tokens {
    current: Mutex<String>,
    source: Arc<dyn Fn() -> String + Send + Sync>,
    refreshes: Mutex<usize>,
}

#[async_trait]
impl AccessTokens for Tokens {
    async fn access_token(&self) -> Result<SecretString, ProviderError> {
        Ok(SecretString::from(self.current.lock().unwrap().clone()))
    }
    async fn refresh_after_rejection(&self, rejected: &SecretString) -> Result<SecretString, ProviderError> {
        let mut cur = self.current.lock().unwrap();
        if *cur == rejected.expose_secret() {
            *self.refreshes.lock().unwrap() += 1;
            *cur = (self.source)();
        }
        Ok(SecretString::from(cur.clone()))
    }
}

struct Broker(Arc<Tokens>);

#[async_trait]
impl TokenBroker for Broker {
    async fn tokens(&self, _: &Target, _: &Credentials) -> Result<Arc<dyn AccessTokens>, ProviderError> {
        Ok(self.0.clone())
    }
}

fn tokens(first: &str, source: Arc<dyn Fn() -> String + Send + Sync>) -> Arc<Tokens> {
    Arc::new(Tokens { current: Mutex::new(first.into()), source, refreshes: Mutex::new(0) })
}

fn oauth() -> Credentials {
    Credentials::OAuth {
        refresh_token: SecretString::from("r"),
        access_token: None,
        expires_at: None,
        refresh_lease: None,
    }
}

fn target(kind: ProviderKind) -> Target {
    Target { provider: kind, server_url: None, connection: "ns/alice".into() }
}

/// `n` clients of one connection (as `n` reconciles would have), behind the client limiter.
async fn clients(connector: Arc<dyn Connector>, kind: ProviderKind, n: usize) -> Vec<Arc<dyn Provider>> {
    let limited = Limited::new(connector, Policy::per_second(1000.0));
    let mut out = vec![];
    for _ in 0..n {
        out.push(limited.connect(&target(kind), &oauth()).await.expect("connect"));
    }
    out
}

async fn google(batching: Batching) -> (FakeGoogle, Vec<Arc<dyn Provider>>) {
    let fake = FakeGoogle::start(FakeGoogleOptions::static_token("tok"));
    let broker = Broker(tokens("tok", Arc::new(|| "tok".to_string())));
    let config = GoogleConfig { api_url: fake.base_url().to_string(), ..Default::default() };
    let connector = GoogleConnector::new(config, Arc::new(broker)).expect("connector").with_batching(batching);
    let ps = clients(Arc::new(connector), ProviderKind::Google, 24).await;
    (fake, ps)
}

/// Creates `uids` concurrently, one client each.
async fn create_all(ps: &[Arc<dyn Provider>], calendar: &str, uids: &[String]) -> Vec<Result<Created, ProviderError>> {
    let calls = uids.iter().enumerate().map(|(i, uid)| {
        let p = ps[i % ps.len()].clone();
        let (calendar, uid) = (calendar.to_string(), uid.clone());
        tokio::spawn(async move { p.create(&calendar, &event_key(&uid), &contract::event(&uid, &uid)).await })
    });
    let mut out = vec![];
    for h in calls.collect::<Vec<_>>() {
        out.push(h.await.expect("task"));
    }
    out
}

fn uids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test]
async fn google_concurrent_creates_go_out_in_batches_each_with_its_own_event() {
    let (fake, ps) = google(Batching::default()).await;
    fake.set_delay(Duration::from_millis(30));
    let uids = uids("g", 24);
    let out = create_all(&ps, "primary", &uids).await;
    for (uid, r) in uids.iter().zip(&out) {
        match r {
            Ok(Created::New(ev)) => assert_eq!(ev.id, event_key(uid), "each caller gets its own event"),
            other => panic!("{uid}: {other:?}"),
        }
    }
    assert_eq!(fake.raw_events("primary").len(), 24);
    let log = fake.requests();
    let http = log.iter().filter(|r| !r.in_batch).count();
    let batches = log.iter().filter(|r| r.path == "/batch/calendar/v3").count();
    assert!(batches >= 1, "{log:?}");
    assert!(http <= 12, "24 creates took {http} HTTP requests");
    assert_eq!(log.iter().filter(|r| r.in_batch || r.path.ends_with("/events")).count(), 24, "one insert per task");

    // Idempotent inside a batch: the same keys again are adopted, not duplicated.
    let again = create_all(&ps, "primary", &uids).await;
    assert!(again.iter().all(|r| matches!(r, Ok(Created::Existing(_)))), "{again:?}");
    assert_eq!(fake.raw_events("primary").len(), 24);
}

#[tokio::test]
async fn google_part_errors_reach_only_their_callers_with_their_own_classification() {
    let (fake, ps) = google(Batching::default()).await;
    let uids = uids("e", 12);
    let made: Vec<_> = create_all(&ps, "primary", &uids).await.into_iter().map(|r| r.expect("created")).collect();
    let ev = |i: usize| match &made[i] {
        Created::New(e) | Created::Existing(e) => e.clone(),
    };
    fake.set_delay(Duration::from_millis(40));
    fake.clear_requests();
    let stale = ev(1);
    fake.edit_title("primary", &stale.id, "edited in Google");
    let mut calls = vec![];
    // Four plain requests take every slot; what follows queues and goes out as one batch.
    for (i, p) in ps.iter().enumerate().take(12).skip(4) {
        let (p, e) = (p.clone(), ev(i));
        calls.push(tokio::spawn(async move { p.delete("primary", &e.id, e.etag.as_deref()).await.map(|_| "deleted") }));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    fake.fail_next(1, Failure::RateLimit429, Some(7));
    let (p, e) = (ps[0].clone(), stale.clone());
    calls.push(tokio::spawn(async move {
        p.update("primary", &e.id, e.etag.as_deref(), &contract::event("e-1", "new")).await.map(|_| "updated")
    }));
    let p = ps[1].clone();
    calls.push(tokio::spawn(async move {
        p.update("primary", "nosuchevent0", Some("\"1\""), &contract::event("x", "x")).await.map(|_| "updated")
    }));
    let p = ps[2].clone();
    calls.push(tokio::spawn(async move { p.delete("primary", "nosuchevent1", None).await.map(|_| "deleted") }));
    let mut out = vec![];
    for c in calls {
        out.push(c.await.expect("task"));
    }
    let limited: Vec<_> = out.iter().filter(|r| matches!(r, Err(ProviderError::RateLimited { .. }))).collect();
    assert_eq!(limited.len(), 1, "exactly one caller got the 429: {out:?}");
    assert!(
        matches!(limited[0], Err(ProviderError::RateLimited { retry_after: Some(d), .. }) if *d == Duration::from_secs(7))
    );
    let log = fake.requests();
    assert!(log.iter().any(|r| r.in_batch && r.status == 429), "the 429 was a part of a batch: {log:?}");
    // Each other caller's answer is what a single request gives.
    let throttled = |r: &Result<&str, ProviderError>| matches!(r, Err(ProviderError::RateLimited { .. }));
    assert!(out[..8].iter().all(|r| matches!(r, Ok("deleted")) || throttled(r)), "{out:?}");
    assert!(matches!(out[8], Err(ProviderError::Conflict { .. })) || throttled(&out[8]), "{:?}", out[8]);
    assert!(matches!(out[9], Err(ProviderError::NotFound { .. })) || throttled(&out[9]), "{:?}", out[9]);
    assert!(matches!(out[10], Ok("deleted")) || throttled(&out[10]), "missing is deleted: {:?}", out[10]);
}

#[tokio::test]
async fn google_a_lone_call_goes_out_alone() {
    let (fake, ps) = google(Batching::default()).await;
    let started = std::time::Instant::now();
    let r = ps[0].create("primary", &event_key("lone"), &contract::event("lone", "lone")).await;
    assert!(matches!(r, Ok(Created::New(_))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let log = fake.requests();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(!log[0].in_batch && log[0].path.ends_with("/events"));
}

#[tokio::test]
async fn google_switched_off_sends_no_batch() {
    let (fake, ps) = google(Batching::OFF).await;
    fake.set_delay(Duration::from_millis(20));
    let out = create_all(&ps, "primary", &uids("off", 12)).await;
    assert!(out.iter().all(|r| matches!(r, Ok(Created::New(_)))));
    assert!(fake.requests().iter().all(|r| !r.in_batch && !r.path.starts_with("/batch")));
}

async fn graph() -> (FakeGraph, Arc<Tokens>, Vec<Arc<dyn Provider>>) {
    let fake = FakeGraph::start("graph-token").await;
    // The token the fake is rotated to later.
    let toks = tokens("graph-token", Arc::new(|| "graph-token-2".to_string()));
    let config = OutlookConfig { api_url: fake.url.clone(), ..Default::default() };
    let connector = OutlookConnector::new(config, Arc::new(Broker(toks.clone()))).expect("connector");
    let ps = clients(Arc::new(connector), ProviderKind::Outlook, 50).await;
    (fake, toks, ps)
}

#[tokio::test]
async fn graph_concurrent_creates_batch_by_twenty_within_four_in_flight() {
    let (fake, _, ps) = graph().await;
    fake.switches(|s| s.delay = Duration::from_millis(20));
    let cal = fake.default_calendar();
    let uids = uids("o", 50);
    let out = create_all(&ps, &cal, &uids).await;
    assert!(out.iter().all(|r| matches!(r, Ok(Created::New(_)))), "{out:?}");
    assert_eq!(fake.all().len(), 50);
    let log = fake.requests();
    let batches: Vec<_> = log.iter().filter(|r| r.uri == "/v1.0/$batch").collect();
    assert!(!batches.is_empty());
    assert!(batches.iter().all(|b| b.status == 200), "no batch was refused (none over 20): {batches:?}");
    assert!(log.iter().all(|r| r.status != 429), "never over the mailbox's four in flight");
    assert!(fake.max_in_flight() <= 4);
    let http = log.iter().filter(|r| !r.in_batch).count();
    assert!(http < 50, "50 creates (100 requests) took {http} HTTP requests");

    // Idempotent inside a batch: the lookups by key find them all; nothing is created twice.
    let again = create_all(&ps, &cal, &uids).await;
    assert!(again.iter().all(|r| matches!(r, Ok(Created::Existing(_)))), "{again:?}");
    assert_eq!(fake.all().len(), 50);
}

#[tokio::test]
async fn graph_a_part_429_reaches_only_its_caller_and_pauses_the_connection() {
    let (fake, _, ps) = graph().await;
    let cal = fake.default_calendar();
    fake.switches(|s| s.delay = Duration::from_millis(40));
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let (p, cal) = (ps[i].clone(), cal.clone());
            tokio::spawn(async move {
                let uid = format!("t-{i}");
                p.create(&cal, &event_key(&uid), &contract::event(&uid, &uid)).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(15)).await;
    fake.switches(|s| {
        s.throttle_next = 1;
        s.throttle_retry_after = 9;
    });
    let mut out = vec![];
    for c in calls {
        out.push(c.await.expect("task"));
    }
    let limited: Vec<_> = out.iter().filter(|r| matches!(r, Err(ProviderError::RateLimited { .. }))).collect();
    assert_eq!(limited.len(), 1, "{out:?}");
    assert!(
        matches!(limited[0], Err(ProviderError::RateLimited { retry_after: Some(d), .. }) if *d == Duration::from_secs(9))
    );
    assert_eq!(out.iter().filter(|r| r.is_ok()).count(), 9);
    let log = fake.requests();
    assert!(log.iter().any(|r| r.in_batch && r.status == 429), "the 429 was a part of a batch: {log:?}");
    // The limiter heard it: the connection's other calls are held back (not sent) until the
    // Retry-After has passed.
    let r = ps[0].get(&cal, "AAMkAGI2").await;
    assert!(
        matches!(r, Err(ProviderError::Held { retry_after, .. }) if retry_after > Duration::from_secs(8) && retry_after <= Duration::from_secs(9)),
        "{r:?}"
    );
}

#[tokio::test]
async fn graph_a_rejected_token_is_refreshed_once_for_a_batch() {
    let (fake, toks, ps) = graph().await;
    let cal = fake.default_calendar();
    fake.rotate_token("graph-token-2");
    fake.switches(|s| s.delay = Duration::from_millis(30));
    let out = create_all(&ps, &cal, &uids("r", 12)).await;
    assert!(out.iter().all(|r| matches!(r, Ok(Created::New(_)))), "{out:?}");
    assert_eq!(*toks.refreshes.lock().unwrap(), 1);
}
