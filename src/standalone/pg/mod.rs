//! `PgObjects`: the engine's `Objects` port on PostgreSQL, for standalone mode when
//! `DATABASE_URL` is `postgres://` or `postgresql://`. Same semantics as the SQLite store and
//! the in-memory reference (`standalone::semantics` decides them for both SQL stores), the same
//! sealed credentials, Events, feeds and app-webhook outbox.
//!
//! Owns: the pool, write transactions and change notifications: every write is one transaction
//! that serializes on its key (advisory lock), draws the resourceVersion from one sequence and
//! logs the changed key in the change log (`calsync_changes`); committed keys are broadcast
//! in-process at once, sent to other processes as wake-ups right after the COMMIT (`notify`),
//! and read from the log by every other process (`changes`, `listen`). Must not touch:
//! reconcile decisions, provider calls, or the SQLite store's files.
//!
//! Why a second store rather than one SQL core: the SQLite store runs synchronous rusqlite
//! transactions on the blocking pool behind one writer (its throughput work depends on that),
//! while this one is async with a connection pool and needs cross-process locking SQLite does not
//! have; the SQL differs in many small places (placeholders, sequences, `UNNEST`, bytea). What
//! must not differ, the object semantics, is shared code; the contract suite runs on both.

mod changes;
pub(super) mod connect;
mod import;
mod listen;
mod notify;
mod objects;
mod outbox;
pub(super) mod rows;
pub mod schema;
mod sealed;
mod secrets;
pub mod shards;
mod unit;

pub use connect::{Target, is_postgres_url};
pub use import::{ImportReport, import_sqlite};

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::broadcast;

use super::rows::{SECRET_KIND, kind_str};
use super::store::StatusTap;
use super::store::cache::{Cache, Written};
use super::watch::SecretName;
use crate::credentials::envelope::Keyring;
use crate::engine::{ObjectKey, StoreError};

/// Connections kept open to the database by one process.
const POOL_SIZE: u32 = 8;

/// The tables whose statistics matter to the store's queries.
const ANALYZE: &str = "ANALYZE objects, labels, events, secrets";

/// A PostgreSQL error as a store error (the engine retries these). sqlx's messages never carry
/// the connection URL.
pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => StoreError::Unavailable(format!("PostgreSQL: {}", db.message())),
        _ => StoreError::Unavailable(format!("PostgreSQL: {e}")),
    }
}

struct Inner {
    pool: PgPool,
    keys: Keyring,
    changes: broadcast::Sender<ObjectKey>,
    secret_changes: broadcast::Sender<SecretName>,
    /// Identifies this process's notifications.
    origin: String,
    target: Target,
    tap: std::sync::OnceLock<Arc<dyn StatusTap>>,
    listener: tokio::task::JoinHandle<()>,
    /// Sends this process's committed keys to the others (`notify`).
    notifier: notify::Notifier,
    notifier_task: tokio::task::JoinHandle<()>,
    /// Decoded objects by key (both kinds), kept by this process's commits and dropped on other
    /// processes' notifications (`listen`), so `get` seldom reaches the database.
    cache: Arc<Cache>,
    /// Sealed Secret rows by name, kept the same way (`sealed`).
    sealed: Arc<sealed::SealedCache>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
        self.notifier_task.abort();
    }
}

/// The PostgreSQL store. Cloning shares the pool.
#[derive(Clone)]
pub struct PgObjects {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgObjects").field("target", &self.inner.target.to_string()).finish_non_exhaustive()
    }
}

/// An open write transaction and what it wrote, for the cache and the broadcast once it commits.
pub(super) struct Write {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    secrets: Vec<SecretName>,
    /// The objects saved or removed: the cache takes them after the COMMIT, and their keys are
    /// broadcast.
    written: Vec<Written>,
    /// The cache's epoch when the transaction began (`Cache::committed_since`).
    epoch: u64,
}

impl PgObjects {
    /// Connect to `url` (`postgres://` or `postgresql://`), migrate the schema (once, whoever
    /// else starts at the same time), and start listening for other processes' changes. Fails
    /// within seconds, naming the host and what to check, when the database cannot be reached.
    pub async fn open(url: &str, keys: Keyring) -> Result<Self, StoreError> {
        Self::open_with_change_log(url, keys, changes::KEEP).await
    }

    /// `open`, keeping change-log rows for `keep` after their transactions ended (tests of the
    /// pruning; `open` keeps them two minutes).
    #[doc(hidden)]
    pub async fn open_with_change_log(url: &str, keys: Keyring, keep: Duration) -> Result<Self, StoreError> {
        let (options, target) = connect::parse(url)?;
        let mut first = connect::connect(&options, &target).await?;
        let applied = schema::migrate(&mut first).await?;
        let (notifier, notifier_task) = notify::spawn(&options, target.clone());
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        drop(first);
        let (changes, _) = broadcast::channel(4096);
        let (secret_changes, _) = broadcast::channel(256);
        let origin = uuid::Uuid::new_v4().to_string();
        let cache = Arc::new(Cache::for_every_kind(super::store::cache_capacity()));
        let sealed = Arc::new(sealed::SealedCache::default());
        let listening = listen::start(&pool).await.map_err(|e| connect::connect_error(&target, &e))?;
        let reader =
            listen::start_reader(&pool, origin.clone(), keep).await.map_err(|e| connect::connect_error(&target, &e))?;
        let listener = listen::spawn(
            (listening, reader),
            pool.clone(),
            target.clone(),
            origin.clone(),
            listen::Receivers {
                changes: changes.clone(),
                secret_changes: secret_changes.clone(),
                cache: cache.clone(),
                sealed: sealed.clone(),
            },
        );
        tracing::info!(database = %target, migrations_applied = applied, key_id = %keys.current_id(), "opened the PostgreSQL store");
        Ok(PgObjects {
            inner: Arc::new(Inner {
                pool,
                keys,
                changes,
                secret_changes,
                origin,
                target,
                tap: std::sync::OnceLock::new(),
                listener,
                notifier,
                notifier_task,
                cache,
                sealed,
            }),
        })
    }

    /// Where the database is (no password).
    pub fn target(&self) -> &Target {
        &self.inner.target
    }

    /// A connection for reads (each statement sees committed data).
    pub(super) async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, StoreError> {
        self.inner.pool.acquire().await.map_err(db_err)
    }

    /// Begin a write transaction.
    pub(super) async fn begin(&self) -> Result<Write, StoreError> {
        // Taken before the transaction can read anything.
        let epoch = self.inner.cache.epoch();
        let tx = self.inner.pool.begin().await.map_err(db_err)?;
        Ok(Write { tx, secrets: Vec::new(), written: Vec::new(), epoch })
    }

    /// Commit, update the cache, broadcast what changed and queue the wake-ups for other
    /// processes, in that order (a woken reader reads this write). Dropping a `Write` instead
    /// rolls it back (also what happens when the connection drops mid-transaction: no partial
    /// object).
    pub(super) async fn commit(&self, w: Write) -> Result<(), StoreError> {
        if let Err(e) = w.tx.commit().await {
            // Whether a COMMIT whose answer was lost took effect is unknown: read these again.
            for key in w.written.iter().filter_map(Written::key) {
                self.inner.cache.invalidate(key);
            }
            for s in &w.secrets {
                self.inner.sealed.invalidate(&s.namespace, &s.name);
            }
            return Err(db_err(e));
        }
        self.inner.cache.committed_since(w.epoch, &w.written);
        for s in &w.secrets {
            self.inner.sealed.invalidate(&s.namespace, &s.name);
        }
        for key in w.written.iter().filter_map(Written::key) {
            // No subscribers is fine.
            let _ = self.inner.changes.send(key.clone());
        }
        let origin = &self.inner.origin;
        self.inner.notifier.send(
            w.written
                .iter()
                .filter_map(Written::key)
                .map(|k| rows::notice(origin, kind_str(k.kind), &k.namespace, &k.name))
                .chain(w.secrets.iter().map(|s| rows::notice(origin, SECRET_KIND, &s.namespace, &s.name))),
        );
        for s in w.secrets {
            let _ = self.inner.secret_changes.send(s);
        }
        Ok(())
    }

    /// The newest `limit` Events (about `key` when given), oldest first; never more than the
    /// store keeps (the table may hold a few more until the next prune, `rows::insert_event`).
    pub async fn events(&self, key: Option<&ObjectKey>, limit: u32) -> Result<Vec<super::StoredEvent>, StoreError> {
        let mut conn = self.conn().await?;
        rows::events(&mut conn, key, i64::from(limit).min(objects::EVENTS_KEPT)).await
    }

    /// Secrets written or deleted (by any process on this database).
    pub fn subscribe_secrets(&self) -> broadcast::Receiver<SecretName> {
        self.inner.secret_changes.subscribe()
    }

    /// Start holding shard leases as one of several replicas on this database (`shards`).
    pub async fn shards(&self) -> Result<shards::Shards, StoreError> {
        shards::Shards::start(self.inner.pool.clone(), self.inner.origin.clone()).await
    }

    /// Refresh the planner's statistics of the object tables, after a bulk load (imports, the
    /// bench's fixture). Autovacuum does it within its next round otherwise; until then tables
    /// loaded from empty look empty and a label-selected list scans its whole namespace (18 ms
    /// instead of 1 ms for 100 of 10,000 TaskSyncs).
    pub async fn analyze(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        sqlx::raw_sql(ANALYZE).execute(&mut *conn).await.map_err(db_err).map(|_| ())
    }

    /// Raw access for tests (tampering with sealed rows, schema checks).
    #[doc(hidden)]
    pub async fn raw_execute(&self, sql: &str) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        let done = sqlx::raw_sql(sql).execute(&mut *conn).await.map(|r| r.rows_affected()).map_err(db_err);
        // Rows changed behind the store's back.
        self.inner.cache.clear();
        self.inner.sealed.clear();
        done
    }
}
