//! Per-watch secrets for provider push (Google channel `token`, Graph `clientState`).
//!
//! A watch's secret is `HMAC-SHA256(push key, watch id)`, where the push key is derived from
//! the credentials encryption key. Both processes that need it (the engine, which sends it to
//! the provider, and the REST API, which checks every notification) hold that key already, so
//! the secret is never stored, never needs a credentials write racing token refreshes, and a
//! forged notification is refused before any store read. Each watch id is a fresh UUID, so each
//! watch has its own secret. After a key rotation the older keys still verify the channels they
//! made until those are renewed.
//!
//! Owns: making and checking those secrets (constant time). Must not touch: storage or HTTP.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

const PUSH_KEY_LABEL: &[u8] = b"calsync push channel tokens v1";

/// The push key of an encryption key.
pub(super) fn derive_push_key(encryption_key: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // HMAC accepts keys of any length; 32 bytes always works.
    if let Ok(mut mac) = HmacSha256::new_from_slice(encryption_key) {
        mac.update(PUSH_KEY_LABEL);
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

fn secret_bytes(key: &[u8; 32], input: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    // HMAC accepts keys of any length; 32 bytes always works.
    if let Ok(mut mac) = HmacSha256::new_from_slice(key) {
        mac.update(input.as_bytes());
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

fn secret_with(key: &[u8; 32], watch_id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret_bytes(key, watch_id))
}

/// The keys that make and check push secrets. Debug never shows them.
#[derive(Clone)]
pub struct PushKeys {
    /// Current first.
    keys: Vec<[u8; 32]>,
}

impl std::fmt::Debug for PushKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushKeys").field("keys", &self.keys.len()).finish()
    }
}

impl PushKeys {
    pub fn new(keys: Vec<[u8; 32]>) -> Self {
        PushKeys { keys }
    }

    /// The keys themselves (current first), for deriving other per-purpose keys (`feed`).
    pub(super) fn raw_keys(&self) -> &[[u8; 32]] {
        &self.keys
    }

    /// The secret of a new watch (43 URL-safe characters: fits Google's 256 and, with the
    /// watch id in front, Graph's 128-character clientState).
    pub fn secret_for(&self, watch_id: &str) -> SecretString {
        let key = self.keys.first().copied().unwrap_or([0u8; 32]);
        SecretString::from(secret_with(&key, watch_id))
    }

    /// A keyring for another value the REST API hands out sealed (the app's change cursors),
    /// derived from these keys under `label`: no second key to configure, a separate key per
    /// purpose, and the same rotation (older keys still open what they sealed). `None` without
    /// keys.
    pub fn derived_keyring(&self, label: &str) -> Option<super::envelope::Keyring> {
        let derive = |k: &[u8; 32]| {
            let bytes = secret_bytes(k, label);
            super::envelope::Key::from_bytes(&bytes).ok()
        };
        let mut keys = self.keys.iter().filter_map(derive);
        let ring = super::envelope::Keyring::new(keys.next()?);
        Some(keys.fold(ring, super::envelope::Keyring::with_old_key))
    }

    /// Does `presented` belong to `watch_id`? Constant time in the presented value.
    pub fn verify(&self, watch_id: &str, presented: &str) -> bool {
        if self.keys.is_empty() || watch_id.is_empty() {
            return false;
        }
        let mut ok = subtle::Choice::from(0u8);
        for key in &self.keys {
            let want = SecretString::from(secret_with(key, watch_id));
            ok |= want.expose_secret().as_bytes().ct_eq(presented.as_bytes());
        }
        ok.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seed: u8) -> PushKeys {
        PushKeys::new(vec![derive_push_key(&[seed; 32])])
    }

    #[test]
    fn a_secret_verifies_only_for_its_watch_and_key() {
        let k = keys(1);
        let s = k.secret_for("w-1");
        assert!(k.verify("w-1", s.expose_secret()));
        assert!(!k.verify("w-2", s.expose_secret()));
        assert!(!keys(2).verify("w-1", s.expose_secret()));
        assert!(!k.verify("w-1", ""));
        assert!(!k.verify("", s.expose_secret()));
        assert_eq!(s.expose_secret().len(), 43);
        assert!(!format!("{k:?}").contains(s.expose_secret()));
    }

    #[test]
    fn derived_keyrings_differ_per_label_and_open_after_a_rotation() {
        let old = keys(1);
        let sealed = old.derived_keyring("a").unwrap().seal(b"x", b"").unwrap();
        assert!(old.derived_keyring("b").unwrap().open(&sealed, b"").is_err());
        let rotated = PushKeys::new(vec![derive_push_key(&[2; 32]), derive_push_key(&[1; 32])]);
        assert_eq!(rotated.derived_keyring("a").unwrap().open(&sealed, b"").unwrap(), b"x");
        assert!(PushKeys::new(vec![]).derived_keyring("a").is_none());
    }

    #[test]
    fn older_keys_still_verify_after_a_rotation() {
        let old = keys(1);
        let token = old.secret_for("w");
        let rotated = PushKeys::new(vec![derive_push_key(&[2; 32]), derive_push_key(&[1; 32])]);
        assert!(rotated.verify("w", token.expose_secret()));
        assert_ne!(rotated.secret_for("w").expose_secret(), token.expose_secret());
    }
}
