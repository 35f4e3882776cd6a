//! Unit tests of the work-queue driver (scheduling, triggers, ownership), on the memory store.
use std::sync::Arc;

use super::*;
use crate::engine::EngineConfig;
use crate::engine::memory::MemoryObjects;
use crate::providers::memory::{MemoryCalendar, MemoryConnector};

fn scheduler() -> Scheduler {
    let engine = Engine::new(
        Arc::new(MemoryObjects::new()),
        Arc::new(MemoryConnector { service: MemoryCalendar::new() }),
        EngineConfig::default(),
    );
    Scheduler::new(engine, QueueConfig { concurrency: 2, ..Default::default() })
}

#[tokio::test]
async fn one_run_per_key_and_bounded_concurrency() {
    let mut s = scheduler();
    let a = ObjectKey::task_sync("ns", "a");
    s.enqueue(a.clone());
    s.enqueue(a.clone());
    assert_eq!(s.ready.len(), 1, "a key is queued once");
    for n in ["b", "c", "d"] {
        s.enqueue(ObjectKey::task_sync("ns", n));
    }
    let mut tasks = JoinSet::new();
    s.start_ready(&mut tasks);
    assert_eq!(s.running.len(), 2, "concurrency bound");
    assert!(s.running.contains_key(&a));
    // A change while running marks it dirty instead of starting a second run.
    s.enqueue(a.clone());
    assert!(s.dirty.contains(&a) && !s.ready.contains(&a));
    s.finished(s.known.key(&a), Ok(Outcome::Done));
    assert!(s.ready.contains(&a), "re-run after the running one finished");
    tasks.shutdown().await;
}

/// Names of every queued object, in the order workers would take them.
fn drain(s: &mut Scheduler) -> Vec<String> {
    let mut names = Vec::new();
    while let Some((key, lane)) = s.ready.pop(Instant::now()) {
        names.push(key.name.clone());
        if let Some(lane) = lane {
            s.ready.done(&lane);
        }
    }
    names
}

#[tokio::test]
async fn connections_first_and_one_connection_cannot_take_every_worker() {
    let mut s = scheduler();
    s.config.concurrency = 8;
    s.config.per_connection = 2;
    s.ready = ready::Ready::new(2);
    for n in 0..5 {
        let key = ObjectKey::task_sync("ns", &format!("a{n}"));
        s.known.remember(&key, trigger("c1"));
        s.enqueue(key);
    }
    s.known.remember(&ObjectKey::task_sync("ns", "b0"), trigger("c2"));
    s.enqueue(ObjectKey::task_sync("ns", "b0"));
    s.enqueue(ObjectKey::connection("ns", "c2"));
    let mut tasks = JoinSet::new();
    s.start_ready(&mut tasks);
    let mut running: Vec<String> = s.running.keys().map(|k| k.name.clone()).collect();
    running.sort();
    assert_eq!(running, ["a0", "a1", "b0", "c2"], "c1's TaskSyncs are capped at 2, the rest wait");
    tasks.shutdown().await;
    s.finished(s.known.key(&ObjectKey::task_sync("ns", "a0")), Ok(Outcome::Done));
    s.start_ready(&mut tasks);
    assert!(s.running.contains_key(&ObjectKey::task_sync("ns", "a2")), "a finished one makes room in its lane");
    tasks.shutdown().await;
}

#[tokio::test]
async fn a_rerun_after_a_change_while_running_goes_first_in_its_lane() {
    let mut s = scheduler();
    s.config.concurrency = 1;
    let key = |n: &str| ObjectKey::task_sync("ns", n);
    for n in ["a", "b", "c"] {
        s.known.remember(&key(n), trigger("c1"));
    }
    s.enqueue(key("a"));
    let mut tasks = JoinSet::new();
    s.start_ready(&mut tasks);
    assert!(s.running.contains_key(&key("a")));
    s.enqueue(key("b"));
    s.enqueue(key("c"));
    s.enqueue(key("a"));
    s.finished(s.known.key(&key("a")), Ok(Outcome::Requeue(Duration::from_secs(5))));
    assert_eq!(drain(&mut s), ["a", "b", "c"]);
    tasks.shutdown().await;
}

fn trigger(uses: &str) -> trigger::Trigger {
    trigger::Trigger { own: 1, dependents: None, uses: Some(uses.into()) }
}

#[tokio::test]
async fn a_replica_runs_the_task_syncs_of_the_connections_it_owns() {
    let (_tx, gained) = tokio::sync::watch::channel(0);
    let owns: Arc<dyn Fn(&ObjectKey) -> bool + Send + Sync> =
        Arc::new(|k: &ObjectKey| *k == ObjectKey::connection("ns", "c1"));
    let mut s = scheduler();
    s.config.concurrency = 8;
    s.config.ownership = Some(Ownership { owns, gained });
    for (name, uses) in [("a", "c1"), ("b", "c2"), ("c", "c1")] {
        s.known.remember(&ObjectKey::task_sync("ns", name), trigger(uses));
    }
    for key in [
        ObjectKey::task_sync("ns", "a"),
        ObjectKey::task_sync("ns", "b"),
        ObjectKey::task_sync("ns", "c"),
        ObjectKey::connection("ns", "c1"),
        ObjectKey::connection("ns", "c2"),
    ] {
        s.enqueue(key);
    }
    let mut tasks = JoinSet::new();
    s.start_ready(&mut tasks);
    let mut running: Vec<String> = s.running.keys().map(|k| format!("{:?}/{}", k.kind, k.name)).collect();
    running.sort();
    assert_eq!(running, ["CalendarConnection/c1", "TaskSync/a", "TaskSync/c"], "c1 and its TaskSyncs, together");
    tasks.shutdown().await;
}

#[tokio::test]
async fn a_connection_change_requeues_exactly_its_task_syncs_from_the_index() {
    let mut s = scheduler();
    let conn = ObjectKey::connection("ns", "c1");
    for (name, uses) in [("a", "c1"), ("b", "c2"), ("c", "c1")] {
        s.known.remember(&ObjectKey::task_sync("ns", name), trigger(uses));
    }
    // Same connection name in another namespace is another connection.
    s.known.remember(&ObjectKey::task_sync("other", "d"), trigger("c1"));
    // A TaskSync that moved to another connection leaves the old one's set.
    s.known.remember(&ObjectKey::task_sync("ns", "c"), trigger("c2"));
    s.requeue_dependents(&conn);
    assert_eq!(drain(&mut s), ["a"]);
    // A deleted one is forgotten, and an emptied set is dropped.
    s.known.forget(&ObjectKey::task_sync("ns", "a"));
    assert!(s.known.users_of(&conn).is_empty());
    assert_eq!(s.known.connections_used(), 2, "ns/c2 and other/c1");
    s.requeue_dependents(&ObjectKey::connection("ns", "c2"));
    assert_eq!(drain(&mut s), ["b", "c"]);
    // A complete listing prunes what it no longer has.
    let listed = HashSet::from([s.known.key(&ObjectKey::task_sync("ns", "b"))]);
    s.known.forget_missing(Kind::TaskSync, &listed);
    assert_eq!(s.known.len(), 1);
    assert_eq!(s.known.connections_used(), 1);
    assert_eq!(s.known.users_of(&ObjectKey::connection("ns", "c2")).len(), 1);
}

#[tokio::test]
async fn failures_back_off_exponentially_and_success_resets() {
    let mut s = scheduler();
    let a = Arc::new(ObjectKey::task_sync("ns", "a"));
    let mut delays = Vec::new();
    for _ in 0..4 {
        s.running.insert(a.clone(), None);
        s.finished(a.clone(), Err("store down".into()));
        let at = s.timer_of[&a];
        delays.push(at - Instant::now());
        s.timers.clear();
        s.timer_of.clear();
    }
    assert!(delays.windows(2).all(|w| w[1] > w[0]), "{delays:?}");
    s.running.insert(a.clone(), None);
    s.finished(a.clone(), Ok(Outcome::Requeue(Duration::from_secs(30))));
    assert!(!s.failures.contains_key(&a));
    // An earlier timer wins over a later one.
    s.schedule(a.clone(), Duration::from_secs(5));
    assert_eq!(s.timers.len(), 1);
    assert!(s.timer_of[&a] <= Instant::now() + Duration::from_secs(5));
}
