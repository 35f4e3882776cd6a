//! Live sync, connection side: which calendars of a Ready connection are watched, whether by a
//! provider push channel/subscription or by polling, creating/renewing/stopping the watches,
//! and when the next change sync is due. The change sync itself is `changes`; what a TaskSync
//! does about a changed event is `remote`.
//!
//! Owns: `status.push` and the `Push` condition, the in-process caches of live sync (cursors,
//! probe values, poll schedule, hints for TaskSyncs) and the counters behind its metrics.
//! Must not touch: how notifications arrive (the REST layer turns them into the
//! `calendar.getitdone.app/changed` annotation) or how drivers schedule work (they set a
//! `Requeue` sink and honour the returned delay).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kube::{Resource, ResourceExt};

use super::{Engine, EngineError, EventType, ObjectKey};

mod config;
mod signals;
mod stats;

use crate::providers::{Provider, PushSupport, RemoteEvent, Watch, WatchRequest};
use crate::resources::condition::set_condition;
use crate::resources::push::PUSH_FINALIZER;
use crate::resources::{CalendarConnection, CalendarConnectionStatus, ProviderKind, PushMode, WatchedCalendar};
pub use config::LiveConfig;
pub(super) use signals::{SignalAction, first_poll_offset, pending_signal, signal_action, watched_calendars};
use signals::{push_condition, renew_due};
pub use stats::{LiveStats, stats};

/// The driver's "reconcile this object soon".
pub type Requeue = Arc<dyn Fn(ObjectKey) + Send + Sync>;

/// What the connection's change sync learnt about one of our events, for its TaskSync.
#[derive(Clone, Debug)]
pub enum Hint {
    /// The event as the listing returned it.
    Changed(Box<RemoteEvent>),
    /// It may be gone (removed from an incremental listing, or missing from a full one): read
    /// it before believing that.
    Check,
}

/// In-process state of live sync. Losing it (a restart, a new leader) costs one full listing
/// per calendar, never a missed change: cursors restart from a full listing.
#[derive(Default)]
pub struct LiveState {
    started: OnceLock<Instant>,
    requeue: OnceLock<Requeue>,
    hints: Mutex<HashMap<ObjectKey, Hint>>,
    /// (connection, calendar) → cursor of the last listing.
    cursors: Mutex<HashMap<(String, String), String>>,
    /// (connection, calendar) → probe value at that listing.
    probes: Mutex<HashMap<(String, String), String>>,
    /// (connection, calendar) → when it was last synced.
    synced: Mutex<HashMap<(String, String), Instant>>,
    /// Watch ids this process holds live (for the active gauge).
    active: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LiveState {
    pub(super) fn set_requeue(&self, r: Requeue) {
        let _ = self.requeue.set(r);
    }

    /// Time since this process first synced anything.
    pub(super) fn since_start(&self) -> Duration {
        self.started.get_or_init(Instant::now).elapsed()
    }

    pub(super) fn hint(&self, key: ObjectKey, hint: Hint) {
        lock(&self.hints).insert(key.clone(), hint);
        if let Some(r) = self.requeue.get() {
            r(key);
        }
    }

    /// Re-queue `key` without a hint (its reconcile looks again: a scheduled task re-places).
    pub(super) fn wake(&self, key: ObjectKey) {
        if let Some(r) = self.requeue.get() {
            r(key);
        }
    }

    pub(super) fn take_hint(&self, key: &ObjectKey) -> Option<Hint> {
        lock(&self.hints).remove(key)
    }

    pub(super) fn cursor(&self, conn: &str, cal: &str) -> Option<String> {
        lock(&self.cursors).get(&(conn.to_string(), cal.to_string())).cloned()
    }

    pub(super) fn set_cursor(&self, conn: &str, cal: &str, cursor: Option<String>) {
        let k = (conn.to_string(), cal.to_string());
        match cursor {
            Some(c) => lock(&self.cursors).insert(k, c),
            None => lock(&self.cursors).remove(&k),
        };
    }

    pub(super) fn probe(&self, conn: &str, cal: &str) -> Option<String> {
        lock(&self.probes).get(&(conn.to_string(), cal.to_string())).cloned()
    }

    pub(super) fn set_probe(&self, conn: &str, cal: &str, value: Option<String>) {
        let k = (conn.to_string(), cal.to_string());
        match value {
            Some(v) => lock(&self.probes).insert(k, v),
            None => lock(&self.probes).remove(&k),
        };
    }

    /// Is a poll of this calendar due, and if not, how long until it is? Polls fall in fixed
    /// slots `offset + k × interval` after the process started, the offset a stable hash of the
    /// calendar: a connection that became Ready late, or was synced by a signal, keeps its
    /// phase, so 10,000 connections stay spread over the interval instead of bunching where
    /// they happened to start.
    pub(super) fn poll_due(&self, conn: &str, cal: &str, interval: Duration) -> (bool, Duration) {
        let since = self.since_start();
        if interval.is_zero() {
            return (true, Duration::ZERO);
        }
        let offset = first_poll_offset(conn, cal, interval);
        if since < offset {
            return (false, offset - since);
        }
        let k = ((since - offset).as_nanos() / interval.as_nanos()).min(u128::from(u32::MAX)) as u32;
        let slot = offset + interval * k;
        let started = self.started.get_or_init(Instant::now);
        let last = lock(&self.synced).get(&(conn.to_string(), cal.to_string())).map(|t| t.duration_since(*started));
        if last.is_none_or(|l| l < slot) {
            (true, Duration::ZERO)
        } else {
            (false, (slot + interval).saturating_sub(since))
        }
    }

    pub(super) fn mark_synced(&self, conn: &str, cal: &str) {
        lock(&self.synced).insert((conn.to_string(), cal.to_string()), Instant::now());
    }

    /// Forget a connection's caches (disconnected or deleted).
    pub(super) fn forget(&self, conn: &str) {
        lock(&self.cursors).retain(|(c, _), _| c != conn);
        lock(&self.probes).retain(|(c, _), _| c != conn);
        lock(&self.synced).retain(|(c, _), _| c != conn);
    }

    fn set_active(&self, id: &str, live: bool) {
        let mut a = lock(&self.active);
        if live {
            a.insert(id.to_string());
        } else {
            a.remove(id);
        }
        stats().watches_active.store(a.len() as u64, Ordering::Relaxed);
    }
}

impl Engine {
    fn watch_ttl(&self, provider: ProviderKind) -> Duration {
        match provider {
            ProviderKind::Outlook => self.config.live.outlook_subscription,
            _ => self.config.live.google_channel_ttl,
        }
    }

    pub(super) fn poll_interval(&self, provider: ProviderKind, mode: PushMode) -> Duration {
        match (provider, mode) {
            (_, PushMode::Push) => self.config.live.push_safety_poll,
            (ProviderKind::Apple | ProviderKind::Caldav, _) => self.config.live.caldav_poll,
            _ => self.config.live.poll,
        }
    }

    fn watch_request(&self, provider: ProviderKind, id: &str) -> Option<WatchRequest> {
        let keys = self.config.live.push_keys.as_ref()?;
        let address = self.config.live.webhook_url(provider)?;
        let lifecycle_address = (provider == ProviderKind::Outlook).then(|| format!("{address}/lifecycle"));
        Some(WatchRequest {
            id: id.to_string(),
            address,
            lifecycle_address,
            secret: keys.secret_for(id),
            ttl: self.watch_ttl(provider),
        })
    }

    /// Make `status.push` match the connection: one entry per watched calendar, a live watch
    /// where push is possible, renewed before it expires. Returns when it wants to be called
    /// again. Provider failures become status (`Push=False`), never errors.
    pub(super) async fn reconcile_watches(
        &self,
        conn: &CalendarConnection,
        st: &mut CalendarConnectionStatus,
        p: &dyn Provider,
        action: &SignalAction,
    ) -> Result<Duration, EngineError> {
        let ns = conn.namespace().unwrap_or_default();
        let name = conn.name_any();
        let key = ObjectKey::connection(&ns, &name);
        let provider = conn.spec.provider;
        let watched = watched_calendars(conn, st);
        let want_push = p.push_support() != PushSupport::None
            && self.config.live.public_url.is_some()
            && self.config.live.push_keys.is_some();
        let mut push = st.push.clone().unwrap_or_default();

        // Calendars no longer watched: stop their watches, drop their entries.
        let (keep, gone): (Vec<_>, Vec<_>) = push.calendars.drain(..).partition(|w| watched.contains(&w.calendar_id));
        push.calendars = keep;
        for w in gone {
            self.stop_one(p, &w).await;
        }
        for cal in &watched {
            if push.calendar(cal).is_none() {
                push.calendars.push(WatchedCalendar::polled(cal));
            }
        }

        let now = self.now();
        let mut next = Duration::from_secs(3600);
        let mut failed: Vec<String> = Vec::new();
        if want_push && !conn.finalizers().iter().any(|f| f == PUSH_FINALIZER) {
            self.objects.add_finalizer(&key, PUSH_FINALIZER).await?;
        }
        for i in 0..push.calendars.len() {
            if !want_push {
                // Only a calendar that was pushed changes here; a polled one keeps its status (a
                // rewrite on every poll would be a store write per poll).
                let w = &mut push.calendars[i];
                if w.watch_id.is_some() || w.mode == PushMode::Push {
                    let old = w.clone();
                    self.stop_one(p, &old).await;
                    *w = WatchedCalendar {
                        cursor: w.cursor.take(),
                        last_change_time: w.last_change_time,
                        change_count: w.change_count,
                        ..WatchedCalendar::polled(&w.calendar_id)
                    };
                }
                continue;
            }
            let w = push.calendars[i].clone();
            let forced = match action {
                SignalAction::Renew(id) | SignalAction::Resync(id) => w.watch_id.as_deref() == Some(id),
                SignalAction::Look => false,
            };
            let live = w.watch_id.is_some() && w.expiration.is_some_and(|e| e > now);
            let due = renew_due(&w, now, w.granted_at);
            if live && !forced && due > now {
                next = next.min((due - now).to_std().unwrap_or_default());
                continue;
            }
            if let Some(at) = w.next_attempt_time
                && at > now
                && !forced
            {
                next = next.min((at - now).to_std().unwrap_or_default());
                continue;
            }
            match self.make_watch(&key, st, &mut push, i, p, provider).await? {
                Ok(()) => {
                    let w = &push.calendars[i];
                    let due = renew_due(w, self.now(), Some(self.now()));
                    next = next.min((due - self.now()).to_std().unwrap_or_default());
                }
                Err(msg) => {
                    failed.push(format!("{}: {msg}", push.calendars[i].calendar_id));
                    if let Some(at) = push.calendars[i].next_attempt_time {
                        next = next.min((at - self.now()).to_std().unwrap_or_default());
                    }
                }
            }
        }

        // Push turned off (no public URL any more): nothing left to stop at deletion.
        if !want_push
            && conn.finalizers().iter().any(|f| f == PUSH_FINALIZER)
            && push.calendars.iter().all(|w| w.watch_id.is_none())
        {
            self.objects.remove_finalizer(&key, PUSH_FINALIZER).await?;
        }
        let g = conn.meta().generation;
        let cond = if !want_push {
            let why = match provider {
                ProviderKind::Apple | ProviderKind::Caldav => format!(
                    "CalDAV servers (iCloud included) offer no push to other applications; calsync polls every {} s",
                    self.config.live.caldav_poll.as_secs()
                ),
                _ if self.config.live.public_url.is_none() => format!(
                    "CALSYNC_PUBLIC_URL is not set, so the provider cannot reach calsync; calsync polls every {} s",
                    self.config.live.poll.as_secs()
                ),
                _ => "push needs the encryption key (ENCRYPTION_KEY) to make channel secrets; calsync polls".into(),
            };
            push_condition(false, "Polling", why)
        } else if failed.is_empty() {
            push_condition(true, "Subscribed", "the provider notifies calsync of every change in the watched calendars")
        } else {
            push_condition(
                false,
                "WatchFailed",
                format!("push could not be set up ({}); calsync polls these calendars until it can", failed.join("; ")),
            )
        };
        let was_failing = st.conditions.iter().any(|c| c.type_ == "Push" && c.reason == "WatchFailed");
        set_condition(&mut st.conditions, cond, g, now);
        if !failed.is_empty() && !was_failing {
            self.publish(&key, EventType::Warning, "WatchFailed", "Watch", failed.join("; ")).await;
        }
        st.push = Some(push);
        Ok(next.max(Duration::from_millis(200)))
    }

    /// Create (or renew in place) the watch of `push.calendars[i]`. The new watch id is
    /// recorded in status before the provider is asked, because Google's first message can
    /// arrive before its answer and must verify.
    async fn make_watch(
        &self,
        key: &ObjectKey,
        st: &mut CalendarConnectionStatus,
        push: &mut crate::resources::PushStatus,
        i: usize,
        p: &dyn Provider,
        provider: ProviderKind,
    ) -> Result<Result<(), String>, EngineError> {
        let old = push.calendars[i].clone();
        let calendar = old.calendar_id.clone();
        let renew_in_place =
            p.push_support() == PushSupport::Renew && old.watch_id.is_some() && old.provider_id.is_some();
        let id =
            if renew_in_place { old.watch_id.clone().unwrap_or_default() } else { uuid::Uuid::new_v4().to_string() };
        let Some(request) = self.watch_request(provider, &id) else { return Ok(Err("push is not configured".into())) };
        let mut result = if renew_in_place {
            let current = Watch {
                id: id.clone(),
                provider_id: old.provider_id.clone().unwrap_or_default(),
                expiration: old.expiration.unwrap_or_else(|| self.now()),
            };
            match p.renew_watch(&current, &request).await {
                Ok(w) => {
                    LiveStats::bump(&stats().watches_renewed);
                    Ok(w)
                }
                Err(e) => Err(e),
            }
        } else {
            Err(crate::providers::ProviderError::NotFound { message: String::new() })
        };
        if let Err(crate::providers::ProviderError::NotFound { .. }) = &result {
            // New watch (Google renewal, first watch, or a Graph subscription that is gone).
            let id = uuid::Uuid::new_v4().to_string();
            let Some(request) = self.watch_request(provider, &id) else {
                return Ok(Err("push is not configured".into()));
            };
            push.calendars[i].pending_watch_id = Some(id.clone());
            let mut pending = st.clone();
            pending.push = Some(push.clone());
            self.save_connection_status(&key.namespace, &key.name, &pending).await?;
            result = p.watch(&calendar, &request).await;
            if result.is_ok() {
                LiveStats::bump(&stats().watches_created);
                // The old channel delivers until stopped; overlapping deliveries are harmless.
                if old.watch_id.is_some() {
                    self.stop_one(p, &old).await;
                }
            }
        }
        let w = &mut push.calendars[i];
        w.pending_watch_id = None;
        match result {
            Ok(granted) => {
                self.live.set_active(&granted.id, true);
                w.mode = PushMode::Push;
                w.watch_id = Some(granted.id);
                w.provider_id = Some(granted.provider_id);
                w.expiration = Some(granted.expiration);
                w.granted_at = Some(self.now());
                w.failures = 0;
                w.last_error = None;
                w.next_attempt_time = None;
                tracing::info!(connection = %key, calendar = %calendar, expiration = %granted.expiration, "push watch live");
                Ok(Ok(()))
            }
            Err(e) => {
                LiveStats::bump(&stats().watch_failures);
                let msg = e.to_string();
                tracing::warn!(connection = %key, calendar = %calendar, reason = e.reason(), error = %msg, "push watch failed; polling");
                w.failures = w.failures.saturating_add(1);
                w.next_attempt_time = Some(self.retry_at(w.failures, &e).0);
                w.last_error = Some(msg.clone());
                // Whatever was live stays live until it expires; the calendar is polled meanwhile.
                if w.expiration.is_none_or(|x| x <= self.now()) {
                    w.mode = PushMode::Poll;
                    w.watch_id = None;
                    w.provider_id = None;
                    w.expiration = None;
                    w.granted_at = None;
                }
                Ok(Err(msg))
            }
        }
    }

    /// Stop one watch, best effort: a watch that cannot be stopped expires on its own, and
    /// its notifications are ignored once it is no longer in status.
    async fn stop_one(&self, p: &dyn Provider, w: &WatchedCalendar) {
        let (Some(id), Some(provider_id)) = (&w.watch_id, &w.provider_id) else { return };
        let watch = Watch {
            id: id.clone(),
            provider_id: provider_id.clone(),
            expiration: w.expiration.unwrap_or_else(|| self.now()),
        };
        match p.stop_watch(&w.calendar_id, &watch).await {
            Ok(()) => LiveStats::bump(&stats().watches_stopped),
            Err(e) => {
                tracing::info!(calendar = %w.calendar_id, reason = e.reason(), "could not stop a push watch; it expires on its own")
            }
        }
        self.live.set_active(id, false);
    }

    /// Stop every watch of a connection (disconnect, deletion) and forget its caches.
    pub(super) async fn stop_watches(
        &self,
        conn: &CalendarConnection,
        p: Option<&dyn Provider>,
    ) -> Option<crate::resources::PushStatus> {
        let ns = conn.namespace().unwrap_or_default();
        self.live.forget(&format!("{ns}/{}", conn.name_any()));
        let push = conn.status.as_ref()?.push.clone()?;
        if let Some(p) = p {
            for w in &push.calendars {
                self.stop_one(p, w).await;
            }
        }
        let calendars = push
            .calendars
            .iter()
            .map(|w| WatchedCalendar { cursor: None, ..WatchedCalendar::polled(&w.calendar_id) })
            .collect();
        Some(crate::resources::PushStatus { calendars, ..push })
    }
}
