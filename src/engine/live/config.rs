//! Live-sync tunables and the `CALSYNC_*` variables they come from.
//!
//! Owns: parsing and defaults. Must not touch: what the engine does with them.

use std::time::Duration;

use crate::credentials::push::PushKeys;
use crate::resources::ProviderKind;

/// Tunables of live sync (`CALSYNC_*` variables, see README "Configuration").
#[derive(Clone, Debug)]
pub struct LiveConfig {
    /// Base URL providers can reach (`CALSYNC_PUBLIC_URL`); without it Google and Outlook are
    /// polled too.
    pub public_url: Option<String>,
    /// Makes each watch's secret; push needs it (it is derived from the encryption key).
    pub push_keys: Option<PushKeys>,
    /// CalDAV polling interval (`CALSYNC_CALDAV_POLL_SECONDS`).
    pub caldav_poll: Duration,
    /// Google/Outlook polling interval without push (`CALSYNC_POLL_SECONDS`).
    pub poll: Duration,
    /// Safety-net poll of a pushed calendar (providers drop some notifications).
    pub push_safety_poll: Duration,
    /// Requested Google channel lifetime (Google may grant less; renewal follows the grant).
    pub google_channel_ttl: Duration,
    /// Requested Graph subscription lifetime (`CALSYNC_OUTLOOK_SUBSCRIPTION_MINUTES`).
    pub outlook_subscription: Duration,
    /// Change syncs list this window around now (an incremental listing is cheap whatever it is).
    pub window_back: Duration,
    pub window_ahead: Duration,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            public_url: None,
            push_keys: None,
            caldav_poll: Duration::from_secs(60),
            poll: Duration::from_secs(120),
            push_safety_poll: Duration::from_secs(900),
            google_channel_ttl: Duration::from_secs(7 * 24 * 3600),
            outlook_subscription: Duration::from_secs(4230 * 60),
            window_back: Duration::from_secs(7 * 24 * 3600),
            window_ahead: Duration::from_secs(366 * 24 * 3600),
        }
    }
}

impl LiveConfig {
    /// Read the `CALSYNC_*` live-sync variables through `lookup` (the environment).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<LiveConfig, String> {
        let mut c = LiveConfig::default();
        let seconds = |name: &str, min: f64| -> Result<Option<Duration>, String> {
            let Some(v) = lookup(name).filter(|v| !v.trim().is_empty()) else { return Ok(None) };
            match v.trim().parse::<f64>() {
                Ok(n) if n.is_finite() && n >= min => Ok(Some(Duration::from_secs_f64(n))),
                _ => Err(format!("{name} must be a number of at least {min}, got {v:?}")),
            }
        };
        if let Some(url) = lookup("CALSYNC_PUBLIC_URL").map(|u| u.trim().trim_end_matches('/').to_string())
            && !url.is_empty()
        {
            let parsed = reqwest::Url::parse(&url).map_err(|e| {
                format!("CALSYNC_PUBLIC_URL {url:?} is not a URL ({e}); set it to e.g. https://calsync.example.com")
            })?;
            if !matches!(parsed.scheme(), "https" | "http") {
                return Err(format!("CALSYNC_PUBLIC_URL {url:?} must be an https:// URL providers can reach"));
            }
            c.public_url = Some(url);
        }
        if let Some(d) = seconds("CALSYNC_CALDAV_POLL_SECONDS", 1.0)? {
            c.caldav_poll = d;
        }
        if let Some(d) = seconds("CALSYNC_POLL_SECONDS", 1.0)? {
            c.poll = d;
        }
        if let Some(d) = seconds("CALSYNC_PUSH_SAFETY_POLL_SECONDS", 1.0)? {
            c.push_safety_poll = d;
        }
        if let Some(d) = seconds("CALSYNC_GOOGLE_CHANNEL_SECONDS", 1.0)? {
            c.google_channel_ttl = d;
        }
        if let Some(m) = seconds("CALSYNC_OUTLOOK_SUBSCRIPTION_MINUTES", 0.01)? {
            // The variable is in minutes; fractions let tests use lifetimes of seconds.
            c.outlook_subscription = Duration::from_secs_f64(m.as_secs_f64() * 60.0);
        }
        Ok(c)
    }

    /// The webhook URL for a provider, when push is possible.
    pub fn webhook_url(&self, provider: ProviderKind) -> Option<String> {
        let base = self.public_url.as_ref()?;
        match provider {
            ProviderKind::Google => Some(format!("{base}/api/calendar/webhooks/google")),
            ProviderKind::Outlook => Some(format!("{base}/api/calendar/webhooks/outlook")),
            ProviderKind::Apple | ProviderKind::Caldav => None,
        }
    }
}
