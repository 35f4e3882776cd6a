//! Bearer authentication (DESIGN §6): static API keys from `CALSYNC_API_KEYS` act for any user;
//! HS256 JWTs signed with `CALSYNC_JWT_SECRET` act only for their `sub`. Also the per-user rate
//! limit, applied where the acted-on user is known.
//!
//! Owns: token checks and the `Caller` extractor. Must not touch: handlers' business logic.
//! Tokens and keys never reach logs, errors or responses.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::errors::{ApiError, INVALID_CREDENTIALS, TOKEN_EXPIRED};
use super::state::AppState;

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A trusted backend holding a static API key: may act for any user.
    ApiKey,
    /// An end user's JWT: may act only for this user id (`sub`).
    User(String),
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Caller {
    /// May this caller act for `user_id`? Then count the request against that user's rate limit.
    pub fn authorize(&self, state: &AppState, user_id: &str) -> Result<(), ApiError> {
        if let Caller::User(sub) = self
            && sub != user_id
        {
            return Err(ApiError::forbidden(
                "this token may act only for its own user (the JWT's sub must equal user_id)",
            ));
        }
        state.caches.check_rate(user_id)
    }
}

fn key_matches(state: &AppState, token: &str) -> bool {
    // Compare against every key without stopping early, in constant time per key, so timing
    // tells nothing about which key (or how much of one) matched.
    state
        .config
        .api_keys
        .iter()
        .fold(false, |found, k| found | bool::from(k.expose_secret().as_bytes().ct_eq(token.as_bytes())))
}

/// Check the bearer token of a request.
pub fn authenticate(state: &AppState, authorization: Option<&str>) -> Result<Caller, ApiError> {
    let Some(value) = authorization else {
        return Err(ApiError::unauthorized(
            "missing_token",
            format!("{INVALID_CREDENTIALS}: send Authorization: Bearer <API key or JWT>"),
        ));
    };
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized("invalid_token", format!("{INVALID_CREDENTIALS}: use the Bearer scheme"))
        })?;
    if key_matches(state, token) {
        return Ok(Caller::ApiKey);
    }
    let invalid = || ApiError::unauthorized("invalid_token", INVALID_CREDENTIALS);
    let Some(secret) = &state.config.jwt_secret else {
        return Err(invalid());
    };
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let key = DecodingKey::from_secret(secret.expose_secret().as_bytes());
    match jsonwebtoken::decode::<Claims>(token, &key, &validation) {
        Ok(data) if !data.claims.sub.is_empty() => Ok(Caller::User(data.claims.sub)),
        Ok(_) => Err(invalid()),
        Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => {
            Err(ApiError::unauthorized("token_expired", TOKEN_EXPIRED))
        }
        Err(e) => {
            // The kind only (e.g. InvalidSignature), never the token.
            tracing::debug!(kind = ?e.kind(), "JWT rejected");
            Err(invalid())
        }
    }
}

/// Middleware on every protected route: 401 without a valid token, else the `Caller` is put in
/// the request's extensions for handlers.
pub async fn require_auth(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let header = request.headers().get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or("\u{0}"));
    match authenticate(&state, header) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("missing_token", INVALID_CREDENTIALS))
    }
}
