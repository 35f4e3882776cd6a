//! Unit tests of the bench calendar service: quota, in-flight limit, injected faults and the
//! idempotent create. `event` is shared with the live-mode tests.

use super::client::BenchProvider;
use super::*;
use calsync::providers::{Marker, Provider};
use chrono::{TimeZone, Utc};

/// A one-hour event of ours (the live-mode tests use it too).
pub(super) fn event(uid: &str) -> EventData {
    let t = Utc.with_ymd_and_hms(2030, 1, 1, 10, 0, 0).single().expect("valid date");
    let at =
        |u: chrono::DateTime<Utc>| calsync::providers::EventTime::DateTime { utc: u, local: u.naive_utc(), zone: None };
    EventData {
        title: "t".into(),
        description: None,
        category: None,
        start: at(t),
        end: at(t + chrono::Duration::hours(1)),
        transparent: false,
        recurrence: vec![],
        exceptions: Vec::new(),
        marker: Marker { owner: "calsync".into(), uid: uid.into(), task_id: "1".into(), hash: "h".into() },
    }
}

fn provider(service: &Arc<BenchService>, conn: &str) -> BenchProvider {
    BenchProvider { service: service.clone(), conn: conn.into() }
}

#[tokio::test]
async fn quota_answers_429_with_retry_after_and_counts_early_retries() {
    let s = BenchService::new(Profile { latency_ms: 0, quota_rps: 2, quota_concurrency: 0, ..Profile::default() });
    let p = provider(&s, "ns/a");
    p.get(CALENDAR, "x").await.expect("first");
    p.get(CALENDAR, "y").await.expect("second");
    match p.get(CALENDAR, "z").await {
        Err(ProviderError::RateLimited { retry_after: Some(ra), .. }) => assert_eq!(ra, Duration::from_secs(1)),
        other => panic!("expected 429, got {other:?}"),
    }
    // Another connection has its own quota.
    provider(&s, "ns/b").get(CALENDAR, "z").await.expect("other connection");
    // Retrying z at once ignores the Retry-After.
    let _ = p.get(CALENDAR, "z").await;
    let st = s.stats();
    assert_eq!((st.quota_429, st.early_retries), (2, 1));
    assert_eq!(st.calls_of(Op::Get), 5);
}

#[tokio::test]
async fn concurrency_quota_counts_in_flight_calls() {
    let s = BenchService::new(Profile { latency_ms: 50, quota_rps: 0, quota_concurrency: 1, ..Profile::default() });
    let (a, b) = (provider(&s, "ns/a"), provider(&s, "ns/a"));
    let (ra, rb) = tokio::join!(a.get(CALENDAR, "x"), b.get(CALENDAR, "y"));
    assert!(ra.is_ok() != rb.is_ok(), "exactly one of two concurrent calls is refused: {ra:?} {rb:?}");
    assert_eq!(s.stats().quota_429, 1);
}

#[tokio::test]
async fn lost_answers_still_apply_and_create_stays_idempotent() {
    let s = BenchService::new(
        Profile { latency_ms: 0, quota_rps: 0, quota_concurrency: 0, ..Profile::default() }.with_faults(0.0),
    );
    let mut p = Profile { latency_ms: 0, quota_rps: 0, quota_concurrency: 0, ..Profile::default() };
    p.fault_drop = 1.0;
    let dropping = BenchService::new(p);
    let d = provider(&dropping, "ns/a");
    assert!(matches!(d.create(CALENDAR, "k1", &event("u1")).await, Err(ProviderError::Transient { .. })));
    assert_eq!(dropping.stats().events, 1, "the create was applied although its answer was lost");
    let ok = provider(&s, "ns/a");
    assert!(matches!(ok.create(CALENDAR, "k1", &event("u1")).await, Ok(Created::New(_))));
    assert!(matches!(ok.create(CALENDAR, "k1", &event("u1")).await, Ok(Created::Existing(_))));
    ok.create(CALENDAR, "k2", &event("u1")).await.expect("second key, same uid");
    let st = s.stats();
    assert_eq!((st.events, st.duplicate_uids, st.creates_existing), (2, 1, 1));
}

#[tokio::test]
async fn injected_faults_follow_the_rates() {
    let p = Profile { latency_ms: 0, quota_rps: 0, quota_concurrency: 0, timeout_ms: 0, ..Profile::default() };
    let s = BenchService::new(p.with_faults(0.4));
    let c = provider(&s, "ns/a");
    let mut failed = 0;
    for i in 0..2000 {
        if c.get(CALENDAR, &format!("e{i}")).await.is_err() {
            failed += 1;
        }
    }
    assert!((700..900).contains(&failed), "{failed} of 2000 failed at a 40% fault rate");
    let st = s.stats();
    for n in [st.injected_5xx, st.injected_429, st.injected_timeout, st.injected_drop] {
        assert!((150..250).contains(&n), "{st:?}");
    }
}
