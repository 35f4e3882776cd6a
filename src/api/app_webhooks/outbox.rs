//! The outbox port the dispatcher delivers from: due messages, batched settlement, endpoint
//! disabling. Implemented by the SQLite store (durable; rows written with the status change)
//! and by `MemoryOutbox` (tests, and any process that re-derives what is owed on start).
//!
//! Owns: the port and the in-memory implementation. Must not touch: HTTP or signing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::engine::StoreError;
pub use crate::standalone::store::{OutboxEntry, OutboxMessage, OutboxSettle};
use crate::standalone::{SqliteObjects, Store};

/// Where messages wait until the receiver acknowledges them.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Up to `limit` messages due at `now_ms`, skipping the `busy` ones (in flight).
    async fn due(&self, now_ms: i64, limit: usize, busy: Vec<i64>) -> Result<Vec<OutboxEntry>, StoreError>;
    /// When the earliest message not yet due at `now_ms` falls due (those due now are fetched
    /// with `due` or in flight).
    async fn next_due(&self, now_ms: i64) -> Result<Option<i64>, StoreError>;
    /// Pending count and the oldest one's creation time (ms).
    async fn depth(&self) -> Result<(u64, Option<i64>), StoreError>;
    /// Record the outcome of many attempts at once.
    async fn settle(&self, outcomes: Vec<OutboxSettle>) -> Result<(), StoreError>;
    async fn disabled(&self, endpoint: &str) -> Result<Option<String>, StoreError>;
    async fn disable(&self, endpoint: &str, reason: &str) -> Result<(), StoreError>;
}

#[async_trait]
impl Outbox for SqliteObjects {
    async fn due(&self, now_ms: i64, limit: usize, busy: Vec<i64>) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox_due(now_ms, limit, busy).await
    }
    async fn next_due(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        self.outbox_next_due(now_ms).await
    }
    async fn depth(&self) -> Result<(u64, Option<i64>), StoreError> {
        self.outbox_depth().await
    }
    async fn settle(&self, outcomes: Vec<OutboxSettle>) -> Result<(), StoreError> {
        self.outbox_settle(outcomes).await
    }
    async fn disabled(&self, endpoint: &str) -> Result<Option<String>, StoreError> {
        self.outbox_endpoint_disabled(endpoint).await
    }
    async fn disable(&self, endpoint: &str, reason: &str) -> Result<(), StoreError> {
        self.outbox_disable_endpoint(endpoint, reason).await
    }
}

/// The store standalone chose (SQLite or PostgreSQL): the same durable outbox.
#[async_trait]
impl Outbox for Store {
    async fn due(&self, now_ms: i64, limit: usize, busy: Vec<i64>) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox_due(now_ms, limit, busy).await
    }
    async fn next_due(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        self.outbox_next_due(now_ms).await
    }
    async fn depth(&self) -> Result<(u64, Option<i64>), StoreError> {
        self.outbox_depth().await
    }
    async fn settle(&self, outcomes: Vec<OutboxSettle>) -> Result<(), StoreError> {
        self.outbox_settle(outcomes).await
    }
    async fn disabled(&self, endpoint: &str) -> Result<Option<String>, StoreError> {
        self.outbox_endpoint_disabled(endpoint).await
    }
    async fn disable(&self, endpoint: &str, reason: &str) -> Result<(), StoreError> {
        self.outbox_disable_endpoint(endpoint, reason).await
    }
}

#[derive(Default)]
struct Mem {
    next_seq: i64,
    /// seq → (entry, next attempt ms)
    pending: BTreeMap<i64, (OutboxEntry, i64)>,
    delivered: Vec<String>,
    dead: Vec<(String, String)>,
    disabled: HashMap<String, String>,
}

/// An outbox in memory: nothing survives the process.
#[derive(Default)]
pub struct MemoryOutbox {
    inner: Mutex<Mem>,
    /// Told the webhook-id of every message delivered or given up on.
    settled: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

impl MemoryOutbox {
    /// An outbox that reports each message that is done with (delivered or dead-lettered).
    pub fn with_settled(settled: tokio::sync::mpsc::UnboundedSender<String>) -> Self {
        MemoryOutbox { inner: Mutex::default(), settled: Some(settled) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.lock().pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&self, message: OutboxMessage, now_ms: i64) {
        let mut m = self.lock();
        m.next_seq += 1;
        let seq = m.next_seq;
        let entry = OutboxEntry { seq, id: message.id, body: message.body, created_ms: now_ms, attempts: 0 };
        m.pending.insert(seq, (entry, now_ms));
    }

    /// webhook-ids acknowledged, in order.
    pub fn delivered(&self) -> Vec<String> {
        self.lock().delivered.clone()
    }

    /// (webhook-id, reason) given up on.
    pub fn dead(&self) -> Vec<(String, String)> {
        self.lock().dead.clone()
    }

    /// (attempts, next attempt ms) of each pending message.
    pub fn schedule(&self) -> Vec<(u32, i64)> {
        self.lock().pending.values().map(|(e, next)| (e.attempts, *next)).collect()
    }
}

#[async_trait]
impl Outbox for MemoryOutbox {
    async fn due(&self, now_ms: i64, limit: usize, busy: Vec<i64>) -> Result<Vec<OutboxEntry>, StoreError> {
        let m = self.lock();
        let mut due: Vec<_> =
            m.pending.values().filter(|(e, next)| *next <= now_ms && !busy.contains(&e.seq)).collect();
        due.sort_by_key(|(e, next)| (*next, e.seq));
        Ok(due.into_iter().take(limit).map(|(e, _)| e.clone()).collect())
    }
    async fn next_due(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        Ok(self.lock().pending.values().map(|(_, n)| *n).filter(|n| *n > now_ms).min())
    }
    async fn depth(&self) -> Result<(u64, Option<i64>), StoreError> {
        let m = self.lock();
        Ok((m.pending.len() as u64, m.pending.values().map(|(e, _)| e.created_ms).min()))
    }
    async fn settle(&self, outcomes: Vec<OutboxSettle>) -> Result<(), StoreError> {
        let mut m = self.lock();
        let mut done = Vec::new();
        for o in outcomes {
            match o {
                OutboxSettle::Delivered { seq } => {
                    if let Some((e, _)) = m.pending.remove(&seq) {
                        done.push(e.id.clone());
                        m.delivered.push(e.id);
                    }
                }
                OutboxSettle::Retry { seq, attempts, next_ms, .. } => {
                    if let Some((e, next)) = m.pending.get_mut(&seq) {
                        e.attempts = attempts;
                        *next = next_ms;
                    }
                }
                OutboxSettle::Dead { seq, reason, .. } => {
                    if let Some((e, _)) = m.pending.remove(&seq) {
                        done.push(e.id.clone());
                        m.dead.push((e.id, reason));
                    }
                }
            }
        }
        if let Some(tx) = &self.settled {
            for id in done {
                // A closed receiver means nobody checkpoints any more: nothing to tell.
                let _ = tx.send(id);
            }
        }
        Ok(())
    }
    async fn disabled(&self, endpoint: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lock().disabled.get(endpoint).cloned())
    }
    async fn disable(&self, endpoint: &str, reason: &str) -> Result<(), StoreError> {
        self.lock().disabled.insert(endpoint.to_string(), reason.to_string());
        Ok(())
    }
}
