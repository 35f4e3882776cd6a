//! The token manager: access tokens per connection, in memory only, refreshed ahead of expiry
//! (with jitter, so many connections issued together do not refresh together) and after a 401;
//! at most one refresh per connection at a time in a process; and, for servers that rotate
//! refresh tokens, a lease written with optimistic concurrency so two processes never refresh
//! one connection at once (reusing a rotated refresh token can revoke the whole grant).
//!
//! Owns: `TokenManager` (the `TokenBroker` the Google/Outlook connectors use). Must not touch:
//! storage (it goes through `CredentialVault`), calendar calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};

use super::client::OAuthClient;
use super::{AccessTokens, CredentialVault, TokenBroker};
use crate::credentials::{Credentials, RefreshLease};
use crate::providers::{ProviderError, Target};
use crate::resources::ProviderKind;

/// Refresh when the access token has less than this left (plus up to `JITTER`).
const MARGIN: Duration = Duration::from_secs(60);
const JITTER: Duration = Duration::from_secs(30);
/// How long a refresh lease holds; a refresh takes a round trip, so this is generous.
const LEASE: Duration = Duration::from_secs(30);
/// Tokens whose lifetime the server did not say are treated as living this long.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3000);

type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// A cached access token: the token, when it expires, and how long it lived when issued.
struct Access {
    token: SecretString,
    expires_at: DateTime<Utc>,
    lifetime: chrono::Duration,
}

/// Per-connection state; its async mutex is the in-process single flight.
#[derive(Default)]
struct Slot {
    access: Option<Access>,
}

/// Issues `AccessTokens` for OAuth connections; one per process, shared by engine and API.
pub struct TokenManager {
    clients: HashMap<ProviderKind, Arc<OAuthClient>>,
    vault: Arc<dyn CredentialVault>,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    /// Names this process in refresh leases.
    holder: String,
    clock: Clock,
}

impl TokenManager {
    pub fn new(clients: Vec<Arc<OAuthClient>>, vault: Arc<dyn CredentialVault>) -> Self {
        TokenManager {
            clients: clients.into_iter().map(|c| (c.provider(), c)).collect(),
            vault,
            slots: Mutex::new(HashMap::new()),
            holder: format!("calsync-{}", uuid::Uuid::new_v4().simple()),
            clock: Arc::new(Utc::now),
        }
    }

    /// Replace the clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn client(&self, kind: ProviderKind) -> Option<&Arc<OAuthClient>> {
        self.clients.get(&kind)
    }

    fn slot(&self, connection: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(connection.to_string()).or_default().clone()
    }

    /// Drop what is cached for a connection (disconnect): the next use loads from the store.
    pub fn forget(&self, connection: &str) {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).remove(connection);
    }

    /// Whether a cached token is still good to use: not within the refresh margin of its expiry.
    /// The margin is 60 s plus up to 30 s of jitter, but at most a fifth of the token's lifetime,
    /// so short-lived tokens are not refreshed on every call.
    fn fresh_enough(&self, access: &Access) -> bool {
        let jitter = rand::rng().random_range(0..=JITTER.as_millis() as u64);
        let margin = chrono::Duration::from_std(MARGIN + Duration::from_millis(jitter)).unwrap_or_default();
        let margin = margin.min(access.lifetime / 5);
        access.expires_at - margin > (self.clock)()
    }

    fn remember(&self, slot: &mut Slot, token: SecretString, expires_at: DateTime<Utc>) {
        let lifetime = (expires_at - (self.clock)()).max(chrono::Duration::zero());
        slot.access = Some(Access { token, expires_at, lifetime });
    }

    /// Refresh with the slot locked. Reloads the stored credentials first: another process may
    /// have rotated the refresh token since this one last looked.
    async fn refresh(
        &self,
        client: &OAuthClient,
        connection: &str,
        slot: &mut Slot,
    ) -> Result<SecretString, ProviderError> {
        let rotates = client.settings().rotates_refresh_tokens;
        let give_up = tokio::time::Instant::now() + LEASE * 2;
        loop {
            let Some(stored) = self.vault.load(connection).await? else {
                return Err(ProviderError::Revoked {
                    message: "the connection's stored credentials are gone; connect the calendar again".into(),
                });
            };
            let Credentials::OAuth { refresh_token, refresh_lease, expires_at, .. } = &stored.credentials else {
                return Err(ProviderError::Invalid {
                    message: "the connection's credentials are not OAuth tokens; reconnect the calendar".into(),
                });
            };
            let now = (self.clock)();
            let mut version = stored.version.clone();
            if rotates {
                if let Some(lease) = refresh_lease
                    && lease.holder != self.holder
                    && lease.until > now
                {
                    // Someone else is refreshing: wait for their new refresh token, then refresh
                    // with it ourselves (access tokens are never shared through the store).
                    if tokio::time::Instant::now() >= give_up {
                        return Err(ProviderError::Transient {
                            message: "another calsync process holds the token refresh lease; will retry".into(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                let leased = Credentials::OAuth {
                    refresh_token: refresh_token.clone(),
                    access_token: None,
                    expires_at: *expires_at,
                    refresh_lease: Some(RefreshLease {
                        holder: self.holder.clone(),
                        until: now + chrono::Duration::from_std(LEASE).unwrap_or_default(),
                    }),
                };
                match self.vault.replace(connection, &version, &leased).await? {
                    Some(v) => version = v,
                    // Someone wrote in between: look again.
                    None => continue,
                }
            }
            let result = client.refresh(refresh_token).await;
            let tokens = match result {
                Ok(t) => t,
                Err(e) => {
                    if rotates {
                        let released = Credentials::OAuth {
                            refresh_token: refresh_token.clone(),
                            access_token: None,
                            expires_at: *expires_at,
                            refresh_lease: None,
                        };
                        if let Err(w) = self.vault.replace(connection, &version, &released).await {
                            tracing::warn!(connection, error = %w, "could not release the token refresh lease");
                        }
                    }
                    let err = e.to_provider_error();
                    tracing::warn!(connection, provider = %client.provider(), error = %e, "token refresh failed");
                    return Err(err);
                }
            };
            let new_refresh = tokens.refresh_token.clone().unwrap_or_else(|| refresh_token.clone());
            let rotated = new_refresh.expose_secret() != refresh_token.expose_secret();
            if rotated || rotates {
                let next = Credentials::OAuth {
                    refresh_token: new_refresh.clone(),
                    access_token: None,
                    expires_at: None,
                    refresh_lease: None,
                };
                match self.vault.replace(connection, &version, &next).await {
                    Ok(Some(_)) => {}
                    // Only possible when our lease expired mid-refresh; the access token still works.
                    Ok(None) => tracing::warn!(connection, "the stored credentials changed during a token refresh"),
                    Err(e) => tracing::warn!(connection, error = %e, "could not store the refreshed refresh token"),
                }
            }
            let expires = tokens
                .expires_at
                .unwrap_or_else(|| (self.clock)() + chrono::Duration::from_std(DEFAULT_LIFETIME).unwrap_or_default());
            self.remember(slot, tokens.access_token.clone(), expires);
            tracing::debug!(connection, provider = %client.provider(), rotated, "access token refreshed");
            return Ok(tokens.access_token);
        }
    }
}

/// The tokens of one connection.
struct ConnectionTokens {
    manager: Arc<TokenManager>,
    client: Arc<OAuthClient>,
    connection: String,
}

#[async_trait]
impl AccessTokens for ConnectionTokens {
    async fn access_token(&self) -> Result<SecretString, ProviderError> {
        let slot = self.manager.slot(&self.connection);
        let mut slot = slot.lock().await;
        if let Some(access) = &slot.access
            && self.manager.fresh_enough(access)
        {
            return Ok(access.token.clone());
        }
        self.manager.refresh(&self.client, &self.connection, &mut slot).await
    }

    async fn refresh_after_rejection(&self, rejected: &SecretString) -> Result<SecretString, ProviderError> {
        let slot = self.manager.slot(&self.connection);
        let mut slot = slot.lock().await;
        if let Some(access) = &slot.access
            && access.token.expose_secret() != rejected.expose_secret()
            && self.manager.fresh_enough(access)
        {
            // Another caller refreshed while this one waited.
            return Ok(access.token.clone());
        }
        slot.access = None;
        self.manager.refresh(&self.client, &self.connection, &mut slot).await
    }
}

#[async_trait]
impl TokenBroker for Arc<TokenManager> {
    async fn tokens(&self, target: &Target, credentials: &Credentials) -> Result<Arc<dyn AccessTokens>, ProviderError> {
        let Some(client) = self.clients.get(&target.provider).cloned() else {
            return Err(ProviderError::Invalid {
                message: format!(
                    "OAuth for {} is not configured in this calsync deployment; see README \"Configuration\"",
                    target.provider
                ),
            });
        };
        let Credentials::OAuth { access_token, expires_at, .. } = credentials else {
            return Err(ProviderError::Invalid {
                message: format!(
                    "{} connections need OAuth tokens, but the credentials Secret holds a user name and password; connect through the REST API or set refresh_token",
                    target.provider
                ),
            });
        };
        // Fresh tokens from a code exchange come with an access token: use it without a refresh
        // (it also replaces anything cached for an earlier grant of this connection). A refresh
        // token that differs from the last one seen is NOT a reason to drop the cache: with
        // rotating servers every refresh by another process changes it.
        if let (Some(token), Some(at)) = (access_token, expires_at) {
            let slot = self.slot(&target.connection);
            let mut slot = slot.lock().await;
            self.remember(&mut slot, token.clone(), *at);
        }
        Ok(Arc::new(ConnectionTokens { manager: self.clone(), client, connection: target.connection.clone() }))
    }
}
