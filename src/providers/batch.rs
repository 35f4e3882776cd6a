//! Provider batch APIs without changing the engine: a per-connection *lane* that coalesces the
//! event requests which reach one connection at the same time into one HTTP batch request
//! (Google's `multipart/mixed` batch, Graph's JSON `$batch`), and hands each caller its own
//! answer, which the caller judges exactly as it judges the answer of a single request.
//!
//! Adaptive, not timed: a request goes out at once, alone and in the plain (unbatched) form,
//! whenever the connection has a free in-flight slot. Only requests that queue behind a full
//! set of slots are gathered, and the next slot to free sends all of them (up to the provider's
//! batch size) as one. A lone call therefore pays nothing; a burst pays one round trip per
//! batch instead of one per request.
//!
//! Owns: the lane (queue, dispatch gate, slots), its per-connection map and the batching switch
//! (`CALSYNC_PROVIDER_BATCH`). Must not touch: wire formats or status classification (each
//! provider's `Transport`), pacing (`limiter`, which admits every call, i.e. every part, before
//! it reaches a lane), retries (the engine).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::ProviderError;

/// `on` (default) or `off`: whether Google and Graph clients coalesce concurrent event
/// requests into batch requests.
pub const BATCH_ENV: &str = "CALSYNC_PROVIDER_BATCH";

/// Whether clients coalesce concurrent event requests into batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    pub enabled: bool,
}

impl Default for Batching {
    fn default() -> Self {
        Batching { enabled: true }
    }
}

impl Batching {
    pub const OFF: Batching = Batching { enabled: false };

    /// From `CALSYNC_PROVIDER_BATCH` (unset: on).
    pub fn from_env() -> Result<Self, ProviderError> {
        Self::parse(std::env::var(BATCH_ENV).ok().as_deref())
    }

    /// `on|true|1` or `off|false|0`; `None` is the default (on).
    pub fn parse(value: Option<&str>) -> Result<Self, ProviderError> {
        let Some(v) = value else { return Ok(Batching::default()) };
        match v.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "1" | "" => Ok(Batching { enabled: true }),
            "off" | "false" | "0" => Ok(Batching::OFF),
            _ => Err(ProviderError::Invalid { message: format!("{BATCH_ENV}={v:?} is not a switch: give on or off") }),
        }
    }
}

/// How a provider sends requests one at a time and as a batch. Implementations fetch the
/// connection's token, retry a rejected token once (for the batch as a whole and for parts
/// answered 401), and never put the token in an error.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    type Req: Send + Sync + 'static;
    type Resp: Send + 'static;

    /// The most requests one batch carries.
    fn max_parts(&self) -> usize;

    /// How many of the connection's in-flight slots a batch of `parts` requests occupies at the
    /// provider (Graph runs up to four parts of a batch at once against the mailbox).
    fn slots(&self, parts: usize) -> usize;

    /// Send one request in its plain form.
    async fn single(&self, req: &Self::Req) -> Result<Self::Resp, ProviderError>;

    /// Send two or more requests as one batch: one result per request, in the order given. An
    /// `Err` means the batch as a whole failed; every caller gets it.
    async fn batch(&self, reqs: &[Self::Req]) -> Result<Vec<Result<Self::Resp, ProviderError>>, ProviderError>;
}

type Reply<T> = oneshot::Sender<Result<<T as Transport>::Resp, ProviderError>>;

struct Pending<T: Transport> {
    id: u64,
    req: T::Req,
    reply: Reply<T>,
}

struct Queue<T: Transport> {
    next_id: u64,
    items: VecDeque<Pending<T>>,
}

/// One connection's lane: shared by every client made for the connection, so requests of
/// different reconciles meet here.
pub struct Lane<T: Transport> {
    slots: Arc<Semaphore>,
    /// The semaphore's size (a batch never asks for more).
    capacity: usize,
    enabled: bool,
    queue: Mutex<Queue<T>>,
    /// One dispatcher at a time waits for slots and takes from the queue, so waiting for
    /// several slots cannot deadlock against another dispatcher holding some.
    gate: tokio::sync::Mutex<()>,
}

impl<T: Transport> Lane<T> {
    /// A lane over the connection's in-flight semaphore `slots` of `capacity` permits.
    pub fn new(slots: Arc<Semaphore>, capacity: usize, batching: Batching) -> Self {
        Lane {
            slots,
            capacity: capacity.max(1),
            enabled: batching.enabled,
            queue: Mutex::new(Queue { next_id: 0, items: VecDeque::new() }),
            gate: tokio::sync::Mutex::new(()),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue<T>> {
        // Sections under this lock only push, pop and scan; a poisoned queue is still sound.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queued(&self, id: u64) -> bool {
        self.queue().items.iter().any(|p| p.id == id)
    }

    /// Requests still wanted (their caller has not given up).
    fn waiting(&self) -> usize {
        self.queue().items.iter().filter(|p| !p.reply.is_closed()).count()
    }

    /// Up to `max` requests from the front whose batch fits in `held` slots; requests whose
    /// caller has gone are dropped unsent (a stale write must not go out later).
    fn take(&self, transport: &T, held: usize) -> Vec<Pending<T>> {
        let max = transport.max_parts().max(1);
        let mut q = self.queue();
        let mut out = Vec::new();
        while out.len() < max && (out.is_empty() || transport.slots(out.len() + 1) <= held) {
            match q.items.pop_front() {
                Some(p) if p.reply.is_closed() => continue,
                Some(p) => out.push(p),
                None => break,
            }
        }
        out
    }

    /// Wait for a free slot, then for as many as a batch of what waits by then occupies
    /// (counted again after each wait: the queue grows meanwhile). Only the gate's holder calls
    /// this, so waiting for several slots cannot deadlock. `None`: the semaphore was closed
    /// (never done); go on unthrottled.
    async fn hold(&self, transport: &T) -> (Option<OwnedSemaphorePermit>, usize) {
        let Ok(mut permits) = self.slots.clone().acquire_many_owned(1).await else {
            return (None, self.capacity);
        };
        loop {
            let want = transport.slots(self.waiting().min(transport.max_parts())).clamp(1, self.capacity);
            let held = permits.num_permits();
            if held >= want {
                return (Some(permits), held);
            }
            match self.slots.clone().acquire_many_owned((want - held) as u32).await {
                Ok(more) => permits.merge(more),
                Err(_) => return (Some(permits), held),
            }
        }
    }

    /// Send `req` through `transport`, alone or in a batch with the requests that wait beside it.
    pub async fn call(&self, transport: &Arc<T>, req: T::Req) -> Result<T::Resp, ProviderError> {
        if !self.enabled {
            // The semaphore is never closed; if it were, go on unthrottled.
            let _permit = self.slots.acquire().await.ok();
            return transport.single(&req).await;
        }
        let (reply, answer) = oneshot::channel();
        let id = {
            let mut q = self.queue();
            let id = q.next_id;
            q.next_id += 1;
            q.items.push_back(Pending { id, req, reply });
            id
        };
        // Until some dispatcher (this caller or another) has taken our request.
        while self.queued(id) {
            let gate = self.gate.lock().await;
            if !self.queued(id) {
                break;
            }
            let (permits, held) = self.hold(transport).await;
            let parts = self.take(transport, held);
            drop(gate);
            if !parts.is_empty() {
                // Its own task: the parts belong to several callers, and this caller going away
                // (a timeout, a shutdown) must not take their answers with it.
                tokio::spawn(dispatch(transport.clone(), parts, permits));
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(ProviderError::Transient {
                message: "a batched calendar request ended without an answer; will retry".into(),
            })
        })
    }
}

async fn dispatch<T: Transport>(transport: Arc<T>, parts: Vec<Pending<T>>, _slots: Option<OwnedSemaphorePermit>) {
    let (reqs, replies): (Vec<T::Req>, Vec<Reply<T>>) = parts.into_iter().map(|p| (p.req, p.reply)).unzip();
    if let ([req], [_]) = (reqs.as_slice(), replies.as_slice()) {
        let r = transport.single(req).await;
        if let Some(reply) = replies.into_iter().next() {
            let _ = reply.send(r);
        }
        return;
    }
    tracing::debug!(parts = reqs.len(), "sending coalesced calendar requests as one batch");
    match transport.batch(&reqs).await {
        Ok(results) if results.len() == replies.len() => {
            for (reply, r) in replies.into_iter().zip(results) {
                let _ = reply.send(r);
            }
        }
        Ok(results) => {
            let e = ProviderError::Transient {
                message: format!(
                    "a batch of {} calendar requests came back with {} answers; will retry",
                    replies.len(),
                    results.len()
                ),
            };
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// One lane per connection (`Target::connection`), created over the connection's in-flight
/// semaphore, so every client of a connection shares it. Like `http::InFlight`, entries live as
/// long as the connector (one small struct per connection).
pub struct Lanes<T: Transport> {
    capacity: usize,
    batching: Batching,
    by_connection: Mutex<HashMap<String, Arc<Lane<T>>>>,
}

impl<T: Transport> Lanes<T> {
    pub fn new(capacity: usize, batching: Batching) -> Self {
        Lanes { capacity, batching, by_connection: Mutex::new(HashMap::new()) }
    }

    pub fn batching(&self) -> Batching {
        self.batching
    }

    /// The connection's lane; `slots` is its in-flight semaphore (used when the lane is new).
    pub fn for_connection(&self, connection: &str, slots: Arc<Semaphore>) -> Arc<Lane<T>> {
        let mut map = self.by_connection.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(connection.to_string())
            .or_insert_with(|| Arc::new(Lane::new(slots, self.capacity, self.batching)))
            .clone()
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
