//! Writing credentials back into a Secret's data in the form that Secret already uses: calsync's
//! sealed `credentials` key, or the plain keys a platform team wrote by hand (DESIGN §3).
//!
//! Owns: which keys a write-back touches. Must not touch: storage, versions or sealing (the
//! store passes its sealer in). Never formats secret values.

use std::collections::BTreeMap;

use secrecy::ExposeSecret;

use super::{CREDENTIALS_KEY, Credentials, CredentialsError, from_secret_data};

/// The form of the credentials inside one Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// calsync's JSON (sealed by the store) under `credentialsSecretRef.key` (default `credentials`).
    Calsync,
    /// Plain keys (`username`/`password`, or `refresh_token` with optional `expires_at`,
    /// `refresh_lease`) written by a platform team.
    Plain,
}

/// Which form `data` holds (`key` is `credentialsSecretRef.key`).
pub fn form_of(data: &BTreeMap<String, Vec<u8>>, key: Option<&str>) -> Form {
    if data.contains_key(key.unwrap_or(CREDENTIALS_KEY)) { Form::Calsync } else { Form::Plain }
}

/// Why a write-back was refused. Messages never include secret values.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteBackError {
    #[error(
        "the Secret holds {stored} credentials as plain keys, not {given}; fix the Secret's keys or reconnect the calendar"
    )]
    KindMismatch { stored: &'static str, given: &'static str },
    #[error(transparent)]
    Unreadable(#[from] CredentialsError),
    #[error("credentials cannot be serialized: {0}")]
    Serialize(String),
    #[error("{0}")]
    Seal(String),
}

fn kind(c: &Credentials) -> &'static str {
    match c {
        Credentials::Basic { .. } => "Basic (username/password)",
        Credentials::OAuth { .. } => "OAuth (refresh_token)",
    }
}

impl Credentials {
    /// The same credentials without an access token: what may be stored (access tokens live in
    /// memory only).
    pub fn without_access_token(&self) -> Credentials {
        match self {
            Credentials::OAuth { refresh_token, expires_at, refresh_lease, .. } => Credentials::OAuth {
                refresh_token: refresh_token.clone(),
                access_token: None,
                expires_at: *expires_at,
                refresh_lease: refresh_lease.clone(),
            },
            basic => basic.clone(),
        }
    }
}

/// Put `credentials` (minus any access token) into `data` in the form `data` already holds.
/// calsync's form: the JSON, passed through `seal`, replaces the one key. Plain form: only the
/// keys that carry these credentials are written (`expires_at` and `refresh_lease` removed when
/// absent, a stale `access_token` removed because it no longer matches them); every other key
/// stays as it was.
pub fn write_back(
    data: &mut BTreeMap<String, Vec<u8>>,
    key: Option<&str>,
    credentials: &Credentials,
    seal: impl FnOnce(Vec<u8>) -> Result<Vec<u8>, String>,
) -> Result<(), WriteBackError> {
    let credentials = credentials.without_access_token();
    if form_of(data, key) == Form::Calsync {
        let json = serde_json::to_vec(&credentials).map_err(|e| WriteBackError::Serialize(e.to_string()))?;
        data.insert(key.unwrap_or(CREDENTIALS_KEY).to_string(), seal(json).map_err(WriteBackError::Seal)?);
        return Ok(());
    }
    // Plain keys of one kind are never turned into the other: that is a hand-written Secret
    // pointing at the wrong account, for a person to fix.
    let stored = from_secret_data(data, key)?;
    if std::mem::discriminant(&stored) != std::mem::discriminant(&credentials) {
        return Err(WriteBackError::KindMismatch { stored: kind(&stored), given: kind(&credentials) });
    }
    let mut set = |k: &str, v: Option<Vec<u8>>| match v {
        Some(v) => {
            data.insert(k.to_string(), v);
        }
        None => {
            data.remove(k);
        }
    };
    match &credentials {
        Credentials::Basic { username, password } => {
            set("username", Some(username.as_bytes().to_vec()));
            set("password", Some(password.expose_secret().as_bytes().to_vec()));
        }
        Credentials::OAuth { refresh_token, expires_at, refresh_lease, .. } => {
            set("refresh_token", Some(refresh_token.expose_secret().as_bytes().to_vec()));
            set("expires_at", expires_at.map(|t| t.to_rfc3339().into_bytes()));
            let lease = refresh_lease
                .as_ref()
                .map(serde_json::to_vec)
                .transpose()
                .map_err(|e| WriteBackError::Serialize(e.to_string()))?;
            set("refresh_lease", lease);
            set("access_token", None);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::RefreshLease;
    use secrecy::SecretString;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect()
    }

    fn oauth(refresh: &str, lease: Option<RefreshLease>) -> Credentials {
        Credentials::OAuth {
            refresh_token: SecretString::from(refresh),
            access_token: Some(SecretString::from("access-never-stored")),
            expires_at: chrono::DateTime::from_timestamp(1_800_000_000, 0),
            refresh_lease: lease,
        }
    }

    #[test]
    fn plain_keys_are_updated_in_place_and_others_kept() {
        let mut d = data(&[("refresh_token", "old"), ("access_token", "stale"), ("team-note", "keep me")]);
        let lease = RefreshLease { holder: "pod-a".into(), until: chrono::Utc::now() };
        let creds = oauth("new-refresh", Some(lease.clone()));
        write_back(&mut d, None, &creds, |_| panic!("plain keys are never sealed")).unwrap();
        assert_eq!(d["refresh_token"], b"new-refresh");
        assert_eq!(d["team-note"], b"keep me");
        assert!(!d.contains_key("access_token"), "no access token is stored");
        assert!(!d.contains_key(CREDENTIALS_KEY), "the form is kept");
        let back = from_secret_data(&d, None).unwrap();
        assert_eq!(back, creds.without_access_token());
        assert!(matches!(back, Credentials::OAuth { refresh_lease: Some(l), .. } if l == lease));
        // The lease is removed again when released.
        write_back(&mut d, None, &oauth("new-refresh", None), |_| unreachable!()).unwrap();
        assert!(!d.contains_key("refresh_lease"));
    }

    #[test]
    fn calsync_form_is_sealed_without_access_token() {
        let mut d = data(&[("creds", "{}")]);
        write_back(&mut d, Some("creds"), &oauth("r", None), |json| Ok([b"sealed:".to_vec(), json].concat())).unwrap();
        let text = String::from_utf8(d["creds"].clone()).unwrap();
        assert!(text.starts_with("sealed:"), "{text}");
        assert!(!text.contains("access-never-stored"), "{text}");
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn plain_kind_mismatch_is_refused() {
        let mut d = data(&[("username", "u"), ("password", "p")]);
        let err = write_back(&mut d, None, &oauth("r", None), |_| unreachable!()).unwrap_err();
        assert!(matches!(err, WriteBackError::KindMismatch { .. }), "{err}");
        assert_eq!(d["password"], b"p");
    }
}
