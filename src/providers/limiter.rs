//! The client-side, per-connection limiter (DESIGN §5: "keep a per-connection limiter so we stay
//! under quotas instead of bouncing"). `Limited` wraps any `Connector`; every provider it hands
//! out for one connection (`Target::connection`) shares that connection's limiter, which
//! - paces calls with a GCRA rate limiter (`governor`), waiting rather than failing;
//! - optionally caps the calls in flight (a FIFO semaphore);
//! - pauses the connection when the provider answers `RateLimited` with a Retry-After, so the
//!   connection's other tasks stop hammering a provider that already said "wait";
//! - pauses it, doubling, while the provider keeps failing (`breaker`).
//!
//! Owns: the per-connection limiter state and its bounded map. Must not touch: what a call does,
//! how errors are classified (the wrapped provider's job) or retries (the engine's backoff).
//!
//! One provider call is paced as one request. A call that makes several HTTP requests (a token
//! refresh, a 409 followed by a read) spends one cell only, so quotas should leave headroom.
//! Calls that the Google and Graph clients then coalesce into one batch request
//! (`providers::batch`) were each admitted here, so every part spends its cell, as the
//! providers count parts, not batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use governor::RateLimiter;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::breaker::{Answer, Breaker, BreakerPolicy};
use super::error::HoldCause;
use super::{
    AccountInfo, Connector, Created, EventData, EventPage, Provider, ProviderError, RemoteEvent, Target, Window,
};
use crate::credentials::Credentials;

mod policy;

pub use policy::{DEFAULT_CAPACITY, DEFAULT_MAX_WAIT, Policy, parse_rate};

/// Tokio's clock for governor, so waits run on tokio's timer and tests can pause time (governor's
/// own `until_ready` sleeps on a separate wall-clock timer that a paused runtime cannot drive).
#[derive(Clone, Copy, Debug)]
struct TokioClock {
    origin: Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }
}

type Gcra = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

struct Times {
    /// No call starts before this (the provider's last Retry-After, or the breaker's pause).
    paused_until: Option<Instant>,
    pause_cause: HoldCause,
    breaker: Breaker,
    /// When a call last started: the entry is evictable once its budget has refilled since.
    last_used: Instant,
}

/// One connection's limiter, shared by every provider handed out for it.
struct ConnLimiter {
    rate: Option<Gcra>,
    clock: TokioClock,
    slots: Option<Semaphore>,
    times: Mutex<Times>,
}

impl ConnLimiter {
    fn new(policy: &Policy) -> Self {
        let now = Instant::now();
        let clock = TokioClock { origin: now };
        ConnLimiter {
            rate: policy.quota.map(|q| RateLimiter::new(q, InMemoryState::default(), clock)),
            clock,
            slots: policy.max_in_flight.map(|n| Semaphore::new(n.get())),
            times: Mutex::new(Times {
                paused_until: None,
                pause_cause: HoldCause::RetryAfter,
                breaker: Breaker::default(),
                last_used: now,
            }),
        }
    }

    fn times(&self) -> MutexGuard<'_, Times> {
        // Critical sections only assign plain values and cannot panic midway; a poisoned lock
        // still holds consistent times.
        self.times.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait for a slot, the end of any pause and a rate cell, in that order, so the cell is spent
    /// right before the call goes out. Fails only when a pause is longer than `max_wait`. Gives
    /// the slot and the breaker's trips as the call goes out (for `record`).
    async fn admit(
        &self,
        policy: &Policy,
        connection: &str,
    ) -> Result<(Option<SemaphorePermit<'_>>, u32), ProviderError> {
        // The semaphore is never closed, so acquiring cannot fail; if it ever did, go on uncapped.
        let permit = match &self.slots {
            Some(s) => s.acquire().await.ok(),
            None => None,
        };
        let mut paced = false;
        loop {
            let (paused_until, cause) = {
                let t = self.times();
                (t.paused_until, t.pause_cause)
            };
            if let Some(until) = paused_until {
                let left = until.saturating_duration_since(Instant::now());
                if left > policy.max_wait {
                    let why = match cause {
                        HoldCause::RetryAfter => "the provider asked it to wait",
                        HoldCause::Failing => "the provider failed several calls in a row",
                    };
                    return Err(ProviderError::Held {
                        retry_after: left,
                        message: format!(
                            "calsync holds this connection's calls for another {} s because {why}; it retries by itself",
                            left.as_secs_f64().ceil()
                        ),
                        cause,
                    });
                }
                if !left.is_zero() {
                    tracing::debug!(
                        connection,
                        wait_ms = left.as_millis() as u64,
                        "waiting out the provider's Retry-After"
                    );
                    tokio::time::sleep_until(until).await;
                    continue;
                }
            }
            if paced {
                break;
            }
            if let Some(rate) = &self.rate {
                // governor's `until_ready` loop, on tokio's timer (see `TokioClock`).
                while let Err(not_until) = rate.check() {
                    tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await;
                }
            }
            paced = true;
            // A pause may have begun while this call waited for its cell: look again.
        }
        let mut t = self.times();
        t.last_used = Instant::now();
        Ok((permit, t.breaker.trips()))
    }

    fn pause(&self, retry_after: Duration, connection: &str, cause: HoldCause) {
        let until = Instant::now() + retry_after;
        let mut t = self.times();
        if t.paused_until.is_none_or(|u| u < until) {
            t.paused_until = Some(until);
            t.pause_cause = cause;
            match cause {
                HoldCause::RetryAfter => tracing::info!(
                    connection,
                    retry_after_ms = retry_after.as_millis() as u64,
                    "provider asked to wait: pausing this connection's calls"
                ),
                HoldCause::Failing => tracing::warn!(
                    connection,
                    pause_ms = retry_after.as_millis() as u64,
                    failures = t.breaker.failures() + 1,
                    "provider keeps failing: pausing this connection's calls"
                ),
            }
        }
    }

    /// Count the answer of a call sent after `trips` trips; `Some(pause)` when it trips.
    fn record(&self, policy: &BreakerPolicy, answer: Answer, trips: u32) -> Option<Duration> {
        self.times().breaker.record(policy, answer, trips)
    }

    /// Whether dropping this state changes nothing: no pause pending and the budget refilled.
    fn idle(&self, now: Instant, refill: Duration) -> bool {
        let t = self.times();
        t.paused_until.is_none_or(|u| u <= now) && t.last_used + refill <= now && t.breaker == Breaker::default()
    }
}

/// A `Connector` decorator that limits every connection's calls by `policy`.
pub struct Limited {
    inner: Arc<dyn Connector>,
    policy: Policy,
    capacity: usize,
    connections: Mutex<HashMap<String, Arc<ConnLimiter>>>,
}

impl Limited {
    pub fn new(inner: Arc<dyn Connector>, policy: Policy) -> Self {
        Limited { inner, policy, capacity: DEFAULT_CAPACITY, connections: Mutex::new(HashMap::new()) }
    }

    /// Keep state for at most about `capacity` connections (minimum 1).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// How many connections have limiter state now.
    pub fn tracked(&self) -> usize {
        self.map().len()
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<ConnLimiter>>> {
        // Only this module's short, non-panicking sections hold the lock.
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn limiter(&self, connection: &str) -> Arc<ConnLimiter> {
        let mut map = self.map();
        if let Some(l) = map.get(connection) {
            return l.clone();
        }
        if map.len() >= self.capacity {
            self.evict(&mut map);
        }
        let l = Arc::new(ConnLimiter::new(&self.policy));
        map.insert(connection.to_string(), l.clone());
        l
    }

    /// Drop every entry equal to a fresh one (no provider holds it, budget refilled, no pause);
    /// if none is, drop the least recently used, which may let that connection burst once more.
    fn evict(&self, map: &mut HashMap<String, Arc<ConnLimiter>>) {
        let now = Instant::now();
        let refill = self.policy.quota.map_or(Duration::ZERO, |q| q.burst_size_replenished_in());
        map.retain(|_, l| Arc::strong_count(l) > 1 || !l.idle(now, refill));
        if map.len() < self.capacity {
            return;
        }
        let oldest = map.iter().min_by_key(|(_, l)| l.times().last_used).map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            tracing::warn!(
                capacity = self.capacity,
                "client-side limiter map is full of busy connections; evicting the least recently used one"
            );
            map.remove(&k);
        }
    }
}

#[async_trait]
impl Connector for Limited {
    async fn connect(&self, target: &Target, credentials: &Credentials) -> Result<Arc<dyn Provider>, ProviderError> {
        let inner = self.inner.connect(target, credentials).await?;
        Ok(Arc::new(LimitedProvider {
            inner,
            limiter: self.limiter(&target.connection),
            policy: self.policy,
            connection: target.connection.clone(),
        }))
    }
}

struct LimitedProvider {
    inner: Arc<dyn Provider>,
    limiter: Arc<ConnLimiter>,
    policy: Policy,
    connection: String,
}

impl LimitedProvider {
    /// Run one call under the connection's limiter; a Retry-After in its answer pauses the rest.
    async fn run<T, F>(&self, call: F) -> Result<T, ProviderError>
    where
        F: Future<Output = Result<T, ProviderError>> + Send,
    {
        let (_permit, trips) = self.limiter.admit(&self.policy, &self.connection).await?;
        let r = call.await;
        if self.policy.pause_on_rate_limited
            && let Err(ProviderError::RateLimited { retry_after: Some(d), .. }) = &r
        {
            self.limiter.pause(*d, &self.connection, HoldCause::RetryAfter);
        }
        if let Some(breaker) = &self.policy.breaker
            && let Some(pause) = self.limiter.record(breaker, Answer::of(&r), trips)
        {
            self.limiter.pause(pause, &self.connection, HoldCause::Failing);
        }
        r
    }
}

#[async_trait]
impl Provider for LimitedProvider {
    async fn account(&self) -> Result<AccountInfo, ProviderError> {
        self.run(self.inner.account()).await
    }

    async fn create(&self, calendar: &str, key: &str, event: &EventData) -> Result<Created, ProviderError> {
        self.run(self.inner.create(calendar, key, event)).await
    }

    async fn update(
        &self,
        calendar: &str,
        id: &str,
        etag: Option<&str>,
        event: &EventData,
    ) -> Result<RemoteEvent, ProviderError> {
        self.run(self.inner.update(calendar, id, etag, event)).await
    }

    async fn delete(&self, calendar: &str, id: &str, etag: Option<&str>) -> Result<(), ProviderError> {
        self.run(self.inner.delete(calendar, id, etag)).await
    }

    async fn get(&self, calendar: &str, id: &str) -> Result<Option<RemoteEvent>, ProviderError> {
        self.run(self.inner.get(calendar, id)).await
    }

    async fn find_by_key(&self, calendar: &str, key: &str) -> Result<Option<RemoteEvent>, ProviderError> {
        self.run(self.inner.find_by_key(calendar, key)).await
    }

    async fn list(&self, calendar: &str, window: Window, cursor: Option<&str>) -> Result<EventPage, ProviderError> {
        self.run(self.inner.list(calendar, window, cursor)).await
    }

    async fn list_window(&self, calendar: &str, window: Window) -> Result<EventPage, ProviderError> {
        self.run(self.inner.list_window(calendar, window)).await
    }

    // Every trait method must be forwarded: a default here would silently answer for the inner
    // provider (the series' moved and cancelled occurrences were once lost that way).
    async fn series_exceptions(
        &self,
        calendar: &str,
        event: &RemoteEvent,
        window: Window,
    ) -> Result<Vec<crate::providers::Exception>, ProviderError> {
        self.run(self.inner.series_exceptions(calendar, event, window)).await
    }

    fn push_support(&self) -> crate::providers::PushSupport {
        self.inner.push_support()
    }

    async fn watch(
        &self,
        calendar: &str,
        request: &crate::providers::WatchRequest,
    ) -> Result<crate::providers::Watch, ProviderError> {
        self.run(self.inner.watch(calendar, request)).await
    }

    async fn renew_watch(
        &self,
        watch: &crate::providers::Watch,
        request: &crate::providers::WatchRequest,
    ) -> Result<crate::providers::Watch, ProviderError> {
        self.run(self.inner.renew_watch(watch, request)).await
    }

    async fn stop_watch(&self, calendar: &str, watch: &crate::providers::Watch) -> Result<(), ProviderError> {
        self.run(self.inner.stop_watch(calendar, watch)).await
    }

    async fn probe(&self, calendar: &str) -> Result<Option<String>, ProviderError> {
        self.run(self.inner.probe(calendar)).await
    }

    async fn dedicated_calendars(&self) -> Result<Vec<crate::providers::DedicatedCalendar>, ProviderError> {
        self.run(self.inner.dedicated_calendars()).await
    }

    async fn create_dedicated_calendar(
        &self,
        description: &str,
    ) -> Result<crate::providers::MadeCalendar, ProviderError> {
        self.run(self.inner.create_dedicated_calendar(description)).await
    }

    async fn delete_dedicated_calendar(&self, id: &str) -> Result<(), ProviderError> {
        self.run(self.inner.delete_dedicated_calendar(id)).await
    }

    async fn busy(&self, query: &crate::providers::busy::BusyQuery) -> Result<Vec<Window>, ProviderError> {
        self.run(self.inner.busy(query)).await
    }
}

#[cfg(test)]
#[path = "limiter_tests.rs"]
mod tests;
