//! Change-notification intake of the work queue: a task of its own drains the store's change
//! broadcast into a deduplicated pending set, which the scheduler takes in batches.
//!
//! Why: the scheduler reads each changed object before deciding (one store read per key), so it
//! consumes notifications far slower than a busy store produces them (3–5 per reconcile). Read
//! straight from the broadcast, the bounded channel lagged constantly at 100,000 TaskSyncs and
//! every lag cost a full re-list. Here the receiver only moves keys into a set, so it keeps up,
//! and a key written several times before the scheduler gets to it is read once.
//!
//! Owns: the receiver and the pending set. Must not touch: scheduling decisions (the scheduler
//! decides what a key means) or the store.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::task::JoinHandle;

use crate::engine::ObjectKey;

#[derive(Default)]
struct State {
    /// Arrival order of the pending keys (each once).
    order: VecDeque<ObjectKey>,
    pending: HashSet<ObjectKey>,
    /// Notifications the receiver missed since the last `take` (it still lagged).
    missed: u64,
    closed: bool,
}

impl State {
    fn has_work(&self) -> bool {
        !self.order.is_empty() || self.missed > 0 || self.closed
    }

    fn push(&mut self, key: ObjectKey) {
        if !self.pending.contains(&key) {
            self.pending.insert(key.clone());
            self.order.push_back(key);
        }
    }
}

struct Shared {
    state: Mutex<State>,
    notify: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing here can panic half-way through an update, so a poisoned lock is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the scheduler takes at once.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// Changed keys, oldest first, each once.
    pub keys: Vec<ObjectKey>,
    /// Notifications that were missed (the keys are unknown): re-check everything.
    pub missed: u64,
    /// The store stopped sending notifications: subscribe again.
    pub closed: bool,
}

/// The draining task and its pending set; dropping it stops the task.
pub(super) struct Intake {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Intake {
    pub fn spawn(mut rx: broadcast::Receiver<ObjectKey>) -> Self {
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), notify: Notify::new() });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let first = rx.recv().await;
                let mut st = s.lock();
                let mut next = first.map_err(|e| match e {
                    RecvError::Lagged(n) => TryRecvError::Lagged(n),
                    RecvError::Closed => TryRecvError::Closed,
                });
                // Move everything already queued under one lock.
                loop {
                    match next {
                        Ok(key) => st.push(key),
                        Err(TryRecvError::Lagged(n)) => st.missed = st.missed.saturating_add(n),
                        Err(TryRecvError::Closed) => st.closed = true,
                        Err(TryRecvError::Empty) => break,
                    }
                    if st.closed {
                        break;
                    }
                    next = rx.try_recv();
                }
                let closed = st.closed;
                drop(st);
                s.notify.notify_one();
                if closed {
                    break;
                }
            }
        });
        Intake { shared, task }
    }

    /// Completes when a `take` would return something. Cancel-safe (a notification that comes
    /// while nobody waits leaves a permit).
    pub async fn ready(&self) {
        loop {
            if self.shared.lock().has_work() {
                return;
            }
            self.shared.notify.notified().await;
        }
    }

    /// Up to `max` pending keys (and any missed count / closed mark).
    pub fn take(&self, max: usize) -> Batch {
        let mut st = self.shared.lock();
        let n = st.order.len().min(max);
        let keys: Vec<ObjectKey> = st.order.drain(..n).collect();
        for k in &keys {
            st.pending.remove(k);
        }
        if st.order.is_empty() {
            // Give back the memory of a burst (100,000 keys after a bulk apply).
            st.order.shrink_to(1024);
            st.pending.shrink_to(1024);
        }
        let missed = std::mem::take(&mut st.missed);
        Batch { keys, missed, closed: st.closed }
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn keys_are_deduplicated_in_arrival_order_and_batched() {
        let (tx, rx) = broadcast::channel(16);
        let intake = Intake::spawn(rx);
        for n in ["a", "b", "a", "c", "b"] {
            tx.send(ObjectKey::task_sync("ns", n)).unwrap();
        }
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                intake.ready().await;
                if intake.shared.lock().order.len() == 3 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        let first = intake.take(2);
        let names: Vec<&str> = first.keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!((first.missed, first.closed), (0, false));
        // A key taken may come again; one still pending does not repeat.
        tx.send(ObjectKey::task_sync("ns", "a")).unwrap();
        tx.send(ObjectKey::task_sync("ns", "c")).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let rest: Vec<String> = intake.take(10).keys.into_iter().map(|k| k.name).collect();
        assert_eq!(rest, ["c", "a"]);
    }

    #[tokio::test]
    async fn a_lagging_receiver_reports_what_it_missed_and_a_closed_one_says_so() {
        let (tx, rx) = broadcast::channel(2);
        // Overrun the channel before the intake task gets to run.
        for i in 0..5 {
            tx.send(ObjectKey::task_sync("ns", &i.to_string())).unwrap();
        }
        let intake = Intake::spawn(rx);
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                intake.ready().await;
                if intake.shared.lock().closed {
                    break;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        let batch = intake.take(10);
        assert_eq!(batch.missed, 3);
        assert_eq!(batch.keys.len(), 2);
        assert!(batch.closed);
    }
}
