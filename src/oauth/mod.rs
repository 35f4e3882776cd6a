//! OAuth 2.0 for the calendar providers that use it (Google, Microsoft): authorization URLs with
//! PKCE and sealed single-use state, code exchange, refresh and revocation, on the `oauth2` crate.
//!
//! Owns: the `AccessTokens` port providers call for a bearer token, and (as it lands) the
//! per-provider OAuth clients, the sealed `state`, and the token manager that refreshes ahead of
//! expiry and writes rotated refresh tokens back. Must not touch: calendar calls, resources or
//! stores (credentials are written back through a port the drivers implement).

use async_trait::async_trait;
use secrecy::SecretString;

use crate::providers::ProviderError;

/// Bearer tokens for one connection. Providers call this before every request and after a 401.
///
/// Errors are already classified: a refresh token the server refused (`invalid_grant`) is
/// `ProviderError::Revoked`; an unreachable token endpoint is `Transient`.
#[async_trait]
pub trait AccessTokens: Send + Sync {
    /// A current access token, refreshed first when it expires soon.
    async fn access_token(&self) -> Result<SecretString, ProviderError>;

    /// The provider answered 401 to a request made with `rejected`: refresh (unless another
    /// caller already replaced that token) and return the new one. Providers retry once with it;
    /// a second 401 is `ProviderError::Unauthorized`.
    async fn refresh_after_rejection(&self, rejected: &SecretString) -> Result<SecretString, ProviderError>;
}

/// Makes the `AccessTokens` of one connection from its stored credentials. An implementation
/// caches access tokens in memory per connection (`Target::connection`) and writes refreshed
/// refresh tokens back through a `CredentialVault`.
#[async_trait]
pub trait TokenBroker: Send + Sync {
    async fn tokens(
        &self,
        target: &crate::providers::Target,
        credentials: &crate::credentials::Credentials,
    ) -> Result<std::sync::Arc<dyn AccessTokens>, ProviderError>;
}

/// Stored credentials with the store's version (Secret resourceVersion, row version).
#[derive(Clone, Debug)]
pub struct Versioned {
    pub credentials: crate::credentials::Credentials,
    pub version: String,
}

/// Where a connection's credentials are read from and written back to, with optimistic
/// concurrency. The drivers implement it over `engine::Objects`; `connection` is the
/// `namespace/name` of the CalendarConnection (`Target::connection`).
#[async_trait]
pub trait CredentialVault: Send + Sync {
    /// The connection's credentials now (`None`: the connection or its credentials are gone).
    async fn load(&self, connection: &str) -> Result<Option<Versioned>, ProviderError>;

    /// Replace them if they are still at `expected_version`. `Ok(Some(new_version))` on success,
    /// `Ok(None)` when someone else wrote first (re-load and look again).
    async fn replace(
        &self,
        connection: &str,
        expected_version: &str,
        credentials: &crate::credentials::Credentials,
    ) -> Result<Option<String>, ProviderError>;
}

pub mod client;
pub mod config;
pub mod state;
pub mod tokens;

pub use client::{OAuthClient, OAuthError, OAuthSettings, TokenSet};
pub use state::{StateClaims, StateError, StateSealer};
pub use tokens::TokenManager;

/// The token manager for every OAuth provider `config` sets up (`None` when none is), writing
/// refreshed tokens back through `vault`.
pub fn token_manager(
    config: &config::OAuthConfig,
    vault: std::sync::Arc<dyn CredentialVault>,
) -> Result<Option<std::sync::Arc<TokenManager>>, OAuthError> {
    let clients = [config.google.as_ref(), config.microsoft.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| OAuthClient::new(p.oauth.clone()).map(std::sync::Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((!clients.is_empty()).then(|| std::sync::Arc::new(TokenManager::new(clients, vault))))
}

#[cfg(test)]
mod tokens_tests;
