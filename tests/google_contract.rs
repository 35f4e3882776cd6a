//! The shared provider contract on the Google Calendar provider, against the strict fake Google
//! Calendar API (`support::fake_google`) whose bearer tokens are checked by introspection at a
//! real OAuth server (oidc-provider, `support::oidc`). Tokens come from a real authorization
//! code + PKCE flow and are refreshed by calsync's own `TokenManager`.

mod support;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use calsync::credentials::Credentials;
use calsync::oauth::config::OAuthConfig;
use calsync::oauth::{CredentialVault, TokenManager, Versioned};
use calsync::providers::google::{GoogleConfig, GoogleConnector};
use calsync::providers::{Connector, Provider, ProviderError, Target};
use calsync::resources::ProviderKind;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde_json::json;
use support::contract::{self, ContractPeer, RawEvent};
use support::fake_google::{Failure, FakeGoogle, FakeGoogleOptions};
use support::oidc::{OidcOptions, OidcServer};

// `calendar.app.created` is what the OAuth start adds for `dedicated_calendar: true`.
const SCOPES: &str = "https://www.googleapis.com/auth/calendar.events https://www.googleapis.com/auth/calendar.calendarlist.readonly https://www.googleapis.com/auth/calendar.app.created";

/// One stored credential with a version: what a Secret is to the token manager.
struct OneSecret(Mutex<Option<(Credentials, u64)>>);

#[async_trait]
impl CredentialVault for OneSecret {
    async fn load(&self, _: &str) -> Result<Option<Versioned>, ProviderError> {
        let slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Ok(slot.clone().map(|(credentials, v)| Versioned { credentials, version: v.to_string() }))
    }
    async fn replace(&self, _: &str, expected: &str, c: &Credentials) -> Result<Option<String>, ProviderError> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_mut() {
            Some((cur, v)) if v.to_string() == expected => {
                *cur = c.clone();
                *v += 1;
                Ok(Some(v.to_string()))
            }
            _ => Ok(None),
        }
    }
}

struct GooglePeer {
    oidc: OidcServer,
    fake: FakeGoogle,
    connector: GoogleConnector,
    credentials: Credentials,
}

fn oauth_env(oidc: &OidcServer, fake: &FakeGoogle) -> OAuthConfig {
    let client = oidc.client().clone();
    let vars = [
        ("GOOGLE_CLIENT_ID", client.id.clone()),
        ("GOOGLE_CLIENT_SECRET", client.secret.clone()),
        ("GOOGLE_REDIRECT_URI", client.redirect_uris[0].clone()),
        ("GOOGLE_AUTH_URL", oidc.auth_url()),
        ("GOOGLE_TOKEN_URL", oidc.token_url()),
        ("GOOGLE_REVOKE_URL", oidc.revocation_url()),
        ("GOOGLE_CALENDAR_API_URL", fake.base_url().to_string()),
    ];
    OAuthConfig::from_lookup(&|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).expect("config")
}

impl GooglePeer {
    async fn start(access_token_ttl_secs: u64) -> GooglePeer {
        let oidc = OidcServer::start(OidcOptions { access_token_ttl_secs, ..OidcOptions::default() });
        let client = oidc.client().clone();
        let fake =
            FakeGoogle::start(FakeGoogleOptions::introspection(&oidc.introspection_url(), &client.id, &client.secret));
        let tokens = oidc.issue_tokens(SCOPES, "alice").await;
        let credentials = Credentials::OAuth {
            refresh_token: SecretString::from(tokens.refresh_token().to_string()),
            access_token: None,
            expires_at: None,
            refresh_lease: None,
        };
        let config = oauth_env(&oidc, &fake);
        let vault = Arc::new(OneSecret(Mutex::new(Some((credentials.clone(), 1)))));
        let manager: Arc<TokenManager> = calsync::oauth::token_manager(&config, vault).expect("oauth").expect("google");
        let connector = GoogleConnector::new(
            GoogleConfig { api_url: fake.base_url().to_string(), ..Default::default() },
            Arc::new(manager),
        )
        .expect("connector");
        GooglePeer { oidc, fake, connector, credentials }
    }

    fn target(&self) -> Target {
        Target { provider: ProviderKind::Google, server_url: None, connection: "default/google-alice".into() }
    }
}

#[async_trait]
impl ContractPeer for GooglePeer {
    async fn provider(&self) -> Arc<dyn Provider> {
        self.connector.connect(&self.target(), &self.credentials).await.expect("connect")
    }

    async fn wrong_credentials(&self) -> Result<(), ProviderError> {
        // A refresh token the server never issued, in a connector of its own.
        let bogus = Credentials::OAuth {
            refresh_token: SecretString::from("not-a-refresh-token"),
            access_token: None,
            expires_at: None,
            refresh_lease: None,
        };
        let vault = Arc::new(OneSecret(Mutex::new(Some((bogus.clone(), 1)))));
        let manager =
            calsync::oauth::token_manager(&oauth_env(&self.oidc, &self.fake), vault).expect("oauth").expect("google");
        let connector = GoogleConnector::new(
            GoogleConfig { api_url: self.fake.base_url().to_string(), ..Default::default() },
            Arc::new(manager),
        )
        .expect("connector");
        let target = Target { connection: "default/google-bogus".into(), ..self.target() };
        connector.connect(&target, &bogus).await?.account().await.map(|_| ())
    }

    async fn raw_get(&self, calendar: &str, id: &str) -> Option<RawEvent> {
        let e = self.fake.raw_event(calendar, id)?;
        if e["status"] == "cancelled" {
            return None;
        }
        Some(RawEvent {
            title: e["summary"].as_str().unwrap_or_default().to_string(),
            has_marker: e["extendedProperties"]["private"]["calsync"].is_string(),
        })
    }

    async fn raw_insert_external(
        &self,
        calendar: &str,
        title: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> String {
        let e = self.fake.insert_external(
            calendar,
            json!({"summary": title, "start": {"dateTime": start.to_rfc3339()}, "end": {"dateTime": end.to_rfc3339()}}),
        );
        e["id"].as_str().expect("id").to_string()
    }

    async fn raw_edit_title(&self, calendar: &str, id: &str, title: &str) {
        self.fake.edit_title(calendar, id, title);
    }

    async fn raw_own_calendars(&self) -> Vec<String> {
        own_calendars(&self.fake)
    }
}

fn own_calendars(fake: &FakeGoogle) -> Vec<String> {
    fake.raw_calendars()
        .into_iter()
        .filter(|c| c["description"].as_str().is_some_and(|d| d.contains(calsync::providers::dedicated::MARKER_PREFIX)))
        .map(|c| c["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_meets_the_provider_contract() {
    let peer = GooglePeer::start(3600).await;
    contract::run_all(&peer, "google").await;
    // Every change to an existing event carried If-Match (updates without a known etag read the
    // event first). Deletes carry it when the caller knows the etag; the contract also deletes
    // unconditionally, which the trait allows.
    let writes = peer.fake.writes();
    assert!(writes.iter().any(|r| r.method == "PATCH"), "{writes:?}");
    for r in writes.iter().filter(|r| matches!(r.method.as_str(), "PATCH" | "PUT")) {
        assert!(r.if_match.is_some(), "{} {} without If-Match", r.method, r.path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tokens_are_refreshed_and_rate_limits_classified() {
    let peer = GooglePeer::start(2).await;
    let p = peer.provider().await;
    let account = p.account().await.expect("account");
    assert_eq!(account.email.as_deref(), Some(peer.fake.account().as_str()));
    // Outlive the access token: the next calls refresh (ahead of expiry or after a 401) and work.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    p.account().await.expect("account after the access token expired");

    peer.fake.fail_next(1, Failure::RateLimit403, None);
    match p.account().await {
        Err(ProviderError::RateLimited { .. }) => {}
        other => panic!("403 rateLimitExceeded: {other:?}"),
    }
    peer.fake.fail_next(1, Failure::RateLimit429, Some(7));
    match p.account().await {
        Err(ProviderError::RateLimited { retry_after, .. }) => {
            assert_eq!(retry_after, Some(std::time::Duration::from_secs(7)))
        }
        other => panic!("429 with Retry-After: {other:?}"),
    }
    peer.fake.fail_next(1, Failure::UserRateLimit403, None);
    assert!(matches!(p.account().await, Err(ProviderError::RateLimited { .. })));
    peer.fake.fail_next(1, Failure::Backend503, None);
    assert!(matches!(p.account().await, Err(ProviderError::Transient { .. })));
    p.account().await.expect("works again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_is_reconnect_required() {
    let peer = GooglePeer::start(1).await;
    let p = peer.provider().await;
    p.account().await.expect("account");
    let Credentials::OAuth { refresh_token, .. } = &peer.credentials else { unreachable!() };
    use secrecy::ExposeSecret;
    let client = peer.oidc.client().clone();
    assert_eq!(peer.oidc.revoke(&client, refresh_token.expose_secret(), Some("refresh_token")).await, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    match p.account().await {
        Err(ProviderError::Revoked { message }) => {
            assert!(!message.contains(refresh_token.expose_secret()), "{message}")
        }
        other => panic!("revoked grant: {other:?}"),
    }
}
