//! Tasks that place themselves, on the in-memory store and calendar (the world's clock is
//! Sunday 1 March 2026, 12:00 UTC): first placement, stability, moving off a meeting found by
//! the change sync, packing two tasks, no room, opaque blocks, and reading `spec.schedule`.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::schedule::{self, parse};
use super::tests::{World, reason, spec};
use super::*;
use crate::providers::memory::Op;
use crate::providers::{EventTime, RemoteEvent};
use crate::resources::*;

const NS: &str = "default";

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn polling_world() -> World {
    let live = live::LiveConfig { caldav_poll: Duration::ZERO, ..live::LiveConfig::default() };
    World::with_config(EngineConfig { live, ..EngineConfig::default() })
}

/// One hour in New York office hours, Monday 2 to Wednesday 4 March 2026.
fn auto(task: &str) -> TaskSyncSpec {
    TaskSyncSpec {
        start: String::new(),
        schedule: Some(Box::new(TaskSchedule {
            duration_minutes: 60,
            earliest_start: Some("2026-03-02T00:00:00".into()),
            deadline: Some("2026-03-04T17:00:00".into()),
            working_hours: None,
            buffer_minutes: Some(10),
            transparency: Transparency::Transparent,
        })),
        ..spec(task)
    }
}

fn meeting(id: &str, from: &str, to: &str) -> RemoteEvent {
    let at = |s: &str| EventTime::DateTime { utc: t(s), local: t(s).naive_utc(), zone: None };
    RemoteEvent {
        id: id.into(),
        etag: None,
        link: None,
        title: "Meeting".into(),
        description: None,
        category: None,
        start: at(from),
        end: at(to),
        zone: None,
        recurrence: vec![],
        marker: None,
        cancelled: false,
        created: None,
        exceptions: vec![],
    }
}

fn block(st: &TaskSyncStatus) -> (DateTime<Utc>, DateTime<Utc>) {
    (st.scheduled_start.expect("scheduledStart"), st.scheduled_end.expect("scheduledEnd"))
}

fn event_start(w: &World, id: &str) -> DateTime<Utc> {
    match w.calendar.events("calendar").into_iter().find(|e| e.id == id).expect("event").start {
        EventTime::DateTime { utc, .. } => utc,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_task_is_placed_stays_put_and_moves_off_a_meeting_before_its_deadline() {
    let w = polling_world();
    w.connection().await;
    w.task("t1", auto("task-1")).await;
    w.reconcile("t1").await;
    w.reconcile("t1").await;
    let st = w.status("t1").await;
    // Monday 09:00 EST.
    assert_eq!(block(&st), (t("2026-03-02T14:00:00Z"), t("2026-03-02T15:00:00Z")));
    assert_eq!(reason(&st, "Scheduled"), "True/Placed");
    assert_eq!(reason(&st, "Synced"), "True/EventCreated");
    let id = st.event_id.clone().expect("event");
    assert_eq!(event_start(&w, &id), t("2026-03-02T14:00:00Z"));
    assert!(st.scheduled_reason.as_deref().is_some_and(|r| r.contains("earliest free time")), "{st:?}");

    // Nothing changed: no write, no status change (the block is free, so it is not busy for
    // itself).
    let writes = w.calendar.count(Op::Update) + w.calendar.count(Op::Create);
    w.reconcile("t1").await;
    assert_eq!(w.calendar.count(Op::Update) + w.calendar.count(Op::Create), writes);
    assert_eq!(w.status("t1").await, st);

    // A meeting lands on it (Monday 08:30–10:30 EST); the change sync sees it.
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    w.calendar.insert_external("calendar", meeting("m1", "2026-03-02T13:30:00Z", "2026-03-02T15:30:00Z"));
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    w.reconcile("t1").await;
    let st = w.status("t1").await;
    // Right after the meeting and its 10-minute buffer, on the quarter hour: 10:45 EST.
    assert_eq!(block(&st), (t("2026-03-02T15:45:00Z"), t("2026-03-02T16:45:00Z")));
    assert_eq!(reason(&st, "Scheduled"), "True/Moved");
    assert_eq!(st.event_id.as_deref(), Some(id.as_str()), "the same event, moved");
    assert_eq!(event_start(&w, &id), t("2026-03-02T15:45:00Z"));
    assert!(st.scheduled_reason.as_deref().is_some_and(|r| r.starts_with("moved")), "{st:?}");

    // Under way: kept whatever lands on it.
    w.advance(chrono::Duration::hours(28).num_seconds() - 20 * 60); // Monday 15:40Z
    w.advance(30 * 60); // 16:10Z, inside the block
    w.calendar.insert_external("calendar", meeting("m2", "2026-03-02T16:00:00Z", "2026-03-02T17:00:00Z"));
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    w.reconcile("t1").await;
    assert_eq!(block(&w.status("t1").await).0, t("2026-03-02T15:45:00Z"));
}

#[tokio::test]
async fn two_tasks_of_one_user_never_share_time_and_a_full_week_is_no_room() {
    let w = polling_world();
    w.connection().await;
    w.task("a", auto("task-a")).await;
    w.task("b", auto("task-b")).await;
    for _ in 0..2 {
        w.reconcile("b").await;
        w.reconcile("a").await;
    }
    let (a, b) = (block(&w.status("a").await), block(&w.status("b").await));
    // b was placed first (a, made by hand, had no user label yet) and keeps its block; a goes
    // right after it, the buffer kept between them.
    assert_eq!((b.0, a.0), (t("2026-03-02T14:00:00Z"), t("2026-03-02T15:15:00Z")), "{a:?} {b:?}");

    // The whole week is busy: a third task has no room; no event is written.
    w.calendar.insert_external("calendar", meeting("week", "2026-03-01T00:00:00Z", "2026-03-08T00:00:00Z"));
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    w.task("c", auto("task-c")).await;
    let creates = w.calendar.count(Op::Create);
    w.reconcile("c").await;
    w.reconcile("c").await;
    let st = w.status("c").await;
    assert_eq!(reason(&st, "Scheduled"), "False/NoRoom");
    assert_eq!(reason(&st, "Synced"), "False/NoRoom");
    assert!(st.event_id.is_none() && st.scheduled_start.is_none());
    assert_eq!(w.calendar.count(Op::Create), creates, "nothing written");
    let message = find_message(&st, "Scheduled");
    assert!(message.contains("deadline"), "{message}");

    // An existing block with no room left stays where it is, and says so.
    w.reconcile("a").await;
    let st = w.status("a").await;
    assert_eq!(reason(&st, "Scheduled"), "False/NoRoom");
    assert_eq!(block(&st), a, "left where it was");
    assert!(st.event_id.is_some());
}

fn find_message(st: &TaskSyncStatus, type_: &str) -> String {
    crate::resources::condition::find(&st.conditions, type_).map(|c| c.message.clone()).unwrap_or_default()
}

#[tokio::test]
async fn an_opaque_block_is_not_busy_for_itself() {
    let w = polling_world();
    w.connection().await;
    let mut s = auto("task-1");
    if let Some(sch) = s.schedule.as_mut() {
        sch.transparency = Transparency::Opaque;
    }
    w.task("t1", s).await;
    w.reconcile("t1").await;
    let first = block(&w.status("t1").await);
    for _ in 0..3 {
        w.engine.reconcile_connection(NS, "conn").await.unwrap();
        w.reconcile("t1").await;
    }
    assert_eq!(block(&w.status("t1").await), first, "it does not flee its own busy time");
    assert_eq!(w.calendar.count(Op::Update), 0);
}

#[test]
fn schedule_is_read_in_the_zone_and_bad_input_names_the_field() {
    let s = parse(&auto("t")).unwrap();
    assert_eq!(s.earliest_start, Some(t("2026-03-02T05:00:00Z")));
    assert_eq!(s.deadline, Some(t("2026-03-04T22:00:00Z")));
    assert!(s.transparent);
    let bad = |f: &dyn Fn(&mut TaskSchedule)| {
        let mut spec = auto("t");
        f(spec.schedule.as_mut().unwrap());
        parse(&spec).unwrap_err()
    };
    assert!(bad(&|s| s.deadline = Some("2026-03-01T10:00:00".into())).contains("schedule.deadline is not after"));
    assert!(bad(&|s| s.duration_minutes = 0).contains("schedule.durationMinutes"));
    assert!(bad(&|s| s.deadline = Some("2026-03-02".into())).contains("schedule.deadline must be a date-time"));
    assert!(
        bad(&|s| {
            s.working_hours = Some(WorkingHoursSpec {
                monday: vec![HoursRange { start: "10:00".into(), end: "09:00".into() }],
                ..Default::default()
            })
        })
        .contains("schedule.workingHours.monday[0]")
    );
    assert!(bad(&|s| s.working_hours = Some(WorkingHoursSpec::default())).contains("empty"));
    // 02:30 on 8 March 2026 does not exist in New York.
    assert!(bad(&|s| s.earliest_start = Some("2026-03-08T02:30:00".into())).contains("does not exist"));
    let mut no_zone = auto("t");
    no_zone.time_zone = None;
    assert!(parse(&no_zone).unwrap_err().contains("timeZone"));

    // The window: earliest start (or now) to the deadline; a passed deadline is no room.
    let r = schedule::request(&s, t("2026-03-01T12:00:00Z")).unwrap();
    assert_eq!((r.window.start, r.window.end), (t("2026-03-02T05:00:00Z"), t("2026-03-04T22:00:00Z")));
    assert!(schedule::request(&s, t("2026-03-05T00:00:00Z")).unwrap_err().contains("has passed"));
    let mut open = s.clone();
    open.deadline = None;
    let r = schedule::request(&open, t("2026-03-01T12:00:00Z")).unwrap();
    assert_eq!(r.window.end - r.window.start, chrono::Duration::days(schedule::DEFAULT_HORIZON_DAYS));
}
