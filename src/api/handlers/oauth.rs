//! The OAuth half of connecting (Google, Outlook): `POST /connect/{google|outlook}` answers with
//! the authorization URL and its sealed `state`; the callbacks exchange the code and store the
//! connection. Every callback outcome is a redirect to the frontend's `/calendar-connected`.
//!
//! Owns: the connect/callback flow and the record of used state nonces on the connection
//! (annotation `calendar.getitdone.app/oauth-states`). Must not touch: token refresh (the
//! `TokenManager`), calendars beyond checking the new account once.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::api::dto::OAuthConnectResponse;
use crate::api::errors::ApiError;
use crate::api::state::{AppState, OAuthRuntime};
use crate::credentials::Credentials;
use crate::engine::{ObjectKey, wait_for};
use crate::oauth::{OAuthClient, StateSealer};
use crate::providers::Target;
use crate::resources::{
    CalendarConnection, CalendarConnectionSpec, ProviderKind, SecretRef, USER_LABEL, connection_name, user_label_value,
};

/// Nonces of states already used on a connection, each with its expiry (`nonce@unix`).
pub const USED_STATES_ANNOTATION: &str = "calendar.getitdone.app/oauth-states";

fn not_configured(kind: ProviderKind) -> ApiError {
    ApiError::bad_request(
        "provider_not_configured",
        format!(
            "{kind} calendar connections are not configured on this server (set {p}_CLIENT_ID and {p}_CLIENT_SECRET; see README \"Configuration\")",
            p = if kind == ProviderKind::Google { "GOOGLE" } else { "MICROSOFT" }
        ),
    )
}

/// Scopes beyond the configured ones that a connection asking for its own calendar needs:
/// Graph's `Calendars.ReadWrite` already covers `POST /me/calendars`; Google's grant does not.
fn dedicated_scopes(kind: ProviderKind, dedicated: bool) -> &'static [&'static str] {
    match (kind, dedicated) {
        (ProviderKind::Google, true) => &[crate::oauth::config::GOOGLE_DEDICATED_SCOPE],
        _ => &[],
    }
}

/// The answer to `POST /connect/{google|outlook}` for an authorized caller acting for `user`.
/// `dedicated`: the user wants a calendar of calsync's own; the flag rides in the sealed state.
pub fn start(
    state: &AppState,
    user: &str,
    kind: ProviderKind,
    dedicated: bool,
) -> Result<OAuthConnectResponse, ApiError> {
    let runtime = state.oauth.as_ref().ok_or_else(|| not_configured(kind))?;
    let client = runtime.tokens.client(kind).ok_or_else(|| not_configured(kind))?;
    // The sealed state carries the PKCE verifier to the callback (any replica can open it).
    let mut claims = StateSealer::claims(user, kind, OAuthClient::new_verifier(), Utc::now());
    claims.dedicated = dedicated;
    let sealed = runtime.sealer.seal(&claims);
    let url = client.authorization_url_with(&sealed, &claims.verifier, dedicated_scopes(kind, dedicated));
    tracing::info!(user_label = %user_label_value(user), provider = %kind, "authorization started");
    Ok(OAuthConnectResponse { authorization_url: url, state: sealed, calendar_type: kind.as_str().to_string() })
}

/// The callback: whatever happens, a redirect to the frontend.
pub async fn callback(state: &AppState, kind: ProviderKind, query: &HashMap<String, String>) -> Response {
    let outcome = finish(state, kind, query).await;
    let base = &state.config.frontend_url;
    let url = match outcome {
        Ok(()) => format!("{base}/calendar-connected?type={kind}&status=success"),
        // Only fixed words go into the URL: nothing the caller sent is reflected.
        Err(reason) => format!("{base}/calendar-connected?type={kind}&status=error&reason={reason}"),
    };
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// Used nonces still within their expiry.
fn used_states(conn: Option<&CalendarConnection>, now: DateTime<Utc>) -> Vec<(String, i64)> {
    let Some(text) = conn.and_then(|c| c.annotations().get(USED_STATES_ANNOTATION).cloned()) else { return Vec::new() };
    text.split(',')
        .filter_map(|e| e.split_once('@'))
        .filter_map(|(n, t)| t.parse::<i64>().ok().map(|t| (n.to_string(), t)))
        .filter(|(_, t)| *t > now.timestamp())
        .collect()
}

/// Drops the in-flight mark of a nonce when the callback ends.
struct InFlight<'a> {
    runtime: &'a OAuthRuntime,
    nonce: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.runtime.in_flight().remove(&self.nonce);
    }
}

async fn finish(state: &AppState, kind: ProviderKind, query: &HashMap<String, String>) -> Result<(), &'static str> {
    if let Some(error) = query.get("error") {
        return Err(if error == "access_denied" { "access_denied" } else { "provider_error" });
    }
    let (Some(code), Some(raw_state)) = (query.get("code"), query.get("state")) else {
        return Err("missing_code_or_state");
    };
    let runtime = state.oauth.as_ref().ok_or("provider_not_configured")?;
    let client = runtime.tokens.client(kind).ok_or("provider_not_configured")?;
    let now = Utc::now();
    let claims = runtime.sealer.open(raw_state, now).map_err(|e| e.reason())?;
    if claims.provider != kind {
        return Err("invalid_state");
    }
    // RFC 9207: an `iss` naming another server means a mix-up attack or a misconfiguration.
    if let (Some(iss), Some(expected)) = (query.get("iss"), client.settings().issuer.as_ref())
        && iss.trim_end_matches('/') != expected.trim_end_matches('/')
    {
        return Err("issuer_mismatch");
    }
    if !runtime.in_flight().insert(claims.nonce.clone()) {
        return Err("state_already_used");
    }
    let _in_flight = InFlight { runtime, nonce: claims.nonce.clone() };
    let ns = state.namespace.as_str();
    let name = connection_name(&claims.user, kind);
    let key = ObjectKey::connection(ns, &name);
    let existing = state.objects.get_connection(ns, &name).await.map_err(|_| "server_error")?;
    let mut used = used_states(existing.as_ref(), now);
    if used.iter().any(|(n, _)| n == &claims.nonce) {
        tracing::warn!(connection = %key, "an OAuth state was replayed; refused");
        return Err("state_already_used");
    }

    let tokens = client.exchange_code(code, &claims.verifier).await.map_err(|e| {
        tracing::warn!(connection = %key, provider = %kind, error = %e, "code exchange failed");
        "exchange_failed"
    })?;
    let Some(refresh_token) = tokens.refresh_token else {
        tracing::warn!(connection = %key, "the authorization server issued no refresh token");
        return Err("no_refresh_token");
    };
    if let Some(granted) = &tokens.scopes {
        // Granular consent: the user may untick calendar access.
        let extra = dedicated_scopes(kind, claims.dedicated).iter().map(|s| s.to_string());
        let mut needed = client.settings().scopes.iter().cloned().chain(extra);
        let optional = |s: &str| matches!(s, "offline_access" | "openid" | crate::oauth::config::GOOGLE_FREEBUSY_SCOPE);
        if needed.any(|s| !optional(&s) && !granted.contains(&s)) {
            return Err("insufficient_scope");
        }
    }

    // Check the account with the fresh access token before storing anything.
    let target = Target { provider: kind, server_url: None, connection: format!("{ns}/{name}") };
    let fresh = Credentials::OAuth {
        refresh_token: refresh_token.clone(),
        access_token: Some(tokens.access_token),
        expires_at: tokens.expires_at,
        refresh_lease: None,
    };
    let account = match state.connector.connect(&target, &fresh).await {
        Ok(p) => p.account().await,
        Err(e) => Err(e),
    }
    .map_err(|e| {
        tracing::warn!(connection = %key, error = %e, "the new connection's calendar check failed");
        "calendar_check_failed"
    })?;
    // With a calendar of its own to come, the account needs no writable one now.
    if account.default_calendar().is_none() && kind != ProviderKind::Google && !claims.dedicated {
        return Err("no_writable_calendar");
    }

    // Access tokens live in memory only; the store gets the refresh token.
    let stored = Credentials::OAuth { refresh_token, access_token: None, expires_at: None, refresh_lease: None };
    let secret = SecretRef { name: format!("{name}-{}", user_label_value(&claims.nonce)), key: None };
    state.objects.write_credentials(ns, &secret, &stored, &key).await.map_err(|_| "server_error")?;
    used.push((claims.nonce.clone(), claims.expires_at.timestamp()));
    let mut annotations = existing.as_ref().map(|c| c.annotations().clone()).unwrap_or_default();
    annotations.insert(
        USED_STATES_ANNOTATION.to_string(),
        used.iter().map(|(n, t)| format!("{n}@{t}")).collect::<Vec<_>>().join(","),
    );
    let mut labels = existing.as_ref().map(|c| c.labels().clone()).unwrap_or_default();
    labels.insert(USER_LABEL.to_string(), user_label_value(&claims.user));
    let mut spec = existing.as_ref().map(|c| c.spec.clone()).unwrap_or(CalendarConnectionSpec {
        user_id: claims.user.clone(),
        provider: kind,
        credentials_secret_ref: secret.clone(),
        calendar_id: None,
        server_url: None,
        category_calendars: Default::default(),
        user_default: false,
        import: None,
        active: true,
    });
    spec.credentials_secret_ref = secret.clone();
    spec.active = true;
    if claims.dedicated {
        // The engine finds or creates the calendar and records it (engine::dedicated).
        spec.calendar_id = Some(crate::resources::AUTO_CALENDAR.to_string());
    }
    let object = CalendarConnection {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    };
    let applied = match state.objects.apply_connection(&object).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(connection = %key, error = %e, "could not store the connection");
            if let Err(del) = state.objects.delete_credentials(ns, &secret).await {
                tracing::warn!(connection = %key, error = %del, "could not remove credentials after a failed connect");
            }
            return Err("server_error");
        }
    };
    if let Some(old) = existing.as_ref().map(|c| &c.spec.credentials_secret_ref)
        && old.name != secret.name
        && let Err(e) = state.objects.delete_credentials(ns, old).await
    {
        tracing::warn!(connection = %key, error = %e, "could not remove the previous grant's credentials");
    }
    state.caches.import.invalidate(&claims.user);
    tracing::info!(connection = %key, provider = %kind, "calendar connected");

    // A short wait for Ready, so the frontend's next call finds the connection usable.
    let generation = applied.metadata.generation;
    let (objects, n) = (state.objects.as_ref(), name.as_str());
    let wait = state.config.sync_wait.min(std::time::Duration::from_secs(5));
    let _ = wait_for(objects, wait, || async move {
        let c = objects.get_connection(ns, n).await?;
        let done = c.as_ref().and_then(|c| c.status.as_ref()).is_some_and(|s| {
            s.observed_generation == generation && crate::resources::condition::is_true(&s.conditions, "Ready")
        });
        Ok((done, ()))
    })
    .await;
    Ok(())
}

/// Stop the connection's push watches at the provider while its credentials still exist
/// (disconnect deletes them next, and a revoked Google grant could not stop its channels any
/// more). Best effort: a watch that cannot be stopped expires on its own, and its notifications
/// are ignored once the connection no longer lists it.
pub async fn stop_watches(state: &AppState, conn: &CalendarConnection) {
    let Some(push) = conn.status.as_ref().and_then(|s| s.push.as_ref()) else { return };
    let live: Vec<_> = push.calendars.iter().filter(|w| w.watch_id.is_some() && w.provider_id.is_some()).collect();
    if live.is_empty() {
        return;
    }
    let connection = format!("{}/{}", state.namespace, conn.name_any());
    let Ok(Some(creds)) = state.objects.read_credentials(&state.namespace, &conn.spec.credentials_secret_ref).await
    else {
        return;
    };
    let target = crate::providers::Target {
        provider: conn.spec.provider,
        server_url: conn.spec.server_url.clone(),
        connection: connection.clone(),
    };
    let provider = match state.connector.connect(&target, &creds).await {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(connection, reason = e.reason(), "cannot stop push watches; they expire on their own");
            return;
        }
    };
    for w in live {
        let watch = crate::providers::Watch {
            id: w.watch_id.clone().unwrap_or_default(),
            provider_id: w.provider_id.clone().unwrap_or_default(),
            expiration: w.expiration.unwrap_or_else(Utc::now),
        };
        match provider.stop_watch(&w.calendar_id, &watch).await {
            Ok(()) => tracing::info!(connection, calendar = %w.calendar_id, "push watch stopped"),
            Err(e) => {
                tracing::info!(connection, reason = e.reason(), "could not stop a push watch; it expires on its own")
            }
        }
    }
}

/// Revoke a connection's refresh token at the provider where it can (Google; Graph has no
/// per-token revocation) and forget its cached access token. Best effort: disconnect deletes
/// the stored credentials either way.
pub async fn revoke(state: &AppState, conn: &CalendarConnection) {
    let Some(runtime) = state.oauth.as_ref() else { return };
    let connection = format!("{}/{}", state.namespace, conn.name_any());
    runtime.tokens.forget(&connection);
    let Some(client) = runtime.tokens.client(conn.spec.provider).map(Arc::clone) else { return };
    let creds = state.objects.read_credentials(&state.namespace, &conn.spec.credentials_secret_ref).await;
    let Ok(Some(Credentials::OAuth { refresh_token, .. })) = creds else { return };
    match client.revoke(&refresh_token).await {
        Ok(true) => tracing::info!(connection, "refresh token revoked at the provider"),
        Ok(false) => tracing::debug!(connection, "the provider has no token revocation"),
        Err(e) => {
            tracing::warn!(connection, error = %e, "could not revoke the refresh token; it is deleted here anyway")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_states_drop_expired_and_junk() {
        let now = Utc::now();
        let mut c = CalendarConnection::new(
            "c",
            CalendarConnectionSpec {
                user_id: "u".into(),
                provider: ProviderKind::Google,
                credentials_secret_ref: SecretRef { name: "s".into(), key: None },
                calendar_id: None,
                server_url: None,
                category_calendars: Default::default(),
                user_default: false,
                import: None,
                active: true,
            },
        );
        let live = now.timestamp() + 60;
        let old = now.timestamp() - 60;
        c.metadata.annotations =
            Some([(USED_STATES_ANNOTATION.to_string(), format!("a@{live},b@{old},junk,c@x"))].into_iter().collect());
        assert_eq!(used_states(Some(&c), now), vec![("a".to_string(), live)]);
        assert!(used_states(None, now).is_empty());
    }
}
