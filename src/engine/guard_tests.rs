//! The mass-deletion guard on the in-memory store and calendar: whole reconciles.

use std::time::Duration;

use super::guard::{CONDITION, GuardConfig, HELD_REASON};
use super::tests::{World, reason, spec};
use super::*;
use crate::providers::ProviderError;
use crate::providers::memory::Op;
use crate::resources::condition::find;
use crate::resources::*;

const NS: &str = "default";

fn world(max: u32, ratio: f64, window_secs: u64) -> World {
    let guard = GuardConfig { max, ratio, window: Duration::from_secs(window_secs) };
    World::with_config(EngineConfig { deletion_guard: guard, ..EngineConfig::default() })
}

/// `n` TaskSyncs `t0..` of the connection, each with its event in the calendar.
async fn synced(w: &World, n: usize) {
    w.connection().await;
    for i in 0..n {
        w.task(&format!("t{i}"), spec(&format!("task{i}"))).await;
        w.reconcile(&format!("t{i}")).await;
    }
    assert_eq!(events(w), n);
}

fn events(w: &World) -> usize {
    w.calendar.events("calendar").iter().filter(|e| !e.cancelled).count()
}

/// Mark TaskSyncs `range` for deletion, then reconcile each once, in order.
async fn delete(w: &World, range: std::ops::Range<usize>) {
    for i in range.clone() {
        w.objects.delete(&ObjectKey::task_sync(NS, &format!("t{i}"))).await.unwrap();
    }
    for i in range {
        w.reconcile(&format!("t{i}")).await;
    }
}

async fn guard(w: &World) -> (DeletionGuardStatus, Option<Condition>) {
    let st = w.objects.get_connection(NS, "conn").await.unwrap().unwrap().status.unwrap();
    (st.deletion_guard.unwrap_or_default(), find(&st.conditions, CONDITION).cloned())
}

async fn remaining(w: &World, range: std::ops::Range<usize>) -> usize {
    let mut n = 0;
    for i in range {
        n += usize::from(w.get(&format!("t{i}")).await.is_some());
    }
    n
}

async fn annotate(w: &World, value: &str) {
    let a = Labels::from([(CONFIRM_DELETIONS_ANNOTATION.to_string(), value.to_string())]);
    w.objects.set_annotations(&ObjectKey::connection(NS, "conn"), &a).await.unwrap();
}

fn warnings(w: &World, reason: &str) -> Vec<String> {
    w.objects
        .events()
        .into_iter()
        .filter(|(_, e)| e.type_ == EventType::Warning && e.reason == reason)
        .map(|(_, e)| e.note)
        .collect()
}

/// 20 events, max 5, ratio 0.5: the 11th deletion is more than 5 and more than half of 20.
async fn holding() -> World {
    let w = world(5, 0.5, 600);
    synced(&w, 20).await;
    delete(&w, 0..20).await;
    w
}

#[tokio::test]
async fn holds_past_both_thresholds_with_counts() {
    let w = holding().await;
    assert_eq!(events(&w), 10, "10 deletions pass: the 11th is more than 5 and more than half of 20");
    assert_eq!(remaining(&w, 0..10).await, 0);
    assert_eq!(remaining(&w, 10..20).await, 10, "held TaskSyncs keep their finalizer");
    let (g, c) = guard(&w).await;
    assert_eq!((g.deleted_in_window, g.held, g.total), (10, 10, 20));
    assert!(g.holding());
    let c = c.unwrap();
    assert_eq!((c.status, c.reason.as_str()), (ConditionStatus::True, "DeletionsHeld"));
    assert!(c.message.starts_with("10 calendar deletions are held: 10 were deleted"), "{}", c.message);
    assert_eq!(warnings(&w, "DeletionsHeld").len(), 1, "one Warning when the guard trips, not one per task");
    assert_eq!(reason(&w.status("t15").await, "Synced"), format!("False/{HELD_REASON}"));

    // Another reconcile, and a new engine over the same store (a restart): still holding.
    w.reconcile("t12").await;
    let restarted = World::restart(
        &w,
        EngineConfig {
            deletion_guard: GuardConfig { max: 5, ratio: 0.5, window: Duration::from_secs(600) },
            ..EngineConfig::default()
        },
    );
    restarted.advance(3600);
    for i in 10..20 {
        restarted.reconcile(&format!("t{i}")).await;
    }
    assert_eq!(events(&w), 10);
    assert_eq!(remaining(&w, 10..20).await, 10);
}

#[tokio::test]
async fn below_the_ratio_everything_proceeds() {
    let w = world(5, 0.5, 600);
    synced(&w, 40).await;
    delete(&w, 0..20).await;
    assert_eq!(events(&w), 20, "20 of 40 is not more than half");
    let (g, c) = guard(&w).await;
    assert_eq!(g.deleted_in_window, 20);
    assert!(c.is_none());
    delete(&w, 20..21).await;
    assert_eq!(events(&w), 20, "the 21st of 40 is more than half: held");
}

#[tokio::test]
async fn the_window_expires() {
    let w = world(3, 0.0, 600);
    synced(&w, 10).await;
    delete(&w, 0..3).await;
    w.advance(601);
    delete(&w, 3..6).await;
    assert_eq!(events(&w), 4, "3 + 3 in two windows all pass");
    w.advance(599);
    delete(&w, 6..7).await;
    assert_eq!(events(&w), 4, "a 4th in the second window is held");
    assert!(guard(&w).await.0.holding());
    w.advance(3600);
    delete(&w, 7..8).await;
    assert_eq!(events(&w), 4, "holding does not expire: it waits for a decision");
}

#[tokio::test]
async fn a_stale_count_is_refused_then_the_right_one_deletes() {
    let w = holding().await;
    annotate(&w, "7").await;
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    let refused = warnings(&w, "ConfirmRefused");
    assert_eq!(refused.len(), 1);
    assert!(refused[0].contains("10 deletions are held now"), "{}", refused[0]);
    let (g, c) = guard(&w).await;
    assert!(g.holding());
    assert!(c.unwrap().message.contains("10 deletions are held now"));
    let conn = w.objects.get_connection(NS, "conn").await.unwrap().unwrap();
    assert!(!conn.metadata.annotations.unwrap_or_default().contains_key(CONFIRM_DELETIONS_ANNOTATION));
    for i in 10..20 {
        w.reconcile(&format!("t{i}")).await;
    }
    assert_eq!(events(&w), 10, "nothing deleted on a refused confirm");

    // The right count, seen by a TaskSync reconcile before any connection reconcile.
    annotate(&w, "10").await;
    delete(&w, 10..20).await;
    assert_eq!(events(&w), 0);
    assert_eq!(remaining(&w, 10..20).await, 0);
    let (g, c) = guard(&w).await;
    assert!(!g.holding());
    assert_eq!(g.decision.as_ref().map(|d| (d.action, d.count)), Some((GuardAction::Confirm, 10)));
    assert_eq!(c.map(|c| (c.status, c.reason)), Some((ConditionStatus::False, "DeletionsConfirmed".into())));
}

#[tokio::test]
async fn cancel_keeps_the_events_and_releases_the_task_syncs() {
    let w = holding().await;
    annotate(&w, "cancel").await;
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    for i in 10..20 {
        assert_eq!(w.reconcile(&format!("t{i}")).await, Outcome::Done);
    }
    assert_eq!(remaining(&w, 10..20).await, 0, "finalizers released");
    assert_eq!(events(&w), 10, "the held events stay in the calendar");
    let history = w.objects.get_connection(NS, "conn").await.unwrap().unwrap().status.unwrap().history;
    assert_eq!(history.iter().filter(|h| h.operation == Operation::Orphan).count(), 10);
    let (g, c) = guard(&w).await;
    assert_eq!(g.decision.map(|d| d.action), Some(GuardAction::Cancel));
    assert_eq!(c.map(|c| c.reason), Some("DeletionsCancelled".into()));

    // A new deletion after the decision counts in a fresh window, not under the cancel.
    // Deletion marks have second precision (store clock): a mark in the same second as the
    // last held one would be covered by the decision.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    w.task("t20", spec("task20")).await;
    w.reconcile("t20").await;
    delete(&w, 20..21).await;
    assert_eq!(remaining(&w, 20..21).await, 0);
    assert_eq!(events(&w), 10);
}

#[tokio::test]
async fn zero_turns_it_off() {
    let w = world(0, 0.5, 600);
    synced(&w, 20).await;
    delete(&w, 0..20).await;
    assert_eq!(events(&w), 0);
    let conn = w.objects.get_connection(NS, "conn").await.unwrap().unwrap();
    assert!(conn.status.unwrap().deletion_guard.is_none(), "an off guard writes nothing");
}

#[tokio::test]
async fn concurrent_reconciles_never_exceed_the_threshold() {
    let w = world(5, 0.0, 600);
    synced(&w, 20).await;
    for i in 0..20 {
        w.objects.delete(&ObjectKey::task_sync(NS, &format!("t{i}"))).await.unwrap();
    }
    let names: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    futures::future::join_all(names.iter().map(|n| w.engine.reconcile_task_sync(NS, n))).await;
    assert_eq!(events(&w), 15, "exactly 5 deleted");
    assert_eq!(guard(&w).await.0.held, 15);
}

#[tokio::test]
async fn other_status_writers_keep_the_count() {
    let w = world(5, 0.0, 600);
    synced(&w, 10).await;
    let stale = w.objects.get_connection(NS, "conn").await.unwrap().unwrap().status.unwrap();
    delete(&w, 0..3).await;
    // A connection reconcile that read the status before the deletions writes it back.
    w.engine.save_connection_status(NS, "conn", &stale).await.unwrap();
    assert_eq!(guard(&w).await.0.deleted_in_window, 3);
}

#[tokio::test]
async fn a_counted_deletion_still_in_flight_is_not_an_event_too() {
    // 11 events, max 5, ratio 0.5. t0's deletion is counted, then its calendar call fails, so
    // t0 still records its event: counted among the events as well, the total would be 12 and
    // the 6th deletion (6 > 5.5 of 11, but not > 6 of 12) would slip through.
    let w = world(5, 0.5, 600);
    synced(&w, 11).await;
    w.calendar.inject(Op::Delete, ProviderError::Transient { message: "503".into() });
    delete(&w, 0..6).await;
    assert_eq!(remaining(&w, 0..1).await, 1, "t0's call failed");
    assert_eq!(events(&w), 7, "t1..t4 deleted, t5 held");
    assert_eq!(reason(&w.status("t5").await, "Synced"), format!("False/{HELD_REASON}"));
    // t0's retry is the deletion already counted: it proceeds, uncounted.
    w.advance(60);
    w.reconcile("t0").await;
    assert_eq!(remaining(&w, 0..1).await, 0);
    let (g, _) = guard(&w).await;
    assert_eq!((g.deleted_in_window, g.held), (5, 1));
}
