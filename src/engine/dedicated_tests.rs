//! `calendarId: auto` through whole reconciles on the in-memory store and calendar (which, like
//! Google, has no atomic calendar create): created once, adopted after a crash, one calendar
//! under concurrent reconciles, a read-only account reported with a reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::DEDICATED_FAILED;
use crate::engine::memory::{MemoryObjects, StoreOp};
use crate::engine::objects::Objects;
use crate::engine::tests::{World, spec};
use crate::engine::{Engine, EngineConfig, StoreError};
use crate::providers::dedicated::DEDICATED_NAME;
use crate::providers::memory::{MemoryCalendar, MemoryConnector, Op};
use crate::resources::condition::find;
use crate::resources::*;

const NS: &str = "default";

async fn auto_connection(objects: &MemoryObjects) {
    objects.put_secret(
        NS,
        "creds",
        BTreeMap::from([("username".to_string(), b"user".to_vec()), ("password".to_string(), b"secret".to_vec())]),
    );
    let conn = CalendarConnection {
        metadata: ObjectMeta { name: Some("conn".into()), namespace: Some(NS.into()), ..Default::default() },
        spec: CalendarConnectionSpec {
            user_id: "user123".into(),
            provider: ProviderKind::Google,
            credentials_secret_ref: SecretRef { name: "creds".into(), key: None },
            calendar_id: Some(AUTO_CALENDAR.into()),
            server_url: None,
            category_calendars: BTreeMap::new(),
            user_default: false,
            import: None,
            active: true,
        },
        status: None,
    };
    objects.apply_connection(&conn).await.unwrap();
}

async fn status(objects: &MemoryObjects) -> CalendarConnectionStatus {
    objects.get_connection(NS, "conn").await.unwrap().and_then(|c| c.status).unwrap_or_default()
}

fn cond(st: &CalendarConnectionStatus, type_: &str) -> String {
    find(&st.conditions, type_).map(|c| format!("{:?}/{}", c.status, c.reason)).unwrap_or_default()
}

#[tokio::test]
async fn auto_creates_one_calendar_and_events_go_there() {
    let w = World::new();
    auto_connection(&w.objects).await;
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    let st = status(&w.objects).await;
    assert_eq!(cond(&st, "Ready"), "True/Connected");
    let own = st.dedicated_calendar_id.clone().expect("dedicatedCalendarId recorded");
    assert_eq!(st.default_calendar_id.as_deref(), Some(own.as_str()));
    let listed = st.calendars.iter().find(|c| c.id == own).expect("the new calendar is listed in status");
    assert_eq!((listed.name.as_str(), listed.writable), (DEDICATED_NAME, true));
    assert_eq!(w.calendar.made_calendars(), vec![own.clone()]);

    // Later checks keep it: the recorded id is still listed, so nothing is looked up or made.
    w.calendar.clear_calls();
    for _ in 0..3 {
        w.advance(3600);
        w.engine.reconcile_connection(NS, "conn").await.unwrap();
    }
    assert_eq!(w.calendar.count(Op::CreateCalendar), 0);
    assert_eq!(w.calendar.count(Op::ListDedicated), 0);
    assert_eq!(status(&w.objects).await.dedicated_calendar_id.as_deref(), Some(own.as_str()));

    let ts = w.task("t1", spec("task1")).await;
    w.reconcile("t1").await;
    let tst = w.status("t1").await;
    assert_eq!(tst.calendar_id.as_deref(), Some(own.as_str()), "the event goes to the new calendar");
    let uid = ts.metadata.uid.unwrap();
    let evs = w.calendar.events_for_uid(&uid);
    assert_eq!(evs.len(), 1);
    assert_eq!(w.calendar.events(&own).len(), 1);
    assert!(w.calendar.events("calendar").is_empty(), "nothing in the primary calendar");
}

#[tokio::test]
async fn crash_between_create_and_status_write_does_not_create_twice() {
    let w = World::new();
    auto_connection(&w.objects).await;
    // The calendar is made, then the status write fails (the process dies there).
    w.objects.inject(StoreOp::PatchStatus, StoreError::Unavailable("crash before the status write".into()));
    assert!(w.engine.reconcile_connection(NS, "conn").await.is_err());
    assert!(status(&w.objects).await.dedicated_calendar_id.is_none(), "nothing recorded");
    assert_eq!(w.calendar.made_calendars().len(), 1);
    // A new engine (restart) on the same store and calendar finds and adopts it.
    let restarted = Engine::new(
        Arc::new(w.objects.clone()),
        Arc::new(MemoryConnector { service: w.calendar.clone() }),
        EngineConfig::default(),
    );
    restarted.reconcile_connection(NS, "conn").await.unwrap();
    let st = status(&w.objects).await;
    assert_eq!(w.calendar.count(Op::CreateCalendar), 1, "created once");
    assert_eq!(w.calendar.made_calendars().len(), 1);
    assert_eq!(st.dedicated_calendar_id, w.calendar.made_calendars().first().cloned());
    assert_eq!(cond(&st, "Ready"), "True/Connected");
}

#[tokio::test]
async fn concurrent_reconciles_end_with_one_calendar() {
    let mut raced = 0;
    for round in 0..20 {
        let objects = MemoryObjects::new();
        let calendar = MemoryCalendar::new();
        auto_connection(&objects).await;
        let engine = || {
            Engine::new(
                Arc::new(objects.clone()),
                Arc::new(MemoryConnector { service: calendar.clone() }),
                EngineConfig::default(),
            )
        };
        let (a, b, c) = (engine(), engine(), engine());
        let (ra, rb, rc) = tokio::join!(
            a.reconcile_connection(NS, "conn"),
            b.reconcile_connection(NS, "conn"),
            c.reconcile_connection(NS, "conn")
        );
        // A status write may lose to another replica's (stale resourceVersion): that reconcile
        // is retried by the controller, as here.
        for (r, e) in [(ra, &a), (rb, &b), (rc, &c)] {
            if r.is_err() {
                e.reconcile_connection(NS, "conn").await.unwrap();
            }
        }
        let made = calendar.made_calendars();
        assert_eq!(made.len(), 1, "round {round}: exactly one calendar survives: {made:?}");
        a.reconcile_connection(NS, "conn").await.unwrap();
        let st = status(&objects).await;
        assert_eq!(st.dedicated_calendar_id.as_ref(), made.first(), "round {round}");
        assert_eq!(st.default_calendar_id.as_ref(), made.first(), "round {round}");
        if calendar.count(Op::CreateCalendar) > 1 {
            raced += 1;
            assert!(calendar.count(Op::DeleteCalendar) >= 1, "round {round}: the race was converged by deleting");
        }
    }
    assert!(raced > 0, "the rounds must include real races (several creates), or this test proves nothing");
}

#[tokio::test]
async fn read_only_account_gets_a_reason_not_a_panic() {
    let w = World::new();
    w.calendar.set_calendars_read_only(true);
    auto_connection(&w.objects).await;
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    let st = status(&w.objects).await;
    assert_eq!(cond(&st, "Ready"), format!("False/{DEDICATED_FAILED}"));
    assert!(cond(&st, "Authenticated").starts_with("True/"), "the credentials were not judged wrong");
    let msg = find(&st.conditions, "Ready").map(|c| c.message.clone()).unwrap_or_default();
    assert!(msg.contains("dedicated_calendar") && msg.contains("spec.calendarId"), "says what to do: {msg}");
    assert!(st.dedicated_calendar_id.is_none());
    // Once allowed, the next check creates it.
    w.calendar.set_calendars_read_only(false);
    w.advance(24 * 3600);
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    let st = status(&w.objects).await;
    assert_eq!(cond(&st, "Ready"), "True/Connected");
    assert!(st.dedicated_calendar_id.is_some());
}
