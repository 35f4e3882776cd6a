//! Which keys seal and open stored credentials, from the environment: `ENCRYPTION_KEY` (seals
//! new writes) plus `ENCRYPTION_KEYS_PREVIOUS` (comma-separated; still accepted for reading
//! after a rotation; `ENCRYPTION_KEY_PREVIOUS` is the older spelling and still read). Both modes
//! use it; standalone may generate `ENCRYPTION_KEY` first (`standalone::secrets`).
//!
//! Owns: parsing the key variables and explaining a key mismatch. Must not touch: storage.
//! Never formats key material: only key ids (a hash prefix) appear in messages.

use std::collections::BTreeSet;

use super::envelope::{CryptoError, Key, Keyring};

/// The variable holding the current key.
pub const CURRENT: &str = "ENCRYPTION_KEY";
/// The variable listing previous keys (comma-separated base64).
pub const PREVIOUS: &str = "ENCRYPTION_KEYS_PREVIOUS";
/// Older singular spelling of `PREVIOUS`, still read.
pub const PREVIOUS_ALIAS: &str = "ENCRYPTION_KEY_PREVIOUS";

/// Why the keys could not be configured. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyConfigError {
    #[error(
        "ENCRYPTION_KEY is not set: calsync seals the credentials it stores with it; set it to 32 random bytes as base64 (`openssl rand -base64 32`), the same value in every calsync process (controller and api)"
    )]
    Missing,
    #[error("{variable}: {source}")]
    BadKey { variable: &'static str, source: CryptoError },
    #[error(
        "stored credentials were sealed with key id(s) {missing}, but the configured keys are {configured}; set ENCRYPTION_KEY (or ENCRYPTION_KEYS_PREVIOUS) to the key they were written with, or delete those credentials and reconnect"
    )]
    UnknownKeyIds { missing: String, configured: String },
}

/// Previous keys from `ENCRYPTION_KEYS_PREVIOUS` and its alias `ENCRYPTION_KEY_PREVIOUS`.
pub fn previous_keys(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Key>, KeyConfigError> {
    let mut keys = Vec::new();
    for variable in [PREVIOUS, PREVIOUS_ALIAS] {
        for text in lookup(variable).unwrap_or_default().split(',').filter(|s| !s.trim().is_empty()) {
            keys.push(Key::from_base64(text).map_err(|source| KeyConfigError::BadKey { variable, source })?);
        }
    }
    Ok(keys)
}

/// `current` for sealing plus the previous keys from the environment for opening.
pub fn keyring_with_previous(current: Key, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Keyring, KeyConfigError> {
    Ok(previous_keys(lookup)?.into_iter().fold(Keyring::new(current), Keyring::with_old_key))
}

/// The keyring from `ENCRYPTION_KEY` (required) and the previous keys.
pub fn keyring_from(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Keyring, KeyConfigError> {
    let text = lookup(CURRENT).filter(|v| !v.trim().is_empty()).ok_or(KeyConfigError::Missing)?;
    let current = Key::from_base64(&text).map_err(|source| KeyConfigError::BadKey { variable: CURRENT, source })?;
    keyring_with_previous(current, lookup)
}

/// The keyring from the process environment (and `CALSYNC_SECRETS_DIR`'s files, once loaded).
pub fn keyring_from_env() -> Result<Keyring, KeyConfigError> {
    keyring_from(&crate::secret_files::var)
}

/// Fail when stored data names key ids the keyring cannot open: a start-up check, so a missing
/// or wrong key is one clear error instead of every connection failing later.
pub fn check_key_ids<'a>(keys: &Keyring, found: impl IntoIterator<Item = &'a str>) -> Result<(), KeyConfigError> {
    let configured = keys.ids();
    let missing: BTreeSet<&str> = found.into_iter().filter(|id| !configured.iter().any(|c| c == id)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(KeyConfigError::UnknownKeyIds {
        missing: missing.into_iter().collect::<Vec<_>>().join(", "),
        configured: configured.join(", "),
    })
}

/// What `calsync rotate-keys` did. Names only, never secret values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Sealed again under the current key (were under a previous key, or not sealed yet).
    pub resealed: usize,
    /// Already sealed under the current key.
    pub already_current: usize,
    /// Secrets a platform team wrote with plain keys (Kubernetes encrypts those at rest).
    pub plain_left_alone: usize,
    /// `namespace/name` of Secrets that could not be opened (tampered with, or sealed with a key
    /// that is not configured), with why.
    pub unreadable: Vec<String>,
}

impl std::fmt::Display for RotationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "re-sealed: {}, already current: {}, plain-key Secrets left alone: {}, unreadable: {}",
            self.resealed,
            self.already_current,
            self.plain_left_alone,
            self.unreadable.len()
        )?;
        for u in &self.unreadable {
            write!(f, "\n  unreadable: {u}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_keys_under_both_names_and_clear_errors() {
        let (current, current_text) = Key::generate();
        let (a, a_text) = Key::generate();
        let (b, b_text) = Key::generate();
        let env = |k: &str| match k {
            "ENCRYPTION_KEY" => Some(current_text.clone()),
            "ENCRYPTION_KEYS_PREVIOUS" => Some(format!("{a_text}, ")),
            "ENCRYPTION_KEY_PREVIOUS" => Some(b_text.clone()),
            _ => None,
        };
        let ring = keyring_from(&env).unwrap();
        assert_eq!(ring.current_id(), current.id());
        let sealed_a = Keyring::new(a.clone()).seal(b"x", b"aad").unwrap();
        let sealed_b = Keyring::new(b.clone()).seal(b"y", b"aad").unwrap();
        assert_eq!(ring.open(&sealed_a, b"aad").unwrap(), b"x");
        assert_eq!(ring.open(&sealed_b, b"aad").unwrap(), b"y");
        assert!(check_key_ids(&ring, [a.id().as_str(), current.id().as_str()]).is_ok());

        let err = check_key_ids(&Keyring::new(current.clone()), [a.id().as_str()]).unwrap_err().to_string();
        assert!(err.contains(&a.id()) && err.contains(&current.id()), "{err}");
        assert!(!err.contains(&a_text) && !err.contains(&current_text), "{err}");

        assert!(matches!(keyring_from(&|_| None), Err(KeyConfigError::Missing)));
        let bad = |k: &str| match k {
            "ENCRYPTION_KEY" => Some(current_text.clone()),
            "ENCRYPTION_KEYS_PREVIOUS" => Some("nope".into()),
            _ => None,
        };
        assert!(keyring_from(&bad).unwrap_err().to_string().starts_with("ENCRYPTION_KEYS_PREVIOUS"));
    }
}
