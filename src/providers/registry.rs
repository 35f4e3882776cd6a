//! Dispatches `connect` to the connector configured for each provider kind, so the drivers hold
//! one `Connector` whatever providers a deployment has set up, and sets each kind's
//! client-side limiter policy (`Limits`).
//!
//! Owns: the kind → connector map and the per-kind limiter policies. Must not touch: any
//! provider's wire protocol.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::batch::{BATCH_ENV, Batching};
use super::limiter::{Limited, Policy, parse_rate};
use super::{Connector, Provider, ProviderError, Target};
use crate::credentials::Credentials;
use crate::resources::ProviderKind;

/// Google's requests per second per connection unless `CALSYNC_GOOGLE_RATE_PER_SECOND` says
/// otherwise.
pub const GOOGLE_RATE_ENV: &str = "CALSYNC_GOOGLE_RATE_PER_SECOND";
/// CalDAV/iCloud requests per second per connection; unset: no pacing.
pub const CALDAV_RATE_ENV: &str = "CALSYNC_CALDAV_RATE_PER_SECOND";

/// Google allows 600 requests per minute per user on a sliding window: 10/s with a one-second
/// burst stays within it (at most 610 in any minute at full speed, which only a sustained
/// full-speed minute reaches; the engine's backoff absorbs that rare 429).
pub const GOOGLE_DEFAULT_RATE: f64 = 10.0;
/// CalDAV and iCloud publish no quota. Pacing by a guessed figure would only slow self-hosted
/// servers, which have none; a Retry-After from any server still pauses its connection.
pub const CALDAV_DEFAULT_RATE: f64 = 0.0;

/// Requests per second per connection for each provider kind (0: no pacing), and whether the
/// Google and Graph clients batch concurrent event requests (`CALSYNC_PROVIDER_BATCH`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub google_per_second: f64,
    pub caldav_per_second: f64,
    pub batching: Batching,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            google_per_second: GOOGLE_DEFAULT_RATE,
            caldav_per_second: CALDAV_DEFAULT_RATE,
            batching: Batching::default(),
        }
    }
}

impl Limits {
    /// From `CALSYNC_GOOGLE_RATE_PER_SECOND`, `CALSYNC_CALDAV_RATE_PER_SECOND` and
    /// `CALSYNC_PROVIDER_BATCH`.
    pub fn from_env() -> Result<Self, ProviderError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// From any variable lookup (tests pass a map).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, ProviderError> {
        let rate = |name: &str, default: f64| var(name).map_or(Ok(default), |v| parse_rate(name, &v));
        Ok(Limits {
            google_per_second: rate(GOOGLE_RATE_ENV, GOOGLE_DEFAULT_RATE)?,
            caldav_per_second: rate(CALDAV_RATE_ENV, CALDAV_DEFAULT_RATE)?,
            batching: Batching::parse(var(BATCH_ENV).as_deref())?,
        })
    }

    pub fn google(&self) -> Policy {
        Policy::per_second(self.google_per_second)
    }

    /// Graph's limit is 4 requests in flight per mailbox, which the Outlook provider's own
    /// semaphore keeps; its 10,000 per 10 minutes is far above what one user's tasks need.
    pub fn outlook(&self) -> Policy {
        Policy::default()
    }

    pub fn caldav(&self) -> Policy {
        Policy::per_second(self.caldav_per_second)
    }
}

/// A connector per provider kind; kinds without one answer with a clear configuration error.
#[derive(Clone, Default)]
pub struct Registry {
    by_kind: HashMap<ProviderKind, Arc<dyn Connector>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every provider this build has: CalDAV for `apple` and `caldav` (one shared connector, so
    /// clients and discovered hosts are cached once per connection).
    pub fn builtin() -> Self {
        let caldav: Arc<dyn Connector> = Arc::new(super::caldav::CaldavConnector::new());
        Self::new().with(ProviderKind::Apple, caldav.clone()).with(ProviderKind::Caldav, caldav)
    }

    /// Every provider this deployment configures: the built-in CalDAV providers, plus Google and
    /// Outlook when `oauth` sets them up (their tokens come from `tokens`), each behind its
    /// client-side limiter (`Limits::from_env`).
    pub fn configured(
        oauth: &crate::oauth::config::OAuthConfig,
        tokens: Option<Arc<crate::oauth::TokenManager>>,
        caldav_addresses: super::caldav::guard::AddressPolicy,
    ) -> Result<Self, ProviderError> {
        Self::configured_with(oauth, tokens, &Limits::from_env()?, caldav_addresses)
    }

    /// `configured` with explicit limits.
    pub fn configured_with(
        oauth: &crate::oauth::config::OAuthConfig,
        tokens: Option<Arc<crate::oauth::TokenManager>>,
        limits: &Limits,
        caldav_addresses: super::caldav::guard::AddressPolicy,
    ) -> Result<Self, ProviderError> {
        // One limiter for apple and caldav, as they share one connector (and connection names).
        let caldav: Arc<dyn Connector> = Arc::new(Limited::new(
            Arc::new(super::caldav::CaldavConnector::with_policy(caldav_addresses)),
            limits.caldav(),
        ));
        let mut registry = Self::new().with(ProviderKind::Apple, caldav.clone()).with(ProviderKind::Caldav, caldav);
        let Some(tokens) = tokens else { return Ok(registry) };
        let broker: Arc<dyn crate::oauth::TokenBroker> = Arc::new(tokens);
        if let Some(google) = &oauth.google {
            let config = super::google::GoogleConfig { api_url: google.api_url.clone(), ..Default::default() };
            let google =
                Arc::new(super::google::GoogleConnector::new(config, broker.clone())?.with_batching(limits.batching));
            registry = registry.with(ProviderKind::Google, Arc::new(Limited::new(google, limits.google())));
        }
        if let Some(microsoft) = &oauth.microsoft {
            let config = super::outlook::OutlookConfig { api_url: microsoft.api_url.clone(), ..Default::default() };
            let outlook =
                Arc::new(super::outlook::OutlookConnector::new(config, broker)?.with_batching(limits.batching));
            registry = registry.with(ProviderKind::Outlook, Arc::new(Limited::new(outlook, limits.outlook())));
        }
        Ok(registry)
    }

    /// Serve `kind` with `connector`.
    pub fn with(mut self, kind: ProviderKind, connector: Arc<dyn Connector>) -> Self {
        self.by_kind.insert(kind, connector);
        self
    }

    /// Whether `kind` has a connector.
    pub fn supports(&self, kind: ProviderKind) -> bool {
        self.by_kind.contains_key(&kind)
    }
}

#[async_trait]
impl Connector for Registry {
    async fn connect(&self, target: &Target, credentials: &Credentials) -> Result<Arc<dyn Provider>, ProviderError> {
        match self.by_kind.get(&target.provider) {
            Some(c) => c.connect(target, credentials).await,
            None => Err(ProviderError::Invalid {
                message: format!(
                    "calendar provider {} is not configured in this calsync deployment; see README \"Configuration\"",
                    target.provider
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::memory::{MemoryCalendar, MemoryConnector};
    use secrecy::SecretString;

    #[tokio::test]
    async fn dispatches_by_kind_and_explains_missing_ones() {
        let r =
            Registry::new().with(ProviderKind::Caldav, Arc::new(MemoryConnector { service: MemoryCalendar::new() }));
        let creds = Credentials::Basic { username: "user".into(), password: SecretString::from("secret") };
        let t = |provider| Target { provider, server_url: None, connection: "ns/c".into() };
        assert!(r.connect(&t(ProviderKind::Caldav), &creds).await.is_ok());
        match r.connect(&t(ProviderKind::Google), &creds).await {
            Err(ProviderError::Invalid { message }) => assert!(message.contains("google is not configured")),
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn limits_default_and_read_the_environment() {
        let none = Limits::from_lookup(|_| None).expect("defaults");
        assert_eq!(none, Limits { google_per_second: 10.0, caldav_per_second: 0.0, batching: Batching::default() });
        let q = none.google().quota.expect("google is paced");
        assert_eq!((q.burst_size().get(), q.replenish_interval()), (10, std::time::Duration::from_millis(100)));
        assert_eq!(none.caldav().quota, None);
        assert_eq!(none.outlook().quota, None);
        assert!(none.outlook().pause_on_rate_limited && none.caldav().pause_on_rate_limited);

        let env = |name: &str| match name {
            GOOGLE_RATE_ENV => Some("off".to_string()),
            CALDAV_RATE_ENV => Some("2.5".to_string()),
            BATCH_ENV => Some("off".to_string()),
            _ => None,
        };
        assert_eq!(
            Limits::from_lookup(env).expect("valid"),
            Limits { google_per_second: 0.0, caldav_per_second: 2.5, batching: Batching::OFF }
        );
        assert!(Limits::from_lookup(|n| (n == BATCH_ENV).then(|| "sometimes".to_string())).is_err());
        match Limits::from_lookup(|n| (n == CALDAV_RATE_ENV).then(|| "lots".to_string())) {
            Err(ProviderError::Invalid { message }) => assert!(message.contains(CALDAV_RATE_ENV), "{message}"),
            other => panic!("{other:?}"),
        }
    }
}
