//! Credential material and the two forms a credentials Secret may take.
//!
//! Owns: the `Credentials` type (secrets wrapped so they cannot reach logs or Debug output) and
//! parsing of the plain-key Secret form. Must not touch: where credentials are stored (an
//! `Objects` implementation does that) or provider calls.

pub mod envelope;
pub mod feed;
pub mod form;
pub mod keys;
pub mod push;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Default key of the calsync-written form inside a credentials Secret.
pub const CREDENTIALS_KEY: &str = "credentials";

/// Credentials of one calendar account. Debug output redacts every secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Credentials {
    /// HTTP Basic (CalDAV, iCloud app-specific password).
    Basic {
        username: String,
        #[serde(serialize_with = "expose")]
        password: SecretString,
    },
    /// OAuth 2.0 tokens (Google, Outlook).
    #[serde(rename = "oauth")]
    OAuth {
        #[serde(serialize_with = "expose")]
        refresh_token: SecretString,
        #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "expose_opt")]
        access_token: Option<SecretString>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<DateTime<Utc>>,
        /// Who is refreshing these tokens right now (cross-process mutual exclusion for providers
        /// that rotate refresh tokens: two refreshes with one rotating token lose the grant).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refresh_lease: Option<RefreshLease>,
    },
}

/// A claim, written with optimistic concurrency, that one process is refreshing a connection's
/// tokens until `until`. Others wait for the new tokens instead of refreshing too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshLease {
    pub holder: String,
    pub until: DateTime<Utc>,
}

// Serialization exists only to store credentials (encrypted by the store); it is the one place
// where the secret leaves its wrapper on purpose.
fn expose<S: serde::Serializer>(s: &SecretString, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.expose_secret())
}

fn expose_opt<S: serde::Serializer>(s: &Option<SecretString>, ser: S) -> Result<S::Ok, S::Error> {
    match s {
        Some(s) => ser.serialize_some(s.expose_secret()),
        None => ser.serialize_none(),
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => {
                f.debug_struct("Basic").field("username", username).field("password", &"[redacted]").finish()
            }
            Credentials::OAuth { expires_at, refresh_lease, .. } => f
                .debug_struct("OAuth")
                .field("refresh_token", &"[redacted]")
                .field("expires_at", expires_at)
                .field("refresh_lease", refresh_lease)
                .finish(),
        }
    }
}

impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Credentials::Basic { username: u1, password: p1 }, Credentials::Basic { username: u2, password: p2 }) => {
                u1 == u2 && p1.expose_secret() == p2.expose_secret()
            }
            (
                Credentials::OAuth { refresh_token: r1, access_token: a1, expires_at: e1, refresh_lease: l1 },
                Credentials::OAuth { refresh_token: r2, access_token: a2, expires_at: e2, refresh_lease: l2 },
            ) => {
                r1.expose_secret() == r2.expose_secret()
                    && a1.as_ref().map(|s| s.expose_secret()) == a2.as_ref().map(|s| s.expose_secret())
                    && e1 == e2
                    && l1 == l2
            }
            _ => false,
        }
    }
}

/// Why a credentials Secret could not be read. Messages never include secret values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    #[error(
        "credentials Secret has none of the expected keys: set `username` and `password` (CalDAV/iCloud), `refresh_token` (Google/Outlook), or calsync's `credentials` key"
    )]
    NoKnownKeys,
    #[error("credentials Secret key `{0}` is not valid UTF-8 text")]
    NotUtf8(String),
    #[error("credentials Secret key `{key}` does not hold calsync credentials JSON: {reason}")]
    BadJson { key: String, reason: String },
    #[error("credentials Secret has `{present}` but not `{missing}`; set both")]
    Incomplete { present: String, missing: String },
    #[error("credentials Secret key `expires_at` is not an RFC 3339 time")]
    BadExpiry,
    #[error(
        "credentials Secret key `refresh_lease` is not a refresh lease JSON ({{\"holder\":...,\"until\":...}}); delete the key"
    )]
    BadLease,
}

/// What is wrong with credentials JSON, without serde's text: that quotes the offending value
/// (`invalid type: string "hunter2"`), which here would be a secret.
fn describe_json_error(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Syntax => "it is not valid JSON",
        serde_json::error::Category::Eof => "the JSON ends early",
        serde_json::error::Category::Data => "a field has the wrong type or a required field is missing",
        serde_json::error::Category::Io => "it could not be read",
    };
    format!("{what} (line {}, column {})", e.line(), e.column())
}

/// Read a Secret's data in either form (DESIGN §3): calsync's `credentials` JSON under `key`
/// (default `credentials`), or plain keys written by a platform team. Decryption of the
/// calsync-written form happens in the store before this is called.
pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>, key: Option<&str>) -> Result<Credentials, CredentialsError> {
    let text = |k: &str| -> Result<Option<String>, CredentialsError> {
        data.get(k)
            .map(|v| String::from_utf8(v.clone()).map_err(|_| CredentialsError::NotUtf8(k.to_string())))
            .transpose()
    };
    let json_key = key.unwrap_or(CREDENTIALS_KEY);
    if let Some(json) = text(json_key)? {
        return serde_json::from_str(&json)
            .map_err(|e| CredentialsError::BadJson { key: json_key.to_string(), reason: describe_json_error(&e) });
    }
    match (text("username")?, text("password")?) {
        (Some(username), Some(password)) => {
            return Ok(Credentials::Basic { username, password: SecretString::from(password) });
        }
        (Some(_), None) => {
            return Err(CredentialsError::Incomplete { present: "username".into(), missing: "password".into() });
        }
        (None, Some(_)) => {
            return Err(CredentialsError::Incomplete { present: "password".into(), missing: "username".into() });
        }
        (None, None) => {}
    }
    if let Some(refresh) = text("refresh_token")? {
        let expires_at = text("expires_at")?
            .map(|s| DateTime::parse_from_rfc3339(s.trim()).map(|d| d.with_timezone(&Utc)))
            .transpose()
            .map_err(|_| CredentialsError::BadExpiry)?;
        return Ok(Credentials::OAuth {
            refresh_token: SecretString::from(refresh),
            access_token: text("access_token")?.map(SecretString::from),
            expires_at,
            refresh_lease: text("refresh_lease")?
                .map(|s| serde_json::from_str(&s))
                .transpose()
                .map_err(|_| CredentialsError::BadLease)?,
        });
    }
    Err(CredentialsError::NoKnownKeys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn plain_basic_keys() {
        let c = from_secret_data(&data(&[("username", "u@icloud.com"), ("password", "abcd-efgh")]), None).unwrap();
        assert!(matches!(&c, Credentials::Basic { username, .. } if username == "u@icloud.com"));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("abcd-efgh"), "Debug leaked the password: {dbg}");
    }

    #[test]
    fn plain_oauth_keys_and_errors() {
        let c = from_secret_data(&data(&[("refresh_token", "r-secret"), ("expires_at", "2026-01-01T00:00:00Z")]), None)
            .unwrap();
        assert!(matches!(c, Credentials::OAuth { expires_at: Some(_), .. }));
        assert!(!format!("{c:?}").contains("r-secret"));
        assert_eq!(
            from_secret_data(&data(&[("username", "u")]), None).unwrap_err(),
            CredentialsError::Incomplete { present: "username".into(), missing: "password".into() }
        );
        assert_eq!(from_secret_data(&data(&[]), None).unwrap_err(), CredentialsError::NoKnownKeys);
        let err = from_secret_data(&data(&[("credentials", "{not json secret-value")]), None).unwrap_err();
        assert!(!err.to_string().contains("secret-value"));
        // serde's own message would quote the wrongly typed value.
        let err =
            from_secret_data(&data(&[("credentials", r#"{"type":"basic","username":"u","password":98765}"#)]), None)
                .unwrap_err();
        assert!(!err.to_string().contains("98765"), "{err}");
        assert!(err.to_string().contains("wrong type"), "{err}");
    }

    #[test]
    fn json_form_round_trips() {
        let c = Credentials::Basic { username: "u".into(), password: SecretString::from("p") };
        let json = serde_json::to_string(&c).unwrap();
        let back = from_secret_data(&data(&[("creds", &json)]), Some("creds")).unwrap();
        assert_eq!(back, c);
    }
}
