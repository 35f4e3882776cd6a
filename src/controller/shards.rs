//! Sharded controllers: how several `calsync controller` replicas share the work with one writer
//! per CalendarConnection. A connection (`namespace/name`; a TaskSync by its connection ref, so a
//! connection's TaskSyncs and its rate limiter stay in one process) hashes to one of N shards;
//! each shard is a `coordination.k8s.io` Lease (`<lease-name>-shard-<i>`; with one shard the Lease
//! is `<lease-name>` itself, as before sharding). The algorithm mirrors `standalone::pg::shards`:
//! every duration/3 a replica renews its presence Lease (`<lease-name>-replica-<hash>`) and its
//! shard Leases, counts the live replicas (distinct holders of unexpired Leases, itself
//! included), claims free or expired shards up to its fair share ceil(N / live) and gives back
//! surplus ones when others join. A shard given back stays unclaimable for `HANDOVER` so the
//! reconciles this replica already runs on it finish first; the shards of a replica that died
//! expire after the lease duration and are taken over. Every write is the client-go
//! read-modify-write with the resourceVersion as precondition, so two replicas racing for a shard
//! cannot both win.
//!
//! Each shard's right is a `Leadership` (valid until the last renewal + duration minus a margin).
//! Reconciles run only for held shards; calendar writes need at least one valid shard (see the
//! `WriteGate` impl for why not the target connection's), so a replica stops writing before
//! anyone else may take its shards over.
//!
//! Owns: the shard and presence Leases and this replica's view of them. Must not touch:
//! reconciles (run.rs asks `owns_connection`) or calendar calls (gated through `WriteGate`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use tokio::sync::watch;

use super::leader::{Leadership, LeaseConfig};

/// Most shards a deployment may have (`--shards`).
pub const MAX_SHARDS: u32 = 256;
/// How long a shard given back stays unclaimable: time for the reconciles already running on it
/// here to end (as `standalone::pg::shards::HANDOVER`).
pub const HANDOVER: Duration = Duration::from_secs(6);
/// Label on every Lease of one set (value: the lease name), for `kubectl get lease -l`.
pub const SET_LABEL: &str = "calendar.getitdone.app/lease-set";
/// Label on shard Leases: how many shards the replica that wrote it has. Replicas with another
/// count hash connections differently, so a replica claims nothing while one of those holds a
/// Lease (a `--shards` change rolls out without two writers for a connection).
pub const COUNT_LABEL: &str = "calendar.getitdone.app/shards";
/// Presence Leases of replicas gone this long are deleted by whoever sees them.
const STALE_PRESENCE: SignedDuration = SignedDuration::from_secs(3600);
/// Lease writes at once in one round.
const PARALLEL: usize = 16;

/// FNV-1a (64 bit): stable across processes, versions and platforms, unlike std's hasher.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The shard of the CalendarConnection `namespace/name`.
pub fn shard_of(namespace: &str, connection: &str, shards: u32) -> u32 {
    let h = fnv1a(format!("{namespace}/{connection}").as_bytes());
    u32::try_from(h % u64::from(shards.max(1))).unwrap_or(0)
}

/// How many shards one of `live` replicas should hold: ceil(shards / live).
pub fn fair_share(shards: u32, live: usize) -> u32 {
    let live = u32::try_from(live.max(1)).unwrap_or(u32::MAX);
    shards.div_ceil(live)
}

/// Why a shard count is refused.
#[derive(Debug, thiserror::Error)]
#[error("CALSYNC_SHARDS (--shards) must be a whole number from 1 to {MAX_SHARDS}, got {0:?}")]
pub struct BadShardCount(pub String);

/// Parse `--shards` / `CALSYNC_SHARDS`.
pub fn parse_shards(raw: &str) -> Result<u32, BadShardCount> {
    match raw.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_SHARDS).contains(&n) => Ok(n),
        _ => Err(BadShardCount(raw.to_string())),
    }
}

/// This replica's shards: one `Leadership` per shard. Cheap to clone.
#[derive(Clone)]
pub struct Shards {
    slots: Arc<[Leadership]>,
    gained: watch::Sender<u64>,
    /// Made from a single-Lease `Leadership`, whose own changes tell of gains.
    single: bool,
}

impl Shards {
    /// Holding none until an elector claims some.
    pub fn new(count: u32) -> Self {
        let slots: Vec<Leadership> = (0..count.max(1)).map(|_| Leadership::follower()).collect();
        Shards { slots: slots.into(), gained: watch::channel(0).0, single: false }
    }

    /// Holding all of them for good (leader election off: one replica only).
    pub fn all(count: u32) -> Self {
        let slots: Vec<Leadership> = (0..count.max(1)).map(|_| Leadership::always()).collect();
        Shards { slots: slots.into(), gained: watch::channel(0).0, single: false }
    }

    pub fn count(&self) -> u32 {
        u32::try_from(self.slots.len()).unwrap_or(u32::MAX)
    }

    /// The right to write for shard `i` (shard 0's holder also does the singleton duties).
    pub fn shard(&self, i: u32) -> &Leadership {
        &self.slots[usize::try_from(i).unwrap_or(0) % self.slots.len()]
    }

    /// Shards held (and still valid) now.
    pub fn held(&self) -> Vec<u32> {
        (0..self.count()).filter(|i| self.shard(*i).is_leader()).collect()
    }

    /// Whether this replica reconciles and writes for the connection `namespace/name` now.
    pub fn owns_connection(&self, namespace: &str, connection: &str) -> bool {
        self.shard(shard_of(namespace, connection, self.count())).is_leader()
    }

    /// Yields when this replica gains shards (their objects need a reconcile at once).
    pub fn gains(&self) -> futures::stream::BoxStream<'static, ()> {
        if self.single {
            return futures::stream::unfold(self.shard(0).subscribe(), |mut rx| async move {
                loop {
                    rx.changed().await.ok()?;
                    if *rx.borrow_and_update() {
                        return Some(((), rx));
                    }
                }
            })
            .boxed();
        }
        futures::stream::unfold(self.gained.subscribe(), |mut rx| async move {
            rx.changed().await.ok()?;
            rx.borrow_and_update();
            Some(((), rx))
        })
        .boxed()
    }
}

/// One shard held as `leadership` says (the single-Lease `Elector`, tests).
impl From<Leadership> for Shards {
    fn from(leadership: Leadership) -> Self {
        Shards { slots: vec![leadership].into(), gained: watch::channel(0).0, single: true }
    }
}

// Calendar writes only while this replica holds at least one shard Lease that has not lapsed,
// checked before every write, so a replica whose renewals fail stops writing mid-reconcile
// before anyone can take its shards over. Per replica, not per connection (as
// `standalone::pg::shards`): a TaskSync moving between two connections of its user (routing)
// deletes its old copy through the other connection, which may hash to another replica's shard,
// and that delete is part of this TaskSync's reconcile, which only the holder of its own
// connection's shard runs (`run.rs` checks `owns_connection` before every reconcile). A shard
// given back while one of its reconciles still runs is covered by `HANDOVER`.
impl crate::providers::gate::WriteGate for Shards {
    fn refuse(&self, _connection: &str) -> Option<(&'static str, &'static str)> {
        self.held().is_empty().then_some((
            "NotLeader",
            "this replica holds no valid shard lease (renewals failing or none claimed yet); the holders do the writes",
        ))
    }
}

/// Why one round failed.
#[derive(Debug, thiserror::Error)]
#[error("the shard Leases in {namespace} could not be read: {source}")]
pub struct RoundError {
    namespace: String,
    source: kube::Error,
}

fn micro_now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref().filter(|h| !h.is_empty())
}

/// Whether nobody may count on `lease` any more (claimable), at `now`.
fn expired(lease: &Lease, now: Timestamp) -> bool {
    let Some(spec) = lease.spec.as_ref() else { return true };
    match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(renew), Some(secs)) => renew.0 + SignedDuration::from_secs(i64::from(secs)) < now,
        _ => true,
    }
}

/// Keeps this replica's shard Leases; one per process.
pub struct ShardElector {
    api: Api<Lease>,
    config: LeaseConfig,
    shards: Shards,
}

impl ShardElector {
    pub fn new(client: Client, config: LeaseConfig, shards: Shards) -> Self {
        ShardElector { api: Api::namespaced(client, &config.namespace), config, shards }
    }

    fn count(&self) -> u32 {
        self.shards.count()
    }

    fn lease_name(&self, shard: u32) -> String {
        if self.count() == 1 { self.config.name.clone() } else { format!("{}-shard-{shard}", self.config.name) }
    }

    fn presence_name(&self) -> String {
        format!("{}-replica-{:016x}", self.config.name, fnv1a(self.config.identity.as_bytes()))
    }

    fn duration_secs(&self) -> i32 {
        i32::try_from(self.config.duration.as_secs()).unwrap_or(i32::MAX).max(1)
    }

    fn metadata(&self, name: String, shard: bool) -> ObjectMeta {
        let mut labels = BTreeMap::from([(SET_LABEL.to_string(), self.config.name.clone())]);
        if shard {
            labels.insert(COUNT_LABEL.to_string(), self.count().to_string());
        }
        ObjectMeta { name: Some(name), labels: Some(labels), ..Default::default() }
    }

    /// The shard count a Lease of this set belongs to (`None`: not a shard Lease).
    fn count_of(&self, lease: &Lease) -> Option<u32> {
        let name = lease.metadata.name.as_deref()?;
        if name == self.config.name {
            return Some(1);
        }
        name.strip_prefix(&format!("{}-shard-", self.config.name))?;
        lease.metadata.labels.as_ref()?.get(COUNT_LABEL)?.parse().ok()
    }

    /// Write `lease` (create when it has no resourceVersion); false when someone else wrote first.
    async fn write(&self, name: &str, lease: &Lease) -> bool {
        let pp = PostParams { field_manager: Some("calsync-leader".into()), ..Default::default() };
        let r = if lease.metadata.resource_version.is_none() {
            self.api.create(&pp, lease).await
        } else {
            self.api.replace(name, &pp, lease).await
        };
        match r {
            Ok(_) => true,
            Err(kube::Error::Api(s)) if s.code == 409 => false,
            Err(e) => {
                tracing::info!(lease = name, error = %e, "could not write a shard lease");
                false
            }
        }
    }

    /// `lease` (or a new one) as held by this replica from now on.
    fn take(&self, name: String, current: Option<Lease>, shard: bool) -> Lease {
        let me = self.config.identity.clone();
        let mut lease = current.unwrap_or_else(|| Lease { metadata: self.metadata(name.clone(), shard), spec: None });
        let fresh = self.metadata(name, shard);
        lease.metadata.labels.get_or_insert_default().extend(fresh.labels.unwrap_or_default());
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(me.as_str()) {
            spec.holder_identity = Some(me);
            spec.acquire_time = Some(micro_now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(micro_now());
        spec.lease_duration_seconds = Some(self.duration_secs());
        lease
    }

    /// One round: presence, renewals, then give back or claim. Returns the shards held.
    pub async fn round(&self) -> Result<BTreeSet<u32>, RoundError> {
        let started = Instant::now();
        let count = self.count();
        let me = self.config.identity.as_str();
        let list = self
            .api
            .list(&ListParams::default())
            .await
            .map_err(|source| RoundError { namespace: self.config.namespace.clone(), source })?;
        let now = Timestamp::now();
        let mut by_name: BTreeMap<String, Lease> = BTreeMap::new();
        let mut live = BTreeSet::from([me.to_string()]);
        let mut blocked = false;
        let presence_prefix = format!("{}-replica-", self.config.name);
        for lease in list.items {
            let Some(name) = lease.metadata.name.clone() else { continue };
            let theirs = holder(&lease).filter(|h| *h != me);
            if let Some(h) = holder(&lease)
                && !expired(&lease, now)
            {
                live.insert(h.to_string());
            }
            if theirs.is_some() && !expired(&lease, now) && self.count_of(&lease).is_some_and(|c| c != count) {
                blocked = true;
            }
            if count > 1 && name.starts_with(&presence_prefix) && name != self.presence_name() {
                self.forget_stale_presence(&lease, now).await;
            }
            by_name.insert(name, lease);
        }
        if count > 1 {
            let name = self.presence_name();
            let presence = self.take(name.clone(), by_name.remove(&name), false);
            self.write(&name, &presence).await;
        }
        // Renew what is ours (a Lease of ours that expired unnoticed is renewed too if nobody
        // took it: the resourceVersion precondition decides).
        let mine: Vec<u32> = (0..count)
            .filter(|i| by_name.get(&self.lease_name(*i)).and_then(holder) == Some(me))
            .filter(|_| !blocked)
            .collect();
        let mut held = self.write_all(mine, &by_name).await;
        let target = fair_share(count, live.len());
        let have = u32::try_from(held.len()).unwrap_or(u32::MAX);
        if have > target {
            // Give back the highest ones: no new write starts on them here from now on.
            let extra: Vec<u32> = held.iter().rev().take((have - target) as usize).copied().collect();
            for shard in &extra {
                held.remove(shard);
                self.shards.shard(*shard).set(None);
            }
            self.give_back(&extra).await;
        } else if have < target && !blocked {
            // Start at a replica-specific shard so replicas joining together race less.
            let offset = u32::try_from(fnv1a(me.as_bytes()) % u64::from(count)).unwrap_or(0);
            let free: Vec<u32> = (0..count)
                .map(|i| (i + offset) % count)
                .filter(|i| !held.contains(i))
                .filter(|i| by_name.get(&self.lease_name(*i)).is_none_or(|l| expired(l, now)))
                .take((target - have) as usize)
                .collect();
            held.extend(self.write_all(free, &by_name).await);
        }
        let valid_until = started + self.config.duration - self.config.duration / 6;
        let mut gained = false;
        for i in 0..count {
            let slot = self.shards.shard(i);
            if held.contains(&i) {
                gained |= !slot.is_leader();
                slot.set(Some(valid_until));
            } else {
                slot.set(None);
            }
        }
        if gained {
            self.shards.gained.send_modify(|n| *n += 1);
        }
        Ok(held)
    }

    /// Take or renew each of `shards`; the ones written.
    async fn write_all(&self, shards: Vec<u32>, by_name: &BTreeMap<String, Lease>) -> BTreeSet<u32> {
        futures::stream::iter(shards)
            .map(|i| async move {
                let name = self.lease_name(i);
                let lease = self.take(name.clone(), by_name.get(&name).cloned(), true);
                self.write(&name, &lease).await.then_some(i)
            })
            .buffer_unordered(PARALLEL)
            .filter_map(|i| async move { i })
            .collect()
            .await
    }

    /// Hand `shards` back: free, but unclaimable for `HANDOVER`.
    async fn give_back(&self, shards: &[u32]) {
        for i in shards {
            self.free(&self.lease_name(*i), Some(HANDOVER)).await;
        }
    }

    /// Clear our hold of a Lease: claimable after `wait`, or at once.
    async fn free(&self, name: &str, wait: Option<Duration>) {
        let Ok(Some(mut lease)) = self.api.get_opt(name).await else { return };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        match wait {
            Some(w) => {
                spec.renew_time = Some(micro_now());
                spec.lease_duration_seconds = Some(i32::try_from(w.as_secs()).unwrap_or(i32::MAX).max(1));
            }
            None => spec.renew_time = None,
        }
        if let Err(e) = self.api.replace(name, &PostParams::default(), &lease).await {
            tracing::warn!(lease = name, error = %e, "could not release a shard lease; it expires on its own");
        }
    }

    async fn forget_stale_presence(&self, lease: &Lease, now: Timestamp) {
        let renewed = lease.spec.as_ref().and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
        if renewed.is_some_and(|t| t + STALE_PRESENCE < now)
            && let Some(name) = lease.metadata.name.as_deref()
        {
            let _ = self.api.delete(name, &DeleteParams::default()).await;
        }
    }

    /// Release everything held (graceful shutdown), so others take over at once.
    pub async fn release(&self) {
        let held = self.shards.held();
        for i in 0..self.count() {
            self.shards.shard(i).set(None);
        }
        for i in held {
            self.free(&self.lease_name(i), None).await;
        }
        if self.count() > 1 {
            let _ = self.api.delete(&self.presence_name(), &DeleteParams::default()).await;
        }
    }

    /// Renew and rebalance every duration/3 until `shutdown` resolves; then release.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let period = (self.config.duration / 3).max(Duration::from_millis(100));
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            match self.round().await {
                Ok(held) => tracing::debug!(held = held.len(), shards = self.count(), "shard leases"),
                Err(e) => {
                    tracing::info!(error = %e, "cannot renew shard leases; writes stop when they may have expired")
                }
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(period) => {}
            }
        }
        self.release().await;
    }
}

#[cfg(test)]
#[path = "shards_tests.rs"]
mod tests;
