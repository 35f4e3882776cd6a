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
        rows::exec(
            tx,
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
                rows::exec(tx,
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
                        rows::exec(tx, "DELETE FROM webhook_outbox WHERE seq = ?1", [seq]).map_err(db_err)?;
                    }
                    OutboxSettle::Retry { seq, attempts, next_ms, error } => {
                        rows::exec(tx,
                            "UPDATE webhook_outbox SET attempts = ?2, next_ms = ?3, last_error = ?4 WHERE seq = ?1",
                            params![seq, attempts, next_ms, error],
                        )
                        .map_err(db_err)?;
                    }
                    OutboxSettle::Dead { seq, attempts, reason } => {
                        dead = true;
                        rows::exec(tx,
                            "INSERT OR REPLACE INTO webhook_dead (seq, msg_id, body, created_ms, attempts, dead_ms, reason)
                             SELECT seq, msg_id, body, created_ms, ?2, ?3, ?4 FROM webhook_outbox WHERE seq = ?1",
                            params![seq, attempts, now, reason],
                        )
                        .map_err(db_err)?;
                        rows::exec(tx, "DELETE FROM webhook_outbox WHERE seq = ?1", [seq]).map_err(db_err)?;
                    }
                }
            }
            if dead {
                rows::exec(tx,
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
            rows::exec(
                tx,
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use super::*;
    use crate::credentials::envelope::{Key, Keyring};
    use crate::engine::{ObjectKey, Objects};
    use crate::resources::*;

    /// One message per TaskSync status write, named after its resourceVersion and owner; panics
    /// (inside the transaction) when told to.
    #[derive(Default)]
    struct TestTap {
        panic: AtomicBool,
        recorded: AtomicUsize,
    }

    impl StatusTap for TestTap {
        fn task_sync(
            &self,
            _before: &TaskSync,
            after: &TaskSync,
            owner: &dyn Fn(&str) -> Option<(String, String)>,
        ) -> Vec<OutboxMessage> {
            assert!(!self.panic.load(std::sync::atomic::Ordering::Relaxed), "tap fails inside the transaction");
            let (user, provider) = owner(&after.spec.connection_ref.name).unwrap_or_default();
            let rv = after.metadata.resource_version.clone().unwrap_or_default();
            vec![OutboxMessage { id: format!("msg_{rv}"), body: format!("{user}/{provider}") }]
        }
        fn connection(&self, _: &CalendarConnection, _: &CalendarConnection) -> Vec<OutboxMessage> {
            Vec::new()
        }
        fn recorded(&self, n: usize) {
            self.recorded.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    async fn store_with(tap: Option<Arc<TestTap>>) -> SqliteObjects {
        let store = SqliteObjects::open("sqlite::memory:", Keyring::new(Key::generate().0)).await.unwrap();
        if let Some(tap) = tap {
            store.set_status_tap(tap).unwrap();
        }
        let spec = CalendarConnectionSpec {
            user_id: "alice".into(),
            provider: ProviderKind::Apple,
            credentials_secret_ref: SecretRef { name: "s".into(), key: None },
            calendar_id: None,
            server_url: None,
            category_calendars: Default::default(),
            user_default: false,
            import: None,
            active: true,
        };
        store.apply_connection(&CalendarConnection::new("c", spec)).await.unwrap();
        let spec = TaskSyncSpec {
            connection_ref: ConnectionRef { name: "c".into() },
            task_id: "t1".into(),
            title: "Essay".into(),
            start: "2026-12-10T10:00:00Z".into(),
            time_zone: None,
            duration: None,
            end: None,
            all_day: None,
            category: None,
            description: None,
            recurrence: vec![],
            exceptions: vec![],
            calendar_id: None,
            deletion_policy: DeletionPolicy::Delete,
            conflict_policy: ConflictPolicy::Manual,
            schedule: None,
        };
        store.apply_task_sync(&TaskSync::new("ts", spec)).await.unwrap();
        store
    }

    fn status(event: &str) -> TaskSyncStatus {
        TaskSyncStatus { event_id: Some(event.into()), ..Default::default() }
    }

    #[tokio::test]
    async fn messages_commit_with_the_status_write_or_not_at_all() {
        let tap = Arc::new(TestTap::default());
        let store = store_with(Some(tap.clone())).await;
        let written = store.patch_task_sync_status("default", "ts", &status("e1")).await.unwrap();
        let due = store.outbox_due(i64::MAX, 10, vec![]).await.unwrap();
        let rv = written.metadata.resource_version.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].id.clone(), due[0].body.as_str()), (format!("msg_{rv}"), "alice/apple"));
        assert_eq!(tap.recorded.load(std::sync::atomic::Ordering::Relaxed), 1);

        // The tap fails inside the transaction: the status write is rolled back with it.
        tap.panic.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(store.patch_task_sync_status("default", "ts", &status("e2")).await.is_err());
        let ts = store.get_task_sync("default", "ts").await.unwrap().unwrap();
        assert_eq!(ts.status.unwrap().event_id.as_deref(), Some("e1"));
        assert_eq!(store.outbox_depth().await.unwrap().0, 1);
        // A write that fails on its own records nothing.
        tap.panic.store(false, std::sync::atomic::Ordering::Relaxed);
        assert!(store.patch_task_sync_status("default", "missing", &status("e3")).await.is_err());
        assert_eq!(store.outbox_depth().await.unwrap().0, 1);
    }

    #[tokio::test]
    async fn without_a_tap_nothing_is_recorded() {
        let store = store_with(None).await;
        store.patch_task_sync_status("default", "ts", &status("e1")).await.unwrap();
        assert_eq!(store.outbox_depth().await.unwrap(), (0, None));
        let key = ObjectKey::task_sync("default", "ts");
        store.set_annotations(&key, &[("a".to_string(), "b".to_string())].into()).await.unwrap();
        assert_eq!(store.outbox_depth().await.unwrap().0, 0);
    }

    #[tokio::test]
    async fn settling_delivers_reschedules_dead_letters_and_disables() {
        let store = store_with(None).await;
        let msg = |id: &str| OutboxMessage { id: id.into(), body: "{}".into() };
        store.outbox_push(vec![msg("a"), msg("b"), msg("c")]).await.unwrap();
        let due = store.outbox_due(i64::MAX, 10, vec![]).await.unwrap();
        let seq = |id: &str| due.iter().find(|e| e.id == id).unwrap().seq;
        // Busy ones are skipped.
        let not_busy = store.outbox_due(i64::MAX, 10, vec![seq("a")]).await.unwrap();
        assert_eq!(not_busy.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        let later = chrono::Utc::now().timestamp_millis() + 60_000;
        store
            .outbox_settle(vec![
                OutboxSettle::Delivered { seq: seq("a") },
                OutboxSettle::Retry { seq: seq("b"), attempts: 1, next_ms: later, error: "HTTP 503".into() },
                OutboxSettle::Dead { seq: seq("c"), attempts: 9, reason: "HTTP 500".into() },
            ])
            .await
            .unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        assert!(store.outbox_due(now, 10, vec![]).await.unwrap().is_empty(), "b waits for its retry");
        assert_eq!(store.outbox_next_due(now).await.unwrap(), Some(later));
        let b = store.outbox_due(later, 10, vec![]).await.unwrap();
        assert_eq!((b.len(), b[0].id.as_str(), b[0].attempts), (1, "b", 1));
        assert_eq!(store.outbox_dead(10).await.unwrap(), [("c".to_string(), 9, "HTTP 500".to_string())]);
        assert_eq!(store.outbox_endpoint_disabled("h").await.unwrap(), None);
        store.outbox_disable_endpoint("h", "410").await.unwrap();
        assert_eq!(store.outbox_endpoint_disabled("h").await.unwrap().as_deref(), Some("410"));
    }
}
