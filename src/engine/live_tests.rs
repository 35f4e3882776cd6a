//! Live sync on the in-memory store and calendar: change syncs find edits and deletions made in
//! the calendar, TaskSyncs act on them under each conflict policy, calsync's own writes are
//! never reported, and signals are acted on once.

use std::collections::BTreeMap;
use std::time::Duration;

use super::live::{self, LiveConfig, SignalAction};
use super::tests::{World, reason, spec};
use super::*;
use crate::providers::EventTime;
use crate::providers::memory::Op;
use crate::resources::push::CHANGED_ANNOTATION;
use crate::resources::*;

const NS: &str = "default";

/// Polls are always due: every connection reconcile runs a change sync.
fn polling_world() -> World {
    let live = LiveConfig { caldav_poll: Duration::ZERO, ..LiveConfig::default() };
    World::with_config(EngineConfig { live, ..EngineConfig::default() })
}

/// A synced TaskSync `t1` (policy `policy`) and its event id; the first change sync has run.
async fn synced(w: &World, policy: ConflictPolicy) -> String {
    w.connection().await;
    w.task("t1", TaskSyncSpec { conflict_policy: policy, ..spec("task-1") }).await;
    w.reconcile("t1").await;
    let id = w.status("t1").await.event_id.expect("event id");
    // Baseline listing (full): nothing to report.
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    w.reconcile("t1").await;
    assert!(w.status("t1").await.calendar_edit.is_none());
    id
}

fn move_two_hours(ev: &mut crate::providers::RemoteEvent) {
    for t in [&mut ev.start, &mut ev.end] {
        if let EventTime::DateTime { utc, .. } = t {
            *utc += chrono::Duration::hours(2);
        }
    }
}

#[tokio::test]
async fn an_edit_in_the_calendar_is_reported_under_manual_and_held() {
    let w = polling_world();
    let id = synced(&w, ConflictPolicy::Manual).await;
    w.calendar.edit_external("calendar", &id, move_two_hours);
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    w.reconcile("t1").await;
    let st = w.status("t1").await;
    let edit = st.calendar_edit.clone().expect("edit reported");
    assert_eq!(edit.resolution, ConflictPolicy::Manual);
    assert!(edit.changed.contains(&"start".to_string()), "{edit:?}");
    assert_eq!(reason(&st, "Synced"), "False/ConflictDetected");
    // Held: no write back, and the next change sync does not report it again.
    let writes = w.calendar.count(Op::Update);
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    w.reconcile("t1").await;
    assert_eq!(w.calendar.count(Op::Update), writes);
    assert_eq!(w.status("t1").await.calendar_edit, Some(edit));
}

#[tokio::test]
async fn calendar_wins_adopts_the_edit_and_task_wins_writes_the_task_back() {
    let w = polling_world();
    let id = synced(&w, ConflictPolicy::CalendarWins).await;
    w.calendar.edit_external("calendar", &id, move_two_hours);
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    w.reconcile("t1").await;
    let st = w.status("t1").await;
    assert_eq!(st.calendar_edit.as_ref().map(|e| e.resolution), Some(ConflictPolicy::CalendarWins));
    assert_eq!(reason(&st, "Synced"), "True/CalendarWins");
    assert_eq!(st.etag, w.calendar.events("calendar")[0].etag, "the edited version is the accepted one");

    let w = polling_world();
    let id = synced(&w, ConflictPolicy::TaskWins).await;
    let before = w.calendar.events("calendar")[0].start.clone();
    w.calendar.edit_external("calendar", &id, move_two_hours);
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    w.reconcile("t1").await;
    assert_eq!(w.calendar.events("calendar")[0].start, before, "the task's time was written back");
    let st = w.status("t1").await;
    assert_eq!(reason(&st, "Synced"), "True/EventUpdated");
    assert!(st.history.iter().any(|h| h.operation == Operation::Conflict));
}

#[tokio::test]
async fn a_deletion_is_reported_and_not_undone_until_the_task_changes() {
    let w = polling_world();
    let id = synced(&w, ConflictPolicy::TaskWins).await;
    w.calendar.delete_external("calendar", &id);
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    w.reconcile("t1").await;
    let st = w.status("t1").await;
    assert!(st.calendar_edit.as_ref().is_some_and(|e| e.deleted), "{st:?}");
    assert_eq!(reason(&st, "Synced"), "False/DeletedInCalendar");
    // Even under TaskWins the event does not come back by itself...
    w.reconcile("t1").await;
    assert!(w.calendar.events("calendar").is_empty());
    // ...only when the task changes.
    w.set_spec("t1", |s| s.title = "Complete assignment (v2)".into()).await;
    w.reconcile("t1").await;
    assert_eq!(w.calendar.events("calendar").len(), 1);
    assert_eq!(reason(&w.status("t1").await, "Synced"), "True/EventCreated");
}

#[tokio::test]
async fn own_writes_and_same_content_versions_are_never_reported() {
    let w = polling_world();
    let id = synced(&w, ConflictPolicy::Manual).await;
    // A write of ours between two change syncs.
    w.set_spec("t1", |s| s.title = "Renamed by the app".into()).await;
    w.reconcile("t1").await;
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    w.reconcile("t1").await;
    assert!(w.status("t1").await.calendar_edit.is_none());
    // A new version with the same meaning (Google bumps etags for reminders): adopted silently.
    w.calendar.edit_external("calendar", &id, |_| {});
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    w.reconcile("t1").await;
    let st = w.status("t1").await;
    assert!(st.calendar_edit.is_none(), "{st:?}");
    assert_eq!(st.etag, w.calendar.events("calendar")[0].etag);
    assert_eq!(reason(&st, "Synced"), "True/EventUpdated");
}

#[tokio::test]
async fn a_signal_is_acted_on_once_and_unchanged_polls_write_nothing() {
    let w = World::new();
    let _ = synced(&w, ConflictPolicy::Manual).await;
    let key = ObjectKey::connection(NS, "conn");
    let annotations = BTreeMap::from([(CHANGED_ANNOTATION.to_string(), "1700000000000-00ab".to_string())]);
    w.objects.set_annotations(&key, &annotations).await.unwrap();
    let lists = w.calendar.count(Op::List);
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    let conn = w.objects.get_connection(NS, "conn").await.unwrap().unwrap();
    let push = conn.status.as_ref().and_then(|s| s.push.clone()).expect("push status");
    assert_eq!(push.signal_seen.as_deref(), Some("1700000000000-00ab"));
    assert_eq!(w.calendar.count(Op::List), lists + 1, "one listing for the signal");
    // The same value again is no new signal, and a quiet reconcile writes no status.
    let rv = conn.metadata.resource_version.clone();
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    assert_eq!(w.calendar.count(Op::List), lists + 1);
    let again = w.objects.get_connection(NS, "conn").await.unwrap().unwrap();
    assert_eq!(again.metadata.resource_version, rv);
}

#[tokio::test]
async fn connections_without_push_poll_and_say_why() {
    let w = polling_world();
    w.connection().await;
    let conn = w.objects.get_connection(NS, "conn").await.unwrap().unwrap();
    let st = conn.status.expect("status");
    let push = crate::resources::condition::find(&st.conditions, "Push").expect("Push condition");
    assert_eq!((push.status, push.reason.as_str()), (ConditionStatus::False, "Polling"));
    let cals = st.push.expect("push").calendars;
    assert_eq!(cals.len(), 1);
    assert_eq!((cals[0].calendar_id.as_str(), cals[0].mode), ("calendar", PushMode::Poll));
}

#[test]
fn signal_values_carry_lifecycle_actions() {
    assert_eq!(live::signal_action("1700000000000-00ab"), SignalAction::Look);
    assert_eq!(live::signal_action("1700000000000-00ab:renew:w-1"), SignalAction::Renew("w-1".into()));
    assert_eq!(live::signal_action("1700000000000-00ab:resync:w-1"), SignalAction::Resync("w-1".into()));
    assert_eq!(live::signal_action("garbage:other:x"), SignalAction::Look);
}

#[test]
fn first_polls_spread_over_the_interval() {
    let interval = Duration::from_secs(60);
    let mut per_second = [0u32; 60];
    for i in 0..10_000 {
        let at = live::first_poll_offset(&format!("ns/conn-{i}"), "calendar", interval);
        assert!(at < interval);
        per_second[at.as_secs() as usize] += 1;
    }
    // 10,000 connections over 60 s: about 167 a second, none near all of them.
    assert!(per_second.iter().all(|n| *n < 300), "{per_second:?}");
}

#[test]
fn live_config_reads_the_environment_and_refuses_nonsense() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    };
    let c = LiveConfig::from_lookup(&env(&[
        ("CALSYNC_PUBLIC_URL", "https://calsync.example.com/"),
        ("CALSYNC_CALDAV_POLL_SECONDS", "30"),
        ("CALSYNC_OUTLOOK_SUBSCRIPTION_MINUTES", "0.5"),
    ]))
    .unwrap();
    assert_eq!(c.public_url.as_deref(), Some("https://calsync.example.com"));
    assert_eq!(
        c.webhook_url(ProviderKind::Google).as_deref(),
        Some("https://calsync.example.com/api/calendar/webhooks/google")
    );
    assert_eq!(c.webhook_url(ProviderKind::Caldav), None);
    assert_eq!(c.caldav_poll, Duration::from_secs(30));
    assert_eq!(c.outlook_subscription, Duration::from_secs(30));
    assert!(LiveConfig::from_lookup(&env(&[("CALSYNC_POLL_SECONDS", "soon")])).is_err());
    assert!(LiveConfig::from_lookup(&env(&[("CALSYNC_PUBLIC_URL", "ftp://x")])).is_err());
    assert!(LiveConfig::from_lookup(&env(&[("CALSYNC_CALDAV_POLL_SECONDS", "0")])).is_err());
}

#[tokio::test]
async fn a_signal_whose_listing_failed_is_tried_again() {
    let w = World::new();
    let _ = synced(&w, ConflictPolicy::Manual).await;
    let key = ObjectKey::connection(NS, "conn");
    let annotations = BTreeMap::from([(CHANGED_ANNOTATION.to_string(), "1700000000001-0001".to_string())]);
    w.objects.set_annotations(&key, &annotations).await.unwrap();
    w.calendar.inject(Op::List, crate::providers::ProviderError::Transient { message: "503".into() });
    let out = w.engine.reconcile_connection(NS, "conn").await.unwrap();
    let seen =
        |c: &CalendarConnection| c.status.as_ref().and_then(|s| s.push.as_ref()).and_then(|p| p.signal_seen.clone());
    let conn = w.objects.get_connection(NS, "conn").await.unwrap().unwrap();
    assert_eq!(seen(&conn), None, "a failed signal is not marked seen");
    assert!(matches!(out, Outcome::Requeue(d) if d <= Duration::from_secs(10)), "{out:?}");
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    let conn = w.objects.get_connection(NS, "conn").await.unwrap().unwrap();
    assert_eq!(seen(&conn).as_deref(), Some("1700000000001-0001"));
}

#[test]
fn polls_keep_their_slot_whenever_they_ran() {
    let state = live::LiveState::default();
    // Long enough that a stalled test thread does not cross into the next slot mid-check.
    let interval = Duration::from_secs(1);
    let offset = live::first_poll_offset("ns/c", "cal", interval);
    let (due, left) = state.poll_due("ns/c", "cal", interval);
    assert!(due || left <= offset, "the first poll waits for the calendar's offset at most");
    std::thread::sleep(offset + Duration::from_millis(5));
    assert!(state.poll_due("ns/c", "cal", interval).0);
    // Synced (by a poll or a signal) anywhere in the slot: the next poll is at the next slot
    // boundary, not one interval after the sync.
    state.mark_synced("ns/c", "cal");
    let (due, left) = state.poll_due("ns/c", "cal", interval);
    assert!(!due);
    let since = state.since_start();
    let next_slot = offset + interval * (((since - offset).as_nanos() / interval.as_nanos()) as u32 + 1);
    assert!(left <= next_slot - since + Duration::from_millis(1), "{left:?} vs {:?}", next_slot - since);
}

/// Push on (public URL and keys), with the memory calendar offering Google-like channels.
fn push_world() -> World {
    let keys = crate::credentials::envelope::Keyring::new(
        crate::credentials::envelope::Key::from_bytes(&[9u8; 32]).expect("32 bytes"),
    )
    .push_keys();
    let live = LiveConfig {
        public_url: Some("https://calsync.example.com".into()),
        push_keys: Some(keys),
        ..LiveConfig::default()
    };
    let w = World::with_config(EngineConfig { live, ..EngineConfig::default() });
    w.calendar.enable_push();
    w
}

async fn push_status(w: &World) -> (Option<(ConditionStatus, String)>, WatchedCalendar, Vec<String>) {
    let conn = w.objects.get_connection(NS, "conn").await.unwrap().unwrap();
    let st = conn.status.clone().unwrap_or_default();
    let push = crate::resources::condition::find(&st.conditions, "Push").map(|c| (c.status, c.reason.clone()));
    let cal = st.push.expect("push status").calendars[0].clone();
    (push, cal, conn.metadata.finalizers.unwrap_or_default())
}

#[tokio::test]
async fn a_failed_watch_falls_back_to_polling_and_push_resumes_after_the_backoff() {
    let w = push_world();
    w.calendar.inject(Op::Watch, crate::providers::ProviderError::Transient { message: "503".into() });
    w.connection_of(ProviderKind::Google).await;
    let (push, cal, finalizers) = push_status(&w).await;
    assert_eq!(push, Some((ConditionStatus::False, "WatchFailed".into())));
    assert_eq!((cal.mode, cal.failures, cal.watch_id.is_none()), (PushMode::Poll, 1, true), "{cal:?}");
    assert!(cal.next_attempt_time.is_some() && cal.last_error.is_some());
    assert!(finalizers.contains(&crate::resources::push::PUSH_FINALIZER.to_string()));
    let events = w.objects.events();
    assert!(events.iter().any(|(_, e)| e.reason == "WatchFailed"), "a Warning Event names the failure");

    // Before the backoff ends no new attempt; after it, the watch is made.
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    assert_eq!(w.calendar.count(Op::Watch), 1);
    w.advance(3600);
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    let (push, cal, _) = push_status(&w).await;
    assert_eq!(push, Some((ConditionStatus::True, "Subscribed".into())));
    assert_eq!((cal.mode, cal.failures), (PushMode::Push, 0));
    let watches = w.calendar.watches();
    assert_eq!(watches.len(), 1);
    assert_eq!(Some(&watches[0].id), cal.watch_id.as_ref());
    assert!(watches[0].address.ends_with("/api/calendar/webhooks/google"));

    // Disconnect: the watch is stopped and the finalizer released.
    let mut conn = w.objects.get_connection(NS, "conn").await.unwrap().unwrap();
    conn.spec.active = false;
    conn.metadata.resource_version = None;
    w.objects.apply_connection(&conn).await.unwrap();
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    assert!(w.calendar.watches().is_empty());
    let (_, _, finalizers) = push_status(&w).await;
    assert!(!finalizers.contains(&crate::resources::push::PUSH_FINALIZER.to_string()));
}

#[tokio::test]
async fn quiet_polls_after_a_change_write_nothing() {
    let w = polling_world();
    let id = synced(&w, ConflictPolicy::Manual).await;
    w.calendar.edit_external("calendar", &id, move_two_hours);
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    let changed = w.objects.get_connection(NS, "conn").await.unwrap().unwrap();
    let cal = changed.status.as_ref().and_then(|s| s.push.clone()).expect("push").calendars[0].clone();
    assert!(cal.last_change_time.is_some() && cal.cursor.is_some(), "{cal:?}");
    for _ in 0..3 {
        w.engine.reconcile_connection(NS, "conn").await.unwrap();
    }
    let after = w.objects.get_connection(NS, "conn").await.unwrap().unwrap();
    assert_eq!(after.metadata.resource_version, changed.metadata.resource_version, "a quiet poll wrote status");
}
