//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder reconciles and writes
//! to calendars. `Leadership` is also the right to one shard in `shards`, whose `ShardElector`
//! is what `calsync controller` runs (with one shard on this same Lease name); `Elector` stays
//! for embedding a single-Lease controller (tests).
//!
//! Owns: the Lease (acquire, renew every duration/3, release on shutdown) and the local view of
//! "am I the leader", which turns false the moment a renewal fails or the local deadline passes
//! — before any other replica can take the lease over. Must not touch: reconciles themselves.
//!
//! Why not kube-lease-manager (0.13 does build on kube 5): its acquire is a server-side apply
//! without a resourceVersion precondition and relies on field-manager conflicts for fencing, and
//! its renew is a strategic-merge patch. The client-go algorithm used here is a plain
//! read-modify-write with the resourceVersion as precondition, so two replicas racing for an
//! expired lease cannot both win (one gets a 409), and that is exactly what the strict fake API
//! server in the tests enforces.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica (POD_NAME).
    pub identity: String,
    /// How long a lease is valid after a renewal; renewals happen every third of it.
    pub duration: Duration,
}

#[derive(Default)]
struct Local {
    /// Until when this replica may act as leader (its last successful renewal + duration,
    /// minus a safety margin for clock rate differences). `None`: not the leader.
    valid_until: Option<Instant>,
}

/// Whether this replica is the leader right now. Cheap to clone and check.
#[derive(Clone)]
pub struct Leadership {
    local: Arc<Mutex<Local>>,
    changes: watch::Sender<bool>,
}

// The controller writes to calendars only as leader, whatever the connection.
impl crate::providers::gate::WriteGate for Leadership {
    fn refuse(&self, _connection: &str) -> Option<(&'static str, &'static str)> {
        (!self.is_leader())
            .then_some(("NotLeader", "this replica lost the leader lease; the new leader will do the write"))
    }
}

impl Leadership {
    /// Always leader (leader election disabled, single replica, tests).
    pub fn always() -> Self {
        let l = Self::follower();
        // A far-away deadline; checked so no platform's Instant can overflow.
        let until = [100 * 365 * 24 * 3600, 365 * 24 * 3600, 24 * 3600]
            .iter()
            .find_map(|s| Instant::now().checked_add(Duration::from_secs(*s)));
        l.set(until);
        l
    }

    /// Not the leader until an elector says so.
    pub fn follower() -> Self {
        let (changes, _) = watch::channel(false);
        Leadership { local: Arc::new(Mutex::new(Local::default())), changes }
    }

    /// True while the lease is ours and the local deadline has not passed.
    pub fn is_leader(&self) -> bool {
        let local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        local.valid_until.is_some_and(|t| Instant::now() < t)
    }

    /// Changes of leadership (true: gained), for "reconcile everything when I become leader".
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.changes.subscribe()
    }

    pub(super) fn set(&self, valid_until: Option<Instant>) {
        let was = self.is_leader();
        self.local.lock().unwrap_or_else(|e| e.into_inner()).valid_until = valid_until;
        let now = self.is_leader();
        if was != now {
            let _ = self.changes.send(now);
        }
    }
}

/// Why one election step failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("the Lease {0} was taken or changed by another replica")]
    Lost(String),
    #[error("the Lease {name} could not be read or written: {source}")]
    Api { name: String, source: kube::Error },
}

fn micro_now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// One elector per process.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    leadership: Leadership,
}

impl Elector {
    pub fn new(client: Client, config: LeaseConfig, leadership: Leadership) -> Self {
        Elector { api: Api::namespaced(client, &config.namespace), config, leadership }
    }

    fn label(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    fn api_err(&self, source: kube::Error) -> LeaseError {
        match &source {
            kube::Error::Api(s) if s.code == 409 => LeaseError::Lost(self.label()),
            _ => LeaseError::Api { name: self.label(), source },
        }
    }

    /// One attempt to acquire or renew. `Ok(true)`: we hold the lease now.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaseError> {
        let started = Instant::now();
        let duration_secs = i32::try_from(self.config.duration.as_secs()).unwrap_or(i32::MAX).max(1);
        let me = &self.config.identity;
        let pp = PostParams { field_manager: Some("calsync-leader".into()), ..Default::default() };
        let current = self.api.get_opt(&self.config.name).await.map_err(|e| self.api_err(e))?;
        let lease = match current {
            None => Lease {
                metadata: ObjectMeta { name: Some(self.config.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.clone()),
                    acquire_time: Some(micro_now()),
                    renew_time: Some(micro_now()),
                    lease_duration_seconds: Some(duration_secs),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            },
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
                let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
                    (Some(renew), Some(secs)) => {
                        renew.0 + SignedDuration::from_secs(i64::from(secs)) < Timestamp::now()
                    }
                    _ => true,
                };
                match holder {
                    Some(h) if h == *me => {}
                    Some(_) if !expired => {
                        self.leadership.set(None);
                        return Ok(false);
                    }
                    _ => {
                        spec.holder_identity = Some(me.clone());
                        spec.acquire_time = Some(micro_now());
                        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                    }
                }
                spec.renew_time = Some(micro_now());
                spec.lease_duration_seconds = Some(duration_secs);
                lease
            }
        };
        // The lease carries the resourceVersion we read: if anyone wrote in between, 409.
        let result = if lease.metadata.resource_version.is_none() {
            self.api.create(&pp, &lease).await
        } else {
            self.api.replace(&self.config.name, &pp, &lease).await
        };
        match result {
            Ok(_) => {
                // Count validity from before the GET: the other replicas measure from the
                // renewTime we wrote, which is no earlier than that. Keep a 1/6 margin so we
                // stop writing before anyone could consider the lease expired.
                let margin = self.config.duration / 6;
                self.leadership.set(Some(started + self.config.duration - margin));
                Ok(true)
            }
            Err(e) => {
                self.leadership.set(None);
                Err(self.api_err(e))
            }
        }
    }

    /// Release the lease if we hold it (graceful shutdown), so another replica takes over at
    /// once instead of after the lease expires.
    pub async fn release(&self) {
        let was_leader = self.leadership.is_leader();
        self.leadership.set(None);
        if !was_leader {
            return;
        }
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.config.identity.as_str())
        {
            spec.holder_identity = None;
            spec.renew_time = None;
            spec.acquire_time = None;
            let pp = PostParams::default();
            if let Err(e) = self.api.replace(&self.config.name, &pp, &lease).await {
                tracing::warn!(lease = %self.label(), error = %e, "could not release the lease; it expires on its own");
            }
        }
    }

    /// Acquire and renew until `shutdown` resolves; then release.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let period = (self.config.duration / 3).max(Duration::from_millis(100));
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => tracing::debug!(lease = %self.label(), "holding the lease"),
                Ok(false) => {
                    tracing::debug!(lease = %self.label(), "another replica holds the lease")
                }
                Err(e) => tracing::info!(lease = %self.label(), error = %e, "not the leader"),
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(period) => {}
            }
        }
        self.release().await;
    }
}
