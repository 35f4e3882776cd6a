//! Signed webhooks to the app's backend (Standard Webhooks), delivered at least once from a
//! durable outbox: `CALSYNC_APP_WEBHOOK_URL` and `CALSYNC_APP_WEBHOOK_SECRET` (README "Webhooks
//! to your backend").
//!
//! Owns: the configuration, the message of an app event (its stable `webhook-id` and body), the
//! standalone status tap that records messages in the status write's transaction (`tap`),
//! signing (`sign`), the outbox port (`outbox`), the dispatcher (`deliver`) and its metrics
//! (`stats`). Must not touch: which status transitions are events (`app_events` decides), the
//! SSE stream, or any calendar. Never logs the secret or the URL (it may carry a token).

pub mod deliver;
pub mod derived;
pub mod outbox;
pub mod sign;
pub mod stats;
pub mod tap;

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

pub use deliver::Dispatcher;
pub use sign::{Secret, Signer};
pub use stats::stats;
pub use tap::Tap;

use super::app_events::AppEvent;

/// Where and how messages are sent. `Debug` shows neither the secret nor the URL.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: reqwest::Url,
    pub signer: Signer,
    /// Limit of one attempt (`CALSYNC_APP_WEBHOOK_TIMEOUT_SECONDS`, default 10).
    pub timeout: Duration,
    /// Attempts in flight at once (`CALSYNC_APP_WEBHOOK_CONCURRENCY`, default 16).
    pub concurrency: usize,
    /// First retry delay (`CALSYNC_APP_WEBHOOK_RETRY_MIN_SECONDS`, default 5); doubles per
    /// attempt with ±20% jitter.
    pub retry_min: Duration,
    /// Longest retry delay (`CALSYNC_APP_WEBHOOK_RETRY_MAX_SECONDS`, default 3600).
    pub retry_max: Duration,
    /// A message still failing this long after it was recorded is dead-lettered
    /// (`CALSYNC_APP_WEBHOOK_GIVE_UP_SECONDS`, default 86400).
    pub give_up: Duration,
    /// Messages waiting at most; beyond it new ones are dropped and counted
    /// (`CALSYNC_APP_WEBHOOK_MAX_PENDING`, default 100000).
    pub max_pending: u64,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &"[redacted]")
            .field("secrets", &self.signer.len())
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .field("retry_min", &self.retry_min)
            .field("retry_max", &self.retry_max)
            .field("give_up", &self.give_up)
            .field("max_pending", &self.max_pending)
            .finish()
    }
}

/// Why the webhook configuration is unusable. Never carries the secret or the URL.
#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("CALSYNC_APP_WEBHOOK_URL is not an http(s) URL")]
    Url,
    #[error("CALSYNC_APP_WEBHOOK_URL is set but CALSYNC_APP_WEBHOOK_SECRET is not (set it from a Secret)")]
    NoSecret,
    #[error(transparent)]
    Secret(#[from] sign::SecretError),
    #[error("{0}")]
    Value(String),
}

impl WebhookConfig {
    /// The URL alone, when set (`None`: webhooks are off).
    pub fn url_from(lookup: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        lookup("CALSYNC_APP_WEBHOOK_URL").map(|u| u.trim().to_string()).filter(|u| !u.is_empty())
    }

    /// Read the `CALSYNC_APP_WEBHOOK_*` variables; `secret` overrides
    /// `CALSYNC_APP_WEBHOOK_SECRET` (standalone passes the one it generated). `Ok(None)`: the
    /// URL is not set.
    pub fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
        secret: Option<&str>,
    ) -> Result<Option<WebhookConfig>, WebhookConfigError> {
        let Some(url) = Self::url_from(lookup) else { return Ok(None) };
        let url = reqwest::Url::parse(&url).map_err(|_| WebhookConfigError::Url)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebhookConfigError::Url);
        }
        let secret = secret
            .map(str::to_string)
            .or_else(|| lookup("CALSYNC_APP_WEBHOOK_SECRET"))
            .filter(|s| !s.trim().is_empty())
            .ok_or(WebhookConfigError::NoSecret)?;
        let signer = Signer::parse(&secret)?;
        let number = |name: &str, default: f64, min: f64, max: f64| -> Result<f64, WebhookConfigError> {
            let Some(v) = lookup(name).filter(|v| !v.trim().is_empty()) else { return Ok(default) };
            match v.trim().parse::<f64>() {
                Ok(n) if n.is_finite() && n >= min && n <= max => Ok(n),
                _ => Err(WebhookConfigError::Value(format!("{name} must be a number from {min} to {max}, got {v:?}"))),
            }
        };
        // A year is more than any delay here needs, and keeps Duration arithmetic far from overflow.
        const YEAR: f64 = 365.0 * 86_400.0;
        let secs = |name: &str, default: f64, min: f64| number(name, default, min, YEAR).map(Duration::from_secs_f64);
        Ok(Some(WebhookConfig {
            url,
            signer,
            timeout: secs("CALSYNC_APP_WEBHOOK_TIMEOUT_SECONDS", 10.0, 0.01)?,
            concurrency: number("CALSYNC_APP_WEBHOOK_CONCURRENCY", 16.0, 1.0, 1024.0)? as usize,
            retry_min: secs("CALSYNC_APP_WEBHOOK_RETRY_MIN_SECONDS", 5.0, 0.001)?,
            retry_max: secs("CALSYNC_APP_WEBHOOK_RETRY_MAX_SECONDS", 3600.0, 0.001)?,
            give_up: secs("CALSYNC_APP_WEBHOOK_GIVE_UP_SECONDS", 86_400.0, 0.001)?,
            max_pending: number("CALSYNC_APP_WEBHOOK_MAX_PENDING", 100_000.0, 1.0, 1e12)? as u64,
        }))
    }

    /// What identifies the endpoint in storage (a disabled endpoint is re-enabled by changing
    /// the URL): a hash, so a token in the URL is never stored.
    pub fn endpoint_key(&self) -> String {
        hex(&Sha256::digest(self.url.as_str().as_bytes())[..16])
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `webhook-id` of an event: a hash of (object uid, event type, what changed in status), so
/// the same transition always gets the same id, on a redelivery after kill -9 or when derived
/// again from status, and receivers can dedupe on it.
pub fn message_id(uid: &str, kind: &str, transition: &str) -> String {
    let mut h = Sha256::new();
    for part in [uid, kind, transition] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    format!("msg_{}", hex(&h.finalize()[..16]))
}

/// Standalone, before the store opens: check the `CALSYNC_APP_WEBHOOK_*` variables and make the
/// tap to install (`StandaloneConfig::status_tap`). `Ok(None)`: webhooks are off. A secret that
/// is not set is generated later with the other standalone keys (always valid), so a stand-in
/// validates the rest here.
pub fn standalone_tap(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Option<Arc<Tap>>, WebhookConfigError> {
    let stand_in = Secret::generate();
    let secret = lookup("CALSYNC_APP_WEBHOOK_SECRET").filter(|s| !s.trim().is_empty()).unwrap_or(stand_in);
    Ok(WebhookConfig::from_lookup(lookup, Some(&secret))?.map(|c| Tap::new(c.max_pending)))
}

/// Standalone, once its services exist: deliver from the store's outbox until shutdown.
pub fn start_standalone(
    services: &crate::standalone::Services,
    tap: &Tap,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<tokio::task::JoinHandle<()>>, WebhookConfigError> {
    let Some(config) = WebhookConfig::from_lookup(lookup, services.secrets.app_webhook_secret.as_deref())? else {
        return Ok(None);
    };
    tap.set_max_pending(config.max_pending);
    tracing::info!(
        secrets = config.signer.len(),
        concurrency = config.concurrency,
        timeout_ms = config.timeout.as_millis() as u64,
        "delivering app webhooks from the outbox"
    );
    let outbox = Arc::new(services.store.clone());
    let dispatcher = Dispatcher::new(outbox, config, tap.wake()).map_err(WebhookConfigError::Value)?;
    Ok(Some(tokio::spawn(dispatcher.run(services.shutdown.clone()))))
}

/// The signed wire body of an event.
pub fn message_body(event: &AppEvent) -> String {
    event.body().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn config_from_environment() {
        assert!(WebhookConfig::from_lookup(&env(&[]), None).unwrap().is_none());
        let secret = Secret::generate();
        let c = WebhookConfig::from_lookup(
            &env(&[
                ("CALSYNC_APP_WEBHOOK_URL", "http://127.0.0.1:9/hook?token=abcdef"),
                ("CALSYNC_APP_WEBHOOK_SECRET", &secret),
                ("CALSYNC_APP_WEBHOOK_TIMEOUT_SECONDS", "2.5"),
            ]),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.timeout, c.concurrency, c.give_up),
            (Duration::from_millis(2500), 16, Duration::from_secs(86400))
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("abcdef") && !shown.contains(&secret[6..]), "{shown}");
        assert!(!c.endpoint_key().contains("abcdef"));
        let no_secret = WebhookConfig::from_lookup(&env(&[("CALSYNC_APP_WEBHOOK_URL", "https://x.example/h")]), None);
        assert!(matches!(no_secret, Err(WebhookConfigError::NoSecret)));
        let bad = WebhookConfig::from_lookup(&env(&[("CALSYNC_APP_WEBHOOK_URL", "ftp://x/")]), Some(&secret));
        assert!(matches!(bad, Err(WebhookConfigError::Url)));
        for (k, v) in [
            ("CALSYNC_APP_WEBHOOK_TIMEOUT_SECONDS", "1e30"),
            ("CALSYNC_APP_WEBHOOK_CONCURRENCY", "0"),
            ("CALSYNC_APP_WEBHOOK_CONCURRENCY", "1e9"),
            ("CALSYNC_APP_WEBHOOK_GIVE_UP_SECONDS", "soon"),
        ] {
            let bad =
                WebhookConfig::from_lookup(&env(&[("CALSYNC_APP_WEBHOOK_URL", "http://x/"), (k, v)]), Some(&secret));
            assert!(matches!(&bad, Err(WebhookConfigError::Value(m)) if m.contains(k)), "{k}={v}: {bad:?}");
        }
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(message_id("u", "task.synced", "a"), message_id("u", "task.synced", "a"));
        assert_ne!(message_id("u", "task.synced", "a"), message_id("u", "task.synced", "b"));
        assert_ne!(message_id("u", "task.synced", "a"), message_id("v", "task.synced", "a"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(message_id("ab", "c", ""), message_id("a", "bc", ""));
        assert!(message_id("u", "k", "t").starts_with("msg_"));
    }
}
