//! One OAuth 2.0 client per provider (Google, Microsoft) on the `oauth2` crate: the authorization
//! URL with PKCE S256, the code exchange, refresh and RFC 7009 revocation.
//!
//! Owns: talking to an authorization server and classifying what it answers. Must not touch:
//! where tokens are kept (`tokens`), the `state` (`state`), calendar calls. Token values never
//! reach a log line or an error message: the `oauth2` crate's parse errors carry the response
//! body, so they are mapped to fixed texts here.

use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, RevocationUrl, Scope,
    StandardRevocableToken, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};

use crate::providers::ProviderError;
use crate::resources::ProviderKind;

/// Largest token-endpoint response read (they are a few hundred bytes).
const MAX_RESPONSE: usize = 256 * 1024;

/// Where one provider's authorization server is and who we are to it.
#[derive(Clone)]
pub struct OAuthSettings {
    pub provider: ProviderKind,
    pub auth_url: String,
    pub token_url: String,
    /// RFC 7009 endpoint; `None` where the provider has none (Microsoft).
    pub revoke_url: Option<String>,
    pub client_id: String,
    pub client_secret: SecretString,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    /// Extra authorization parameters (Google: `access_type=offline`, `prompt=consent`).
    pub extra_auth_params: Vec<(String, String)>,
    /// The issuer the callback's RFC 9207 `iss` must equal, when known.
    pub issuer: Option<String>,
    /// The server replaces the refresh token on every refresh (Microsoft): refreshes of one
    /// connection must never overlap, across processes too.
    pub rotates_refresh_tokens: bool,
}

impl std::fmt::Debug for OAuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthSettings")
            .field("provider", &self.provider)
            .field("auth_url", &self.auth_url)
            .field("token_url", &self.token_url)
            .field("revoke_url", &self.revoke_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("redirect_uri", &self.redirect_uri)
            .field("scopes", &self.scopes)
            .field("issuer", &self.issuer)
            .field("rotates_refresh_tokens", &self.rotates_refresh_tokens)
            .finish()
    }
}

/// What a token endpoint gave us.
pub struct TokenSet {
    pub access_token: SecretString,
    /// Absent when the server did not issue (or did not rotate) one.
    pub refresh_token: Option<SecretString>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Granted scopes, when the server says (it may grant fewer than asked).
    pub scopes: Option<Vec<String>>,
}

/// Why an authorization-server call failed. Never carries token values.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OAuthError {
    #[error("{what} is not configured: {detail}")]
    Config { what: &'static str, detail: String },
    /// The server answered with an OAuth error (`invalid_grant`, `invalid_client`, ...).
    #[error("the authorization server refused the request: {code}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused { code: String, description: Option<String> },
    #[error("the authorization server could not be reached or answered unreadably, will retry: {0}")]
    Unavailable(String),
}

impl OAuthError {
    /// The provider error class the engine acts on: a refused grant means the user must
    /// reconnect; anything else is retried or a configuration problem.
    pub fn to_provider_error(&self) -> ProviderError {
        match self {
            OAuthError::Refused { code, .. } if code == "invalid_grant" => ProviderError::Revoked {
                message: "the authorization server refused the refresh token (expired or revoked)".into(),
            },
            OAuthError::Refused { code, .. } if code == "temporarily_unavailable" => {
                ProviderError::Transient { message: self.to_string() }
            }
            OAuthError::Refused { .. } | OAuthError::Config { .. } => {
                ProviderError::Invalid { message: self.to_string() }
            }
            OAuthError::Unavailable(_) => ProviderError::Transient { message: self.to_string() },
        }
    }
}

/// The HTTP error type the `oauth2` crate sees from our reqwest adapter.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

type Configured = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointSet>;

/// An OAuth client for one provider.
pub struct OAuthClient {
    settings: OAuthSettings,
    client: Configured,
    http: reqwest::Client,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient").field("settings", &self.settings).finish_non_exhaustive()
    }
}

fn url_err(what: &'static str) -> impl Fn(oauth2::url::ParseError) -> OAuthError {
    move |e| OAuthError::Config { what, detail: format!("not a valid URL ({e})") }
}

impl OAuthClient {
    pub fn new(settings: OAuthSettings) -> Result<Self, OAuthError> {
        let client = BasicClient::new(ClientId::new(settings.client_id.clone()))
            .set_client_secret(ClientSecret::new(settings.client_secret.expose_secret().to_string()))
            .set_auth_uri(AuthUrl::new(settings.auth_url.clone()).map_err(url_err("the authorization URL"))?)
            .set_token_uri(TokenUrl::new(settings.token_url.clone()).map_err(url_err("the token URL"))?)
            .set_redirect_uri(RedirectUrl::new(settings.redirect_uri.clone()).map_err(url_err("the redirect URI"))?)
            .set_revocation_url_option(
                settings
                    .revoke_url
                    .clone()
                    .map(RevocationUrl::new)
                    .transpose()
                    .map_err(url_err("the revocation URL"))?,
            );
        if let Some(url) = &settings.revoke_url
            && !url.starts_with("https://")
            && !loopback_http(url)
        {
            return Err(OAuthError::Config {
                what: "the revocation URL",
                detail: "it must be https (plain http only to a loopback address)".into(),
            });
        }
        // The process's one crypto provider (main installs it; a no-op then). reqwest built
        // without a provider would panic on the first client.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Token endpoints must not redirect (a redirect could carry the code or secret elsewhere).
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| OAuthError::Config { what: "the HTTP client", detail: e.to_string() })?;
        Ok(OAuthClient { settings, client, http })
    }

    pub fn settings(&self) -> &OAuthSettings {
        &self.settings
    }

    pub fn provider(&self) -> ProviderKind {
        self.settings.provider
    }

    /// A fresh PKCE code verifier (kept in the sealed state until the callback).
    pub fn new_verifier() -> SecretString {
        let (_, verifier) = PkceCodeChallenge::new_random_sha256();
        SecretString::from(verifier.secret().to_string())
    }

    /// The authorization URL carrying `state`, our scopes, the S256 challenge of `verifier` and
    /// the provider's extra parameters.
    pub fn authorization_url(&self, state: &str, verifier: &SecretString) -> String {
        self.authorization_url_with(state, verifier, &[])
    }

    /// `authorization_url` asking for `extra_scopes` on top of the configured ones (Google's
    /// `calendar.app.created` for a calendar of calsync's own).
    pub fn authorization_url_with(&self, state: &str, verifier: &SecretString, extra_scopes: &[&str]) -> String {
        let challenge =
            PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(verifier.expose_secret().to_string()));
        let state = state.to_string();
        let mut request = self
            .client
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(self.settings.scopes.iter().map(|s| Scope::new(s.clone())))
            .add_scopes(
                extra_scopes
                    .iter()
                    .filter(|e| !self.settings.scopes.iter().any(|s| s == *e))
                    .map(|e| Scope::new(e.to_string())),
            )
            .set_pkce_challenge(challenge);
        for (k, v) in &self.settings.extra_auth_params {
            request = request.add_extra_param(k.clone(), v.clone());
        }
        request.url().0.to_string()
    }

    /// Exchange an authorization code (with the PKCE verifier from the state).
    pub async fn exchange_code(&self, code: &str, verifier: &SecretString) -> Result<TokenSet, OAuthError> {
        let (client, http) = (&self.client, self.http.clone());
        let code = AuthorizationCode::new(code.to_string());
        let verifier = PkceCodeVerifier::new(verifier.expose_secret().to_string());
        let response = client
            .exchange_code(code)
            .set_pkce_verifier(verifier)
            .request_async(&Http(http))
            .await
            .map_err(classify)?;
        Ok(token_set(&response))
    }

    /// Trade a refresh token for a new access token (and, on rotating servers, a new refresh token).
    pub async fn refresh(&self, refresh_token: &SecretString) -> Result<TokenSet, OAuthError> {
        let (client, http) = (&self.client, self.http.clone());
        let rt = RefreshToken::new(refresh_token.expose_secret().to_string());
        let response = client.exchange_refresh_token(&rt).request_async(&Http(http)).await.map_err(classify)?;
        Ok(token_set(&response))
    }

    /// Revoke a refresh token (RFC 7009). `Ok(false)` when the provider has no revocation
    /// endpoint. An already invalid token counts as revoked (RFC 7009 §2.2 answers 200).
    pub async fn revoke(&self, refresh_token: &SecretString) -> Result<bool, OAuthError> {
        let Some(url) = self.settings.revoke_url.as_deref() else { return Ok(false) };
        if loopback_http(url) {
            return self.revoke_on_loopback(url, refresh_token).await;
        }
        let (client, http) = (&self.client, self.http.clone());
        let token = StandardRevocableToken::RefreshToken(RefreshToken::new(refresh_token.expose_secret().to_string()));
        let request = client
            .revoke_token(token)
            .map_err(|e| OAuthError::Config { what: "the revocation URL", detail: e.to_string() })?;
        match request.request_async(&Http(http)).await {
            Ok(()) => Ok(true),
            Err(RequestTokenError::ServerResponse(e)) if e.error().to_string() == "invalid_grant" => Ok(true),
            Err(e) => Err(classify_revocation(e)),
        }
    }

    /// RFC 7009 over plain HTTP to a loopback server (a local authorization server): the `oauth2`
    /// crate refuses non-TLS revocation URLs, rightly for anything that crosses a network.
    async fn revoke_on_loopback(&self, url: &str, refresh_token: &SecretString) -> Result<bool, OAuthError> {
        use oauth2::url::form_urlencoded::{Serializer, byte_serialize};
        let body = Serializer::new(String::new())
            .append_pair("token", refresh_token.expose_secret())
            .append_pair("token_type_hint", "refresh_token")
            .finish();
        // client_secret_basic: RFC 6749 §2.3.1 form-encodes id and secret inside Basic.
        let enc = |s: &str| byte_serialize(s.as_bytes()).collect::<String>();
        let response = self
            .http
            .post(url)
            .basic_auth(enc(&self.settings.client_id), Some(enc(self.settings.client_secret.expose_secret())))
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| OAuthError::Unavailable(describe(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(true);
        }
        if status.is_server_error() {
            return Err(OAuthError::Unavailable(format!("the revocation endpoint answered {status}")));
        }
        let text = response.text().await.unwrap_or_default();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let code = parsed["error"].as_str().unwrap_or("unknown_error").to_string();
        if code == "invalid_grant" {
            return Ok(true);
        }
        let description = parsed["error_description"].as_str().map(|d| d.chars().take(200).collect());
        Err(OAuthError::Refused { code, description })
    }
}

/// `http://` to 127.0.0.0/8, `::1` or `localhost`: never leaves the machine.
fn loopback_http(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else { return false };
    u.scheme() == "http"
        && match u.host() {
            Some(oauth2::url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(oauth2::url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(oauth2::url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        }
}

fn token_set(response: &oauth2::basic::BasicTokenResponse) -> TokenSet {
    let expires_at = response
        .expires_in()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .and_then(|d| Utc::now().checked_add_signed(d));
    TokenSet {
        access_token: SecretString::from(response.access_token().secret().to_string()),
        refresh_token: response.refresh_token().map(|t| SecretString::from(t.secret().to_string())),
        expires_at,
        scopes: response.scopes().map(|s| s.iter().map(|s| s.to_string()).collect()),
    }
}

fn classify(e: RequestTokenError<HttpError, oauth2::basic::BasicErrorResponse>) -> OAuthError {
    match e {
        RequestTokenError::ServerResponse(r) => OAuthError::Refused {
            code: r.error().to_string(),
            description: r.error_description().map(|d| d.chars().take(200).collect()),
        },
        RequestTokenError::Request(e) => OAuthError::Unavailable(e.0),
        // The body may hold tokens: say only that it was unreadable.
        RequestTokenError::Parse(..) => {
            OAuthError::Unavailable("the token endpoint's answer was not OAuth JSON".into())
        }
        RequestTokenError::Other(m) => OAuthError::Unavailable(m.chars().take(200).collect()),
    }
}

fn classify_revocation(e: RequestTokenError<HttpError, oauth2::basic::BasicRevocationErrorResponse>) -> OAuthError {
    match e {
        RequestTokenError::ServerResponse(r) => OAuthError::Refused {
            code: r.error().to_string(),
            description: r.error_description().map(|d| d.chars().take(200).collect()),
        },
        RequestTokenError::Request(e) => OAuthError::Unavailable(e.0),
        RequestTokenError::Parse(..) => {
            OAuthError::Unavailable("the revocation endpoint's answer was not OAuth JSON".into())
        }
        RequestTokenError::Other(m) => OAuthError::Unavailable(m.chars().take(200).collect()),
    }
}

/// The `oauth2` crate's HTTP seam over our reqwest client. An owning type rather than a closure
/// over `&reqwest::Client`: a borrowed client makes the futures' `Send` lifetime-specific, which
/// async-trait callers reject.
struct Http(reqwest::Client);

impl<'c> oauth2::AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        let http = self.0.clone();
        Box::pin(async move { send(&http, request).await })
    }
}

/// The request itself (reqwest 0.13; the crate's own
/// reqwest feature would pull a second reqwest and TLS stack).
async fn send(http: &reqwest::Client, request: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, HttpError> {
    let (parts, body) = request.into_parts();
    let url = parts.uri.to_string();
    let mut builder = http.request(parts.method, &url).body(body);
    for (name, value) in &parts.headers {
        builder = builder.header(name, value);
    }
    let mut response = builder.send().await.map_err(|e| HttpError(describe(&e)))?;
    let mut out = oauth2::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        out = out.header(name, value);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| HttpError(describe(&e)))? {
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Err(HttpError("the token endpoint's answer is too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    out.body(body).map_err(|e| HttpError(e.to_string()))
}

/// A reqwest error without its URL (token URLs carry no secrets, but keep messages short).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    match e.url().and_then(|u| u.host_str()) {
        Some(host) => format!("{what} ({host})"),
        None => what.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OAuthSettings {
        OAuthSettings {
            provider: ProviderKind::Google,
            auth_url: "https://accounts.example/o/oauth2/v2/auth".into(),
            token_url: "https://oauth2.example/token".into(),
            revoke_url: Some("https://oauth2.example/revoke".into()),
            client_id: "client-1".into(),
            client_secret: SecretString::from("client-secret-value"),
            redirect_uri: "http://127.0.0.1:5000/api/calendar/google/callback".into(),
            scopes: vec!["https://www.googleapis.com/auth/calendar.events".into()],
            extra_auth_params: vec![("access_type".into(), "offline".into()), ("prompt".into(), "consent".into())],
            issuer: None,
            rotates_refresh_tokens: false,
        }
    }

    #[test]
    fn authorization_url_has_pkce_state_scopes_and_extras() {
        let c = OAuthClient::new(settings()).unwrap();
        let verifier = OAuthClient::new_verifier();
        let url = reqwest::Url::parse(&c.authorization_url("sealed-state", &verifier)).unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["state"], "sealed-state");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["access_type"], "offline");
        assert_eq!(q["prompt"], "consent");
        assert_eq!(q["scope"], "https://www.googleapis.com/auth/calendar.events");
        assert_eq!(q["redirect_uri"], "http://127.0.0.1:5000/api/calendar/google/callback");
        // The challenge is the S256 of the verifier we keep.
        use base64::Engine as _;
        use sha2::Digest;
        let digest = sha2::Sha256::digest(verifier.expose_secret().as_bytes());
        assert_eq!(q["code_challenge"], base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest));
        assert!(!format!("{c:?}").contains("client-secret-value"));
    }

    #[test]
    fn refused_grant_means_reconnect() {
        let e = OAuthError::Refused { code: "invalid_grant".into(), description: None };
        assert!(matches!(e.to_provider_error(), ProviderError::Revoked { .. }));
        assert!(matches!(OAuthError::Unavailable("x".into()).to_provider_error(), ProviderError::Transient { .. }));
        let e = OAuthError::Refused { code: "invalid_client".into(), description: Some("bad secret".into()) };
        assert!(matches!(e.to_provider_error(), ProviderError::Invalid { .. }));
    }

    #[test]
    fn bad_urls_are_configuration_errors() {
        let mut s = settings();
        s.token_url = "not a url".into();
        assert!(matches!(OAuthClient::new(s), Err(OAuthError::Config { what: "the token URL", .. })));
        let mut s = settings();
        s.revoke_url = Some("http://oauth2.example/revoke".into());
        assert!(matches!(OAuthClient::new(s), Err(OAuthError::Config { what: "the revocation URL", .. })));
        for ok in ["http://127.0.0.1:9/revoke", "http://[::1]:9/r", "http://localhost/r"] {
            let mut s = settings();
            s.revoke_url = Some(ok.into());
            assert!(OAuthClient::new(s).is_ok(), "{ok}");
        }
    }
}
