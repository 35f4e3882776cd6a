//! OAuth configuration from the environment: which providers are set up, their endpoints (all
//! overridable, so tests point them at local servers) and client credentials.
//!
//! | variable | default |
//! |---|---|
//! | `GOOGLE_CLIENT_ID`, `GOOGLE_CLIENT_SECRET` | unset: Google connections are not offered |
//! | `GOOGLE_REDIRECT_URI` | `http://localhost:5000/api/calendar/google/callback` |
//! | `GOOGLE_AUTH_URL` | `https://accounts.google.com/o/oauth2/v2/auth` |
//! | `GOOGLE_TOKEN_URL` | `https://oauth2.googleapis.com/token` |
//! | `GOOGLE_REVOKE_URL` | `https://oauth2.googleapis.com/revoke` |
//! | `GOOGLE_CALENDAR_API_URL` | `https://www.googleapis.com/calendar/v3` |
//! | `GOOGLE_ISSUER` | `https://accounts.google.com` with the default auth URL, else unchecked |
//! | `MICROSOFT_CLIENT_ID`, `MICROSOFT_CLIENT_SECRET` | unset: Outlook connections are not offered |
//! | `MICROSOFT_REDIRECT_URI` | `http://localhost:5000/api/calendar/outlook/callback` |
//! | `MICROSOFT_AUTH_URL` | `https://login.microsoftonline.com/common/oauth2/v2.0/authorize` |
//! | `MICROSOFT_TOKEN_URL` | `https://login.microsoftonline.com/common/oauth2/v2.0/token` |
//! | `MICROSOFT_GRAPH_URL` | `https://graph.microsoft.com/v1.0` |
//! | `MICROSOFT_ISSUER` | unchecked (`/common` serves many tenants) |
//!
//! Owns: parsing. Must not touch: secrets' values in messages (only variable names).

use secrecy::SecretString;

use super::client::OAuthSettings;
use crate::resources::ProviderKind;

/// Google scopes: the narrowest that let calsync write events (`calendar.events`: events on the
/// user's calendars, not calendar ACLs or settings), list the user's calendars to pick and check
/// the default (`calendar.calendarlist.readonly`), and read their free/busy time for scheduling
/// (`calendar.freebusy`: `freeBusy.query` accepts no narrower one, and `calendar.events` is not
/// among those it accepts). The full `calendar` scope is not needed.
pub const GOOGLE_SCOPES: [&str; 3] = [
    "https://www.googleapis.com/auth/calendar.events",
    "https://www.googleapis.com/auth/calendar.calendarlist.readonly",
    GOOGLE_FREEBUSY_SCOPE,
];

/// Asked for, not required: a user who unticks it in Google's granular consent still connects;
/// suggest-times and auto-scheduling then name that calendar as unavailable instead.
pub const GOOGLE_FREEBUSY_SCOPE: &str = "https://www.googleapis.com/auth/calendar.freebusy";

/// The Google scope added for `dedicated_calendar: true`: create secondary calendars and manage
/// the events in them (`calendars.insert` needs it; `calendar.events` does not cover it).
pub const GOOGLE_DEDICATED_SCOPE: &str = "https://www.googleapis.com/auth/calendar.app.created";

/// Microsoft scopes: a refresh token needs `offline_access`; events need `Calendars.ReadWrite`.
pub const MICROSOFT_SCOPES: [&str; 2] = ["offline_access", "Calendars.ReadWrite"];

/// One configured OAuth provider: the authorization server and the calendar API base URL.
#[derive(Clone, Debug)]
pub struct ProviderOAuth {
    pub oauth: OAuthSettings,
    pub api_url: String,
}

/// Every OAuth provider this deployment has configured.
#[derive(Clone, Debug, Default)]
pub struct OAuthConfig {
    pub google: Option<ProviderOAuth>,
    pub microsoft: Option<ProviderOAuth>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OAuthConfigError {
    #[error("{set} is set but {missing} is not; set both to enable {provider} connections")]
    Incomplete { set: &'static str, missing: &'static str, provider: &'static str },
}

impl OAuthConfig {
    pub fn from_env() -> Result<Self, OAuthConfigError> {
        Self::from_lookup(&|name| crate::secret_files::var(name).filter(|v| !v.trim().is_empty()))
    }

    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, OAuthConfigError> {
        let google = match credentials(lookup, "GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET", "Google")? {
            None => None,
            Some((client_id, client_secret)) => {
                let auth_url = lookup("GOOGLE_AUTH_URL");
                let issuer = lookup("GOOGLE_ISSUER")
                    .or_else(|| auth_url.is_none().then(|| "https://accounts.google.com".to_string()));
                Some(ProviderOAuth {
                    oauth: OAuthSettings {
                        provider: ProviderKind::Google,
                        auth_url: auth_url.unwrap_or_else(|| "https://accounts.google.com/o/oauth2/v2/auth".into()),
                        token_url: lookup("GOOGLE_TOKEN_URL")
                            .unwrap_or_else(|| "https://oauth2.googleapis.com/token".into()),
                        revoke_url: Some(
                            lookup("GOOGLE_REVOKE_URL")
                                .unwrap_or_else(|| "https://oauth2.googleapis.com/revoke".into()),
                        ),
                        client_id,
                        client_secret,
                        redirect_uri: lookup("GOOGLE_REDIRECT_URI")
                            .unwrap_or_else(|| "http://localhost:5000/api/calendar/google/callback".into()),
                        scopes: GOOGLE_SCOPES.iter().map(|s| s.to_string()).collect(),
                        // Offline access gives a refresh token; `prompt=consent` makes Google issue a
                        // new one when a user connects again (it sends one only on first consent).
                        extra_auth_params: vec![
                            ("access_type".into(), "offline".into()),
                            ("prompt".into(), "consent".into()),
                            ("include_granted_scopes".into(), "true".into()),
                        ],
                        issuer,
                        rotates_refresh_tokens: false,
                    },
                    api_url: lookup("GOOGLE_CALENDAR_API_URL")
                        .unwrap_or_else(|| "https://www.googleapis.com/calendar/v3".into()),
                })
            }
        };
        let microsoft = credentials(lookup, "MICROSOFT_CLIENT_ID", "MICROSOFT_CLIENT_SECRET", "Outlook")?.map(
            |(client_id, client_secret)| ProviderOAuth {
                oauth: OAuthSettings {
                    provider: ProviderKind::Outlook,
                    auth_url: lookup("MICROSOFT_AUTH_URL")
                        .unwrap_or_else(|| "https://login.microsoftonline.com/common/oauth2/v2.0/authorize".into()),
                    token_url: lookup("MICROSOFT_TOKEN_URL")
                        .unwrap_or_else(|| "https://login.microsoftonline.com/common/oauth2/v2.0/token".into()),
                    // Graph has no per-token revocation (DESIGN §6): disconnect deletes the tokens.
                    revoke_url: None,
                    client_id,
                    client_secret,
                    redirect_uri: lookup("MICROSOFT_REDIRECT_URI")
                        .unwrap_or_else(|| "http://localhost:5000/api/calendar/outlook/callback".into()),
                    scopes: MICROSOFT_SCOPES.iter().map(|s| s.to_string()).collect(),
                    extra_auth_params: Vec::new(),
                    issuer: lookup("MICROSOFT_ISSUER"),
                    rotates_refresh_tokens: true,
                },
                api_url: lookup("MICROSOFT_GRAPH_URL").unwrap_or_else(|| "https://graph.microsoft.com/v1.0".into()),
            },
        );
        Ok(OAuthConfig { google, microsoft })
    }

    pub fn provider(&self, kind: ProviderKind) -> Option<&ProviderOAuth> {
        match kind {
            ProviderKind::Google => self.google.as_ref(),
            ProviderKind::Outlook => self.microsoft.as_ref(),
            ProviderKind::Apple | ProviderKind::Caldav => None,
        }
    }
}

fn credentials(
    lookup: &dyn Fn(&str) -> Option<String>,
    id: &'static str,
    secret: &'static str,
    provider: &'static str,
) -> Result<Option<(String, SecretString)>, OAuthConfigError> {
    match (lookup(id), lookup(secret)) {
        (None, None) => Ok(None),
        (Some(i), Some(s)) => Ok(Some((i.trim().to_string(), SecretString::from(s.trim().to_string())))),
        (Some(_), None) => Err(OAuthConfigError::Incomplete { set: id, missing: secret, provider }),
        (None, Some(_)) => Err(OAuthConfigError::Incomplete { set: secret, missing: id, provider }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<OAuthConfig, OAuthConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        OAuthConfig::from_lookup(&|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_overrides_and_incomplete() {
        let c = cfg(&[]).unwrap();
        assert!(c.google.is_none() && c.microsoft.is_none());
        let c = cfg(&[("GOOGLE_CLIENT_ID", "id"), ("GOOGLE_CLIENT_SECRET", "s3cret")]).unwrap();
        let g = c.google.unwrap();
        assert_eq!(g.oauth.token_url, "https://oauth2.googleapis.com/token");
        assert_eq!(g.oauth.issuer.as_deref(), Some("https://accounts.google.com"));
        assert!(!g.oauth.rotates_refresh_tokens);
        assert!(!format!("{g:?}").contains("s3cret"));
        let c = cfg(&[
            ("GOOGLE_CLIENT_ID", "id"),
            ("GOOGLE_CLIENT_SECRET", "s"),
            ("GOOGLE_AUTH_URL", "http://127.0.0.1:9/auth"),
            ("MICROSOFT_CLIENT_ID", "m"),
            ("MICROSOFT_CLIENT_SECRET", "ms"),
        ])
        .unwrap();
        assert_eq!(c.google.unwrap().oauth.issuer, None, "a custom server has its own issuer");
        let m = c.microsoft.unwrap();
        assert!(m.oauth.rotates_refresh_tokens && m.oauth.revoke_url.is_none());
        assert_eq!(m.oauth.scopes, vec!["offline_access", "Calendars.ReadWrite"]);
        let e = cfg(&[("GOOGLE_CLIENT_ID", "id")]).unwrap_err();
        assert!(e.to_string().contains("GOOGLE_CLIENT_SECRET"));
    }
}
