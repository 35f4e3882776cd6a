//! The provider side of live sync: push channels (Google `events.watch`), change
//! subscriptions (Microsoft Graph `/subscriptions`) and the cheap "did anything change" probe
//! CalDAV servers answer (`getctag` / `DAV:sync-token`).
//!
//! Owns: the neutral request/answer types of a watch and the optional `Provider` calls that use
//! them. Must not touch: when to watch, renew or poll (the engine's connection reconcile
//! decides), nor how notifications are received (the REST layer).

use chrono::{DateTime, Utc};
use secrecy::SecretString;

/// What the engine asks a provider to set up for one calendar.
#[derive(Clone, Debug)]
pub struct WatchRequest {
    /// calsync's own id for this watch: a fresh UUID. Google uses it as the channel id;
    /// Graph puts it in front of `clientState` (`<id>.<secret>`), so a notification can be
    /// routed before the subscription id is known.
    pub id: String,
    /// Where notifications go (`{CALSYNC_PUBLIC_URL}/api/calendar/webhooks/{provider}`).
    pub address: String,
    /// Where Graph sends lifecycle notifications (ignored by Google).
    pub lifecycle_address: Option<String>,
    /// The per-watch secret: Google `token`, Graph `clientState` suffix. Never logged.
    pub secret: SecretString,
    /// Requested lifetime; the provider may grant less (use `Watch::expiration`).
    pub ttl: std::time::Duration,
}

/// A live watch as the provider granted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    /// calsync's id (`WatchRequest::id`).
    pub id: String,
    /// The provider's handle: Google `resourceId` (needed by `channels.stop`), Graph
    /// subscription id (needed by PATCH/DELETE).
    pub provider_id: String,
    /// When the provider stops delivering unless renewed.
    pub expiration: DateTime<Utc>,
}

/// How a provider delivers changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushSupport {
    /// No third-party push (CalDAV/iCloud): poll.
    None,
    /// Push that cannot be extended: renew by creating a new watch and stopping the old one.
    Recreate,
    /// Push with an in-place renewal (Graph PATCH).
    Renew,
}
