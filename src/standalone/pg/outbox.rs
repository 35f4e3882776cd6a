//! The app-webhook outbox on PostgreSQL, with the SQLite store's contract
//! (`standalone::store::outbox`): messages a status change owes are inserted in the same
//! transaction as the change, so a committed change always has its messages; the dispatcher
//! reads due rows and settles them in batches.
//!
//! Owns: the outbox, dead-letter and disabled-endpoint SQL on PostgreSQL. Must not touch: which
//! transitions are events or what they say (the tap decides), HTTP, signing.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use sqlx::postgres::PgConnection;

use super::{PgObjects, db_err};
use crate::engine::StoreError;
use crate::resources::{CalendarConnection, TaskSync};
use crate::standalone::rows::Row;
use crate::standalone::store::{OutboxEntry, OutboxMessage, OutboxSettle, StatusTap};

/// Dead-lettered messages kept (newest).
const DEAD_KEPT: i64 = 10_000;
/// How long a fetched message is reserved for the process that fetched it (longer than a
/// prefetched batch takes to send; a settle replaces it).
const CLAIM_MS: i64 = 5 * 60 * 1000;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The messages the tap says one status write of `K` owes. A panicking tap fails the write
/// (its transaction rolls back), as it does on SQLite.
pub(super) fn messages<K: Row>(
    tap: &Arc<dyn StatusTap>,
    before: &K,
    after: &K,
    owners: &HashMap<String, (String, String)>,
) -> Result<Vec<OutboxMessage>, StoreError> {
    let (before, after): (&dyn Any, &dyn Any) = (before, after);
    let run = || {
        if let (Some(b), Some(a)) = (before.downcast_ref::<TaskSync>(), after.downcast_ref::<TaskSync>()) {
            let owner = |name: &str| owners.get(name).cloned();
            tap.task_sync(b, a, &owner)
        } else if let (Some(b), Some(a)) =
            (before.downcast_ref::<CalendarConnection>(), after.downcast_ref::<CalendarConnection>())
        {
            tap.connection(b, a)
        } else {
            Vec::new()
        }
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .map_err(|_| StoreError::Unavailable("recording the app webhook messages of a status write failed".into()))
}

pub(super) async fn insert(tx: &mut PgConnection, messages: &[OutboxMessage], now_ms: i64) -> Result<(), StoreError> {
    if messages.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
    let bodies: Vec<&str> = messages.iter().map(|m| m.body.as_str()).collect();
    // One statement; WITH ORDINALITY keeps the sequence numbers in the messages' order.
    sqlx::query(
        "INSERT INTO webhook_outbox (msg_id, body, created_ms, attempts, next_ms)
         SELECT m.id, m.body, $3, 0, $3 FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS m (id, body, n)
         ORDER BY m.n",
    )
    .bind(ids)
    .bind(bodies)
    .bind(now_ms)
    .execute(tx)
    .await
    .map_err(db_err)?;
    Ok(())
}

impl PgObjects {
    /// Record webhook messages for status writes from now on. Set once, at start-up.
    pub fn set_status_tap(&self, tap: Arc<dyn StatusTap>) -> Result<(), StoreError> {
        self.inner.tap.set(tap).map_err(|_| StoreError::Invalid("a status tap is already installed".into()))
    }

    /// Insert messages directly (tests and the benchmark; status writes go through the tap).
    pub async fn outbox_push(&self, messages: Vec<OutboxMessage>) -> Result<(), StoreError> {
        let mut w = self.begin().await?;
        insert(&mut w.tx, &messages, now_ms()).await?;
        self.commit(w).await
    }

    /// Up to `limit` messages due at `now_ms`, earliest first, skipping `busy` (in flight), each
    /// claimed for `CLAIM_MS`: several processes on one database (replicas) never send the same
    /// message at once, and a message whose sender died is due again when its claim runs out.
    pub async fn outbox_due(&self, now_ms: i64, limit: usize, busy: Vec<i64>) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut w = self.begin().await?;
        let mut rows: Vec<(i64, String, String, i64, i32, i64)> = sqlx::query_as(
            "WITH due AS (
                SELECT seq, next_ms AS was FROM webhook_outbox
                WHERE next_ms <= $1 AND NOT (seq = ANY($2)) ORDER BY next_ms, seq LIMIT $3
                FOR UPDATE SKIP LOCKED)
             UPDATE webhook_outbox o SET next_ms = $4 FROM due WHERE o.seq = due.seq
             RETURNING o.seq, o.msg_id, o.body, o.created_ms, o.attempts, due.was",
        )
        .bind(now_ms)
        .bind(busy)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(now_ms.saturating_add(CLAIM_MS))
        .fetch_all(&mut *w.tx)
        .await
        .map_err(db_err)?;
        self.commit(w).await?;
        rows.sort_by_key(|r| (r.5, r.0));
        Ok(rows
            .into_iter()
            .map(|(seq, id, body, created_ms, attempts, _)| OutboxEntry {
                seq,
                id,
                body,
                created_ms,
                attempts: u32::try_from(attempts).unwrap_or(0),
            })
            .collect())
    }

    /// When the next message not yet due at `now_ms` falls due (ms), if any.
    pub async fn outbox_next_due(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        let mut conn = self.conn().await?;
        let (next,): (Option<i64>,) = sqlx::query_as("SELECT MIN(next_ms) FROM webhook_outbox WHERE next_ms > $1")
            .bind(now_ms)
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err)?;
        Ok(next)
    }

    /// Pending messages and the oldest one's creation time (ms).
    pub async fn outbox_depth(&self) -> Result<(u64, Option<i64>), StoreError> {
        let mut conn = self.conn().await?;
        let (n, oldest): (i64, Option<i64>) = sqlx::query_as("SELECT COUNT(*), MIN(created_ms) FROM webhook_outbox")
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err)?;
        Ok((u64::try_from(n).unwrap_or(0), oldest))
    }

    /// Apply the outcomes of many attempts in one transaction.
    pub async fn outbox_settle(&self, outcomes: Vec<OutboxSettle>) -> Result<(), StoreError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let mut w = self.begin().await?;
        let now = now_ms();
        let mut dead = false;
        for o in &outcomes {
            let q = match o {
                OutboxSettle::Delivered { seq } => sqlx::query("DELETE FROM webhook_outbox WHERE seq = $1").bind(*seq),
                OutboxSettle::Retry { seq, attempts, next_ms, error } => {
                    sqlx::query("UPDATE webhook_outbox SET attempts = $2, next_ms = $3, last_error = $4 WHERE seq = $1")
                        .bind(*seq)
                        .bind(i32::try_from(*attempts).unwrap_or(i32::MAX))
                        .bind(*next_ms)
                        .bind(error)
                }
                OutboxSettle::Dead { seq, attempts, reason } => {
                    dead = true;
                    sqlx::query(
                        "WITH gone AS (DELETE FROM webhook_outbox WHERE seq = $1 RETURNING seq, msg_id, body, created_ms)
                         INSERT INTO webhook_dead (seq, msg_id, body, created_ms, attempts, dead_ms, reason)
                         SELECT seq, msg_id, body, created_ms, $2, $3, $4 FROM gone
                         ON CONFLICT (seq) DO UPDATE SET attempts = excluded.attempts, dead_ms = excluded.dead_ms,
                           reason = excluded.reason",
                    )
                    .bind(*seq)
                    .bind(i32::try_from(*attempts).unwrap_or(i32::MAX))
                    .bind(now)
                    .bind(reason)
                }
            };
            q.execute(&mut *w.tx).await.map_err(db_err)?;
        }
        if dead {
            sqlx::query(
                "DELETE FROM webhook_dead WHERE seq <= (SELECT seq FROM webhook_dead ORDER BY seq DESC LIMIT 1 OFFSET $1)",
            )
            .bind(DEAD_KEPT)
            .execute(&mut *w.tx)
            .await
            .map_err(db_err)?;
        }
        self.commit(w).await
    }

    /// Why the endpoint (by the hash of its URL) was disabled, if it was.
    pub async fn outbox_endpoint_disabled(&self, endpoint: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<(String,)> = sqlx::query_as("SELECT reason FROM webhook_endpoints WHERE endpoint = $1")
            .bind(endpoint)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
        Ok(row.map(|(r,)| r))
    }

    /// Remember that the receiver asked to stop (HTTP 410); survives restarts.
    pub async fn outbox_disable_endpoint(&self, endpoint: &str, reason: &str) -> Result<(), StoreError> {
        let mut w = self.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_endpoints (endpoint, disabled_ms, reason) VALUES ($1, $2, $3)
             ON CONFLICT (endpoint) DO UPDATE SET disabled_ms = excluded.disabled_ms, reason = excluded.reason",
        )
        .bind(endpoint)
        .bind(now_ms())
        .bind(reason)
        .execute(&mut *w.tx)
        .await
        .map_err(db_err)?;
        self.commit(w).await
    }

    /// Dead-lettered messages kept, newest first: (webhook-id, attempts, reason).
    pub async fn outbox_dead(&self, limit: u32) -> Result<Vec<(String, u32, String)>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<(String, i32, String)> =
            sqlx::query_as("SELECT msg_id, attempts, reason FROM webhook_dead ORDER BY seq DESC LIMIT $1")
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await
                .map_err(db_err)?;
        Ok(rows.into_iter().map(|(id, a, r)| (id, u32::try_from(a).unwrap_or(0), r)).collect())
    }
}
