//! Cross-process change notifications for the SQLite store: a reader thread polls the change
//! log for writes made by other processes on the same database (e.g. `calsync apply` next to a
//! running `calsync standalone`) and broadcasts their keys, as in-process writes are.
//!
//! Owns: the polling thread. Must not touch: writes (the store logs changes in its transactions).
//! It drops each changed key from the store's object cache before broadcasting it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::broadcast;

use super::db;
use super::rows;
use super::store::cache::Cache;
use crate::engine::{Kind, ObjectKey};

/// How often the reader thread looks for other processes' writes.
const POLL: Duration = Duration::from_millis(200);

/// A Secret's identity, as carried by `subscribe_secrets`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretName {
    pub namespace: String,
    pub name: String,
}

/// Poll the change log for other processes' writes and broadcast their keys.
pub(super) fn spawn_watcher(
    path: std::path::PathBuf,
    origin: String,
    mut last: i64,
    (changes, secret_changes): (broadcast::Sender<ObjectKey>, broadcast::Sender<SecretName>),
    cache: Arc<Cache>,
    stop: Arc<AtomicBool>,
) {
    let spawned = std::thread::Builder::new().name("calsync-store-watch".into()).spawn(move || {
        let mut reader: Option<Connection> = None;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(POLL);
            if reader.is_none() {
                reader = db::open_reader(&path)
                    .map_err(|e| tracing::warn!(error = %e, "cannot open the change-log reader"))
                    .ok();
            }
            let Some(conn) = reader.as_ref() else {
                continue;
            };
            match read_changes(conn, &origin, last).map_err(|e| e.to_string()).and_then(|(seq, keys)| {
                refresh_connections(conn, &cache, &keys)?;
                Ok((seq, keys))
            }) {
                Ok((seq, keys)) => {
                    last = seq;
                    for key in keys {
                        // No subscribers is fine.
                        match key {
                            Changed::Object(k) => {
                                // Dropped before it is announced: whoever reacts reads the new row.
                                cache.invalidate(&k);
                                let _ = changes.send(k);
                            }
                            Changed::Secret(s) => {
                                let _ = secret_changes.send(s);
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the change log; retrying");
                    reader = None;
                }
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the change-log watcher; writes by other processes are seen only at the periodic re-check");
    }
}

/// Re-read the connections another process changed, in one snapshot, before their keys are
/// broadcast (`list_connections` is answered from memory).
fn refresh_connections(conn: &Connection, cache: &Cache, keys: &[Changed]) -> Result<(), String> {
    let mut connections = keys
        .iter()
        .filter_map(|k| match k {
            Changed::Object(k) if k.kind == Kind::CalendarConnection => Some(k),
            _ => None,
        })
        .peekable();
    if connections.peek().is_none() {
        return Ok(());
    }
    let tx = conn.unchecked_transaction().map_err(|e| e.to_string())?;
    for key in connections {
        cache.connections.refresh(&tx, key).map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())
}

enum Changed {
    Object(ObjectKey),
    Secret(SecretName),
}

fn read_changes(conn: &Connection, origin: &str, after: i64) -> rusqlite::Result<(i64, Vec<Changed>)> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, origin, kind, namespace, name FROM changelog WHERE seq > ?1 ORDER BY seq LIMIT 1000",
    )?;
    let mut last = after;
    let mut keys = Vec::new();
    let rows = stmt.query_map(rusqlite::params![after], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    for row in rows {
        let (seq, o, kind, namespace, name) = row?;
        last = seq;
        if o == origin {
            continue;
        }
        if kind == rows::SECRET_KIND {
            keys.push(Changed::Secret(SecretName { namespace, name }));
        } else if let Some(kind) = rows::kind_from_str(&kind) {
            keys.push(Changed::Object(ObjectKey { kind, namespace, name }));
        }
    }
    Ok((last, keys))
}
