//! The AES-256-GCM envelope that seals stored credentials (the SQLite store's Secret rows; the
//! same envelope serves calsync-written Kubernetes Secrets).
//!
//! Owns: the sealed format (`version · key id · nonce · ciphertext+tag`) and key handling.
//! Must not touch: storage, or what is sealed (the store decides). Never logs or formats key
//! bytes.
//!
//! Format v1: byte `1`, 8-byte key id (first 8 bytes of SHA-256 of the key), 12-byte random
//! nonce, then the GCM ciphertext with its 16-byte tag. The key id lets a later key rotation
//! keep old keys for reading; the associated data binds a sealed blob to the row it belongs to,
//! so copying a ciphertext to another Secret is detected like any other tampering.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;

/// The associated data that binds a sealed Secret to its namespace and name (both stores), so
/// a ciphertext copied to another Secret fails to open.
pub fn secret_aad(namespace: &str, name: &str) -> Vec<u8> {
    format!("calsync/secret/v1:{namespace}/{name}").into_bytes()
}

/// Why sealing or opening failed. Messages never contain key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("ENCRYPTION_KEY must be 32 bytes encoded as base64 (e.g. `openssl rand -base64 32`); {0}")]
    BadKey(String),
    #[error(
        "the sealed data is too short or has an unknown format version; it was not written by calsync or is damaged"
    )]
    BadFormat,
    #[error(
        "the data was sealed with key id {found}, which is not the configured ENCRYPTION_KEY (key id {current}); set the key it was written with"
    )]
    UnknownKey { found: String, current: String },
    #[error("the sealed data failed authentication: it was tampered with or damaged")]
    Tampered,
    #[error("encryption failed")]
    Encrypt,
}

/// A 32-byte key with its id. Debug never shows the key.
#[derive(Clone)]
pub struct Key {
    id: [u8; KEY_ID_LEN],
    cipher: Aes256Gcm,
    /// A separate key derived from this one for push-channel tokens (`push::PushKeys`), so the
    /// encryption key itself is never used for a second purpose.
    push: [u8; 32],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("id", &hex(&self.id)).finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Key {
    /// A key from 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != 32 {
            return Err(CryptoError::BadKey(format!("it decodes to {} bytes", bytes.len())));
        }
        let digest = Sha256::digest(bytes);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        let cipher = Aes256Gcm::new_from_slice(bytes).map_err(|_| CryptoError::BadKey("wrong length".into()))?;
        let push = super::push::derive_push_key(bytes);
        Ok(Key { id, cipher, push })
    }

    /// A key from its base64 text (standard or URL-safe alphabet, padding optional).
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let text = text.trim();
        let engines = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        let bytes = engines
            .iter()
            .find_map(|e| e.decode(text).ok())
            .ok_or_else(|| CryptoError::BadKey("it is not valid base64".into()))?;
        Self::from_bytes(&bytes)
    }

    /// A fresh random key and its base64 text.
    pub fn generate() -> (Self, String) {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        // 32 bytes always make a key.
        let key = Self::from_bytes(&bytes).unwrap_or_else(|_| unreachable!("32 bytes is a valid AES-256 key"));
        (key, text)
    }

    /// The key id as hex (safe to log).
    pub fn id(&self) -> String {
        hex(&self.id)
    }
}

/// The current key (used to seal) and older ones (still accepted to open).
#[derive(Clone, Debug)]
pub struct Keyring {
    current: Key,
    older: BTreeMap<[u8; KEY_ID_LEN], Key>,
}

impl Keyring {
    pub fn new(current: Key) -> Self {
        Keyring { current, older: BTreeMap::new() }
    }

    /// Also accept `key` for opening (key rotation).
    pub fn with_old_key(mut self, key: Key) -> Self {
        self.older.insert(key.id, key);
        self
    }

    /// Keys for push-channel tokens: the current key's first (it makes new tokens), then the
    /// older ones (tokens of channels made before a rotation still verify).
    pub fn push_keys(&self) -> super::push::PushKeys {
        let mut keys = vec![self.current.push];
        keys.extend(self.older.values().map(|k| k.push));
        super::push::PushKeys::new(keys)
    }

    pub fn current_id(&self) -> String {
        self.current.id()
    }

    /// Ids of every key that opens (current first).
    pub fn ids(&self) -> Vec<String> {
        std::iter::once(self.current.id()).chain(self.older.values().map(Key::id)).collect()
    }

    /// The id of the key a sealed blob names, without opening it (`None`: not calsync's
    /// envelope).
    pub fn key_id_of(sealed: &[u8]) -> Option<String> {
        (sealed.len() >= HEADER_LEN + 16 && sealed[0] == VERSION).then(|| hex(&sealed[1..1 + KEY_ID_LEN]))
    }

    /// Seal `plaintext`, bound to `aad` (e.g. the row's identity).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .current
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .map_err(|_| CryptoError::Encrypt)?;
        let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&self.current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Open a blob made by `seal` with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < HEADER_LEN + 16 || sealed[0] != VERSION {
            return Err(CryptoError::BadFormat);
        }
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&sealed[1..1 + KEY_ID_LEN]);
        let key = if id == self.current.id {
            &self.current
        } else {
            self.older
                .get(&id)
                .ok_or_else(|| CryptoError::UnknownKey { found: hex(&id), current: self.current.id() })?
        };
        let nonce = &sealed[1 + KEY_ID_LEN..HEADER_LEN];
        key.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: &sealed[HEADER_LEN..], aad })
            .map_err(|_| CryptoError::Tampered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_tamper_and_wrong_key() {
        let (key, text) = Key::generate();
        let ring = Keyring::new(key);
        let sealed = ring.seal(b"hello", b"row-1").unwrap();
        assert_eq!(ring.open(&sealed, b"row-1").unwrap(), b"hello");
        assert_eq!(ring.open(&sealed, b"row-2").unwrap_err(), CryptoError::Tampered);
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(ring.open(&bad, b"row-1").unwrap_err(), CryptoError::Tampered);
        assert_eq!(ring.open(&sealed[..10], b"row-1").unwrap_err(), CryptoError::BadFormat);
        let (other, _) = Key::generate();
        let other_ring = Keyring::new(other.clone());
        assert!(matches!(other_ring.open(&sealed, b"row-1"), Err(CryptoError::UnknownKey { .. })));
        // Rotation: the old key still opens.
        let rotated = Keyring::new(other).with_old_key(Key::from_base64(&text).unwrap());
        assert_eq!(rotated.open(&sealed, b"row-1").unwrap(), b"hello");
        assert!(!format!("{ring:?}").contains(&text));
    }

    #[test]
    fn bad_keys_are_explained() {
        assert!(matches!(Key::from_base64("not base64!!"), Err(CryptoError::BadKey(_))));
        assert!(Key::from_base64("c2hvcnQ=").unwrap_err().to_string().contains("5 bytes"));
    }
}
