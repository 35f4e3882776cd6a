//! The work queue's settings: concurrency, per-connection cap, sweep, store-failure backoff,
//! and which objects this replica owns.
//!
//! Owns: the settings and their defaults. Must not touch: scheduling (`queue`, `ready`).

use std::time::Duration;

use crate::engine::{Backoff, ObjectKey};

/// Tunables of the queue.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// Reconciles running at once (across objects).
    pub concurrency: usize,
    /// Reconciles of one connection's TaskSyncs running at once (`ready`); 0: no cap.
    pub per_connection: usize,
    /// Every object is re-checked at least this often.
    pub sweep: Duration,
    /// Backoff after a reconcile failed with a store error.
    pub backoff: Backoff,
    /// Only the objects this says are ours run (several replicas on one database); `None`: all.
    pub ownership: Option<Ownership>,
}

/// Which objects this process reconciles when several share one database (`pg::shards`):
/// others are dropped from the queue; `gained` ticks when more became ours (all are re-listed).
#[derive(Clone)]
pub struct Ownership {
    pub owns: std::sync::Arc<dyn Fn(&ObjectKey) -> bool + Send + Sync>,
    pub gained: tokio::sync::watch::Receiver<u64>,
}

impl std::fmt::Debug for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ownership")
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            concurrency: 8,
            per_connection: DEFAULT_PER_CONNECTION,
            sweep: Duration::from_secs(600),
            backoff: Backoff { base: Duration::from_millis(500), cap: Duration::from_secs(300) },
            ownership: None,
        }
    }
}

/// `QueueConfig::per_connection` by default: no cap. Round robin across lanes already keeps
/// one connection from starving the others (a parked worker frees up at the connection's
/// rate), and Google and Graph batch only what is queued beyond a connection's 4 request slots,
/// which a cap of 4 would forbid (measured: 4 or none made no difference to `calsync-bench
/// faults`, 59.1 s vs 59.9 s at 2,000 tasks).
pub const DEFAULT_PER_CONNECTION: usize = 0;
