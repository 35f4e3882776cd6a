//! The Google end-to-end world: the built `calsync standalone` binary, a real OAuth server
//! (oidc-provider) and the strict fake Google Calendar API checking tokens by introspection at
//! that server, with helpers driving them as the app's frontend and the user's browser would.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use calsync::credentials::Credentials;
use calsync::resources::{ProviderKind, connection_name};
use secrecy::SecretString;
use serde_json::{Value, json};

use super::calsync_bin::{ENCRYPTION_KEY, Standalone};
use super::fake_google::{FakeGoogle, FakeGoogleOptions};
use super::oidc::{OidcClient, OidcOptions, OidcServer, query_param};

pub const FRONTEND: &str = "http://frontend.test";
pub const JWT_SECRET: &str = "e2e-google-jwt-secret";

pub struct World {
    pub oidc: OidcServer,
    pub fake: FakeGoogle,
    pub cs: Standalone,
    pub dir: tempfile::TempDir,
    /// A browser that does not follow redirects (to read the callback's Location).
    pub browser: reqwest::Client,
}

pub async fn world(access_token_ttl_secs: u64) -> World {
    world_with(access_token_ttl_secs, None, &[]).await
}

/// A world whose fake grants channels of at most `max_channel` (and push on, with calsync's
/// own address as CALSYNC_PUBLIC_URL, when given), with extra environment for calsync.
pub async fn world_with(access_token_ttl_secs: u64, max_channel: Option<Duration>, extra: &[(&str, String)]) -> World {
    let port = Standalone::pick_port();
    let base = format!("http://127.0.0.1:{port}");
    let oidc = OidcServer::start(OidcOptions {
        clients: vec![OidcClient::calsync("calsync-google", &base)],
        access_token_ttl_secs,
        rotate_refresh_tokens: false,
    });
    let client = oidc.client().clone();
    super::calsync_bin::artifacts::record_secret("oauth-client-secret", &client.secret);
    super::calsync_bin::artifacts::record_secret("jwt-secret", JWT_SECRET);
    let mut options = FakeGoogleOptions::introspection(&oidc.introspection_url(), &client.id, &client.secret);
    if let Some(max) = max_channel {
        options = options.with_max_channel_lifetime(max);
    }
    let fake = FakeGoogle::start(options);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = vec![
        ("GOOGLE_CLIENT_ID", client.id.clone()),
        ("GOOGLE_CLIENT_SECRET", client.secret.clone()),
        ("GOOGLE_REDIRECT_URI", format!("{base}/api/calendar/google/callback")),
        ("GOOGLE_AUTH_URL", oidc.auth_url()),
        ("GOOGLE_TOKEN_URL", oidc.token_url()),
        ("GOOGLE_REVOKE_URL", oidc.revocation_url()),
        ("GOOGLE_ISSUER", oidc.issuer().to_string()),
        ("GOOGLE_CALENDAR_API_URL", fake.base_url().to_string()),
        ("CALSYNC_FRONTEND_URL", FRONTEND.to_string()),
        ("CALSYNC_JWT_SECRET", JWT_SECRET.to_string()),
    ];
    if max_channel.is_some() {
        env.push(("CALSYNC_PUBLIC_URL", base.clone()));
    }
    env.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    let cs = Standalone::start_with(dir.path(), port, &env).await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("browser");
    World { oidc, fake, cs, dir, browser }
}

impl World {
    /// `POST /connect/google` for `user`: (authorization URL, state).
    pub async fn connect(&self, user: &str) -> (String, String) {
        let (s, body) = self.cs.call("POST", "/connect/google", Some(json!({"user_id": user}))).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["calendar_type"], "google");
        let url = body["authorization_url"].as_str().expect("authorization_url").to_string();
        let state = body["state"].as_str().expect("state").to_string();
        (url, state)
    }

    /// Let the browser land on calsync's callback; returns the frontend URL it redirects to.
    pub async fn land(&self, callback_url: &str) -> String {
        let r = self.browser.get(callback_url).send().await.expect("callback");
        assert_eq!(r.status().as_u16(), 302, "every callback outcome is a redirect");
        let location = r.headers().get("location").and_then(|v| v.to_str().ok()).expect("Location").to_string();
        assert!(location.starts_with(&format!("{FRONTEND}/calendar-connected?type=google&status=")), "{location}");
        location
    }

    /// The whole user journey: connect, consent at the OAuth server, land on the callback.
    pub async fn connect_user(&self, user: &str) -> String {
        let (url, _) = self.connect(user).await;
        let callback = self.oidc.follow_authorization(&url).await;
        self.land(&callback).await
    }

    /// The refresh token calsync stored (read from its database with its key, as an operator could).
    pub async fn stored_refresh_token(&self, user: &str) -> Option<SecretString> {
        let key = calsync::credentials::envelope::Key::from_base64(ENCRYPTION_KEY).expect("key");
        let keys = calsync::standalone::secrets::keyring(key).expect("keyring");
        let store = calsync::standalone::SqliteObjects::open(&Standalone::database_url(self.dir.path()), keys)
            .await
            .expect("open the database");
        use calsync::engine::Objects;
        let conn = store.get_connection("default", &connection_name(user, ProviderKind::Google)).await.ok()??;
        match store.read_credentials("default", &conn.spec.credentials_secret_ref).await.ok()?? {
            Credentials::OAuth { refresh_token, .. } => Some(refresh_token),
            Credentials::Basic { .. } => None,
        }
    }

    pub async fn status(&self, user: &str) -> Value {
        let (s, body) = self.cs.call("GET", &format!("/connection-status/{user}"), None).await;
        assert_eq!(s, 200, "{body}");
        body
    }

    pub fn ours(&self) -> Vec<Value> {
        self.fake
            .live_events("primary")
            .into_iter()
            .filter(|e| e["extendedProperties"]["private"]["calsync"].is_string())
            .collect()
    }
}

pub fn reason(location: &str) -> Option<String> {
    query_param(location, "reason")
}

pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
