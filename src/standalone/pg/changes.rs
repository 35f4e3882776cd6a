//! Reading the change log (`calsync_changes`, schema version 4): every data transaction logs
//! the keys it changed; each process reads the other processes' rows, drops the changed keys
//! from its cache unless it already holds that version, and broadcasts them as it does its own
//! writes. This is what keeps the caches coherent; the `NOTIFY` wake-ups (`notify`, received in
//! `listen`) only make it sooner.
//!
//! Rows are read by transaction id, not by `seq`: sequence values are drawn before their
//! transactions commit, so they become visible out of order, and a reader that kept "the
//! highest seq seen" would skip a slow transaction's rows for good. Each read returns the rows
//! of every transaction at or above `floor`, with the snapshot's horizon
//! (`pg_snapshot_xmin(pg_current_snapshot())`): every transaction below the horizon had finished
//! when the rows were read, so the rows below it are final and the next read starts there.
//! Rows at or above it already seen are remembered by `seq` until the floor passes them. A
//! long-running write transaction anywhere on the server holds the horizon back: reads then
//! return more rows (skipped as seen), never fewer.
//!
//! Pruning: each reader deletes the rows of transactions that had finished `KEEP` ago (it
//! remembers its highest `seq` and its floor over time: a row goes when both were past it
//! `KEEP` ago, so a transaction that ran long keeps its rows for `KEEP` after its end, not its
//! start). A reader that could not read for `KEEP / 2` may have missed pruned rows: it drops its
//! whole cache, as after a lost `LISTEN` connection.
//!
//! Owns: the reader's position and the pruning. Must not touch: writes.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use sqlx::postgres::PgPool;

use super::Target;
use super::listen::Receivers;
use crate::engine::ObjectKey;
use crate::standalone::rows::{SECRET_KIND, kind_from_str};
use crate::standalone::watch::SecretName;

/// How often the log is read.
pub(super) const POLL: Duration = Duration::from_millis(500);

/// How long rows are kept after their transaction ended (`PgObjects::open_with_change_log`
/// sets another for tests). A process prunes every quarter of it.
pub(super) const KEEP: Duration = Duration::from_secs(120);

/// Rows deleted per pruning statement.
const PRUNE_BATCH: i64 = 10_000;

/// One process's position in the log.
pub(super) struct Reader {
    origin: String,
    /// Every transaction below this had finished at the last read (an xid8, as PostgreSQL
    /// prints it).
    floor: u64,
    /// Rows at or above `floor` already handled: seq → xid.
    seen: HashMap<i64, u64>,
    last_read: Instant,
    keep: Duration,
    /// (when, the highest seq then, the floor then), oldest first, for pruning.
    marks: VecDeque<(Instant, i64, u64)>,
    last_prune: Instant,
}

/// The snapshot's horizon now: transactions that begin later have ids at or above it.
pub(super) async fn horizon(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let (h,): (String,) =
        sqlx::query_as("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetch_one(pool).await?;
    Ok(h.parse().unwrap_or(0))
}

type LogRow = (String, Option<i64>, Option<String>, Option<String>, Option<String>, Option<String>, Option<i64>);

impl Reader {
    /// A reader that reads what commits from now on (`floor` from `horizon`).
    pub(super) fn new(origin: String, floor: u64, keep: Duration) -> Self {
        let now = Instant::now();
        Reader { origin, floor, seen: HashMap::new(), last_read: now, keep, marks: VecDeque::new(), last_prune: now }
    }

    /// Read the log once, dispatching new rows to `to`.
    pub(super) async fn read(&mut self, pool: &PgPool, target: &Target, to: &Receivers) {
        if self.last_read.elapsed() > self.keep / 2 {
            // Rows this process never read may be pruned by now.
            tracing::warn!(database = %target, "the change log was not read for a while; dropping the object cache");
            to.cache.clear();
            to.sealed.clear();
        }
        let rows: Vec<LogRow> = match sqlx::query_as(
            "SELECT h.x::text, c.seq, c.xid::text, c.kind, c.namespace, c.name, c.rv
               FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS x) h
               LEFT JOIN calsync_changes c ON c.xid >= $1::text::xid8 AND c.origin <> $2
              ORDER BY c.seq",
        )
        .bind(self.floor.to_string())
        .bind(&self.origin)
        .fetch_all(pool)
        .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(database = %target, error = %super::db_err(e), "cannot read the change log; retrying");
                return;
            }
        };
        self.last_read = Instant::now();
        let mut horizon = self.floor;
        for (h, seq, xid, kind, namespace, name, rv) in rows {
            horizon = h.parse().unwrap_or(horizon);
            let (Some(seq), Some(xid), Some(kind), Some(namespace), Some(name)) = (seq, xid, kind, namespace, name)
            else {
                continue;
            };
            let xid: u64 = xid.parse().unwrap_or(0);
            if self.seen.insert(seq, xid).is_some() {
                continue;
            }
            dispatch(&kind, namespace, name, rv, to);
        }
        // Rows below the horizon are final: the next read starts there.
        self.floor = self.floor.max(horizon);
        let floor = self.floor;
        self.seen.retain(|_, xid| *xid >= floor);
    }

    /// Delete rows older than `keep`, every quarter of it.
    pub(super) async fn prune(&mut self, pool: &PgPool, target: &Target) {
        if self.last_prune.elapsed() < self.keep / 4 && !self.marks.is_empty() {
            return;
        }
        self.last_prune = Instant::now();
        match sqlx::query_as::<_, (i64,)>("SELECT COALESCE(MAX(seq), 0) FROM calsync_changes").fetch_one(pool).await {
            Ok((top,)) => self.marks.push_back((Instant::now(), top, self.floor)),
            Err(e) => {
                tracing::debug!(database = %target, error = %super::db_err(e), "cannot prune the change log");
                return;
            }
        }
        // The newest mark at least KEEP old: rows up to its seq, of transactions below its floor,
        // were final KEEP ago.
        let mut upto = None;
        while self.marks.front().is_some_and(|(at, _, _)| at.elapsed() >= self.keep) {
            upto = self.marks.pop_front().map(|(_, seq, floor)| (seq, floor));
        }
        let Some((upto, floor)) = upto else { return };
        loop {
            // SKIP LOCKED: other processes prune the same rows at about the same time.
            match sqlx::query(
                "DELETE FROM calsync_changes WHERE seq IN
                   (SELECT seq FROM calsync_changes WHERE seq <= $1 AND xid < $3::text::xid8
                     ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .bind(upto)
            .bind(PRUNE_BATCH)
            .bind(floor.to_string())
            .execute(pool)
            .await
            {
                Ok(done) if done.rows_affected() == PRUNE_BATCH as u64 => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!(database = %target, error = %super::db_err(e), "cannot prune the change log");
                    break;
                }
            }
        }
    }
}

/// Drop and broadcast one changed key (from the log, or a wake-up: `rv` unknown).
pub(super) fn dispatch(kind: &str, namespace: String, name: String, rv: Option<i64>, to: &Receivers) {
    // No subscribers is fine.
    if kind == SECRET_KIND {
        to.sealed.invalidate(&namespace, &name);
        let _ = to.secret_changes.send(SecretName { namespace, name });
    } else if let Some(kind) = kind_from_str(kind) {
        let key = ObjectKey { kind, namespace, name };
        // A version this process already holds (it read the row after the change, or the
        // wake-up came first and it re-read) is no news.
        if to.cache.invalidate_unless_held(&key, rv.and_then(|v| u64::try_from(v).ok())) {
            let _ = to.changes.send(key);
        }
    }
}
