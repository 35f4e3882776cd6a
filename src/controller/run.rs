//! The kube-runtime wiring: one watch per kind feeding a reflector store, the `subscribe()` feed
//! of `KubeObjects`, and two `Controller`s (TaskSync, CalendarConnection) that call the shared
//! engine.
//!
//! Owns: triggers (generation + finalizer filtering so our own status writes never re-trigger),
//! the connection → TaskSync mapping, `Outcome` → `Action`, per-object error backoff and the
//! shard gate on reconciles (only the holder of a connection's shard reconciles it and its
//! TaskSyncs). Must not touch: reconcile decisions (engine) or API request shapes
//! (objects.rs).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};

use super::metrics::Metrics;
use super::objects::KubeObjects;
use super::shards::Shards;
use crate::engine::{Backoff, Engine, EngineConfig, EngineError, Kind, ObjectKey, Outcome, StoreError};
use crate::providers::Connector;
use crate::providers::gate::GatedConnector;
use crate::resources::{CalendarConnection, TaskSync, condition};

type GuardedTaskSync = DeserializeGuard<TaskSync>;
type GuardedConnection = DeserializeGuard<CalendarConnection>;

/// A shutdown signal every task can await (cloneable, `Sync` as kube's graceful shutdown needs).
pub type Shutdown = Shared<BoxFuture<'static, ()>>;

/// A shutdown signal and the handle that fires it (dropping the handle fires it too).
pub fn shutdown_signal() -> (tokio::sync::oneshot::Sender<()>, Shutdown) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    (tx, rx.map(|_| ()).boxed().shared())
}

/// What `run` needs besides the client.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch one namespace; `None`: all namespaces.
    pub watch_namespace: Option<String>,
    /// Reconciles at once per controller (never two of the same object).
    pub concurrency: u16,
    pub engine: EngineConfig,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { watch_namespace: None, concurrency: 4, engine: EngineConfig::default() }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub engine: Engine,
    pub objects: KubeObjects,
    pub shards: Shards,
    pub metrics: Arc<Metrics>,
    backoff: Backoff,
    /// Consecutive store failures per object (kube-runtime has no per-object backoff, kube#1916;
    /// provider failures are backed off by the engine through status instead).
    failures: Mutex<HashMap<(Kind, String, String), u32>>,
}

impl Context {
    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<(Kind, String, String), u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A reconcile that could not finish; retried with per-object backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl ReconcileError {
    /// PascalCase category for metrics labels (bounded cardinality) and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::Engine(EngineError::Store(e)) => match e {
                StoreError::Conflict(_) => "StoreConflict",
                StoreError::Unavailable(_) => "StoreUnavailable",
                StoreError::NotFound(_) => "StoreNotFound",
                StoreError::Invalid(_) => "StoreInvalid",
                StoreError::Unreadable(_) => "CredentialsUnreadable",
            },
        }
    }
}

fn to_action(outcome: Outcome) -> Action {
    match outcome {
        Outcome::Done => Action::await_change(),
        Outcome::Requeue(d) | Outcome::Held(d) => Action::requeue(d),
    }
}

fn hash_of<T: Hash>(value: &T) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// What TaskSyncs care about in their connection: its spec generation, whether it is Ready and
/// the default calendar. Status writes that change none of these (history appends, check
/// times) do not requeue every TaskSync of the user.
fn connection_readiness(c: &GuardedConnection) -> Option<u64> {
    let Ok(conn) = &c.0 else { return Some(0) };
    let status = conn.status.as_ref();
    // Status and reason, not a bool: "not checked yet" and "ReconnectRequired" are both not
    // Ready, and a TaskSync waiting on the first must hear about the second.
    let ready = status
        .and_then(|s| condition::find(&s.conditions, "Ready"))
        .map(|c| (c.status == condition::ConditionStatus::True, c.reason.clone()));
    let default_calendar = status.and_then(|s| s.default_calendar_id.clone());
    // Held deletions wait for the guard to let go (a decision), not for the next resync.
    let guard = status.and_then(|s| s.deletion_guard.as_ref()).map(|g| (g.holding(), g.decision.clone()));
    Some(hash_of(&(
        conn.metadata.generation,
        ready,
        default_calendar,
        conn.metadata.deletion_timestamp.is_some(),
        guard,
    )))
}

/// The live-sync signal a REST replica wrote after a provider notification (an annotation: the
/// API server carries it to whichever replica leads, so no side channel is needed).
fn changed_signal(c: &GuardedConnection) -> Option<u64> {
    let annotations = c.meta().annotations.as_ref();
    // The user's decision about held deletions is metadata only too.
    Some(hash_of(&(
        annotations.and_then(|a| a.get(crate::resources::push::CHANGED_ANNOTATION)),
        annotations.and_then(|a| a.get(crate::resources::CONFIRM_DELETIONS_ANNOTATION)),
    )))
}

/// A user's choice in a held conflict (`calendar.getitdone.app/resolve`): metadata only, so the
/// generation predicate alone would drop it.
fn resolve_choice(t: &GuardedTaskSync) -> Option<u64> {
    Some(hash_of(&t.meta().annotations.as_ref().and_then(|a| a.get(crate::resources::RESOLVE_ANNOTATION))))
}

async fn reconcile_task_sync(obj: Arc<GuardedTaskSync>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let key = ObjectKey::task_sync(&ns, &name);
    if let Err(invalid) = &obj.0 {
        report_invalid(&ctx, &key, &invalid.error).await;
        return Ok(Action::await_change());
    }
    // Other replicas' shards: nothing here, not even a requeue; their holder reconciles them,
    // and the shard-gain trigger covers this replica taking the shard over.
    if !obj.0.as_ref().is_ok_and(|t| ctx.shards.owns_connection(&ns, &t.spec.connection_ref.name)) {
        return Ok(Action::await_change());
    }
    reconcile(ctx, key, "tasksync").await
}

async fn reconcile_connection(obj: Arc<GuardedConnection>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let key = ObjectKey::connection(&ns, &name);
    if let Err(invalid) = &obj.0 {
        report_invalid(&ctx, &key, &invalid.error).await;
        return Ok(Action::await_change());
    }
    if !ctx.shards.owns_connection(&ns, &name) {
        return Ok(Action::await_change());
    }
    reconcile(ctx, key, "calendarconnection").await
}

async fn report_invalid(ctx: &Context, key: &ObjectKey, error: &str) {
    tracing::warn!(object = %key, error, "object does not match the CRD schema; skipping it");
    // An unreadable object has no connection to shard by: shard 0's holder reports it, once.
    if !ctx.shards.shard(0).is_leader() {
        return;
    }
    let event = crate::engine::ObjectEvent {
        type_: crate::engine::EventType::Warning,
        reason: "InvalidObject".into(),
        note: format!("calsync cannot read this object: {error}"),
        action: "Reconcile".into(),
    };
    use crate::engine::Objects as _;
    if let Err(e) = ctx.objects.publish_event(key, &event).await {
        tracing::warn!(object = %key, error = %e, "could not publish event");
    }
}

async fn reconcile(ctx: Arc<Context>, key: ObjectKey, kind: &'static str) -> Result<Action, ReconcileError> {
    let timer = ctx.metrics.start(kind);
    let result = match key.kind {
        Kind::TaskSync => ctx.engine.reconcile_task_sync(&key.namespace, &key.name).await,
        Kind::CalendarConnection => ctx.engine.reconcile_connection(&key.namespace, &key.name).await,
    };
    match result {
        Ok(outcome) => {
            timer.finish(Ok(()));
            ctx.failures().remove(&(key.kind, key.namespace.clone(), key.name.clone()));
            tracing::debug!(object = %key, ?outcome, "reconciled");
            Ok(to_action(outcome))
        }
        Err(e) => {
            let e = ReconcileError::from(e);
            timer.finish(Err(e.reason()));
            Err(e)
        }
    }
}

fn error_policy(key: ObjectKey, error: &ReconcileError, ctx: &Context) -> Action {
    let attempts = {
        let mut f = ctx.failures();
        let n = f.entry((key.kind, key.namespace.clone(), key.name.clone())).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = crate::engine::backoff::jitter(ctx.backoff.delay(attempts, None));
    tracing::warn!(object = %key, error = %error, reason = error.reason(), attempts, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Wait until a store holds its first full list (false: its writer is gone).
///
/// kube-runtime 5's `Store::wait_until_ready` sits on a oneshot receiver that keeps only the
/// last waker: with the Controller's applier waiting on the same store, a second waiter is
/// never woken. Re-polling on a short timer registers our waker again each time.
async fn store_ready<K>(store: &Store<K>) -> bool
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if let Ok(result) = tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await {
            return result.is_ok();
        }
    }
}

/// Everything `run` starts, for callers that embed it (tests, `calsync api` later).
pub struct Running {
    pub objects: KubeObjects,
    pub task_syncs: Store<GuardedTaskSync>,
    pub connections: Store<GuardedConnection>,
}

fn api_for<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Run both controllers until `shutdown` resolves and the reconciles in flight finish.
pub async fn run(
    client: Client,
    objects: KubeObjects,
    connector: Arc<dyn Connector>,
    shards: impl Into<Shards>,
    metrics: Arc<Metrics>,
    settings: Settings,
    shutdown: Shutdown,
) {
    let shards: Shards = shards.into();
    let ns = settings.watch_namespace.as_deref();
    let gated: Arc<dyn Connector> =
        Arc::new(GatedConnector { inner: connector, gate: Arc::new(shards.clone()), counter: Some(metrics.clone()) });
    let engine = Engine::new(Arc::new(objects.clone()), gated, settings.engine.clone());
    // TaskSyncs whose event a connection's change sync found changed in the calendar.
    let (requeue_tx, requeued) = tokio::sync::mpsc::unbounded_channel::<ObjectKey>();
    engine.set_requeue(Arc::new(move |key| {
        let _ = requeue_tx.send(key);
    }));
    let requeued = futures::stream::unfold(requeued, |mut rx| async move { rx.recv().await.map(|k| (k, rx)) })
        .map(|k: ObjectKey| ObjectRef::<GuardedTaskSync>::new(&k.name).within(&k.namespace));
    let ctx = Arc::new(Context {
        engine,
        objects: objects.clone(),
        shards: shards.clone(),
        metrics: metrics.clone(),
        backoff: settings.engine.backoff,
        failures: Mutex::new(HashMap::new()),
    });

    // TaskSyncs: one watch feeds the store, the change feed and the (filtered) trigger.
    let (ts_reader, ts_writer) = reflector::store::<GuardedTaskSync>();
    objects.set_task_sync_store(ts_reader.clone());
    let feed = objects.clone();
    let ts_trigger = watcher(api_for::<GuardedTaskSync>(&client, ns), watcher::Config::default())
        .default_backoff()
        .modify(super::feed::prune_for_cache)
        .reflect(ts_writer)
        .touched_objects()
        .inspect_ok(move |o| feed.notify(ObjectKey::task_sync(&o.namespace().unwrap_or_default(), &o.name_any())))
        // Status-only changes (our own writes) do not pass; spec changes, deletion marks,
        // finalizer changes and a conflict choice do.
        .predicate_filter(
            predicates::generation.combine(predicates::finalizers).combine(resolve_choice),
            Default::default(),
        );

    // Connections, for their own controller.
    let (conn_reader, conn_writer) = reflector::store::<GuardedConnection>();
    let feed = objects.clone();
    let conn_trigger = watcher(api_for::<GuardedConnection>(&client, ns), watcher::Config::default())
        .default_backoff()
        .modify(super::feed::prune_for_cache)
        .reflect(conn_writer)
        .touched_objects()
        .inspect_ok(move |o| feed.notify(ObjectKey::connection(&o.namespace().unwrap_or_default(), &o.name_any())))
        .predicate_filter(
            predicates::generation.combine(predicates::finalizers).combine(changed_signal),
            Default::default(),
        );

    // Connections again, for the TaskSyncs that use them (readiness changes are status-only).
    let ts_store = ts_reader.clone();
    let conn_for_ts = watcher(api_for::<GuardedConnection>(&client, ns), watcher::Config::default())
        .default_backoff()
        .filter_map(|event| async move {
            match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => Some(Ok(o)),
                // The object of a DELETE event need not carry a deletion mark, so the readiness
                // hash could be unchanged and the predicate would drop the one event that matters
                // most (TaskSyncs must learn their connection is gone). Mark it.
                Ok(watcher::Event::Delete(mut o)) => {
                    o.meta_mut().deletion_timestamp.get_or_insert_with(|| Time(k8s_openapi::jiff::Timestamp::now()));
                    Some(Ok(o))
                }
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            }
        })
        .predicate_filter(connection_readiness, Default::default());
    let mapper = move |conn: GuardedConnection| {
        let conn_ns = conn.namespace().unwrap_or_default();
        let conn_name = conn.name_any();
        ts_store
            .state()
            .into_iter()
            .filter(|t| {
                t.namespace().as_deref() == Some(conn_ns.as_str())
                    && t.0.as_ref().is_ok_and(|t| t.spec.connection_ref.name == conn_name)
            })
            .map(|t| ObjectRef::from_obj(&*t))
            .collect::<Vec<_>>()
    };

    // Ready once both caches hold a full list.
    {
        let (ts, conns, metrics) = (ts_reader.clone(), conn_reader.clone(), metrics.clone());
        tokio::spawn(async move {
            if store_ready(&ts).await && store_ready(&conns).await {
                metrics.set_ready(true);
                tracing::info!("watch caches synced");
            }
        });
    }
    // Keep the shard gauges current (a lease can also lapse without a renewal attempt).
    {
        let (shards, metrics, mut stop) = (shards.clone(), metrics.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                metrics.set_leader(shards.shard(0).is_leader());
                metrics.set_shards(shards.held().len(), shards.count());
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        });
    }

    let cfg = ControllerConfig::default().concurrency(settings.concurrency);
    let ts_controller = Controller::for_stream(ts_trigger, ts_reader)
        .watches_stream(conn_for_ts, mapper)
        .reconcile_on(requeued)
        .reconcile_all_on(shards.gains())
        .with_config(cfg.clone())
        .graceful_shutdown_on(shutdown.clone())
        .run(
            reconcile_task_sync,
            |obj, err, ctx: Arc<Context>| {
                error_policy(ObjectKey::task_sync(&obj.namespace().unwrap_or_default(), &obj.name_any()), err, &ctx)
            },
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "TaskSync controller");
            }
        });
    let conn_controller = Controller::for_stream(conn_trigger, conn_reader)
        .reconcile_all_on(shards.gains())
        .with_config(cfg)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            reconcile_connection,
            |obj, err, ctx: Arc<Context>| {
                error_policy(ObjectKey::connection(&obj.namespace().unwrap_or_default(), &obj.name_any()), err, &ctx)
            },
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "CalendarConnection controller");
            }
        });
    tokio::join!(ts_controller, conn_controller);
    tracing::info!("controllers stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_maps_to_action() {
        assert_eq!(to_action(Outcome::Done), Action::await_change());
        assert_eq!(to_action(Outcome::Requeue(Duration::from_secs(3))), Action::requeue(Duration::from_secs(3)));
    }

    #[test]
    fn readiness_predicate_ignores_history() {
        let mut c: CalendarConnection = serde_json::from_value(serde_json::json!({
            "apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "CalendarConnection",
            "metadata": {"name": "c", "namespace": "n", "generation": 1},
            "spec": {"userId": "u", "provider": "google", "credentialsSecretRef": {"name": "s"}},
        }))
        .unwrap();
        let before = connection_readiness(&DeserializeGuard(Ok(c.clone())));
        c.status = Some(Default::default());
        c.status.as_mut().unwrap().history.push(crate::resources::HistoryEntry {
            id: 1,
            time: chrono::Utc::now(),
            task_id: None,
            event_id: None,
            direction: crate::resources::Direction::ToCalendar,
            operation: crate::resources::Operation::Create,
            status: crate::resources::SyncStatus::Success,
            error: None,
            note: None,
        });
        assert_eq!(before, connection_readiness(&DeserializeGuard(Ok(c.clone()))));
        c.status.as_mut().unwrap().conditions.push(crate::resources::Condition::new(
            "Ready",
            crate::resources::ConditionStatus::True,
            "Ok",
            "",
        ));
        assert_ne!(before, connection_readiness(&DeserializeGuard(Ok(c))));
    }
}
