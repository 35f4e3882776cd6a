//! The durable webhook outbox of the SQLite store: messages owed to the app's backend are
//! inserted in the SAME transaction as the status write they report (through an optional
//! `StatusTap`), so a change that committed always has its message, and a kill -9 at any point
//! loses neither. The dispatcher (`api::app_webhooks`) reads due rows and settles them in
//! batches.
//!
//! Owns: the outbox, dead-letter and disabled-endpoint tables and their SQL. Must not touch:
//! which transitions are events or what they say (the tap decides), HTTP, signing.

use std::any::Any;
use std::sync::Arc;

use rusqlite::{OptionalExtension, Transaction, params};

use super::{SqliteObjects, rows};
use crate::engine::StoreError;
use crate::resources::{CalendarConnection, TaskSync};
use rows::db_err;

/// Dead-lettered messages kept (newest), for inspection with sqlite3.
const DEAD_KEPT: i64 = 10_000;

/// One message to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxMessage {
    /// The `webhook-id`: the same on every attempt and after a restart.
    pub id: String,
    /// The JSON body, exactly as it will be sent and signed.
    pub body: String,
}

/// A message waiting for delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    pub seq: i64,
    pub id: String,
    pub body: String,
    /// When it was recorded (ms since the epoch).
    pub created_ms: i64,
    /// Attempts made so far.
    pub attempts: u32,
}

/// What became of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboxSettle {
    Delivered { seq: i64 },
    Retry { seq: i64, attempts: u32, next_ms: i64, error: String },
    Dead { seq: i64, attempts: u32, reason: String },
}

/// Decides, inside the status write's transaction, which messages a status change owes. The
/// store calls it only when one is installed (webhooks configured), with the object before and
/// after the write.
pub trait StatusTap: Send + Sync {
    /// `owner` reads the named connection's (user id, provider) in the same transaction.
    fn task_sync(
        &self,
        before: &TaskSync,
        after: &TaskSync,
        owner: &dyn Fn(&str) -> Option<(String, String)>,
    ) -> Vec<OutboxMessage>;
    fn connection(&self, before: &CalendarConnection, after: &CalendarConnection) -> Vec<OutboxMessage>;
    /// `n` messages were committed (wake the dispatcher).
    fn recorded(&self, n: usize);
}

/// A tap to install when the store opens (`StandaloneConfig::status_tap`).
#[derive(Clone)]
pub struct TapHandle(pub Arc<dyn StatusTap>);

impl std::fmt::Debug for TapHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TapHandle")
    }
}

/// Messages owed for one status write of `K` (a TaskSync or a CalendarConnection), inserted in
/// `tx`. Returns how many.
pub(super) fn record<K: rows::Row>(
    tap: &Arc<dyn StatusTap>,
    tx: &Transaction,
    before: &K,
    after: &K,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let (before, after): (&dyn Any, &dyn Any) = (before, after);
    let messages = if let (Some(b), Some(a)) = (before.downcast_ref::<TaskSync>(), after.downcast_ref::<TaskSync>()) {
        let ns = a.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let owner = |name: &str| {
            rows::load::<CalendarConnection>(tx, &ns, name)
                .ok()
                .flatten()
                .map(|c| (c.spec.user_id.clone(), c.spec.provider.as_str().to_string()))
        };
        tap.task_sync(b, a, &owner)
    } else if let (Some(b), Some(a)) =
        (before.downcast_ref::<CalendarConnection>(), after.downcast_ref::<CalendarConnection>())
    {
        tap.connection(b, a)
    } else {
        Vec::new()
    };
    for m in &messages {
        tx.execute(
            "INSERT INTO webhook_outbox (msg_id, body, created_ms, attempts, next_ms) VALUES (?1, ?2, ?3, 0, ?3)",
            params![m.id, m.body, now_ms],
        )
        .map_err(db_err)?;
    }
    Ok(messages.len())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl SqliteObjects {
    /// Record webhook messages for status writes from now on. Set once, at start-up.
    pub fn set_status_tap(&self, tap: Arc<dyn StatusTap>) -> Result<(), StoreError> {
        self.inner.tap.set(tap).map_err(|_| StoreError::Invalid("a status tap is already installed".into()))
    }

    /// Insert messages directly (tests and the benchmark; status writes go through the tap).
    pub async fn outbox_push(&self, messages: Vec<OutboxMessage>) -> Result<(), StoreError> {
        let now = now_ms();
        self.tx(move |tx, _, _| {
            for m in &messages {
                tx.execute(
                    "INSERT INTO webhook_outbox (msg_id, body, created_ms, attempts, next_ms) VALUES (?1, ?2, ?3, 0, ?3)",
                    params![m.id, m.body, now],
                )
                .map_err(db_err)?;
            }
            Ok(())
        })
        .await
    }

    /// Up to `limit` messages due at `now_ms`, earliest first, skipping `busy` (in flight).
    pub async fn outbox_due(&self, now_ms: i64, limit: usize, busy: Vec<i64>) -> Result<Vec<OutboxEntry>, StoreError> {
        self.read(move |tx| {
            let fetch = i64::try_from(limit.saturating_add(busy.len())).unwrap_or(i64::MAX);
            let busy: std::collections::HashSet<i64> = busy.into_iter().collect();
            let mut stmt = tx
                .prepare_cached(
                    "SELECT seq, msg_id, body, created_ms, attempts FROM webhook_outbox
                     WHERE next_ms <= ?1 ORDER BY next_ms, seq LIMIT ?2",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![now_ms, fetch], |r| {
                    Ok(OutboxEntry {
                        seq: r.get(0)?,
                        id: r.get(1)?,
                        body: r.get(2)?,
                        created_ms: r.get(3)?,
                        attempts: r.get(4)?,
                    })
                })
                .map_err(db_err)?;
            let mut out = Vec::new();
            for row in rows {
                let row = row.map_err(db_err)?;
                if !busy.contains(&row.seq) {
                    out.push(row);
                }
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    /// When the next message not yet due at `now_ms` falls due (ms), if any.
    pub async fn outbox_next_due(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        self.read(move |tx| {
            tx.query_row("SELECT MIN(next_ms) FROM webhook_outbox WHERE next_ms > ?1", [now_ms], |r| r.get(0))
                .map_err(db_err)
        })
        .await
    }

    /// Pending messages and the oldest one's creation time (ms).
    pub async fn outbox_depth(&self) -> Result<(u64, Option<i64>), StoreError> {
        self.read(|tx| {
            tx.query_row("SELECT COUNT(*), MIN(created_ms) FROM webhook_outbox", [], |r| {
                Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get(1)?))
            })
            .map_err(db_err)
        })
        .await
    }

    /// Apply the outcomes of many attempts in one transaction (one fsync for the batch).
    pub async fn outbox_settle(&self, outcomes: Vec<OutboxSettle>) -> Result<(), StoreError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        self.tx(move |tx, _, _| {
            let now = now_ms();
            let mut dead = false;
            for o in &outcomes {
                match o {
                    OutboxSettle::Delivered { seq } => {
                        tx.execute("DELETE FROM webhook_outbox WHERE seq = ?1", [seq]).map_err(db_err)?;
                    }
                    OutboxSettle::Retry { seq, attempts, next_ms, error } => {
                        tx.execute(
                            "UPDATE webhook_outbox SET attempts = ?2, next_ms = ?3, last_error = ?4 WHERE seq = ?1",
                            params![seq, attempts, next_ms, error],
                        )
                        .map_err(db_err)?;
                    }
                    OutboxSettle::Dead { seq, attempts, reason } => {
                        dead = true;
                        tx.execute(
                            "INSERT OR REPLACE INTO webhook_dead (seq, msg_id, body, created_ms, attempts, dead_ms, reason)
                             SELECT seq, msg_id, body, created_ms, ?2, ?3, ?4 FROM webhook_outbox WHERE seq = ?1",
                            params![seq, attempts, now, reason],
                        )
                        .map_err(db_err)?;
                        tx.execute("DELETE FROM webhook_outbox WHERE seq = ?1", [seq]).map_err(db_err)?;
                    }
                }
            }
            if dead {
                tx.execute(
                    "DELETE FROM webhook_dead WHERE seq <= (SELECT seq FROM webhook_dead ORDER BY seq DESC LIMIT 1 OFFSET ?1)",
                    [DEAD_KEPT],
                )
                .map_err(db_err)?;
            }
            Ok(())
        })
        .await
    }

    /// Why the endpoint (by the hash of its URL) was disabled, if it was.
    pub async fn outbox_endpoint_disabled(&self, endpoint: &str) -> Result<Option<String>, StoreError> {
        let endpoint = endpoint.to_string();
        self.read(move |tx| {
            tx.query_row("SELECT reason FROM webhook_endpoints WHERE endpoint = ?1", [endpoint], |r| r.get(0))
                .optional()
                .map_err(db_err)
        })
        .await
    }

    /// Remember that the receiver asked to stop (HTTP 410); survives restarts.
    pub async fn outbox_disable_endpoint(&self, endpoint: &str, reason: &str) -> Result<(), StoreError> {
        let (endpoint, reason) = (endpoint.to_string(), reason.to_string());
        self.tx(move |tx, _, _| {
            tx.execute(
                "INSERT OR REPLACE INTO webhook_endpoints (endpoint, disabled_ms, reason) VALUES (?1, ?2, ?3)",
                params![endpoint, now_ms(), reason],
            )
            .map_err(db_err)
            .map(|_| ())
        })
        .await
    }

    /// Dead-lettered messages kept, newest first: (webhook-id, attempts, reason).
    pub async fn outbox_dead(&self, limit: u32) -> Result<Vec<(String, u32, String)>, StoreError> {
        self.read(move |tx| {
            let mut stmt = tx
                .prepare("SELECT msg_id, attempts, reason FROM webhook_dead ORDER BY seq DESC LIMIT ?1")
                .map_err(db_err)?;
            let rows = stmt.query_map([limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })
        .await
    }
}
