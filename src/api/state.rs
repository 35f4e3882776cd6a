//! `AppState`: what every handler shares (the `Objects` port, the provider connector, the
//! namespace, configuration, metrics, the per-user rate limiter and the import cache).
//!
//! Owns: construction of the shared state and the two in-process caches. Must not touch:
//! calendars (only the engine writes to them) or request parsing.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::config::ApiConfig;
use super::dto::CalendarToTasksResponse;
use super::errors::ApiError;
use super::metrics::Metrics;
use crate::engine::Objects;
use crate::providers::Connector;

/// Cached calendar-to-tasks answers, per (user, window).
#[derive(Default)]
pub struct ImportCache {
    entries: Mutex<HashMap<(String, u32), (Instant, CalendarToTasksResponse)>>,
}

impl ImportCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), (Instant, CalendarToTasksResponse)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, user: &str, window: u32, ttl: Duration) -> Option<CalendarToTasksResponse> {
        let map = self.lock();
        map.get(&(user.to_string(), window)).filter(|(at, _)| at.elapsed() < ttl).map(|(_, r)| r.clone())
    }

    pub fn put(&self, user: &str, window: u32, response: CalendarToTasksResponse) {
        let mut map = self.lock();
        // Bounded: drop what has expired before growing (the TTL is at most minutes).
        if map.len() > 10_000 {
            map.retain(|_, (at, _)| at.elapsed() < Duration::from_secs(600));
        }
        map.insert((user.to_string(), window), (Instant::now(), response));
    }

    /// Forget a user's answers (their connections changed).
    pub fn invalidate(&self, user: &str) {
        self.lock().retain(|(u, _), _| u != user);
    }
}

/// In-process caches and limiters.
pub struct Caches {
    pub import: ImportCache,
    limiter: DefaultKeyedRateLimiter<String>,
}

impl Caches {
    fn new(per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Caches { import: ImportCache::default(), limiter: RateLimiter::keyed(Quota::per_minute(per_minute)) }
    }

    /// Count one request of `user`; 429 with `Retry-After` beyond the quota.
    pub fn check_rate(&self, user: &str) -> Result<(), ApiError> {
        let key = user.to_string();
        match self.limiter.check_key(&key) {
            Ok(()) => {
                // Keep the key map from growing without bound with users who went quiet.
                if self.limiter.len() > 10_000 {
                    self.limiter.retain_recent();
                }
                Ok(())
            }
            Err(not_until) => Err(ApiError::rate_limited(not_until.wait_time_from(DefaultClock::default().now()))),
        }
    }
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub objects: Arc<dyn Objects>,
    pub connector: Arc<dyn Connector>,
    /// Namespace the API reads and writes objects in.
    pub namespace: String,
    pub config: Arc<ApiConfig>,
    pub metrics: Arc<Metrics>,
    pub caches: Arc<Caches>,
}

impl AppState {
    pub fn new(
        objects: Arc<dyn Objects>,
        connector: Arc<dyn Connector>,
        namespace: impl Into<String>,
        config: ApiConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let caches = Arc::new(Caches::new(config.rate_limit_per_minute));
        AppState { objects, connector, namespace: namespace.into(), config: Arc::new(config), metrics, caches }
    }
}
