//! `AppState`: what every handler shares (the `Objects` port, the provider connector, the
//! namespace, configuration, metrics, the per-user rate limiter, the import cache and the
//! cursor sealer).
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
use crate::oauth::{StateSealer, TokenManager};
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
    /// Busy time per connection for suggest-times (`busy_cache::BUSY_TTL`).
    pub busy: super::busy_cache::BusyCache,
    limiter: DefaultKeyedRateLimiter<String>,
}

impl Caches {
    fn new(per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Caches {
            import: ImportCache::default(),
            busy: Default::default(),
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
        }
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

/// OAuth for the REST API: the token manager (which holds the per-provider OAuth clients and is
/// shared with the engine's connectors), the state sealer, and the nonces of callbacks in flight.
pub struct OAuthRuntime {
    pub tokens: Arc<TokenManager>,
    pub sealer: StateSealer,
    in_flight: Mutex<std::collections::HashSet<String>>,
}

impl OAuthRuntime {
    pub fn new(tokens: Arc<TokenManager>, sealer: StateSealer) -> Self {
        OAuthRuntime { tokens, sealer, in_flight: Mutex::new(Default::default()) }
    }

    /// Nonces of callbacks being handled by this process (a replay racing the first use).
    pub fn in_flight(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
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
    /// `None`: no OAuth provider is configured (Google/Outlook connect answers 400).
    pub oauth: Option<Arc<OAuthRuntime>>,
    /// Provider notifications (push): secrets, routing, signal coalescing.
    pub webhooks: Arc<super::webhooks::Webhooks>,
    /// Seals the app's change cursors (`None` without ENCRYPTION_KEY: no cursors).
    pub cursors: Option<Arc<super::cursor::CursorSealer>>,
    /// App events for the event streams; started with the first stream.
    pub streams: Arc<std::sync::OnceLock<Arc<super::stream::StreamHub>>>,
    /// Make ICS feed tokens (derived from the push keys); `None`: feeds cannot be created.
    pub feed_keys: Option<Arc<crate::credentials::feed::FeedKeys>>,
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
        let namespace = namespace.into();
        let webhooks = Arc::new(super::webhooks::Webhooks::new(None, objects.clone(), &namespace));
        AppState {
            webhooks,
            streams: Arc::new(std::sync::OnceLock::new()),
            cursors: None,
            objects,
            connector,
            namespace,
            config: Arc::new(config),
            metrics,
            caches,
            oauth: None,
            feed_keys: None,
        }
    }

    /// Check provider notifications with these keys (the engine makes watch secrets with the
    /// same ones). Without keys every notification is refused.
    /// ICS feed tokens are derived from the same keys (`credentials::feed`).
    pub fn with_push_keys(mut self, keys: crate::credentials::push::PushKeys) -> Self {
        // The app's cursors are sealed with a key derived from the same encryption key.
        self.cursors = super::cursor::CursorSealer::from_push_keys(&keys).map(Arc::new);
        self.feed_keys = Some(Arc::new(crate::credentials::feed::FeedKeys::from_push(&keys)));
        self.webhooks = Arc::new(super::webhooks::Webhooks::new(Some(keys), self.objects.clone(), &self.namespace));
        self
    }

    /// The event hub, started on first use (it follows every change of the namespace).
    pub fn stream_hub(&self) -> Arc<super::stream::StreamHub> {
        self.streams
            .get_or_init(|| super::stream::StreamHub::start(self.objects.clone(), self.namespace.clone()))
            .clone()
    }

    /// End every event stream (shutdown: graceful shutdown waits for open connections).
    pub fn close_streams(&self) {
        if let Some(hub) = self.streams.get() {
            hub.close();
        }
    }

    /// Serve Google/Outlook connections with this OAuth runtime.
    pub fn with_oauth(mut self, oauth: Arc<OAuthRuntime>) -> Self {
        self.oauth = Some(oauth);
        self
    }
}
