//! ICS feed tokens: the secret in a user's subscription URL
//! (`/api/calendar/feeds/<feed id>.<secret>.ics`), and the record a store keeps for it.
//!
//! The token is `<feed id>.<secret>`. The feed id is a hash of the user id (so a user has at
//! most one feed and the record is found by a direct key, never by a scan). The secret is
//! `HMAC-SHA256(feed key, feed id, nonce, user id)`, the feed key derived from the push key,
//! itself derived from the credentials encryption key; the nonce is fresh random per feed. The
//! record stores the nonce and a SHA-256 verifier of the whole token, never the token:
//! - checking a presented token needs no key (hash, constant-time compare), so rotating the
//!   encryption key never breaks a subscribed calendar;
//! - `POST` can return the existing URL (recompute it with any configured key and match it
//!   against the verifier) instead of rotating it on every call;
//! - revoking deletes the record: the old URL fails at once on every replica; a new feed gets a
//!   new nonce, hence a new secret.
//!
//! Owns: making, parsing and checking feed tokens and the record's stored form. Must not touch:
//! storage or HTTP. Never formats a token into Debug output, errors or logs.

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

const FEED_KEY_LABEL: &[u8] = b"calsync ics feed tokens v1";
const FEED_ID_LABEL: &[u8] = b"calsync ics feed id v1";
/// Hex characters of a feed id (96 bits: ids only route, the secret carries the security).
pub const FEED_ID_LEN: usize = 24;
/// Base64url characters of the secret (a 256-bit HMAC).
pub const SECRET_LEN: usize = 43;
/// Prefix of the name of the Secret (Kubernetes) or secrets row (SQLite) holding a record.
pub const SECRET_NAME_PREFIX: &str = "calsync-feed-";
/// The key of the record's JSON inside that Secret.
pub const RECORD_KEY: &str = "feed";

/// The feed id of a user: stable, so a user has one feed record, found by a direct key.
pub fn feed_id(user_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(FEED_ID_LABEL);
    h.update([0u8]);
    h.update(user_id.as_bytes());
    h.finalize().iter().take(FEED_ID_LEN / 2).map(|b| format!("{b:02x}")).collect()
}

/// What a store keeps for a user's feed. Holds no secret: the token cannot be made from it
/// without the feed key, and the verifier is a hash of a 256-bit value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedRecord {
    /// `feed_id(user_id)`.
    pub id: String,
    pub user_id: String,
    /// Random per feed: a revoked feed's successor has another secret.
    pub nonce: String,
    /// Hex SHA-256 of the token.
    pub verifier: String,
    pub created_at: DateTime<Utc>,
}

impl FeedRecord {
    /// Name of the Secret / secrets row holding the record of feed `id`.
    pub fn secret_name(id: &str) -> String {
        format!("{SECRET_NAME_PREFIX}{id}")
    }

    /// The record as Secret data (`{"feed": <json>}`).
    pub fn to_secret_data(&self) -> BTreeMap<String, Vec<u8>> {
        // Serializing plain strings and a timestamp cannot fail; an empty value would only make
        // the record unreadable (404), never expose anything.
        BTreeMap::from([(RECORD_KEY.to_string(), serde_json::to_vec(self).unwrap_or_default())])
    }

    /// The record from Secret data; `None` when it is not one.
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Option<Self> {
        serde_json::from_slice(data.get(RECORD_KEY)?).ok()
    }

    /// Is `presented` this feed's token? Constant time in the presented value.
    pub fn admits(&self, presented: &str) -> bool {
        let got = verifier_of(presented);
        bool::from(got.as_bytes().ct_eq(self.verifier.as_bytes()))
    }
}

fn verifier_of(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The feed id a presented token names, if it has a token's shape (`<24 hex>.<43 base64url>`).
/// Anything else is answered exactly like an unknown token.
pub fn parse_token(presented: &str) -> Option<&str> {
    let (id, secret) = presented.split_once('.')?;
    let id_ok = id.len() == FEED_ID_LEN && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let secret_ok =
        secret.len() == SECRET_LEN && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some(id)
}

/// The keys that make feed tokens. Debug never shows them.
#[derive(Clone)]
pub struct FeedKeys {
    /// Current first.
    keys: Vec<[u8; 32]>,
}

impl std::fmt::Debug for FeedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedKeys").field("keys", &self.keys.len()).finish()
    }
}

impl FeedKeys {
    /// Feed keys from the push keys (current first), domain-separated from push secrets.
    pub fn from_push(push: &super::push::PushKeys) -> Self {
        let keys = push
            .raw_keys()
            .iter()
            .map(|k| {
                let mut out = [0u8; 32];
                // HMAC accepts keys of any length; 32 bytes always works.
                if let Ok(mut mac) = HmacSha256::new_from_slice(k) {
                    mac.update(FEED_KEY_LABEL);
                    out.copy_from_slice(&mac.finalize().into_bytes());
                }
                out
            })
            .collect();
        FeedKeys { keys }
    }

    fn token_with(key: &[u8; 32], id: &str, nonce: &str, user_id: &str) -> SecretString {
        let mut token = format!("{id}.");
        if let Ok(mut mac) = HmacSha256::new_from_slice(key) {
            // Length-prefixed, so no two (nonce, user) pairs feed the MAC the same bytes.
            for part in [id, nonce, user_id] {
                mac.update(&(part.len() as u64).to_be_bytes());
                mac.update(part.as_bytes());
            }
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(mac.finalize().into_bytes(), &mut token);
        }
        SecretString::from(token)
    }

    /// A new feed for `user_id`: its record and its token. `None` without keys.
    pub fn issue(&self, user_id: &str, now: DateTime<Utc>) -> Option<(FeedRecord, SecretString)> {
        let key = self.keys.first()?;
        // 256 random bits per feed: even someone holding the key cannot predict a token without
        // also reading the store.
        let mut nonce = [0u8; 32];
        rand::rng().fill_bytes(&mut nonce);
        let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(nonce);
        let id = feed_id(user_id);
        let token = Self::token_with(key, &id, &nonce, user_id);
        let verifier = verifier_of(token.expose_secret());
        Some((FeedRecord { id, user_id: user_id.to_string(), nonce, verifier, created_at: now }, token))
    }

    /// The token of an existing feed, made again with whichever configured key made it; `None`
    /// when none did (that key was dropped after a rotation: the URL still works, but cannot
    /// be shown again).
    pub fn token_of(&self, record: &FeedRecord) -> Option<SecretString> {
        self.keys
            .iter()
            .map(|k| Self::token_with(k, &record.id, &record.nonce, &record.user_id))
            .find(|t| record.admits(t.expose_secret()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::push::PushKeys;

    fn keys(seed: u8) -> FeedKeys {
        FeedKeys::from_push(&PushKeys::new(vec![[seed; 32]]))
    }

    #[test]
    fn issued_tokens_verify_parse_and_come_back() {
        let k = keys(1);
        let (rec, token) = k.issue("user 1", Utc::now()).unwrap();
        let t = token.expose_secret();
        assert_eq!(parse_token(t), Some(rec.id.as_str()));
        assert_eq!(rec.id, feed_id("user 1"));
        assert!(rec.admits(t));
        assert_eq!(k.token_of(&rec).unwrap().expose_secret(), t);
        // The record holds neither the token nor its secret part.
        let stored = String::from_utf8(rec.to_secret_data()[RECORD_KEY].clone()).unwrap();
        assert!(!stored.contains(t) && !stored.contains(t.split_once('.').unwrap().1), "{stored}");
        assert_eq!(FeedRecord::from_secret_data(&rec.to_secret_data()), Some(rec.clone()));
        assert_eq!(format!("{k:?}"), "FeedKeys { keys: 1 }");
    }

    #[test]
    fn a_new_feed_has_a_new_secret_and_others_fail() {
        let k = keys(1);
        let (a, ta) = k.issue("u", Utc::now()).unwrap();
        let (b, tb) = k.issue("u", Utc::now()).unwrap();
        assert_eq!(a.id, b.id);
        assert_ne!(ta.expose_secret(), tb.expose_secret());
        assert!(!b.admits(ta.expose_secret()));
        let mut flipped = ta.expose_secret().to_string();
        let last = flipped.pop().unwrap();
        flipped.push(if last == 'A' { 'B' } else { 'A' });
        assert!(!a.admits(&flipped));
        assert!(!a.admits(""));
    }

    #[test]
    fn rotation_keeps_urls_and_dropped_keys_cannot_show_them() {
        let old = keys(1);
        let (rec, token) = old.issue("u", Utc::now()).unwrap();
        let rotated = FeedKeys::from_push(&PushKeys::new(vec![[2; 32], [1; 32]]));
        assert_eq!(rotated.token_of(&rec).unwrap().expose_secret(), token.expose_secret());
        let dropped = keys(2);
        assert!(dropped.token_of(&rec).is_none());
        assert!(rec.admits(token.expose_secret()), "checking never needs a key");
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        let id = feed_id("u");
        let secret = "A".repeat(SECRET_LEN);
        assert!(parse_token(&format!("{id}.{secret}")).is_some());
        for bad in [
            String::new(),
            id.clone(),
            format!("{id}.{}", "A".repeat(SECRET_LEN - 1)),
            format!("{}.{secret}", id.to_uppercase()),
            format!("{id}.{}=", "A".repeat(SECRET_LEN - 1)),
            format!("../{id}.{secret}"),
            format!("{id}.{secret}.ics"),
        ] {
            assert!(parse_token(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn no_keys_issue_nothing() {
        let none = FeedKeys::from_push(&PushKeys::new(vec![]));
        assert!(none.issue("u", Utc::now()).is_none());
    }
}
