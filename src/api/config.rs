//! `ApiConfig`: every setting of the REST API, read from the environment by `ApiConfig::from_env`
//! (which the binary calls once; there is no global state).
//!
//! Owns: parsing and defaults of the `CALSYNC_*` variables the API reads. Must not touch:
//! generating secrets (standalone does that) or anything at request time. `Debug` never prints
//! secrets.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CALSYNC_API_KEYS` | none | comma-separated static API keys (trusted backends; any user) |
//! | `CALSYNC_JWT_SECRET` | none | HS256 secret for user JWTs (`sub` = the user id) |
//! | `CALSYNC_RATE_LIMIT_PER_MINUTE` | 100 | requests per minute per user |
//! | `CALSYNC_CORS_ORIGINS` | none | comma-separated allowed origins (`*` = any) |
//! | `CALSYNC_FRONTEND_URL` | `http://localhost:3000` | where OAuth callbacks redirect |
//! | `CALSYNC_SYNC_WAIT_SECONDS` | 10 | how long a write waits for the engine before 202 |
//! | `CALSYNC_IMPORT_CACHE_SECONDS` | 300 | calendar-to-tasks cache per user |
//! | `CALSYNC_MAX_BODY_BYTES` | 65536 | request body limit (413 beyond) |
//! | `CALSYNC_STREAMS_PER_USER` | 5 | open `/stream/{user_id}` connections per user (429 beyond) |
//! | `CALSYNC_OWNER` | `calsync` | installation id in event markers (must match the engine's) |
//! | `CALSYNC_CALDAV_ALLOWED_HOSTS` | any | comma-separated hosts `/apple/connect`'s `server_url` may name |
//! | `CALSYNC_PUBLIC_URL` | the request's Host | base of ICS feed URLs (`…/api/calendar/feeds/<token>.ics`) |

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;

/// Settings of the REST API.
#[derive(Clone)]
pub struct ApiConfig {
    /// Static API keys; a request bearing one may act for any user.
    pub api_keys: Vec<SecretString>,
    /// Secret for HS256 JWTs; unset: JWTs are not accepted.
    pub jwt_secret: Option<SecretString>,
    /// Requests per minute per user (0 is refused at load time).
    pub rate_limit_per_minute: u32,
    /// Allowed CORS origins; empty: no CORS headers (same-origin only); `*`: any origin.
    pub cors_origins: Vec<String>,
    /// Base URL of the frontend (OAuth callbacks redirect to `{frontend_url}/calendar-connected`).
    pub frontend_url: String,
    /// How long task-to-calendar / update-event / delete-event wait for the engine (DESIGN §6: 10 s).
    pub sync_wait: Duration,
    /// How long calendar-to-tasks answers from its per-user cache (seed: 5 minutes).
    pub import_cache_ttl: Duration,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Open event streams per user.
    pub streams_per_user: usize,
    /// Installation id inside event markers: events with it are "ours".
    pub owner: String,
    /// Default CalDAV server for `/apple/connect`.
    pub apple_server_url: String,
    /// Hosts `server_url` may name (empty: any host but link-local addresses).
    pub caldav_allowed_hosts: Vec<String>,
    /// Addresses a CalDAV `server_url` may lead to (set per mode by the binary; see
    /// `providers::caldav::guard`).
    pub caldav_addresses: crate::providers::caldav::guard::AddressPolicy,
    /// Public base URL (no trailing slash) of ICS feed URLs; `None`: from the request's Host.
    pub public_url: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            api_keys: Vec::new(),
            jwt_secret: None,
            rate_limit_per_minute: 100,
            cors_origins: Vec::new(),
            frontend_url: "http://localhost:3000".into(),
            sync_wait: Duration::from_secs(10),
            import_cache_ttl: Duration::from_secs(300),
            max_body_bytes: 64 * 1024,
            streams_per_user: 5,
            owner: "calsync".into(),
            apple_server_url: "https://caldav.icloud.com/".into(),
            caldav_allowed_hosts: Vec::new(),
            caldav_addresses: crate::providers::caldav::guard::AddressPolicy::local(),
            public_url: None,
        }
    }
}

impl fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiConfig")
            .field("api_keys", &format_args!("[{} redacted]", self.api_keys.len()))
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "[redacted]"))
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field("cors_origins", &self.cors_origins)
            .field("frontend_url", &self.frontend_url)
            .field("sync_wait", &self.sync_wait)
            .field("import_cache_ttl", &self.import_cache_ttl)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("streams_per_user", &self.streams_per_user)
            .field("owner", &self.owner)
            .field("caldav_allowed_hosts", &self.caldav_allowed_hosts)
            .field("public_url", &self.public_url)
            .finish()
    }
}

/// A variable holds something unusable. Never includes the value of a secret variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{name} must be {what}")]
    Invalid { name: &'static str, what: &'static str },
}

fn list(v: &str) -> Vec<String> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

fn number<T: std::str::FromStr + PartialOrd>(
    lookup: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
    min: T,
    what: &'static str,
) -> Result<Option<T>, ConfigError> {
    match lookup(name) {
        None => Ok(None),
        Some(v) => match v.trim().parse::<T>() {
            Ok(n) if n >= min => Ok(Some(n)),
            _ => Err(ConfigError::Invalid { name, what }),
        },
    }
}

impl ApiConfig {
    /// Read the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|name| crate::secret_files::var(name).filter(|v| !v.trim().is_empty()))
    }

    /// Read the configuration through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = ApiConfig::default();
        if let Some(keys) = lookup("CALSYNC_API_KEYS") {
            c.api_keys = list(&keys).into_iter().map(SecretString::from).collect();
        }
        c.jwt_secret = lookup("CALSYNC_JWT_SECRET").map(SecretString::from);
        if let Some(n) = number(lookup, "CALSYNC_RATE_LIMIT_PER_MINUTE", 1u32, "a whole number of at least 1")? {
            c.rate_limit_per_minute = n;
        }
        if let Some(origins) = lookup("CALSYNC_CORS_ORIGINS") {
            c.cors_origins = list(&origins);
            for o in &c.cors_origins {
                if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                    return Err(ConfigError::Invalid {
                        name: "CALSYNC_CORS_ORIGINS",
                        what: "a comma-separated list of origins such as https://app.example.com, or *",
                    });
                }
            }
        }
        if let Some(url) = lookup("CALSYNC_FRONTEND_URL") {
            let url = url.trim().trim_end_matches('/').to_string();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Invalid { name: "CALSYNC_FRONTEND_URL", what: "an http(s) URL" });
            }
            c.frontend_url = url;
        }
        if let Some(s) = number(lookup, "CALSYNC_SYNC_WAIT_SECONDS", 0u64, "a whole number of seconds")? {
            c.sync_wait = Duration::from_secs(s);
        }
        if let Some(s) = number(lookup, "CALSYNC_IMPORT_CACHE_SECONDS", 0u64, "a whole number of seconds")? {
            c.import_cache_ttl = Duration::from_secs(s);
        }
        if let Some(n) = number(lookup, "CALSYNC_MAX_BODY_BYTES", 1024usize, "a number of bytes of at least 1024")? {
            c.max_body_bytes = n;
        }
        if let Some(n) = number(lookup, "CALSYNC_STREAMS_PER_USER", 1usize, "a whole number of at least 1")? {
            c.streams_per_user = n;
        }
        if let Some(hosts) = lookup("CALSYNC_CALDAV_ALLOWED_HOSTS") {
            c.caldav_allowed_hosts = list(&hosts);
        }
        if let Some(url) = lookup("CALSYNC_PUBLIC_URL") {
            let url = url.trim().trim_end_matches('/').to_string();
            let ok = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).is_some_and(|rest| {
                !rest.is_empty() && !rest.contains(|c: char| c.is_whitespace() || c == '?' || c == '#')
            });
            if !ok {
                return Err(ConfigError::Invalid {
                    name: "CALSYNC_PUBLIC_URL",
                    what: "an http(s) base URL such as https://calsync.example.com",
                });
            }
            c.public_url = Some(url);
        }
        if let Some(owner) = lookup("CALSYNC_OWNER") {
            if owner.contains(';') || owner.trim().is_empty() {
                return Err(ConfigError::Invalid { name: "CALSYNC_OWNER", what: "a non-empty name without ';'" });
            }
            c.owner = owner.trim().to_string();
        }
        Ok(c)
    }

    /// True when some way of authenticating is configured. Without one every protected endpoint
    /// answers 401, which is safe but useless; the binary should warn.
    pub fn has_auth(&self) -> bool {
        !self.api_keys.is_empty() || self.jwt_secret.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<ApiConfig, ConfigError> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ApiConfig::from_lookup(&|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_and_parsing() {
        let c = load(&[]).unwrap();
        assert_eq!(c.rate_limit_per_minute, 100);
        assert_eq!(c.sync_wait, Duration::from_secs(10));
        let c = load(&[
            ("CALSYNC_API_KEYS", "k1, k2,,"),
            ("CALSYNC_JWT_SECRET", "topsecret"),
            ("CALSYNC_CORS_ORIGINS", "https://a.example, http://localhost:3000"),
            ("CALSYNC_FRONTEND_URL", "https://app.example/"),
        ])
        .unwrap();
        assert_eq!(c.api_keys.len(), 2);
        assert_eq!(c.cors_origins.len(), 2);
        assert_eq!(c.frontend_url, "https://app.example");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("topsecret") && !dbg.contains("k1"), "{dbg}");
        assert!(load(&[("CALSYNC_RATE_LIMIT_PER_MINUTE", "0")]).is_err());
        assert!(load(&[("CALSYNC_RATE_LIMIT_PER_MINUTE", "x")]).is_err());
        assert!(load(&[("CALSYNC_CORS_ORIGINS", "ftp://x")]).is_err());
        let c = load(&[("CALSYNC_PUBLIC_URL", "https://cal.example/base/")]).unwrap();
        assert_eq!(c.public_url.as_deref(), Some("https://cal.example/base"));
        assert!(load(&[("CALSYNC_PUBLIC_URL", "cal.example")]).is_err());
        assert!(load(&[("CALSYNC_PUBLIC_URL", "https://")]).is_err());
    }
}
