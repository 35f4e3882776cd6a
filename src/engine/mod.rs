//! The reconcile engine, written once for both drivers (the Kubernetes controller and the
//! standalone work queue): it reads desired and last-applied state through `Objects`, decides
//! one step with the pure `plan`, performs it through a `Provider`, and records the outcome.
//!
//! Owns: reconcile logic for TaskSync and CalendarConnection. Must not touch: kube-runtime,
//! axum or SQL; scheduling belongs to the drivers, which call `reconcile_*` and honour the
//! returned `Outcome`.

pub mod backoff;
pub mod busy;
mod changes;
mod conflict;
mod connection;
mod dedicated;
pub mod desired;
mod feed_only;
pub mod guard;
#[cfg(test)]
mod guard_tests;
pub mod inputs;
pub mod live;
#[cfg(test)]
mod live_tests;
pub mod memory;
mod moves;
#[cfg(test)]
mod moves_tests;
pub mod objects;
mod placed;
pub use placed::unplaced_event;
pub mod plan;
mod record;
mod remote;
pub mod resolve;
#[cfg(test)]
mod retry_tests;
pub mod schedule;
#[cfg(test)]
mod schedule_tests;
mod tasksync;
#[cfg(test)]
mod tests;
pub mod vault;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use backoff::{Backoff, RetryPolicy, Wait};
pub use feed_only::{FEED_ONLY_REASON, applies as feed_only_applies};
pub use objects::{
    Deletion, EventType, Kind, Labels, ObjectEvent, ObjectKey, Objects, ReconcileRecord, Recorded, StoreError,
    wait_for, wait_for_key,
};

use crate::providers::Connector;

/// Added to the requeue after a failed call (see `Engine::retry_at`).
const RETRY_MARGIN: std::time::Duration = std::time::Duration::from_millis(20);

/// Source of "now"; tests pin it.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Tunables of the engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Identifies this installation inside every event it writes (ownership marker). Must not
    /// contain `;`.
    pub owner: String,
    /// Re-check of an in-sync TaskSync (no provider call; the safety net for missed triggers).
    pub resync: Duration,
    /// How often a Ready connection's credentials are re-checked against the provider.
    pub connection_recheck: Duration,
    /// Re-look at a TaskSync waiting for its connection.
    pub wait_requeue: Duration,
    /// Backoff of store failures (the controller's) and the short wait before looking again.
    pub backoff: Backoff,
    /// How long a failed provider call waits before it is retried, by what failed.
    pub retry: RetryPolicy,
    /// Live sync from the calendar: push and polling.
    pub live: live::LiveConfig,
    /// When mass deletions are held for the user's confirmation.
    pub deletion_guard: guard::GuardConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            owner: "calsync".into(),
            resync: Duration::from_secs(600),
            connection_recheck: Duration::from_secs(600),
            wait_requeue: Duration::from_secs(60),
            backoff: Backoff::default(),
            retry: RetryPolicy::default(),
            live: live::LiveConfig::default(),
            deletion_guard: guard::GuardConfig::default(),
        }
    }
}

/// What the driver should do after a reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing more until the object changes (it is gone, or waits for a change).
    Done,
    /// Reconcile again after this delay (jitter already applied).
    Requeue(Duration),
    /// Reconcile again after this delay: the client limiter holds every call of the object's
    /// connection until then (a Retry-After, or its breaker), so a driver that can should hold
    /// the connection's other objects too rather than run them into the same hold.
    Held(Duration),
}

/// A reconcile could not finish because the store failed; the driver retries with its own
/// backoff. Provider failures never surface here: they become status.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The engine: one per process, shared by all reconciles.
#[derive(Clone)]
pub struct Engine {
    objects: Arc<dyn Objects>,
    connector: Arc<dyn Connector>,
    config: EngineConfig,
    clock: Clock,
    live: Arc<live::LiveState>,
    guards: Arc<guard::GuardLocks>,
    /// Placement of `spec.schedule` tasks: busy cache, per-user locks.
    sched: Arc<schedule::SchedState>,
}

impl Engine {
    pub fn new(objects: Arc<dyn Objects>, connector: Arc<dyn Connector>, config: EngineConfig) -> Self {
        Engine {
            objects,
            connector,
            config,
            clock: Arc::new(Utc::now),
            live: Arc::new(live::LiveState::default()),
            guards: Arc::default(),
            sched: Arc::new(schedule::SchedState::default()),
        }
    }

    /// Replace the clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// How the driver re-queues a TaskSync when the connection's change sync found its event
    /// changed in the calendar (the standalone queue and the controller each set one).
    pub fn set_requeue(&self, requeue: live::Requeue) {
        self.live.set_requeue(requeue);
    }

    pub fn objects(&self) -> &Arc<dyn Objects> {
        &self.objects
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn now(&self) -> DateTime<Utc> {
        // Kubernetes timestamps have second precision; keeping ours the same makes status
        // comparisons after a round trip through the API server stable.
        let now = (self.clock)();
        DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now)
    }

    /// When a provider call that failed for the `attempts`-th time in a row may be retried:
    /// the time for `nextAttemptTime` (a whole second, never before the Retry-After or the
    /// curve's lower bound, so a restart never retries early) and the requeue delay, which
    /// lands just after that time, unjittered: a curve's delay is jittered already and a
    /// Retry-After must not be.
    fn retry_at(&self, attempts: u32, e: &crate::providers::ProviderError) -> (DateTime<Utc>, std::time::Duration) {
        let wait = Wait::of(e);
        let policy = &self.config.retry;
        let at = backoff::retry_time((self.clock)(), policy.earliest(attempts, wait), policy.delay(attempts, wait));
        let left = (at - (self.clock)()).to_std().unwrap_or_default();
        // The queue's timer (monotonic) and the plan's check (wall clock, whole seconds) can
        // disagree by a little: waking a hair early would cost a second hop.
        (at, left + RETRY_MARGIN)
    }

    async fn publish(&self, key: &ObjectKey, type_: EventType, reason: &str, action: &str, note: String) {
        let event = ObjectEvent { type_, reason: reason.into(), note, action: action.into() };
        if let Err(e) = self.objects.publish_event(key, &event).await {
            tracing::warn!(object = %key, reason, error = %e, "could not publish event");
        }
    }
}
