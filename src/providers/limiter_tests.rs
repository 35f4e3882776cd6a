//! Tests of `limiter`, on tokio's paused clock (time only moves when every task waits), so
//! durations are exact and the tests take no wall-clock time.

use std::collections::VecDeque;

use secrecy::SecretString;

use super::*;
use crate::resources::ProviderKind;

/// Records when each call starts, per connection, and how many run at once; answers from a
/// queue of errors first, then `Ok`.
#[derive(Default)]
struct Probe {
    latency: Duration,
    state: Mutex<ProbeState>,
}

#[derive(Default)]
struct ProbeState {
    starts: Vec<(String, Instant)>,
    in_flight: usize,
    max_in_flight: usize,
    errors: VecDeque<ProviderError>,
}

impl Probe {
    fn lock(&self) -> MutexGuard<'_, ProbeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn starts(&self, connection: &str) -> Vec<Instant> {
        self.lock().starts.iter().filter(|(c, _)| c == connection).map(|(_, t)| *t).collect()
    }
}

struct ProbeProvider {
    probe: Arc<Probe>,
    connection: String,
}

impl ProbeProvider {
    async fn call(&self) -> Result<(), ProviderError> {
        let err = {
            let mut s = self.probe.lock();
            s.starts.push((self.connection.clone(), Instant::now()));
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
            s.errors.pop_front()
        };
        tokio::time::sleep(self.probe.latency).await;
        self.probe.lock().in_flight -= 1;
        err.map_or(Ok(()), Err)
    }
}

#[async_trait]
impl Provider for ProbeProvider {
    async fn account(&self) -> Result<AccountInfo, ProviderError> {
        self.call().await.map(|()| AccountInfo { email: None, calendars: vec![] })
    }
    async fn create(&self, _: &str, _: &str, _: &EventData) -> Result<Created, ProviderError> {
        unreachable!("the tests only call get")
    }
    async fn update(&self, _: &str, _: &str, _: Option<&str>, _: &EventData) -> Result<RemoteEvent, ProviderError> {
        unreachable!("the tests only call get")
    }
    async fn delete(&self, _: &str, _: &str, _: Option<&str>) -> Result<(), ProviderError> {
        self.call().await
    }
    async fn get(&self, _: &str, _: &str) -> Result<Option<RemoteEvent>, ProviderError> {
        self.call().await.map(|()| None)
    }
    async fn find_by_key(&self, _: &str, _: &str) -> Result<Option<RemoteEvent>, ProviderError> {
        self.call().await.map(|()| None)
    }
    async fn list(&self, _: &str, _: Window, _: Option<&str>) -> Result<EventPage, ProviderError> {
        unreachable!("the tests only call get")
    }
    async fn list_window(&self, _: &str, _: Window) -> Result<EventPage, ProviderError> {
        self.call().await.map(|()| EventPage::default())
    }
    async fn series_exceptions(
        &self,
        _: &str,
        _: &RemoteEvent,
        _: Window,
    ) -> Result<Vec<crate::providers::Exception>, ProviderError> {
        self.call().await?;
        Ok(vec![crate::providers::Exception::cancelled(crate::providers::EventTime::Date(chrono::NaiveDate::MIN))])
    }
}

struct ProbeConnector(Arc<Probe>);

#[async_trait]
impl Connector for ProbeConnector {
    async fn connect(&self, target: &Target, _: &Credentials) -> Result<Arc<dyn Provider>, ProviderError> {
        Ok(Arc::new(ProbeProvider { probe: self.0.clone(), connection: target.connection.clone() }))
    }
}

fn limited(probe: &Arc<Probe>, policy: Policy) -> Limited {
    Limited::new(Arc::new(ProbeConnector(probe.clone())), policy)
}

async fn connect(l: &Limited, connection: &str) -> Arc<dyn Provider> {
    let target = Target { provider: ProviderKind::Google, server_url: None, connection: connection.into() };
    let creds = Credentials::Basic { username: "u".into(), password: SecretString::from("p") };
    l.connect(&target, &creds).await.expect("the probe always connects")
}

/// `n` concurrent gets, each through its own provider from `connect` (as separate reconciles
/// would make them), on `connection`.
async fn burst(l: &Limited, connection: &str, n: usize) -> Vec<Result<Option<RemoteEvent>, ProviderError>> {
    let mut providers = Vec::new();
    for _ in 0..n {
        providers.push(connect(l, connection).await);
    }
    futures::future::join_all(providers.iter().map(|p| p.get("c", "e"))).await
}

#[tokio::test(start_paused = true)]
async fn n_calls_on_one_connection_take_at_least_n_over_rate() {
    let probe = Arc::new(Probe::default());
    let l = limited(&probe, Policy::default().with_rate(10.0, 1));
    let t0 = Instant::now();
    assert!(burst(&l, "ns/a", 30).await.iter().all(Result::is_ok));
    let elapsed = t0.elapsed();
    // The first call goes at once, then one per 100 ms: 29 intervals.
    assert!(elapsed >= Duration::from_millis(2900), "30 calls at 10/s took {elapsed:?}");
    assert!(elapsed < Duration::from_millis(3100), "pacing is not much slower than the rate: {elapsed:?}");
    let starts = probe.starts("ns/a");
    assert_eq!(starts.len(), 30);
    for w in starts.windows(2) {
        assert!(w[1] - w[0] >= Duration::from_millis(100), "calls closer than the period: {:?}", w[1] - w[0]);
    }
}

#[tokio::test(start_paused = true)]
async fn a_burst_goes_at_once_then_the_rate_paces() {
    let probe = Arc::new(Probe::default());
    let l = limited(&probe, Policy::per_second(10.0));
    let t0 = Instant::now();
    assert!(burst(&l, "ns/a", 30).await.iter().all(Result::is_ok));
    let starts = probe.starts("ns/a");
    assert!(starts[..10].iter().all(|t| *t == t0), "the first 10 (the burst) start at once");
    // 20 more at 100 ms each after the burst.
    assert!(t0.elapsed() >= Duration::from_millis(2000), "{:?}", t0.elapsed());
    // Any one-second window holds at most burst + rate calls.
    for (i, t) in starts.iter().enumerate() {
        let in_window = starts[i..].iter().filter(|u| **u - *t < Duration::from_secs(1)).count();
        assert!(in_window <= 20, "{in_window} calls within 1 s of call {i}");
    }
}

#[tokio::test(start_paused = true)]
async fn two_connections_do_not_share_a_budget() {
    let probe = Arc::new(Probe::default());
    let l = limited(&probe, Policy::default().with_rate(10.0, 1));
    let t0 = Instant::now();
    let (a, b) = tokio::join!(burst(&l, "ns/a", 10), burst(&l, "ns/b", 10));
    assert!(a.iter().chain(b.iter()).all(Result::is_ok));
    // One shared budget would need 1.9 s for 20 calls; two need 0.9 s each, side by side.
    assert!(t0.elapsed() < Duration::from_millis(1000), "{:?}", t0.elapsed());
    assert_eq!((probe.starts("ns/a").len(), probe.starts("ns/b").len()), (10, 10));
    assert_eq!(l.tracked(), 2);
}

#[tokio::test(start_paused = true)]
async fn max_in_flight_caps_concurrent_calls_per_connection() {
    let probe = Arc::new(Probe { latency: Duration::from_millis(100), ..Probe::default() });
    let l = limited(&probe, Policy::default().with_max_in_flight(2));
    let t0 = Instant::now();
    assert!(burst(&l, "ns/a", 6).await.iter().all(Result::is_ok));
    assert_eq!(probe.lock().max_in_flight, 2);
    assert_eq!(t0.elapsed(), Duration::from_millis(300), "6 calls of 100 ms, 2 at a time");
}

#[tokio::test(start_paused = true)]
async fn rate_limited_with_retry_after_pauses_the_connection() {
    let probe = Arc::new(Probe::default());
    probe
        .lock()
        .errors
        .push_back(ProviderError::RateLimited { retry_after: Some(Duration::from_millis(200)), message: "429".into() });
    let l = limited(&probe, Policy::default());
    let p = connect(&l, "ns/a").await;
    let t0 = Instant::now();
    assert!(matches!(p.get("c", "e").await, Err(ProviderError::RateLimited { .. })));
    // Another provider of the same connection waits out a Retry-After within `max_wait`;
    // another connection not.
    let other = connect(&l, "ns/b").await;
    let same = connect(&l, "ns/a").await;
    let (b, a) = tokio::join!(other.get("c", "e"), same.get("c", "e"));
    assert!(a.is_ok() && b.is_ok());
    assert_eq!(probe.starts("ns/b"), vec![t0]);
    assert_eq!(probe.starts("ns/a"), vec![t0, t0 + Duration::from_millis(200)]);
}

#[tokio::test(start_paused = true)]
async fn a_pause_of_seconds_is_not_waited_out_inside_a_call() {
    // Bench and Graph send Retry-After in whole seconds; the default `max_wait` must not park
    // a caller (a queue worker) for one.
    let probe = Arc::new(Probe::default());
    probe
        .lock()
        .errors
        .push_back(ProviderError::RateLimited { retry_after: Some(Duration::from_secs(1)), message: "429".into() });
    let p = connect(&limited(&probe, Policy::default()), "ns/a").await;
    let _ = p.get("c", "e").await;
    let t0 = Instant::now();
    assert!(
        matches!(p.get("c", "e").await, Err(ProviderError::Held { retry_after, .. }) if retry_after == Duration::from_secs(1))
    );
    assert_eq!(t0.elapsed(), Duration::ZERO, "answered at once");
}

#[tokio::test(start_paused = true)]
async fn a_pause_longer_than_max_wait_fails_at_once_without_calling() {
    let probe = Arc::new(Probe::default());
    probe
        .lock()
        .errors
        .push_back(ProviderError::RateLimited { retry_after: Some(Duration::from_secs(60)), message: "quota".into() });
    let l = limited(&probe, Policy::default());
    let p = connect(&l, "ns/a").await;
    let _ = p.get("c", "e").await;
    tokio::time::advance(Duration::from_secs(10)).await;
    match p.get("c", "e").await {
        Err(ProviderError::Held { retry_after: d, message, cause }) => {
            assert_eq!(cause, crate::providers::HoldCause::RetryAfter);
            assert_eq!(d, Duration::from_secs(50));
            assert!(message.contains("retries by itself"), "{message}");
        }
        other => panic!("expected a local RateLimited, got {other:?}"),
    }
    assert_eq!(probe.starts("ns/a").len(), 1, "the held call never reached the provider");
    tokio::time::advance(Duration::from_secs(50)).await;
    assert!(p.get("c", "e").await.is_ok(), "the pause ends with the Retry-After");
}

#[tokio::test(start_paused = true)]
async fn no_pause_without_retry_after_or_when_disabled() {
    let limited_error = |ra| ProviderError::RateLimited { retry_after: ra, message: "429".into() };
    for (policy, ra) in
        [(Policy::default(), None), (Policy::default().with_pause_on_rate_limited(false), Some(Duration::from_secs(3)))]
    {
        let probe = Arc::new(Probe::default());
        probe.lock().errors.push_back(limited_error(ra));
        let p = connect(&limited(&probe, policy), "ns/a").await;
        let t0 = Instant::now();
        assert!(p.get("c", "e").await.is_err());
        assert!(p.get("c", "e").await.is_ok());
        assert_eq!(probe.starts("ns/a"), vec![t0; 2], "{policy:?} {ra:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_map_stays_bounded_and_keeps_busy_connections() {
    let probe = Arc::new(Probe::default());
    let l = limited(&probe, Policy::default().with_rate(1.0, 1)).with_capacity(2);
    let held = connect(&l, "ns/held").await;
    held.get("c", "e").await.expect("first call goes at once");
    drop(connect(&l, "ns/idle").await);
    tokio::time::advance(Duration::from_secs(2)).await;
    // Full: the idle entry (refilled, unheld) goes; the held one stays, so its budget survives.
    drop(connect(&l, "ns/new").await);
    assert_eq!(l.tracked(), 2);
    held.get("c", "e").await.expect("budget refilled");
    let t = Instant::now();
    connect(&l, "ns/held").await.get("c", "e").await.expect("paced");
    assert_eq!(t.elapsed(), Duration::from_secs(1), "the held connection kept its limiter state");
}

#[test]
fn policies_from_rates() {
    let p = Policy::per_second(10.0);
    let q = p.quota.expect("paced");
    assert_eq!((q.burst_size().get(), q.replenish_interval()), (10, Duration::from_millis(100)));
    assert_eq!(
        Policy::per_second(0.5).quota.map(|q| (q.burst_size().get(), q.replenish_interval())),
        Some((1, Duration::from_secs(2)))
    );
    assert_eq!(Policy::per_second(0.0), Policy::default());
    assert_eq!(Policy::per_second(f64::NAN).quota, None);
    assert_eq!(Policy::default().with_max_in_flight(0).max_in_flight, None);
}

#[test]
fn rates_parse_with_clear_errors() {
    assert_eq!(parse_rate("X", " 10 ").ok(), Some(10.0));
    assert_eq!(parse_rate("X", "0.5").ok(), Some(0.5));
    assert_eq!(parse_rate("X", "OFF").ok(), Some(0.0));
    for bad in ["-1", "fast", "inf", ""] {
        match parse_rate("CALSYNC_X", bad) {
            Err(ProviderError::Invalid { message }) => assert!(message.contains("CALSYNC_X"), "{message}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn series_exceptions_reach_the_inner_provider_and_are_paced() {
    let probe = Arc::new(Probe::default());
    let l = limited(&probe, Policy::per_second(100.0));
    let p = connect(&l, "ns/series").await;
    let window = Window { from: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH, to: chrono::Utc::now() };
    let day = crate::providers::EventTime::Date(chrono::NaiveDate::MIN);
    let event = RemoteEvent {
        id: "e".into(),
        etag: None,
        link: None,
        title: "series".into(),
        description: None,
        category: None,
        start: day.clone(),
        end: day,
        zone: None,
        recurrence: vec!["RRULE:FREQ=WEEKLY".into()],
        marker: None,
        cancelled: false,
        created: None,
        exceptions: Vec::new(),
    };
    let found = p.series_exceptions("c", &event, window).await.expect("forwarded");
    assert_eq!(found.len(), 1, "the inner provider's answer, not the trait default (the listing's empty list)");
    assert_eq!(probe.starts("ns/series").len(), 1, "counted like every call");
}

#[tokio::test(start_paused = true)]
async fn list_window_reaches_the_inner_provider_and_is_admitted_like_list() {
    let probe = Arc::new(Probe::default());
    probe
        .lock()
        .errors
        .push_back(ProviderError::RateLimited { retry_after: Some(Duration::from_millis(200)), message: "429".into() });
    let p = connect(&limited(&probe, Policy::default()), "ns/window").await;
    let window = Window { from: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH, to: chrono::Utc::now() };
    let t0 = Instant::now();
    // The probe's `list` is unreachable: the trait default would have called it.
    assert!(matches!(p.list_window("c", window).await, Err(ProviderError::RateLimited { .. })));
    assert!(p.list_window("c", window).await.is_ok(), "the Retry-After is waited out within max_wait");
    assert_eq!(probe.starts("ns/window"), vec![t0, t0 + Duration::from_millis(200)], "paused like every call");
}

#[tokio::test(start_paused = true)]
async fn a_provider_failing_calls_in_a_row_trips_the_connections_breaker() {
    let probe = Arc::new(Probe::default());
    for _ in 0..6 {
        probe.lock().errors.push_back(ProviderError::Transient { message: "503".into() });
    }
    let l = limited(&probe, Policy::default());
    let p = connect(&l, "ns/a").await;
    let other = connect(&l, "ns/b").await;
    for _ in 0..5 {
        assert!(matches!(p.get("c", "e").await, Err(ProviderError::Transient { .. })));
    }
    // Five in a row: the connection is held for 1 s, without calling; other connections are not.
    match p.get("c", "e").await {
        Err(ProviderError::Held { retry_after, cause, message }) => {
            assert_eq!(cause, crate::providers::HoldCause::Failing);
            assert_eq!(retry_after, Duration::from_secs(1));
            assert!(message.contains("failed several calls in a row"), "{message}");
        }
        other => panic!("expected Held, got {other:?}"),
    }
    assert_eq!(probe.starts("ns/a").len(), 5);
    assert!(other.get("c", "e").await.is_err(), "ns/b is called (and fails with the queued 503)");
    assert_eq!(probe.starts("ns/b").len(), 1);
    // Half-open after the pause: the next failure trips it again, for twice as long.
    tokio::time::advance(Duration::from_secs(1)).await;
    probe.lock().errors.push_back(ProviderError::Transient { message: "503".into() });
    assert!(matches!(p.get("c", "e").await, Err(ProviderError::Transient { .. })));
    assert!(
        matches!(p.get("c", "e").await, Err(ProviderError::Held { retry_after, .. }) if retry_after == Duration::from_secs(2))
    );
    // An answer closes it.
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(p.get("c", "e").await.is_ok());
    probe.lock().errors.push_back(ProviderError::Transient { message: "503".into() });
    assert!(matches!(p.get("c", "e").await, Err(ProviderError::Transient { .. })));
    assert!(p.get("c", "e").await.is_ok(), "one failure after a success does not trip it");
}

#[tokio::test(start_paused = true)]
async fn the_breaker_can_be_turned_off() {
    let probe = Arc::new(Probe::default());
    for _ in 0..8 {
        probe.lock().errors.push_back(ProviderError::Transient { message: "503".into() });
    }
    let p = connect(&limited(&probe, Policy::default().with_breaker(None)), "ns/a").await;
    for _ in 0..8 {
        assert!(matches!(p.get("c", "e").await, Err(ProviderError::Transient { .. })));
    }
    assert_eq!(probe.starts("ns/a").len(), 8);
}
