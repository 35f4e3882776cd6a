//! Cross-process changes for the PostgreSQL store, two ways at once: the change log
//! (`changes`, read every `changes::POLL`), which every data transaction writes and which alone
//! keeps the caches coherent, and one `LISTEN` connection per process, which receives the keys
//! other processes send right after their commits (`notify`) and broadcasts them at once, so
//! `calsync apply` or another replica's write wakes this process's engine within milliseconds.
//!
//! Each changed key is dropped from the store's cache before it is broadcast, so a receiver
//! that re-reads it reads the database; when the `LISTEN` connection was lost, the whole cache
//! is dropped. A wake-up lost (the sender crashed after its COMMIT, the connection was down) is
//! found in the log at the next read.
//!
//! Owns: the listener task. Must not touch: writes.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::broadcast;

use super::Target;
use super::changes::{self, Reader};
use super::rows::CHANNEL;
use crate::engine::ObjectKey;
use crate::standalone::store::cache::Cache;
use crate::standalone::watch::SecretName;

/// A listener already LISTENing, so no wake-up sent after `open` returns is missed.
pub(super) async fn start(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// The log reader's starting point: no change committed after `open` returns is missed (the
/// cache starts empty, so what committed before does not matter).
pub(super) async fn start_reader(pool: &PgPool, origin: String, keep: Duration) -> Result<Reader, sqlx::Error> {
    Ok(Reader::new(origin, changes::horizon(pool).await?, keep))
}

/// Where other processes' changes go.
pub(super) struct Receivers {
    pub changes: broadcast::Sender<ObjectKey>,
    pub secret_changes: broadcast::Sender<SecretName>,
    pub cache: Arc<Cache>,
    pub sealed: Arc<super::sealed::SealedCache>,
}

/// Receive on `listener` and read the log with `reader` until aborted (the store aborts the
/// task when dropped), re-listening through the pool when the listener fails.
pub(super) fn spawn(
    (listener, mut reader): (PgListener, Reader),
    pool: PgPool,
    target: Target,
    origin: String,
    to: Receivers,
) -> tokio::task::JoinHandle<()> {
    let (log_pool, log_target) = (pool.clone(), target.clone());
    let to = Arc::new(to);
    let log_to = to.clone();
    let log = async move {
        let mut tick = tokio::time::interval(changes::POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            reader.read(&log_pool, &log_target, &log_to).await;
            reader.prune(&log_pool, &log_target).await;
        }
    };
    let wakeups = async move {
        let mut backoff = Duration::from_millis(200);
        let mut current = Some(listener);
        loop {
            let mut listener = match current.take() {
                Some(l) => l,
                None => match start(&pool).await {
                    Ok(l) => {
                        // Listening again. The log has what changed meanwhile; dropping the
                        // cache as well costs re-reads only, after a rare event.
                        to.cache.clear();
                        to.sealed.clear();
                        l
                    }
                    Err(e) => {
                        tracing::warn!(database = %target, error = %super::db_err(e), "cannot LISTEN for other processes' changes; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        continue;
                    }
                },
            };
            backoff = Duration::from_millis(200);
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => dispatch(n.payload(), &origin, &to),
                    // The connection was lost. A new listener (below) is LISTENing before the
                    // cache is dropped, so nothing changed in the gap stays cached.
                    Ok(None) => {
                        tracing::warn!(database = %target, "lost the LISTEN connection; other processes' changes are seen at the next read of the change log meanwhile");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(database = %target, error = %super::db_err(e), "LISTEN failed; reconnecting");
                        break;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
        }
    };
    tokio::spawn(async move {
        tokio::join!(log, wakeups);
    })
}

fn dispatch(payload: &str, origin: &str, to: &Receivers) {
    let Ok((from, kind, namespace, name)) = serde_json::from_str::<(String, String, String, String)>(payload) else {
        tracing::debug!("ignoring a malformed change notification");
        return;
    };
    if from == origin {
        // Broadcast already, at commit.
        return;
    }
    changes::dispatch(&kind, namespace, name, None, to);
}
