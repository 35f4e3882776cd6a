//! App webhooks on Kubernetes: what is owed is derived from resource status against a
//! per-object checkpoint, so a controller restart (or a new leader) loses nothing and needs no
//! outbox of its own. Only the leader delivers. For each object it keeps the snapshot it derived
//! events up to; when every message of an object is delivered (or given up on), it writes that
//! snapshot to the object's annotation `calendar.getitdone.app/app-webhooks` (the checkpoint).
//! A leader that starts derives from each object's checkpoint to its current status: what was
//! delivered is not sent again, what was owed is. Message ids come from (object uid, event
//! type, the status fields of the transition), so an event derived again has the same
//! `webhook-id` and receivers dedupe it. An object without a checkpoint reports its transitions
//! younger than the give-up period (older ones would have been given up on anyway).
//!
//! Owns: the follower loop, the checkpoint annotation, leader gating. Must not touch: what a
//! transition means (`app_events`), HTTP (`deliver`), reconciles.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::ResourceExt;
use tokio::sync::{Notify, broadcast, mpsc, watch};

use super::super::app_events::{self, AppEvent, Snapshot};
use super::outbox::{MemoryOutbox, OutboxMessage};
use super::tap::{connection_transition, connection_transition_time, task_transition, task_transition_time};
use super::{Dispatcher, WebhookConfig, message_body, message_id, stats};
use crate::engine::{Kind, Labels, ObjectKey, Objects};
use crate::resources::{CalendarConnection, TaskSync};

/// The checkpoint: the snapshot of the object last reported in full (JSON).
pub const CHECKPOINT_ANNOTATION: &str = "calendar.getitdone.app/app-webhooks";

/// How often everything is listed again (the safety net, as the controllers' resync).
const RESYNC: Duration = Duration::from_secs(300);
/// The soonest a lagging change feed makes it list everything again.
const LAGGED_RESYNC: Duration = Duration::from_secs(10);

/// How often leadership is checked besides its change notifications (a lease can lapse
/// without one).
const LEADER_CHECK: Duration = Duration::from_millis(500);

/// Deliver while `is_leader()`, until `shutdown`. `changes` (leadership gains and losses) only
/// makes the check prompt. `namespace`: `None` for all.
pub async fn run(
    objects: Arc<dyn Objects>,
    namespace: Option<String>,
    config: WebhookConfig,
    is_leader: impl Fn() -> bool + Send + 'static,
    mut changes: Option<watch::Receiver<bool>>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    // Waits for a leadership change or the next check; false: shutting down.
    let wait = async |changes: &mut Option<watch::Receiver<bool>>, shutdown: &mut std::pin::Pin<&mut _>| -> bool {
        let changed = async {
            match changes.as_mut() {
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        // Nobody announces changes any more: polling alone from now on.
                        *changes = None;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = shutdown => false,
            _ = changed => true,
            _ = tokio::time::sleep(LEADER_CHECK) => true,
        }
    };
    loop {
        while !is_leader() {
            if !wait(&mut changes, &mut shutdown).await {
                return;
            }
        }
        tracing::info!("leading: delivering app webhooks derived from status");
        let (stop, stopped) = watch::channel(false);
        let work = tokio::spawn(lead(objects.clone(), namespace.clone(), config.clone(), stopped));
        let mut ending = false;
        while is_leader() {
            if !wait(&mut changes, &mut shutdown).await {
                ending = true;
                break;
            }
        }
        let _ = stop.send(true);
        let _ = work.await;
        if ending {
            return;
        }
        tracing::info!("no longer leading: app webhook delivery stopped (the new leader derives what is owed)");
    }
}

#[derive(Default)]
struct Tracked {
    /// What events have been derived up to.
    snapshot: Snapshot,
    /// webhook-ids not yet delivered.
    outstanding: HashSet<String>,
}

struct Follower {
    objects: Arc<dyn Objects>,
    namespace: Option<String>,
    outbox: Arc<MemoryOutbox>,
    wake: Arc<Notify>,
    config: WebhookConfig,
    tracked: HashMap<ObjectKey, Tracked>,
    by_id: HashMap<String, ObjectKey>,
    /// connection (namespace, name) → (user id, provider)
    owners: HashMap<(String, String), (String, String)>,
}

async fn lead(
    objects: Arc<dyn Objects>,
    namespace: Option<String>,
    config: WebhookConfig,
    stop: watch::Receiver<bool>,
) {
    let (settled_tx, mut settled) = mpsc::unbounded_channel();
    let outbox = Arc::new(MemoryOutbox::with_settled(settled_tx));
    let wake = Arc::new(Notify::new());
    let dispatcher = match Dispatcher::new(outbox.clone(), config.clone(), wake.clone()) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "app webhooks cannot start");
            return;
        }
    };
    let delivering = tokio::spawn(dispatcher.run(stop.clone()));
    let mut changes = objects.subscribe();
    let mut f = Follower {
        objects,
        namespace,
        outbox,
        wake,
        config,
        tracked: HashMap::new(),
        by_id: HashMap::new(),
        owners: HashMap::new(),
    };
    let mut stop = stop;
    let mut resync = tokio::time::interval(RESYNC);
    // A lagging feed is caught up by listing everything, at most every LAGGED_RESYNC (under a
    // burst of writes the feed can lag again and again).
    let mut lagged = false;
    let mut listed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = resync.tick() => {
                f.resync().await;
                listed = tokio::time::Instant::now();
            }
            _ = tokio::time::sleep_until(listed + LAGGED_RESYNC), if lagged => {
                lagged = false;
                f.resync().await;
                listed = tokio::time::Instant::now();
            }
            Some(id) = settled.recv() => f.settled(&id).await,
            k = changes.recv() => match k {
                Ok(key) => f.changed(&key).await,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "app webhook follower lagged behind the watches; listing again");
                    lagged = true;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    let _ = delivering.await;
}

fn checkpoint_of(annotations: Option<&std::collections::BTreeMap<String, String>>) -> Option<Snapshot> {
    serde_json::from_str(annotations?.get(CHECKPOINT_ANNOTATION)?).ok()
}

impl Follower {
    fn watched(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace)
    }

    async fn resync(&mut self) {
        let ns = self.namespace.clone();
        if let Ok(list) = self.objects.list_connections(ns.as_deref(), &Labels::new()).await {
            for c in list {
                self.connection(c);
            }
        }
        if let Ok(list) = self.objects.list_task_syncs(ns.as_deref(), &Labels::new()).await {
            for t in list {
                self.task_sync(t).await;
            }
        }
    }

    async fn changed(&mut self, key: &ObjectKey) {
        if !self.watched(&key.namespace) {
            return;
        }
        match key.kind {
            Kind::TaskSync => match self.objects.get_task_sync(&key.namespace, &key.name).await {
                Ok(Some(t)) => self.task_sync(t).await,
                Ok(None) => self.forget(key),
                Err(e) => tracing::debug!(error = %e, "reading a TaskSync for app webhooks failed"),
            },
            Kind::CalendarConnection => match self.objects.get_connection(&key.namespace, &key.name).await {
                Ok(Some(c)) => self.connection(c),
                Ok(None) => self.forget(key),
                Err(e) => tracing::debug!(error = %e, "reading a connection for app webhooks failed"),
            },
        }
    }

    /// A deleted object: its messages still go; it just gets no checkpoint.
    fn forget(&mut self, key: &ObjectKey) {
        self.tracked.remove(key);
        if key.kind == Kind::CalendarConnection {
            self.owners.remove(&(key.namespace.clone(), key.name.clone()));
        }
    }

    /// The snapshot to derive from: what this leader derived up to, else the checkpoint, else
    /// nothing (then only young transitions count).
    fn before(
        &self,
        key: &ObjectKey,
        annotations: Option<&std::collections::BTreeMap<String, String>>,
    ) -> (Snapshot, bool) {
        if let Some(t) = self.tracked.get(key) {
            return (t.snapshot.clone(), false);
        }
        match checkpoint_of(annotations) {
            Some(s) => (s, false),
            None => (Snapshot::default(), true),
        }
    }

    fn young(&self, at: Option<chrono::DateTime<Utc>>) -> bool {
        let limit = chrono::Duration::from_std(self.config.give_up).unwrap_or(chrono::Duration::MAX);
        at.is_some_and(|t| Utc::now() - t < limit)
    }

    fn connection(&mut self, c: CalendarConnection) {
        let ns = c.namespace().unwrap_or_else(|| "default".into());
        self.owners.insert((ns.clone(), c.name_any()), (c.spec.user_id.clone(), c.spec.provider.as_str().to_string()));
        let key = ObjectKey::connection(&ns, &c.name_any());
        let (before, fresh) = self.before(&key, c.metadata.annotations.as_ref());
        let after = app_events::connection_snapshot(&c);
        if before == after {
            return;
        }
        let mut events = app_events::connection_events(&before, &c, Utc::now());
        if fresh {
            events.retain(|e| self.young(connection_transition_time(e, &c)));
        }
        let uid = c.uid().unwrap_or_default();
        let messages = events.iter().map(|e| (message_id(&uid, e.kind, &connection_transition(e, &c)), e)).collect();
        self.owe(key, after, messages);
    }

    async fn task_sync(&mut self, t: TaskSync) {
        let ns = t.namespace().unwrap_or_else(|| "default".into());
        let key = ObjectKey::task_sync(&ns, &t.name_any());
        let (before, fresh) = self.before(&key, t.metadata.annotations.as_ref());
        let after = app_events::task_snapshot(&t);
        if before == after {
            return;
        }
        let conn = (ns.clone(), t.spec.connection_ref.name.clone());
        if !self.owners.contains_key(&conn)
            && let Ok(Some(c)) = self.objects.get_connection(&conn.0, &conn.1).await
        {
            self.owners.insert(conn.clone(), (c.spec.user_id.clone(), c.spec.provider.as_str().to_string()));
        }
        // No connection, nobody to tell (as in the SSE hub).
        let Some((user, provider)) = self.owners.get(&conn).cloned() else { return };
        let mut events = app_events::task_events(&before, &t, &user, &provider, Utc::now());
        if fresh {
            events.retain(|e| self.young(task_transition_time(e.kind, &t)));
        }
        let uid = t.uid().unwrap_or_default();
        let messages = events.iter().map(|e| (message_id(&uid, e.kind, &task_transition(e.kind, &t)), e)).collect();
        self.owe(key, after, messages);
    }

    fn owe(&mut self, key: ObjectKey, after: Snapshot, messages: Vec<(String, &AppEvent)>) {
        let max = usize::try_from(self.config.max_pending).unwrap_or(usize::MAX);
        if !messages.is_empty() && self.outbox.len() >= max {
            // Not derived now: the object stays owed from its snapshot or checkpoint and is
            // derived again at its next change or resync, so nothing is lost, only late.
            tracing::debug!(object = %key, "app webhook queue full; deferring this object's events");
            return;
        }
        let tracked = self.tracked.entry(key.clone()).or_default();
        tracked.snapshot = after;
        let now = Utc::now().timestamp_millis();
        for (id, event) in messages {
            if tracked.outstanding.insert(id.clone()) {
                self.by_id.insert(id.clone(), key.clone());
                self.outbox.push(OutboxMessage { id, body: message_body(event) }, now);
            }
        }
        stats().pending.store(self.outbox.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// A message is done with: when it was its object's last, checkpoint the object.
    async fn settled(&mut self, id: &str) {
        let Some(key) = self.by_id.remove(id) else { return };
        let Some(t) = self.tracked.get_mut(&key) else { return };
        t.outstanding.remove(id);
        if !t.outstanding.is_empty() {
            return;
        }
        let Ok(json) = serde_json::to_string(&t.snapshot) else { return };
        let mut annotations = Labels::new();
        annotations.insert(CHECKPOINT_ANNOTATION.to_string(), json);
        if let Err(e) = self.objects.set_annotations(&key, &annotations).await {
            // Not fatal: a later leader derives from the older checkpoint and sends again
            // with the same webhook-ids.
            tracing::debug!(error = %e, object = %key, "writing the app webhook checkpoint failed");
        }
    }
}

#[cfg(test)]
#[path = "derived_tests.rs"]
mod tests;
