//! The OAuth `state` parameter (DESIGN §6): an AES-256-GCM sealed blob keyed from `SECRET_KEY`,
//! carrying the user, the provider, the PKCE verifier, an expiry and a nonce. Any replica can open
//! it (no server-side session); the nonce, recorded on the connection by the callback, makes it
//! single-use.
//!
//! Owns: sealing and opening. Must not touch: where used nonces are recorded (the API does that
//! on the connection) or the token exchange.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::resources::ProviderKind;

/// How long a state (and so an authorization attempt) stays valid.
pub const STATE_TTL: chrono::Duration = chrono::Duration::minutes(10);

/// Binds sealed states to their purpose, so no other blob sealed with a key derived from
/// `SECRET_KEY` opens as a state.
const AAD: &[u8] = b"calsync oauth state v1";
const NONCE_LEN: usize = 12;

/// What a state carries. Debug hides the verifier.
#[derive(Clone, Serialize, Deserialize)]
pub struct StateClaims {
    #[serde(rename = "u")]
    pub user: String,
    #[serde(rename = "p")]
    pub provider: ProviderKind,
    #[serde(rename = "v", with = "secret_text")]
    pub verifier: SecretString,
    #[serde(rename = "e", with = "chrono::serde::ts_seconds")]
    pub expires_at: DateTime<Utc>,
    /// Random, unique per authorization attempt: the callback records it to refuse replays.
    #[serde(rename = "n")]
    pub nonce: String,
    /// The user asked for a calendar of calsync's own (`dedicated_calendar: true`): the
    /// callback then stores the connection with `calendarId: auto`. Absent in older states.
    #[serde(rename = "d", default, skip_serializing_if = "std::ops::Not::not")]
    pub dedicated: bool,
}

impl std::fmt::Debug for StateClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateClaims")
            .field("user", &self.user)
            .field("provider", &self.provider)
            .field("expires_at", &self.expires_at)
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

mod secret_text {
    use secrecy::{ExposeSecret, SecretString};
    // Only ever serialized into the sealed blob.
    pub fn serialize<S: serde::Serializer>(s: &SecretString, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.expose_secret())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(de: D) -> Result<SecretString, D::Error> {
        let s: String = serde::Deserialize::deserialize(de)?;
        Ok(SecretString::from(s))
    }
}

/// Why a state was refused. The reason words are what the callback puts in its redirect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the state is not one this server issued (forged, damaged, or sealed with another SECRET_KEY)")]
    Invalid,
    #[error("the state has expired; start connecting again")]
    Expired,
}

impl StateError {
    pub fn reason(&self) -> &'static str {
        match self {
            StateError::Invalid => "invalid_state",
            StateError::Expired => "state_expired",
        }
    }
}

/// Seals and opens states.
#[derive(Clone)]
pub struct StateSealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for StateSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateSealer([redacted])")
    }
}

impl StateSealer {
    /// A sealer keyed from `SECRET_KEY` (any length; hashed with a purpose label so the key is not
    /// the one used for anything else).
    pub fn new(secret_key: &SecretString) -> Self {
        let mut h = Sha256::new();
        h.update(b"calsync/oauth-state\0");
        h.update(secret_key.expose_secret().as_bytes());
        let key = h.finalize();
        // A 32-byte digest is always a valid AES-256 key.
        let cipher = Aes256Gcm::new(&key);
        StateSealer { cipher }
    }

    /// Fresh claims for `user` connecting `provider`, expiring `STATE_TTL` from `now`.
    pub fn claims(user: &str, provider: ProviderKind, verifier: SecretString, now: DateTime<Utc>) -> StateClaims {
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        StateClaims {
            user: user.to_string(),
            provider,
            verifier,
            expires_at: now + STATE_TTL,
            nonce: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(nonce),
            dedicated: false,
        }
    }

    /// The URL-safe text of sealed claims.
    pub fn seal(&self, claims: &StateClaims) -> String {
        // Serializing strings and a timestamp cannot fail.
        let plain = serde_json::to_vec(claims).unwrap_or_default();
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: &plain, aad: AAD })
            // AES-GCM encryption fails only for inputs beyond 64 GiB.
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
    }

    /// Open a state from a callback: authentic and not expired at `now`.
    pub fn open(&self, text: &str, now: DateTime<Utc>) -> Result<StateClaims, StateError> {
        if text.len() > 4096 {
            return Err(StateError::Invalid);
        }
        let raw =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| StateError::Invalid)?;
        if raw.len() <= NONCE_LEN {
            return Err(StateError::Invalid);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: AAD })
            .map_err(|_| StateError::Invalid)?;
        let claims: StateClaims = serde_json::from_slice(&plain).map_err(|_| StateError::Invalid)?;
        if claims.expires_at <= now {
            return Err(StateError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(k: &str) -> StateSealer {
        StateSealer::new(&SecretString::from(k.to_string()))
    }

    #[test]
    fn round_trip_and_refusals() {
        let now = Utc::now();
        let s = sealer("secret-a");
        let claims = StateSealer::claims("alice", ProviderKind::Google, SecretString::from("verifier-1"), now);
        let text = s.seal(&claims);
        assert!(!text.contains("alice") && !text.contains("verifier-1"), "state must be opaque");
        assert!(text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        let back = s.open(&text, now).unwrap();
        assert_eq!(back.user, "alice");
        assert_eq!(back.provider, ProviderKind::Google);
        assert_eq!(back.verifier.expose_secret(), "verifier-1");
        assert_eq!(back.nonce, claims.nonce);
        assert!(!back.dedicated, "no dedicated calendar unless asked");
        let mut asked = claims.clone();
        asked.dedicated = true;
        assert!(s.open(&s.seal(&asked), now).unwrap().dedicated, "the flag survives the round trip");

        // Expired, other key, tampered, garbage.
        assert_eq!(s.open(&text, now + STATE_TTL + chrono::Duration::seconds(1)).unwrap_err(), StateError::Expired);
        assert_eq!(sealer("secret-b").open(&text, now).unwrap_err(), StateError::Invalid);
        let mut bytes = text.into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(s.open(&String::from_utf8(bytes).unwrap(), now).unwrap_err(), StateError::Invalid);
        for junk in ["", "user123", "%%%", &"A".repeat(5000)] {
            assert_eq!(s.open(junk, now).unwrap_err(), StateError::Invalid, "{junk}");
        }
        assert!(!format!("{back:?}").contains("verifier-1"));
    }

    #[test]
    fn nonces_differ() {
        let now = Utc::now();
        let a = StateSealer::claims("u", ProviderKind::Outlook, SecretString::from("v"), now);
        let b = StateSealer::claims("u", ProviderKind::Outlook, SecretString::from("v"), now);
        assert_ne!(a.nonce, b.nonce);
    }
}
