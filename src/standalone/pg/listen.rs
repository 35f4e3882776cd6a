//! Cross-process change notifications for the PostgreSQL store: one `LISTEN` connection per
//! process receives the keys other processes' transactions `pg_notify`d at commit and broadcasts
//! them like in-process writes, so `calsync apply` or another replica's write wakes this
//! process's engine without polling.
//!
//! Each notified key is dropped from the store's cache before it is broadcast, so a receiver
//! that re-reads it reads the database; when the connection was lost, the whole cache is
//! dropped (notifications sent meanwhile are gone).
//!
//! Owns: the listener task. Must not touch: writes (`rows::notify` sends in the write's
//! transaction). A notification lost while the connection is down is tolerable: receivers
//! re-read what they wait for (see `Objects::subscribe`) and the work queue re-checks everything
//! periodically.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::broadcast;

use super::Target;
use super::rows::CHANNEL;
use crate::engine::ObjectKey;
use crate::standalone::rows::{SECRET_KIND, kind_from_str};
use crate::standalone::store::cache::Cache;
use crate::standalone::watch::SecretName;

/// A listener already LISTENing, so no change committed after `open` returns is missed.
pub(super) async fn start(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Where other processes' changes go.
pub(super) struct Receivers {
    pub changes: broadcast::Sender<ObjectKey>,
    pub secret_changes: broadcast::Sender<SecretName>,
    pub cache: Arc<Cache>,
}

/// Receive on `listener` until aborted (the store aborts it when dropped), re-listening through
/// the pool when it fails.
pub(super) fn spawn(
    listener: PgListener,
    pool: PgPool,
    target: Target,
    origin: String,
    to: Receivers,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        let mut current = Some(listener);
        loop {
            let mut listener = match current.take() {
                Some(l) => l,
                None => match start(&pool).await {
                    Ok(l) => {
                        // Listening again: what changed while it was not is unknown.
                        to.cache.clear();
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
                        tracing::warn!(database = %target, "lost the LISTEN connection; changes made meanwhile by other processes are seen at the next re-check");
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
    // No subscribers is fine.
    if kind == SECRET_KIND {
        let _ = to.secret_changes.send(SecretName { namespace, name });
    } else if let Some(kind) = kind_from_str(&kind) {
        let key = ObjectKey { kind, namespace, name };
        to.cache.invalidate(&key);
        let _ = to.changes.send(key);
    }
}
