//! Receiving provider notifications: checks a notification's secret, finds the connection whose
//! live watch it belongs to, and signals that connection through the store (the
//! `calendar.getitdone.app/changed` annotation), coalescing bursts. The engine does the work.
//!
//! Owns: the watch-id → connection index of this process, the per-connection signal coalescer
//! and the notification counters. Must not touch: calendars or connection status (only the
//! engine writes those), HTTP parsing (the handlers in `handlers::webhooks`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::ResourceExt;

use crate::credentials::push::PushKeys;
use crate::engine::{Labels, ObjectKey, Objects};
use crate::resources::push::CHANGED_ANNOTATION;

/// Signals to one connection are written at most this often; a burst of 1,000 notifications
/// costs a few annotation writes and so a few listings.
const COALESCE: Duration = Duration::from_millis(250);
/// An authentic notification for a watch this process does not know re-reads the connections
/// at most this often.
const REINDEX_EVERY: Duration = Duration::from_secs(1);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What became of one notification (the `outcome` label of the metric).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Authentic and current: the connection was signalled.
    Accepted,
    /// Google's first message on a new channel: nothing changed yet.
    Sync,
    /// Authentic but for a watch no connection holds (stopped, replaced): ignored.
    UnknownWatch,
    /// Wrong or missing secret.
    Forged,
    /// Not a notification at all.
    Malformed,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Sync => "sync",
            Outcome::UnknownWatch => "unknown_watch",
            Outcome::Forged => "forged",
            Outcome::Malformed => "malformed",
        }
    }
}

#[derive(Default)]
struct Coalesce {
    last_write: Option<Instant>,
    scheduled: bool,
}

/// The webhook side of live sync, one per REST process.
pub struct Webhooks {
    keys: Option<PushKeys>,
    objects: Arc<dyn Objects>,
    namespace: String,
    index: Mutex<(HashMap<String, String>, Option<Instant>)>,
    signals: Mutex<HashMap<String, Coalesce>>,
}

impl Webhooks {
    pub fn new(keys: Option<PushKeys>, objects: Arc<dyn Objects>, namespace: &str) -> Self {
        Webhooks {
            keys,
            objects,
            namespace: namespace.to_string(),
            index: Mutex::new((HashMap::new(), None)),
            signals: Mutex::new(HashMap::new()),
        }
    }

    /// Is `secret` the secret of watch `watch_id`? Always false without keys.
    pub fn authentic(&self, watch_id: &str, secret: &str) -> bool {
        self.keys.as_ref().is_some_and(|k| k.verify(watch_id, secret))
    }

    /// The connection (name, in this namespace) currently holding watch `watch_id`.
    async fn connection_of(&self, watch_id: &str) -> Option<String> {
        let cached = lock(&self.index).0.get(watch_id).cloned();
        if let Some(name) = cached
            && self.holds(&name, watch_id).await
        {
            return Some(name);
        }
        let stale = lock(&self.index).1.is_none_or(|at| at.elapsed() >= REINDEX_EVERY);
        if !stale {
            return None;
        }
        let list = match self.objects.list_connections(Some(&self.namespace), &Labels::new()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list connections to route a notification");
                return None;
            }
        };
        let mut map = HashMap::new();
        for c in &list {
            let Some(push) = c.status.as_ref().and_then(|s| s.push.as_ref()) else { continue };
            for w in &push.calendars {
                for id in [&w.watch_id, &w.pending_watch_id].into_iter().flatten() {
                    map.insert(id.clone(), c.name_any());
                }
            }
        }
        let found = map.get(watch_id).cloned();
        *lock(&self.index) = (map, Some(Instant::now()));
        found
    }

    async fn holds(&self, name: &str, watch_id: &str) -> bool {
        let Ok(Some(c)) = self.objects.get_connection(&self.namespace, name).await else { return false };
        c.status.as_ref().and_then(|s| s.push.as_ref()).is_some_and(|p| {
            p.calendars
                .iter()
                .any(|w| w.watch_id.as_deref() == Some(watch_id) || w.pending_watch_id.as_deref() == Some(watch_id))
        })
    }

    /// Route an authentic notification of watch `watch_id` to its connection. `action` is
    /// `None` for "something changed", or `renew`/`resync` for Graph lifecycle events.
    pub async fn notify(self: &Arc<Self>, watch_id: &str, action: Option<&str>) -> Outcome {
        let Some(name) = self.connection_of(watch_id).await else { return Outcome::UnknownWatch };
        match action {
            // Lifecycle events are rare and each one matters: write it now.
            Some(a) => self.write_signal(&name, Some(&format!("{a}:{watch_id}"))).await,
            None => self.coalesced_signal(name),
        }
        Outcome::Accepted
    }

    fn coalesced_signal(self: &Arc<Self>, name: String) {
        let delay = {
            let mut signals = lock(&self.signals);
            if signals.len() > 100_000 {
                signals.retain(|_, c| c.scheduled || c.last_write.is_some_and(|t| t.elapsed() < COALESCE));
            }
            let c = signals.entry(name.clone()).or_default();
            if c.scheduled {
                return;
            }
            c.scheduled = true;
            c.last_write.map(|t| COALESCE.saturating_sub(t.elapsed())).unwrap_or_default()
        };
        let me = self.clone();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            {
                let mut signals = lock(&me.signals);
                let c = signals.entry(name.clone()).or_default();
                c.scheduled = false;
                c.last_write = Some(Instant::now());
            }
            me.write_signal(&name, None).await;
        });
    }

    async fn write_signal(&self, name: &str, action: Option<&str>) {
        let ms = chrono::Utc::now().timestamp_millis();
        // Two replicas may signal in the same millisecond; the engine only needs a new value.
        let nonce: u16 = rand::random();
        let value = match action {
            Some(a) => format!("{ms}-{nonce:04x}:{a}"),
            None => format!("{ms}-{nonce:04x}"),
        };
        let key = ObjectKey::connection(&self.namespace, name);
        let annotations = Labels::from([(CHANGED_ANNOTATION.to_string(), value)]);
        if let Err(e) = self.objects.set_annotations(&key, &annotations).await {
            tracing::warn!(connection = %key, error = %e, "could not signal a calendar change; the next poll finds it");
        }
    }
}
