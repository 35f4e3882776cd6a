//! Standard Webhooks signing (<https://www.standardwebhooks.com/>): secrets are `whsec_` plus
//! base64 of the key bytes; a message is signed as `v1,` + base64(HMAC-SHA256(key,
//! "<webhook-id>.<webhook-timestamp>.<body>")). During a secret rotation every configured
//! secret signs, space-separated, so receivers holding either secret verify.
//!
//! Owns: secret parsing, generation and the signature header. Must not touch: delivery or
//! storage. A secret's bytes never appear in `Debug`, `Display` or error text.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// Why a configured secret is unusable. Never carries the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("CALSYNC_APP_WEBHOOK_SECRET holds no secret")]
    Empty,
    #[error("webhook secret #{0} is not `whsec_` followed by base64 (e.g. whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw)")]
    Malformed(usize),
    #[error(
        "webhook secret #{0} is shorter than 24 bytes after base64 decoding; generate one with at least 24 random bytes"
    )]
    TooShort(usize),
}

/// One signing key.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Secret {
    /// A fresh `whsec_` secret of 32 random bytes, in its text form (to be stored, not logged).
    pub fn generate() -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        format!("{PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

/// The secrets that sign every message: the current one first, then those still valid during a
/// rotation.
#[derive(Clone, Debug)]
pub struct Signer {
    secrets: Vec<Secret>,
}

impl Signer {
    /// Parse one or more `whsec_` secrets separated by spaces or commas.
    pub fn parse(text: &str) -> Result<Signer, SecretError> {
        let mut secrets = Vec::new();
        for (i, part) in text.split([' ', ',', '\n']).map(str::trim).filter(|s| !s.is_empty()).enumerate() {
            let n = i + 1;
            // The reference libraries accept a bare base64 key too; calsync insists on the
            // prefix so a secret meant for something else is not taken by mistake.
            let b64 = part.strip_prefix(PREFIX).ok_or(SecretError::Malformed(n))?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| SecretError::Malformed(n))?;
            if bytes.len() < 24 {
                return Err(SecretError::TooShort(n));
            }
            secrets.push(Secret(bytes));
        }
        if secrets.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Signer { secrets })
    }

    /// How many secrets sign (more than one during a rotation).
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The `webhook-signature` value for one attempt.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut out = String::new();
        for s in &self.secrets {
            // HMAC takes keys of any length; new_from_slice cannot fail for it.
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&s.0) else { continue };
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str("v1,");
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_specification_example() {
        // The example of the Standard Webhooks specification and its reference libraries' tests.
        let signer = Signer::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signer.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rotation_signs_with_every_secret() {
        let (a, b) = (Secret::generate(), Secret::generate());
        let both = Signer::parse(&format!("{a} {b}")).unwrap();
        let sig = both.sign("msg_1", 1, b"{}");
        let parts: Vec<&str> = sig.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], Signer::parse(&a).unwrap().sign("msg_1", 1, b"{}"));
        assert_eq!(parts[1], Signer::parse(&b).unwrap().sign("msg_1", 1, b"{}"));
        assert_eq!(Signer::parse(&format!("{a},{b}")).unwrap().len(), 2);
    }

    #[test]
    fn bad_secrets_are_explained_without_the_value() {
        assert_eq!(Signer::parse("  ").unwrap_err(), SecretError::Empty);
        assert_eq!(Signer::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(), SecretError::Malformed(1));
        let good = Secret::generate();
        assert_eq!(Signer::parse(&format!("{good} whsec_!!")).unwrap_err(), SecretError::Malformed(2));
        assert_eq!(Signer::parse("whsec_c2hvcnQ=").unwrap_err(), SecretError::TooShort(1));
        let err = Signer::parse(&format!("{good} whsec_c2hvcnQ=")).unwrap_err().to_string();
        assert!(!err.contains(&good) && !err.contains("c2hvcnQ"), "{err}");
        assert!(!format!("{:?}", Signer::parse(&good).unwrap()).contains(&good[6..]));
    }
}
