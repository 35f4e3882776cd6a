//! Connecting calendars: `POST /connect/{calendar_type}`, the two OAuth callbacks, and
//! `POST /apple/connect` (credentials checked against the server before anything is stored).
//!
//! Owns: the connect endpoints. Must not touch: OAuth itself (`oauth.rs` holds the Google/Outlook
//! flow: authorization URL, sealed state, code exchange).

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::api::auth::Caller;
use crate::api::dto::{
    AppleConnectRequest, AppleConnectResponse, ConnectRequest, ConnectResponse, OAuthConnectResponse,
};
use crate::api::errors::{self, ApiError, ErrorBody};
use crate::api::extract::{ApiJson, ApiPath, ApiQuery};
use crate::api::mapping;
use crate::api::state::AppState;
use crate::credentials::Credentials;
use crate::engine::{ObjectKey, wait_for};
use crate::error::ErrorClass;
use crate::providers::{ProviderError, Target, dedicated};
use crate::resources::{
    CalendarConnection, CalendarConnectionSpec, ProviderKind, SecretRef, USER_LABEL, connection_name, user_label_value,
};

/// Start connecting a calendar.
#[utoipa::path(post, path = "/api/calendar/connect/{calendar_type}", tag = "connection",
    params(("calendar_type" = String, Path, description = "google, outlook or apple")),
    request_body = ConnectRequest,
    responses((status = 200, description = "Google/Outlook: OAuthConnectResponse; Apple: ConnectResponse", body = OAuthConnectResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn connect(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(calendar_type): ApiPath<String>,
    ApiJson(req): ApiJson<ConnectRequest>,
) -> Result<Response, ApiError> {
    let user = mapping::user_id(&req.user_id)?;
    caller.authorize(&state, user)?;
    match mapping::calendar_type(&calendar_type)? {
        ProviderKind::Apple => Ok(axum::Json(ConnectResponse {
            message: "Apple Calendar requires app-specific password".into(),
            instructions: "Generate app-specific password at appleid.apple.com".into(),
            calendar_type: "apple".into(),
        })
        .into_response()),
        kind @ (ProviderKind::Google | ProviderKind::Outlook) => {
            Ok(axum::Json(super::oauth::start(&state, user, kind, req.dedicated_calendar)?).into_response())
        }
        ProviderKind::Caldav => Err(ApiError::bad_request(
            "unknown_calendar_type",
            "unknown calendar_type: use google, outlook or apple (any CalDAV server connects through /apple/connect with server_url)",
        )),
    }
}

/// Google's OAuth redirect target: always a redirect to the frontend.
#[utoipa::path(get, path = "/api/calendar/google/callback", tag = "connection",
    params(("code" = Option<String>, Query), ("state" = Option<String>, Query), ("error" = Option<String>, Query), ("iss" = Option<String>, Query)),
    responses((status = 302, description = "Redirect to {frontend}/calendar-connected?type=google&status=...")))]
pub async fn google_callback(
    State(state): State<AppState>,
    query: Result<ApiQuery<HashMap<String, String>>, ApiError>,
) -> Response {
    let query = query.map(|q| q.0).unwrap_or_default();
    super::oauth::callback(&state, ProviderKind::Google, &query).await
}

/// Microsoft's OAuth redirect target: always a redirect to the frontend.
#[utoipa::path(get, path = "/api/calendar/outlook/callback", tag = "connection",
    params(("code" = Option<String>, Query), ("state" = Option<String>, Query), ("error" = Option<String>, Query), ("iss" = Option<String>, Query)),
    responses((status = 302, description = "Redirect to {frontend}/calendar-connected?type=outlook&status=...")))]
pub async fn outlook_callback(
    State(state): State<AppState>,
    query: Result<ApiQuery<HashMap<String, String>>, ApiError>,
) -> Response {
    let query = query.map(|q| q.0).unwrap_or_default();
    super::oauth::callback(&state, ProviderKind::Outlook, &query).await
}

/// The host part of an http(s) URL (lower case, without port), or `None` when the URL is not a
/// plain `scheme://host[:port]/path` (user info in URLs is refused: credentials go in the body).
fn url_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(h, port)| if port.chars().all(|c| c.is_ascii_digit()) { h } else { authority })
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Link-local addresses (cloud metadata services live there) are never a calendar server.
/// `server_url` makes this server open connections where the caller says, so it is checked:
/// http(s) only, no user info; when `CALSYNC_CALDAV_ALLOWED_HOSTS` is set, a host on that list;
/// and every address the host resolves to allowed by the address rule (no link-local ever; no
/// loopback or private range unless the operator allows them: `providers::caldav::guard`). The
/// client checks addresses again on every request and redirect, so a later DNS answer or a
/// redirect cannot get around this.
async fn check_server_url(
    url: &str,
    allowed: &[String],
    addresses: &crate::providers::caldav::guard::AddressPolicy,
) -> Result<(), ApiError> {
    let shape = (8..=2048).contains(&url.len()) && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    let parsed = reqwest::Url::parse(url).ok();
    let Some(host) = url_host(url).filter(|_| shape && parsed.is_some()) else {
        return Err(ApiError::invalid_field(
            "server_url must be an http(s) URL such as https://caldav.icloud.com/ (no user name or password in it)",
        ));
    };
    if !allowed.is_empty() && !allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(&host)) {
        return Err(ApiError::bad_request(
            "server_not_allowed",
            "this server only connects to the CalDAV hosts its operator allows (CALSYNC_CALDAV_ALLOWED_HOSTS)",
        ));
    }
    if let Some(url) = parsed
        && let Err(crate::providers::caldav::guard::CheckError::Refused(r)) = addresses.check_host(&url).await
    {
        return Err(ApiError::bad_request("server_address_refused", format!("server_url: {r}")));
    }
    Ok(())
}

/// Connect an Apple iCloud (or any CalDAV) calendar with an app-specific password.
#[utoipa::path(post, path = "/api/calendar/apple/connect", tag = "connection",
    request_body = AppleConnectRequest,
    responses((status = 200, body = AppleConnectResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn apple_connect(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<AppleConnectRequest>,
) -> Result<axum::Json<AppleConnectResponse>, ApiError> {
    let user = mapping::user_id(&req.user_id)?.to_string();
    caller.authorize(&state, &user)?;
    let apple_id = req.apple_id.trim().to_string();
    if apple_id.is_empty() || apple_id.len() > 320 || apple_id.chars().any(char::is_control) {
        return Err(ApiError::invalid_field("apple_id must be the CalDAV user name (an Apple ID e-mail on iCloud)"));
    }
    let password_ok = {
        use secrecy::ExposeSecret;
        let p = req.app_password.expose_secret();
        !p.trim().is_empty() && p.len() <= 1024
    };
    if !password_ok {
        return Err(ApiError::invalid_field("app_password must be a non-empty app-specific password"));
    }
    let server_url = req.server_url.clone().unwrap_or_else(|| state.config.apple_server_url.clone());
    check_server_url(&server_url, &state.config.caldav_allowed_hosts, &state.config.caldav_addresses).await?;
    if let Some(c) = &req.calendar_id
        && (c.is_empty() || c.len() > 1024)
    {
        return Err(ApiError::invalid_field("calendar_id must be 1-1024 characters"));
    }
    if req.dedicated_calendar && req.calendar_id.is_some() {
        return Err(ApiError::invalid_field(
            "give calendar_id (an existing calendar) or dedicated_calendar: true (a calendar of calsync's own), not both",
        ));
    }

    let name = connection_name(&user, ProviderKind::Apple);
    let account_user = apple_id.clone();
    let credentials = Credentials::Basic { username: apple_id, password: req.app_password };
    let target = Target {
        provider: ProviderKind::Apple,
        server_url: Some(server_url.clone()),
        connection: format!("{}/{name}", state.namespace),
    };
    // Check before storing anything (DESIGN §6: a failed connect stores nothing).
    let connect_error = |e: ProviderError| match e {
        // The server named by the user is unreachable: the user's input to fix, so 4xx.
        ProviderError::Transient { .. } => ApiError::bad_request(
            "calendar_unreachable",
            "the CalDAV server could not be reached; check server_url or retry later",
        ),
        other => errors::from_provider(&other),
    };
    let provider = state.connector.connect(&target, &credentials).await.map_err(connect_error)?;
    let mut account = provider.account().await.map_err(connect_error)?;
    if req.dedicated_calendar {
        // Made now, so a read-only account is this call's 422 and nothing is stored; the engine
        // then finds it by its fixed path (providers::dedicated).
        let own = dedicated::ensure(provider.as_ref(), None, &account.calendars).await.map_err(|e| match e.class() {
            ErrorClass::Retry { .. } => connect_error(e),
            _ => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "calendar_not_creatable",
                format!(
                    "calsync could not create its own calendar {:?} in this account ({}); connect without dedicated_calendar and pick a calendar_id instead",
                    dedicated::DEDICATED_NAME,
                    e.reason()
                ),
            ),
        })?;
        if !account.calendars.iter().any(|c| c.id == own.calendar.id) {
            account.calendars.push(own.calendar);
        }
    } else if let Some(id) = &req.calendar_id {
        match account.calendars.iter().find(|c| &c.id == id) {
            Some(c) if c.writable => {}
            Some(_) => {
                return Err(ApiError::invalid_field("calendar_id names a read-only calendar; pick a writable one"));
            }
            None => {
                return Err(ApiError::invalid_field("calendar_id is not a calendar of this account"));
            }
        }
    } else if account.default_calendar().is_none() {
        return Err(ApiError::bad_request(
            "no_writable_calendar",
            "the account has no writable calendar that accepts events; create one in the calendar app",
        ));
    }

    // The Secret's name follows the account, so connecting another account changes the
    // connection's spec (credentialsSecretRef) and the engine re-checks it at once rather than
    // at its next periodic check.
    let secret =
        SecretRef { name: format!("{name}-{}", user_label_value(&format!("{account_user}\n{server_url}"))), key: None };
    let key = ObjectKey::connection(&state.namespace, &name);
    // Credentials first: the engine reconciles the connection as soon as it appears and must
    // find them (a connection without them would report CredentialsMissing and wait).
    state.objects.write_credentials(&state.namespace, &secret, &credentials, &key).await?;
    let existing = state.objects.get_connection(&state.namespace, &name).await?;
    let mut spec = existing.as_ref().map(|c| c.spec.clone()).unwrap_or(CalendarConnectionSpec {
        user_id: user.clone(),
        provider: ProviderKind::Apple,
        credentials_secret_ref: secret.clone(),
        calendar_id: None,
        server_url: None,
        category_calendars: Default::default(),
        user_default: false,
        import: None,
        active: true,
    });
    spec.credentials_secret_ref = secret.clone();
    spec.server_url = Some(server_url);
    spec.calendar_id = if req.dedicated_calendar {
        Some(crate::resources::AUTO_CALENDAR.to_string())
    } else {
        req.calendar_id.clone()
    };
    spec.active = true;
    let mut labels = existing.as_ref().map(|c| c.labels().clone()).unwrap_or_default();
    labels.insert(USER_LABEL.to_string(), user_label_value(&user));
    let object = CalendarConnection {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(state.namespace.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    };
    let applied = match state.objects.apply_connection(&object).await {
        Ok(a) => a,
        Err(e) => {
            if existing.is_none()
                && let Err(del) = state.objects.delete_credentials(&state.namespace, &secret).await
            {
                tracing::warn!(connection = %key, error = %del, "could not remove credentials after a failed connect");
            }
            return Err(e.into());
        }
    };
    if let Some(old) = existing.as_ref().map(|c| &c.spec.credentials_secret_ref)
        && old.name != secret.name
        && let Err(e) = state.objects.delete_credentials(&state.namespace, old).await
    {
        tracing::warn!(connection = %key, error = %e, "could not remove the previous account's credentials");
    }
    state.caches.import.invalidate(&user);
    tracing::info!(connection = %key, "apple calendar connected");

    // Give the engine a moment to mark the connection Ready, so a task-to-calendar right after
    // this answer does not find it still unchecked. Not an error if it takes longer.
    let generation = applied.metadata.generation;
    let (objects, ns, n) = (state.objects.as_ref(), state.namespace.as_str(), name.as_str());
    let _ = wait_for(objects, state.config.sync_wait, || async move {
        let c = objects.get_connection(ns, n).await?;
        let done = c.as_ref().and_then(|c| c.status.as_ref()).is_some_and(|s| {
            s.observed_generation == generation && crate::resources::condition::is_true(&s.conditions, "Ready")
        });
        Ok((done, ()))
    })
    .await;

    Ok(axum::Json(AppleConnectResponse {
        success: true,
        message: "Apple Calendar connected successfully".into(),
        calendars: account.calendars.iter().map(|c| c.name.clone()).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::providers::caldav::guard::AddressPolicy;

    #[tokio::test]
    async fn server_url_policy() {
        let none: Vec<String> = vec![];
        let local = AddressPolicy::local();
        for ok in ["http://127.0.0.1:5232/user/", "https://[::1]:8443/dav"] {
            assert!(check_server_url(ok, &none, &local).await.is_ok(), "{ok}");
        }
        for bad in [
            "ftp://x.example/",
            "https://u:p@host/",
            "https:///path",
            "http://169.254.169.254/latest",
            "https://[fe80::1]/",
            "https://a b/",
        ] {
            assert!(check_server_url(bad, &none, &local).await.is_err(), "{bad}");
        }
        let refused = check_server_url("http://localhost:5232/", &none, &AddressPolicy::public_only()).await;
        let refused = refused.unwrap_err();
        assert_eq!(refused.code, "server_address_refused");
        let allowed = vec!["127.0.0.1".to_string()];
        assert!(check_server_url("http://127.0.0.1:443/", &allowed, &local).await.is_ok());
        assert_eq!(
            check_server_url("http://127.0.0.2/", &allowed, &local).await.unwrap_err().code,
            "server_not_allowed"
        );
    }
}
