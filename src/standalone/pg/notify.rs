//! Wake-ups after COMMIT: the keys a process committed are sent to the others with `pg_notify`
//! from one connection of its own, after the data transactions, batched, with
//! `synchronous_commit = off`.
//!
//! Why not in the data transaction, as before schema version 4: PostgreSQL holds one
//! server-wide lock from a notifying transaction's pre-commit through its WAL flush
//! (`PreCommit_Notify` in `async.c`), so every calsync commit on a server ran one at a time and
//! none shared an fsync. Here only this connection's short transactions take that lock, and
//! none waits for a flush under it (a wake-up lost in a crash costs only latency).
//!
//! Correctness does not depend on these: other processes read the change log
//! (`calsync_changes`, `changes`), which the data transactions write. A wake-up only lets them
//! drop a changed key and react before their next read of the log. The payload keeps the format
//! every earlier version sends and parses, so a previous version still running during an upgrade
//! keeps learning of this one's writes.
//!
//! Owns: the wake-up connection and its queue. Must not touch: data transactions.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::sync::mpsc;

use super::Target;
use super::rows::CHANNEL;

/// At most this many keys per wake-up transaction (a burst is sent in several).
const BATCH: usize = 2_000;

/// How long a wake-up waits for more keys: the latency it adds to other processes' reactions.
const GATHER: Duration = Duration::from_millis(5);

/// The sending side, kept by the store: never blocks a commit.
pub(super) struct Notifier {
    queue: mpsc::UnboundedSender<String>,
}

impl Notifier {
    /// Queue payloads (`rows::notice`) for the next wake-up.
    pub(super) fn send(&self, payloads: impl IntoIterator<Item = String>) {
        for p in payloads {
            // Closed only when the task ended with the store: nothing left to wake.
            let _ = self.queue.send(p);
        }
    }
}

/// Start the task that sends queued payloads; it ends when the `Notifier` is dropped.
pub(super) fn spawn(options: &PgConnectOptions, target: Target) -> (Notifier, tokio::task::JoinHandle<()>) {
    let (queue, mut pending) = mpsc::unbounded_channel::<String>();
    // Only this connection's transactions are asynchronous: data transactions keep the
    // database's durable setting, as acknowledged writes must.
    let options = options.clone().options([("synchronous_commit", "off")]);
    let task = tokio::spawn(async move {
        let mut conn: Option<PgConnection> = None;
        let mut batch = HashSet::new();
        while let Some(first) = pending.recv().await {
            batch.insert(first);
            // Gather the commits of the next moments into the same wake-up: sent one by one
            // they were 23,000 transactions in the 10,000-task bulk bench, one per commit.
            tokio::time::sleep(GATHER).await;
            while batch.len() < BATCH {
                match pending.try_recv() {
                    Ok(p) => {
                        batch.insert(p);
                    }
                    Err(_) => break,
                }
            }
            let payloads: Vec<String> = batch.drain().collect();
            if conn.is_none() {
                match super::connect::connect(&options, &target).await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        // Other processes read the change log within its poll interval.
                        tracing::debug!(database = %target, error = %e, "cannot open the wake-up connection; other processes see these changes at their next read of the change log");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            if let Err(e) = sqlx::query("SELECT count(pg_notify($1, p)) FROM UNNEST($2::text[]) AS p")
                .bind(CHANNEL)
                .bind(&payloads)
                .execute(&mut *c)
                .await
            {
                tracing::debug!(database = %target, error = %super::db_err(e), "a wake-up was not sent; other processes see these changes at their next read of the change log");
                conn = None;
            }
        }
    });
    (Notifier { queue }, task)
}
