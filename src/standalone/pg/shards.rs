//! Shard leases: how several `calsync standalone` replicas on one PostgreSQL database share the
//! engine's work with one writer per object. Every object key hashes to one of `SHARDS` shards
//! (the queue asks with a TaskSync's connection key, so a connection's TaskSyncs share its
//! shard); a replica reconciles only objects of shards it holds a lease row for. Each replica heartbeats
//! every `TICK` (renewing its leases for `TTL`), counts the live replicas and claims free or
//! expired shards up to its fair share (releasing extras, so a replica that joins gets work);
//! the shards of a replica that died expire after `TTL` and are taken over.
//!
//! A replica that cannot reach the database stops reconciling, and stops every calendar write
//! even in the middle of a reconcile (`WriteGate`, wrapped around the engine's connector), once
//! its leases may have expired (`TTL` minus a margin after the last successful renewal), and
//! takes shards again when it has the database back. A shard given back to make room for a
//! joining replica stays unclaimable for `HANDOVER`, so reconciles this replica already started
//! on it finish before the new holder starts its own.
//!
//! Owns: the lease rows and this replica's view of them. Must not touch: the queue's scheduling
//! (it asks `owns`) or objects.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::postgres::PgPool;
use tokio::sync::watch;
use tokio::time::Instant;

use super::db_err;
use crate::engine::{ObjectKey, StoreError};
use crate::standalone::rows::kind_str;

/// Shards (rows of `shard_leases`; migration 2 creates them).
pub const SHARDS: u32 = 64;
/// How often a replica renews and rebalances.
pub const TICK: Duration = Duration::from_secs(2);
/// How long a lease lasts without renewal.
pub const TTL: Duration = Duration::from_secs(10);
/// Stop reconciling this long before our leases may have expired (clock skew, slow renewal).
const MARGIN: Duration = Duration::from_secs(2);
/// How long a shard given back stays free before another replica may claim it: time for the
/// reconciles already running on it here to end (most end within a second or two; a longer one
/// that still writes is covered by the engine's deterministic event keys and If-Match updates).
pub const HANDOVER: Duration = Duration::from_secs(6);

/// The shard of an object (stable across processes and versions).
pub fn shard_of(key: &ObjectKey) -> u32 {
    let digest = Sha256::digest(format!("{}/{}/{}", kind_str(key.kind), key.namespace, key.name).as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % SHARDS
}

#[derive(Default)]
struct View {
    held: BTreeSet<u32>,
    valid_until: Option<Instant>,
}

/// This replica's shard leases, kept by a background task.
#[derive(Clone)]
pub struct Shards {
    view: Arc<Mutex<View>>,
    gained: watch::Receiver<u64>,
    task: Arc<tokio::task::JoinHandle<()>>,
    id: String,
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shards").field("replica", &self.id).field("held", &self.held().len()).finish()
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

impl Shards {
    /// Start holding leases as replica `id` (the store's origin).
    pub(super) async fn start(pool: PgPool, id: String) -> Result<Shards, StoreError> {
        let view = Arc::new(Mutex::new(View::default()));
        let (gained_tx, gained) = watch::channel(0u64);
        // One round now, so a single replica owns everything before its queue starts.
        let mut round = Round { pool, id: id.clone(), view: view.clone(), gained: gained_tx };
        round.run().await?;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = round.run().await {
                    tracing::warn!(error = %e, "cannot renew shard leases; reconciling stops when they may have expired");
                }
            }
        });
        Ok(Shards { view, gained, task: Arc::new(task), id })
    }

    /// Whether this replica reconciles `key` now.
    pub fn owns(&self, key: &ObjectKey) -> bool {
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        view.valid_until.is_some_and(|t| Instant::now() < t) && view.held.contains(&shard_of(key))
    }

    /// Whether this replica's leases are still certainly valid (it has had the database recently).
    pub fn live(&self) -> bool {
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        view.valid_until.is_some_and(|t| Instant::now() < t)
    }

    /// Ticks when this replica gains shards (their objects need a look).
    pub fn gained(&self) -> watch::Receiver<u64> {
        self.gained.clone()
    }

    /// The shards held now.
    pub fn held(&self) -> BTreeSet<u32> {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).held.clone()
    }
}

/// Calendar writes stop the moment this replica's leases may have expired, also in the middle of
/// a reconcile. Not per connection: a TaskSync moving between two connections of its user writes
/// to both calendars, and its writer is the holder of the TaskSync's shard, whoever holds the
/// other connection's.
impl crate::providers::gate::WriteGate for Shards {
    fn refuse(&self, _connection: &str) -> Option<(&'static str, &'static str)> {
        (!self.live()).then_some((
            "NoLease",
            "this replica cannot renew its shard leases (database unreachable); another replica takes its work over",
        ))
    }
}

struct Round {
    pool: PgPool,
    id: String,
    view: Arc<Mutex<View>>,
    gained: watch::Sender<u64>,
}

impl Round {
    async fn run(&mut self) -> Result<(), StoreError> {
        let started = Instant::now();
        let ttl = format!("{} seconds", TTL.as_secs());
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query(
            "INSERT INTO replicas (id, seen_at) VALUES ($1, now()) ON CONFLICT (id) DO UPDATE SET seen_at = now()",
        )
        .bind(&self.id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query("DELETE FROM replicas WHERE seen_at < now() - interval '1 hour'")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let (live,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM replicas WHERE seen_at > now() - $1::interval")
            .bind(&ttl)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        let live = live.max(1);
        let target = (i64::from(SHARDS) + live - 1) / live;
        let mine: Vec<(i32,)> = sqlx::query_as(
            "UPDATE shard_leases SET expires_at = now() + $2::interval WHERE holder = $1 RETURNING shard",
        )
        .bind(&self.id)
        .bind(&ttl)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        let mut held: BTreeSet<u32> = mine.into_iter().filter_map(|(s,)| u32::try_from(s).ok()).collect();
        let count = i64::try_from(held.len()).unwrap_or(i64::MAX);
        if count > target {
            // Give back the highest ones: no new reconcile starts on them here from now on, and
            // others may claim them (they claim expired rows) once what runs here has ended.
            let extra: Vec<i32> = held.iter().rev().take((count - target) as usize).map(|s| *s as i32).collect();
            sqlx::query(
                "UPDATE shard_leases SET holder = '', expires_at = now() + $3::interval
                 WHERE holder = $1 AND shard = ANY($2)",
            )
            .bind(&self.id)
            .bind(&extra)
            .bind(format!("{} seconds", HANDOVER.as_secs()))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            for s in extra {
                held.remove(&(s as u32));
            }
        } else if count < target {
            let claimed: Vec<(i32,)> = sqlx::query_as(
                "UPDATE shard_leases SET holder = $1, expires_at = now() + $2::interval
                 WHERE shard IN (SELECT shard FROM shard_leases WHERE expires_at < now()
                                 ORDER BY shard LIMIT $3 FOR UPDATE SKIP LOCKED)
                 RETURNING shard",
            )
            .bind(&self.id)
            .bind(&ttl)
            .bind(target - count)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
            held.extend(claimed.into_iter().filter_map(|(s,)| u32::try_from(s).ok()));
        }
        tx.commit().await.map_err(db_err)?;
        let gained = {
            let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
            let gained = held.iter().any(|s| !view.held.contains(s));
            view.held = held;
            view.valid_until = Some(started + TTL - MARGIN);
            gained
        };
        if gained {
            self.gained.send_modify(|n| *n += 1);
        }
        Ok(())
    }
}
