//! TokenManager behaviour against a small in-test token endpoint that follows RFC 6749 §6 (and,
//! when rotating, refuses a reused refresh token and kills the family, as oidc-provider and
//! Microsoft's reuse detection do). The real authorization server is exercised end to end in
//! `tests/oauth_*.rs`; these pin the timing rules: single flight, refresh ahead of expiry, the
//! cross-process lease.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::extract::State;
use axum::{Form, Json, Router, routing::post};
use secrecy::{ExposeSecret, SecretString};

use super::client::{OAuthClient, OAuthSettings};
use super::{CredentialVault, TokenBroker, TokenManager, Versioned};
use crate::credentials::Credentials;
use crate::providers::{ProviderError, Target};
use crate::resources::ProviderKind;

#[derive(Default)]
struct Server {
    rotate: bool,
    /// refresh token → still valid
    live: Mutex<HashMap<String, bool>>,
    refreshes: AtomicUsize,
    next: AtomicUsize,
    expires_in: u64,
}

async fn token(State(s): State<Arc<Server>>, Form(f): Form<HashMap<String, String>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let bad =
        || (axum::http::StatusCode::BAD_REQUEST, Json(serde_json::json!({"error": "invalid_grant"}))).into_response();
    let Some(rt) = f.get("refresh_token") else { return bad() };
    s.refreshes.fetch_add(1, Ordering::SeqCst);
    // Take a little time, so overlapping refreshes really overlap.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let n = s.next.fetch_add(1, Ordering::SeqCst);
    let mut live = s.live.lock().unwrap();
    match live.get(rt).copied() {
        Some(true) => {}
        Some(false) => {
            // Reuse of a rotated token: revoke the whole family.
            live.values_mut().for_each(|v| *v = false);
            return bad();
        }
        None => return bad(),
    }
    let mut body =
        serde_json::json!({"access_token": format!("at-{n}"), "token_type": "Bearer", "expires_in": s.expires_in});
    if s.rotate {
        live.insert(rt.clone(), false);
        let new = format!("rt-{n}");
        live.insert(new.clone(), true);
        body["refresh_token"] = serde_json::Value::String(new);
    }
    Json(body).into_response()
}

async fn serve(rotate: bool, expires_in: u64) -> (Arc<Server>, String) {
    let s = Arc::new(Server { rotate, expires_in, ..Default::default() });
    s.live.lock().unwrap().insert("rt-0".into(), true);
    let app = Router::new().route("/token", post(token)).with_state(s.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (s, url)
}

/// One stored credential with a version, like a Secret.
#[derive(Default)]
struct MemVault {
    slot: Mutex<Option<(Credentials, u64)>>,
}

#[async_trait]
impl CredentialVault for MemVault {
    async fn load(&self, _c: &str) -> Result<Option<Versioned>, ProviderError> {
        Ok(self.slot.lock().unwrap().clone().map(|(credentials, v)| Versioned { credentials, version: v.to_string() }))
    }
    async fn replace(&self, _c: &str, expected: &str, creds: &Credentials) -> Result<Option<String>, ProviderError> {
        let mut slot = self.slot.lock().unwrap();
        match slot.as_mut() {
            Some((c, v)) if v.to_string() == expected => {
                *c = creds.clone();
                *v += 1;
                Ok(Some(v.to_string()))
            }
            Some(_) => Ok(None),
            None => Err(ProviderError::Revoked { message: "gone".into() }),
        }
    }
}

fn oauth(rt: &str) -> Credentials {
    Credentials::OAuth {
        refresh_token: SecretString::from(rt.to_string()),
        access_token: None,
        expires_at: None,
        refresh_lease: None,
    }
}

fn manager(token_url: &str, rotate: bool, vault: Arc<MemVault>) -> Arc<TokenManager> {
    let settings = OAuthSettings {
        provider: ProviderKind::Outlook,
        auth_url: "http://127.0.0.1:1/auth".into(),
        token_url: token_url.into(),
        revoke_url: None,
        client_id: "c".into(),
        client_secret: SecretString::from("s"),
        redirect_uri: "http://127.0.0.1:1/cb".into(),
        scopes: vec!["Calendars.ReadWrite".into()],
        extra_auth_params: vec![],
        issuer: None,
        rotates_refresh_tokens: rotate,
    };
    Arc::new(TokenManager::new(vec![Arc::new(OAuthClient::new(settings).unwrap())], vault))
}

fn target() -> Target {
    Target { provider: ProviderKind::Outlook, server_url: None, connection: "ns/conn".into() }
}

#[tokio::test]
async fn concurrent_callers_share_one_refresh_and_reuse_the_token() {
    let (server, url) = serve(false, 3600).await;
    let vault = Arc::new(MemVault::default());
    *vault.slot.lock().unwrap() = Some((oauth("rt-0"), 1));
    let m = manager(&url, false, vault.clone());
    let tokens = m.tokens(&target(), &oauth("rt-0")).await.unwrap();
    let calls: Vec<_> = (0..8).map(|_| tokens.access_token()).collect();
    let got = futures::future::join_all(calls).await;
    let first = got[0].as_ref().unwrap().expose_secret().to_string();
    assert!(got.iter().all(|t| t.as_ref().unwrap().expose_secret() == first));
    assert_eq!(server.refreshes.load(Ordering::SeqCst), 1, "single flight");
    // Still fresh: no second refresh.
    tokens.access_token().await.unwrap();
    assert_eq!(server.refreshes.load(Ordering::SeqCst), 1);
    // A 401 on that token refreshes once, however many callers saw it.
    let rejected = SecretString::from(first.clone());
    let (a, b) = tokio::join!(tokens.refresh_after_rejection(&rejected), tokens.refresh_after_rejection(&rejected));
    assert_eq!(a.unwrap().expose_secret(), b.unwrap().expose_secret());
    assert_eq!(server.refreshes.load(Ordering::SeqCst), 2);
    // A non-rotating server: nothing written back.
    assert_eq!(vault.slot.lock().unwrap().as_ref().unwrap().1, 1);
}

#[tokio::test]
async fn tokens_about_to_expire_are_refreshed_ahead() {
    // A 2 s token: the margin is a fifth of its life, so it is reused at once and refreshed
    // once it is within 0.4 s of expiring.
    let (server, url) = serve(false, 2).await;
    let vault = Arc::new(MemVault::default());
    *vault.slot.lock().unwrap() = Some((oauth("rt-0"), 1));
    let m = manager(&url, false, vault);
    let tokens = m.tokens(&target(), &oauth("rt-0")).await.unwrap();
    tokens.access_token().await.unwrap();
    tokens.access_token().await.unwrap();
    assert_eq!(server.refreshes.load(Ordering::SeqCst), 1);
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    tokens.access_token().await.unwrap();
    assert_eq!(server.refreshes.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn two_processes_with_a_rotating_server_never_lose_the_grant() {
    let (server, url) = serve(true, 3600).await;
    let vault = Arc::new(MemVault::default());
    *vault.slot.lock().unwrap() = Some((oauth("rt-0"), 1));
    // Two managers = two processes sharing one store.
    let (a, b) = (manager(&url, true, vault.clone()), manager(&url, true, vault.clone()));
    let (ta, tb) =
        (a.tokens(&target(), &oauth("rt-0")).await.unwrap(), b.tokens(&target(), &oauth("rt-0")).await.unwrap());
    let (ra, rb) = tokio::join!(ta.access_token(), tb.access_token());
    assert!(ra.is_ok() && rb.is_ok(), "{:?} {:?}", ra.err(), rb.err());
    assert_eq!(server.refreshes.load(Ordering::SeqCst), 2, "one refresh each, one after the other");
    // The stored refresh token is the live one and no lease is left behind.
    let (stored, _) = vault.slot.lock().unwrap().clone().unwrap();
    let Credentials::OAuth { refresh_token, refresh_lease, .. } = stored else { panic!() };
    assert_eq!(server.live.lock().unwrap().get(refresh_token.expose_secret()), Some(&true));
    assert!(refresh_lease.is_none());
    // And it still refreshes.
    let rejected = ra.unwrap();
    assert!(ta.refresh_after_rejection(&rejected).await.is_ok());
}

#[tokio::test]
async fn a_refused_refresh_token_means_reconnect() {
    let (_server, url) = serve(false, 3600).await;
    let vault = Arc::new(MemVault::default());
    *vault.slot.lock().unwrap() = Some((oauth("revoked-token"), 1));
    let m = manager(&url, false, vault);
    let tokens = m.tokens(&target(), &oauth("revoked-token")).await.unwrap();
    match tokens.access_token().await {
        Err(ProviderError::Revoked { message }) => assert!(!message.contains("revoked-token"), "{message}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    // Credentials gone from the store: also reconnect.
    let empty = Arc::new(MemVault::default());
    let m = manager(&url, false, empty);
    let tokens = m.tokens(&target(), &oauth("x")).await.unwrap();
    assert!(matches!(tokens.access_token().await, Err(ProviderError::Revoked { .. })));
}

#[tokio::test]
async fn exchange_fresh_access_tokens_are_used_without_a_refresh() {
    let (server, url) = serve(false, 3600).await;
    let vault = Arc::new(MemVault::default());
    let m = manager(&url, false, vault);
    let fresh = Credentials::OAuth {
        refresh_token: SecretString::from("rt-0"),
        access_token: Some(SecretString::from("from-exchange")),
        expires_at: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
        refresh_lease: None,
    };
    let tokens = m.tokens(&target(), &fresh).await.unwrap();
    assert_eq!(tokens.access_token().await.unwrap().expose_secret(), "from-exchange");
    assert_eq!(server.refreshes.load(Ordering::SeqCst), 0);
    // Basic credentials are refused with a clear message.
    let basic = Credentials::Basic { username: "u".into(), password: SecretString::from("p") };
    assert!(matches!(m.tokens(&target(), &basic).await, Err(ProviderError::Invalid { .. })));
}
