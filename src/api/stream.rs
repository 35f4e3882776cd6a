//! The app-event hub of one REST process: follows the store's change notifications (on
//! Kubernetes, this replica's own watches), derives app events (`app_events`), keeps the last
//! ones for `Last-Event-ID` resume, and fans them out to the Server-Sent-Event streams of the
//! users they concern.
//!
//! Owns: per-object snapshots, the replay ring, the per-user stream count. Must not touch:
//! HTTP (the `stream` handler) or any store write.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use kube::ResourceExt;
use tokio::sync::{broadcast, watch};

use super::app_events::{self, AppEvent, Snapshot};
use crate::engine::{Kind, Labels, ObjectKey, Objects};

/// Events kept for resume: the last 10 minutes, at most this many.
const RING: usize = 10_000;
const RING_AGE: Duration = Duration::from_secs(600);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct StreamHub {
    tx: broadcast::Sender<Arc<AppEvent>>,
    ring: Mutex<VecDeque<Arc<AppEvent>>>,
    streams: Mutex<HashMap<String, usize>>,
    closed: watch::Sender<bool>,
}

/// One open stream of a user; dropping it frees its slot.
pub struct StreamSlot {
    hub: Arc<StreamHub>,
    user: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut s = lock(&self.hub.streams);
        if let Some(n) = s.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.remove(&self.user);
            }
        }
    }
}

impl StreamHub {
    /// Start following `objects` in `namespace`.
    pub fn start(objects: Arc<dyn Objects>, namespace: String) -> Arc<StreamHub> {
        let (tx, _) = broadcast::channel(4096);
        let (closed, _) = watch::channel(false);
        let hub =
            Arc::new(StreamHub { tx, ring: Mutex::new(VecDeque::new()), streams: Mutex::new(HashMap::new()), closed });
        tokio::spawn(follow(hub.clone(), objects, namespace));
        hub
    }

    /// A slot for one more stream of `user`, if under `max`.
    pub fn open(self: &Arc<Self>, user: &str, max: usize) -> Option<StreamSlot> {
        let mut s = lock(&self.streams);
        let n = s.entry(user.to_string()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(StreamSlot { hub: self.clone(), user: user.to_string() })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AppEvent>> {
        self.tx.subscribe()
    }

    /// Events of `user` after `last` (an event id) still in the ring, oldest first.
    pub fn replay(&self, user: &str, last: Option<&str>) -> Vec<Arc<AppEvent>> {
        let Some(after) = last.and_then(AppEvent::order) else { return Vec::new() };
        lock(&self.ring)
            .iter()
            .filter(|e| e.user_id == user && AppEvent::order(&e.id).is_some_and(|o| o > after))
            .cloned()
            .collect()
    }

    /// Resolves when the process shuts down: streams end so graceful shutdown can finish.
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    pub fn close(&self) {
        let _ = self.closed.send(true);
    }

    fn publish(&self, events: Vec<AppEvent>) {
        let mut ring = lock(&self.ring);
        for e in events {
            let e = Arc::new(e);
            ring.push_back(e.clone());
            let _ = self.tx.send(e);
        }
        let cutoff = Utc::now() - chrono::Duration::from_std(RING_AGE).unwrap_or_default();
        while ring.len() > RING || ring.front().is_some_and(|e| e.timestamp < cutoff) {
            ring.pop_front();
        }
    }
}

/// Who owns a TaskSync's events: its connection's user and provider (cached by connection).
async fn owner_of(
    objects: &dyn Objects,
    namespace: &str,
    connection: &str,
    users: &mut HashMap<String, (String, String)>,
) -> Option<(String, String)> {
    if let Some(u) = users.get(connection) {
        return Some(u.clone());
    }
    let c = objects.get_connection(namespace, connection).await.ok()??;
    let u = (c.spec.user_id.clone(), c.spec.provider.as_str().to_string());
    users.insert(connection.to_string(), u.clone());
    Some(u)
}

async fn follow(hub: Arc<StreamHub>, objects: Arc<dyn Objects>, namespace: String) {
    let mut rx = objects.subscribe();
    let mut closed = hub.closed();
    let mut snapshots: HashMap<ObjectKey, Snapshot> = HashMap::new();
    let mut users: HashMap<String, (String, String)> = HashMap::new();
    // Baseline: what exists now is not news.
    if let Ok(list) = objects.list_task_syncs(Some(&namespace), &Labels::new()).await {
        for t in list {
            snapshots.insert(ObjectKey::task_sync(&namespace, &t.name_any()), app_events::task_snapshot(&t));
        }
    }
    if let Ok(list) = objects.list_connections(Some(&namespace), &Labels::new()).await {
        for c in list {
            users.insert(c.name_any(), (c.spec.user_id.clone(), c.spec.provider.as_str().to_string()));
            snapshots.insert(ObjectKey::connection(&namespace, &c.name_any()), app_events::connection_snapshot(&c));
        }
    }
    loop {
        let key = tokio::select! {
            _ = closed.changed() => return,
            k = rx.recv() => match k {
                Ok(k) => k,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "event stream hub lagged behind the store; some app events were not derived");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if key.namespace != namespace {
            continue;
        }
        let before = snapshots.get(&key).cloned().unwrap_or_default();
        let now = Utc::now();
        let events = match key.kind {
            Kind::TaskSync => {
                let Ok(Some(ts)) = objects.get_task_sync(&key.namespace, &key.name).await else {
                    snapshots.remove(&key);
                    continue;
                };
                snapshots.insert(key.clone(), app_events::task_snapshot(&ts));
                match owner_of(objects.as_ref(), &namespace, &ts.spec.connection_ref.name, &mut users).await {
                    Some((user, provider)) => app_events::task_events(&before, &ts, &user, &provider, now),
                    None => Vec::new(),
                }
            }
            Kind::CalendarConnection => {
                let Ok(Some(c)) = objects.get_connection(&key.namespace, &key.name).await else {
                    snapshots.remove(&key);
                    users.remove(&key.name);
                    continue;
                };
                users.insert(c.name_any(), (c.spec.user_id.clone(), c.spec.provider.as_str().to_string()));
                snapshots.insert(key.clone(), app_events::connection_snapshot(&c));
                app_events::connection_events(&before, &c, now)
            }
        };
        if !events.is_empty() {
            hub.publish(events);
        }
    }
}
