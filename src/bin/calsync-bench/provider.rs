//! The bench calendar service: an in-process `Provider`/`Connector` with configurable latency,
//! a per-connection quota (requests per second and concurrent requests, enforced by answering
//! 429 + Retry-After like Google and Graph do) and injected faults (5xx, 429 with Retry-After,
//! timeouts and dropped connections, the last two *after* the write was applied, as when a
//! response is lost on the wire). It counts what a benchmark must report: calls per kind, 429s
//! provoked by exceeding the quota, retries that ignored a Retry-After, and duplicates.
//!
//! Owns: its own event map and counters. Must not touch: engine, stores or real providers. It
//! follows the `Provider` contract (idempotent create by key → `Created::Existing`, etags,
//! `If-Match`, gone-is-success delete). What live sync needs on top (a probe, incremental
//! listings, edits made by a user, per-connection counts) is in `live`, off unless asked for.

mod client;
mod live;
mod trace;

pub use client::{BenchConnector, account_info};
pub use live::ConnCalls;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use calsync::providers::{Created, EventData, ProviderError, RemoteEvent};

/// The one calendar every bench account has.
pub const CALENDAR: &str = "calendar";

/// How the service behaves. Rates are probabilities per admitted call, in `[0, 1]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct Profile {
    /// Service time of every call, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub latency_ms: u64,
    /// Quota: requests per second per connection (0 = unlimited). Exceeding it answers 429.
    #[arg(long, default_value_t = 10)]
    pub quota_rps: u32,
    /// Quota: requests in flight per connection (0 = unlimited). Exceeding it answers 429.
    #[arg(long, default_value_t = 4)]
    pub quota_concurrency: u32,
    /// Injected 5xx (before the call is applied).
    #[arg(long, default_value_t = 0.0)]
    pub fault_5xx: f64,
    /// Injected 429 with Retry-After (`--retry-after-ms`), before the call is applied.
    #[arg(long, default_value_t = 0.0)]
    pub fault_429: f64,
    /// Injected timeouts: the call is applied, the answer comes after `--timeout-ms` as an error.
    #[arg(long, default_value_t = 0.0)]
    pub fault_timeout: f64,
    /// Injected dropped connections: the call is applied, the answer is lost.
    #[arg(long, default_value_t = 0.0)]
    pub fault_drop: f64,
    /// Retry-After of injected 429s, in milliseconds (sent as whole seconds, rounded up).
    #[arg(long, default_value_t = 2000)]
    pub retry_after_ms: u64,
    /// How long an injected timeout hangs before failing, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// Seed of the fault dice (same seed, same fault sequence for the same call order).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            latency_ms: 50,
            quota_rps: 10,
            quota_concurrency: 4,
            fault_5xx: 0.0,
            fault_429: 0.0,
            fault_timeout: 0.0,
            fault_drop: 0.0,
            retry_after_ms: 2000,
            timeout_ms: 1000,
            seed: 7,
        }
    }
}

impl Profile {
    /// `total` faults split evenly over the four kinds.
    pub fn with_faults(mut self, total: f64) -> Self {
        let each = total / 4.0;
        (self.fault_5xx, self.fault_429, self.fault_timeout, self.fault_drop) = (each, each, each, each);
        self
    }

    pub fn fault_total(&self) -> f64 {
        self.fault_5xx + self.fault_429 + self.fault_timeout + self.fault_drop
    }
}

/// Provider operations, for per-kind counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Account,
    Create,
    Update,
    Delete,
    Get,
    FindByKey,
    List,
    /// The cheap "has the calendar changed?" call (CalDAV PROPFIND of the sync-token/ctag).
    Probe,
}

const OPS: [Op; 8] = [Op::Account, Op::Create, Op::Update, Op::Delete, Op::Get, Op::FindByKey, Op::List, Op::Probe];

/// A fault decided for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    ServerError,
    TooMany(Duration),
    /// Applied, then the answer is lost after this long.
    Timeout(Duration),
    /// Applied, then the connection is dropped.
    Dropped,
}

/// Counters a scenario reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Calls per operation (admitted or not).
    pub calls: BTreeMap<String, u64>,
    /// 429s answered because a connection exceeded its quota (calsync's doing; goal 0).
    pub quota_429: u64,
    /// Faults injected, by kind.
    pub injected_5xx: u64,
    pub injected_429: u64,
    pub injected_timeout: u64,
    pub injected_drop: u64,
    /// Calls for an object that came before the Retry-After its last 429 asked for.
    pub early_retries: u64,
    /// Creates answered `Existing` (adoptions after lost answers or crashes).
    pub creates_existing: u64,
    /// Events held (not deleted), and how many marker uids have more than one event.
    pub events: u64,
    pub duplicate_uids: u64,
    /// Highest number of calls seen in flight for one connection.
    pub max_in_flight: u64,
}

impl Stats {
    pub fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }

    pub fn calls_of(&self, op: Op) -> u64 {
        self.calls.get(op_name(op)).copied().unwrap_or(0)
    }
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Account => "account",
        Op::Create => "create",
        Op::Update => "update",
        Op::Delete => "delete",
        Op::Get => "get",
        Op::FindByKey => "find_by_key",
        Op::List => "list",
        Op::Probe => "probe",
    }
}

#[derive(Default)]
struct ConnQuota {
    /// Admission times within the last second.
    window: VecDeque<Instant>,
    in_flight: u32,
}

struct State {
    /// connection → event id → event.
    events: HashMap<String, BTreeMap<String, RemoteEvent>>,
    quotas: HashMap<String, ConnQuota>,
    /// (connection, object) → no call before this instant (from a 429's Retry-After).
    not_before: HashMap<(String, String), Instant>,
    rng: StdRng,
    version: u64,
    max_in_flight: u32,
    /// connection → what live sync asks of it (its version, deletions, calls made).
    journals: HashMap<String, live::Journal>,
}

/// The shared service; clone the `Arc` to share it.
pub struct BenchService {
    profile: Profile,
    state: Mutex<State>,
    /// Probes answer and listings honour cursors only in live mode (`new_live`): the other
    /// scenarios measure writes, and a probe would spend their quota.
    live: bool,
    calls: [AtomicU64; 8],
    quota_429: AtomicU64,
    injected: [AtomicU64; 4],
    early_retries: AtomicU64,
    creates_existing: AtomicU64,
    /// `CALSYNC_BENCH_TRACE=FILE`: every call, written by `write_trace`.
    trace: Option<trace::Trace>,
}

/// Releases a connection's in-flight slot when a call ends, however it ends.
struct Slot<'a> {
    service: &'a BenchService,
    conn: String,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut s = self.service.lock();
        if let Some(q) = s.quotas.get_mut(&self.conn) {
            q.in_flight = q.in_flight.saturating_sub(1);
        }
    }
}

fn ceil_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_millis().div_ceil(1000).max(1) as u64)
}

impl BenchService {
    pub fn new(profile: Profile) -> Arc<Self> {
        Self::build(profile, false)
    }

    fn build(profile: Profile, live: bool) -> Arc<Self> {
        let rng = StdRng::seed_from_u64(profile.seed);
        Arc::new(BenchService {
            profile,
            state: Mutex::new(State {
                events: HashMap::new(),
                quotas: HashMap::new(),
                not_before: HashMap::new(),
                rng,
                version: 0,
                max_in_flight: 0,
                journals: HashMap::new(),
            }),
            live,
            calls: Default::default(),
            quota_429: AtomicU64::new(0),
            injected: Default::default(),
            early_retries: AtomicU64::new(0),
            creates_existing: AtomicU64::new(0),
            trace: trace::Trace::from_env(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Only this module's short critical sections hold the lock and none can panic midway
        // through a change; keep counting with the data as it is rather than abort the bench.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admit a call or refuse it with 429 (quota), then roll the fault dice.
    fn admit(&self, conn: &str, op: Op, object: &str) -> Result<(Slot<'_>, Option<Fault>), ProviderError> {
        let idx = OPS.iter().position(|o| *o == op).unwrap_or(0);
        self.calls[idx].fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let p = &self.profile;
        let mut s = self.lock();
        s.journals.entry(conn.to_string()).or_default().calls.count(op);
        let key = (conn.to_string(), object.to_string());
        if let Some(nb) = s.not_before.remove(&key)
            && now < nb
        {
            self.early_retries.fetch_add(1, Ordering::Relaxed);
        }
        let q = s.quotas.entry(conn.to_string()).or_default();
        while q.window.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1)) {
            q.window.pop_front();
        }
        let over_rate = p.quota_rps > 0 && q.window.len() >= p.quota_rps as usize;
        let over_conc = p.quota_concurrency > 0 && q.in_flight >= p.quota_concurrency;
        if over_rate || over_conc {
            let wait = if over_rate {
                q.window.front().map_or(Duration::from_secs(1), |t| Duration::from_secs(1) - now.duration_since(*t))
            } else {
                Duration::from_secs(1)
            };
            let retry_after = ceil_secs(wait);
            s.not_before.insert(key, now + retry_after);
            self.quota_429.fetch_add(1, Ordering::Relaxed);
            return Err(ProviderError::RateLimited {
                retry_after: Some(retry_after),
                message: format!(
                    "connection quota exceeded ({} requests/s, {} in flight); retry after {} s",
                    p.quota_rps,
                    p.quota_concurrency,
                    retry_after.as_secs()
                ),
            });
        }
        q.window.push_back(now);
        q.in_flight += 1;
        let in_flight = q.in_flight;
        s.max_in_flight = s.max_in_flight.max(in_flight);
        let roll: f64 = s.rng.random();
        let fault = if roll < p.fault_5xx {
            Some(Fault::ServerError)
        } else if roll < p.fault_5xx + p.fault_429 {
            let ra = ceil_secs(Duration::from_millis(p.retry_after_ms));
            s.not_before.insert(key, now + ra);
            Some(Fault::TooMany(ra))
        } else if roll < p.fault_5xx + p.fault_429 + p.fault_timeout {
            Some(Fault::Timeout(Duration::from_millis(p.timeout_ms)))
        } else if roll < p.fault_total() {
            Some(Fault::Dropped)
        } else {
            None
        };
        if let Some(f) = fault {
            let i = match f {
                Fault::ServerError => 0,
                Fault::TooMany(_) => 1,
                Fault::Timeout(_) => 2,
                Fault::Dropped => 3,
            };
            self.injected[i].fetch_add(1, Ordering::Relaxed);
        }
        Ok((Slot { service: self, conn: conn.to_string() }, fault))
    }

    /// Run one call: quota, latency, faults, then `apply` on the event map. `Fault::Timeout` and
    /// `Fault::Dropped` come back to the caller *after* `apply` ran (the HTTP server turns them
    /// into a late 504 and a reset connection); in-process they become `Transient` errors.
    pub async fn call<T>(
        &self,
        conn: &str,
        op: Op,
        object: &str,
        apply: impl FnOnce(&mut EventMap<'_>) -> Result<T, ProviderError>,
    ) -> Result<(T, Option<Fault>), ProviderError> {
        let Some(trace) = &self.trace else {
            return self.serve(conn, op, object, apply).await;
        };
        let start = trace.now();
        let out = self.serve(conn, op, object, apply).await;
        trace.record(start, conn, op, object, &out);
        out
    }

    /// Write the call trace, if `CALSYNC_BENCH_TRACE` asked for one.
    pub fn write_trace(&self) -> anyhow::Result<()> {
        self.trace.as_ref().map_or(Ok(()), |t| t.write())
    }

    async fn serve<T>(
        &self,
        conn: &str,
        op: Op,
        object: &str,
        apply: impl FnOnce(&mut EventMap<'_>) -> Result<T, ProviderError>,
    ) -> Result<(T, Option<Fault>), ProviderError> {
        let (_slot, fault) = self.admit(conn, op, object)?;
        if self.profile.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.profile.latency_ms)).await;
        }
        match fault {
            Some(Fault::ServerError) => {
                return Err(ProviderError::Transient { message: "503 Service Unavailable (injected)".into() });
            }
            Some(Fault::TooMany(ra)) => {
                return Err(ProviderError::RateLimited {
                    retry_after: Some(ra),
                    message: format!("429 Too Many Requests (injected); retry after {} s", ra.as_secs()),
                });
            }
            _ => {}
        }
        let out = {
            let mut s = self.lock();
            let State { events, version, journals, .. } = &mut *s;
            let mut map = EventMap {
                events: events.entry(conn.to_string()).or_default(),
                version,
                journal: journals.entry(conn.to_string()).or_default(),
            };
            apply(&mut map)?
        };
        if let Some(Fault::Timeout(d)) = fault {
            tokio::time::sleep(d).await;
        }
        Ok((out, fault))
    }

    pub fn count_existing(&self) {
        self.creates_existing.fetch_add(1, Ordering::Relaxed);
    }

    /// Marker uids with their event count, over all connections.
    pub fn events_by_uid(&self) -> HashMap<String, u64> {
        let s = self.lock();
        let mut out: HashMap<String, u64> = HashMap::new();
        for ev in s.events.values().flat_map(|m| m.values()) {
            if let Some(m) = &ev.marker {
                *out.entry(m.uid.clone()).or_default() += 1;
            }
        }
        out
    }

    /// Events held now, over all connections (cheap: no per-event work).
    pub fn events_held(&self) -> u64 {
        self.lock().events.values().map(|m| m.len() as u64).sum()
    }

    pub fn stats(&self) -> Stats {
        let by_uid = self.events_by_uid();
        let s = self.lock();
        Stats {
            calls: OPS
                .iter()
                .enumerate()
                .map(|(i, op)| (op_name(*op).to_string(), self.calls[i].load(Ordering::Relaxed)))
                .collect(),
            quota_429: self.quota_429.load(Ordering::Relaxed),
            injected_5xx: self.injected[0].load(Ordering::Relaxed),
            injected_429: self.injected[1].load(Ordering::Relaxed),
            injected_timeout: self.injected[2].load(Ordering::Relaxed),
            injected_drop: self.injected[3].load(Ordering::Relaxed),
            early_retries: self.early_retries.load(Ordering::Relaxed),
            creates_existing: self.creates_existing.load(Ordering::Relaxed),
            events: s.events.values().map(|m| m.len() as u64).sum(),
            duplicate_uids: by_uid.values().filter(|n| **n > 1).count() as u64,
            max_in_flight: u64::from(s.max_in_flight),
        }
    }
}

/// One connection's events, as `apply` closures see them.
pub struct EventMap<'a> {
    events: &'a mut BTreeMap<String, RemoteEvent>,
    version: &'a mut u64,
    journal: &'a mut live::Journal,
}

impl EventMap<'_> {
    pub fn get(&self, id: &str) -> Option<RemoteEvent> {
        self.events.get(id).cloned()
    }

    pub fn all(&self) -> Vec<RemoteEvent> {
        self.events.values().cloned().collect()
    }

    /// Idempotent create by key.
    pub fn create(&mut self, key: &str, data: &EventData) -> Created {
        if let Some(e) = self.events.get(key) {
            return Created::Existing(e.clone());
        }
        Created::New(self.put(key, data))
    }

    pub fn update(&mut self, id: &str, etag: Option<&str>, data: &EventData) -> Result<RemoteEvent, ProviderError> {
        let cur = self.events.get(id).ok_or_else(|| ProviderError::NotFound { message: format!("event {id}") })?;
        check_etag(cur, etag)?;
        Ok(self.put(id, data))
    }

    pub fn delete(&mut self, id: &str, etag: Option<&str>) -> Result<(), ProviderError> {
        if let Some(cur) = self.events.get(id) {
            check_etag(cur, etag)?;
            self.events.remove(id);
            *self.version += 1;
            self.journal.removed(id, *self.version);
        }
        Ok(())
    }

    fn put(&mut self, id: &str, data: &EventData) -> RemoteEvent {
        *self.version += 1;
        let ev = RemoteEvent::stored(id, format!("\"{}\"", self.version), format!("bench://{CALENDAR}/{id}"), data);
        self.events.insert(id.to_string(), ev.clone());
        self.journal.changed(id, *self.version);
        ev
    }
}

fn check_etag(cur: &RemoteEvent, etag: Option<&str>) -> Result<(), ProviderError> {
    match etag {
        Some(e) if cur.etag.as_deref() != Some(e) => {
            Err(ProviderError::Conflict { message: format!("event {} has version {:?}, not {e}", cur.id, cur.etag) })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
