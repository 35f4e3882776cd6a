//! Dispatches `connect` to the connector configured for each provider kind, so the drivers hold
//! one `Connector` whatever providers a deployment has set up.
//!
//! Owns: the kind → connector map. Must not touch: any provider's wire protocol.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::{Connector, Provider, ProviderError, Target};
use crate::credentials::Credentials;
use crate::resources::ProviderKind;

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
    /// Outlook when `oauth` sets them up (their tokens come from `tokens`).
    pub fn configured(
        oauth: &crate::oauth::config::OAuthConfig,
        tokens: Option<Arc<crate::oauth::TokenManager>>,
    ) -> Result<Self, ProviderError> {
        let mut registry = Self::builtin();
        let Some(tokens) = tokens else { return Ok(registry) };
        let broker: Arc<dyn crate::oauth::TokenBroker> = Arc::new(tokens);
        if let Some(google) = &oauth.google {
            let config = super::google::GoogleConfig { api_url: google.api_url.clone(), ..Default::default() };
            registry = registry
                .with(ProviderKind::Google, Arc::new(super::google::GoogleConnector::new(config, broker.clone())?));
        }
        if let Some(microsoft) = &oauth.microsoft {
            let config = super::outlook::OutlookConfig { api_url: microsoft.api_url.clone(), ..Default::default() };
            registry =
                registry.with(ProviderKind::Outlook, Arc::new(super::outlook::OutlookConnector::new(config, broker)?));
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
}
