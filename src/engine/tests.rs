//! Engine scenarios on the in-memory store and provider: whole reconciles, not single rules
//! (those are in plan/tests.rs).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::memory::{MemoryObjects, StoreOp};
use super::*;
use crate::providers::memory::{MemoryCalendar, MemoryConnector, Op};
use crate::resources::condition::find;
use crate::resources::*;

const NS: &str = "default";

pub(super) struct World {
    pub(super) objects: MemoryObjects,
    pub(super) calendar: MemoryCalendar,
    pub(super) engine: Engine,
    pub(super) now: Arc<Mutex<DateTime<Utc>>>,
}

impl World {
    pub(super) fn new() -> Self {
        Self::with_config(EngineConfig::default())
    }

    pub(super) fn with_config(config: EngineConfig) -> Self {
        let objects = MemoryObjects::new();
        let calendar = MemoryCalendar::new();
        let now = Arc::new(Mutex::new(Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()));
        let clock_now = now.clone();
        let engine =
            Engine::new(Arc::new(objects.clone()), Arc::new(MemoryConnector { service: calendar.clone() }), config)
                .with_clock(Arc::new(move || *clock_now.lock().unwrap()));
        World { objects, calendar, engine, now }
    }

    /// A new engine over the same store, calendar and clock: what a restart sees.
    pub(super) fn restart(w: &World, config: EngineConfig) -> Self {
        let now = w.now.clone();
        let clock_now = now.clone();
        let engine =
            Engine::new(Arc::new(w.objects.clone()), Arc::new(MemoryConnector { service: w.calendar.clone() }), config)
                .with_clock(Arc::new(move || *clock_now.lock().unwrap()));
        World { objects: w.objects.clone(), calendar: w.calendar.clone(), engine, now }
    }

    pub(super) fn advance(&self, secs: i64) {
        *self.now.lock().unwrap() += chrono::Duration::seconds(secs);
    }

    pub(super) async fn connection(&self) {
        self.connection_of(ProviderKind::Caldav).await
    }

    /// The connection `conn` with provider `provider` (the memory calendar serves any).
    pub(super) async fn connection_of(&self, provider: ProviderKind) {
        self.objects.put_secret(
            NS,
            "creds",
            BTreeMap::from([("username".to_string(), b"user".to_vec()), ("password".to_string(), b"secret".to_vec())]),
        );
        let conn = CalendarConnection {
            metadata: ObjectMeta { name: Some("conn".into()), namespace: Some(NS.into()), ..Default::default() },
            spec: CalendarConnectionSpec {
                user_id: "user123".into(),
                provider,
                credentials_secret_ref: SecretRef { name: "creds".into(), key: None },
                calendar_id: None,
                server_url: Some("http://127.0.0.1:1/".into()),
                category_calendars: BTreeMap::new(),
                user_default: false,
                import: None,
                active: true,
            },
            status: None,
        };
        self.objects.apply_connection(&conn).await.unwrap();
        self.engine.reconcile_connection(NS, "conn").await.unwrap();
    }

    pub(super) async fn task(&self, name: &str, spec: TaskSyncSpec) -> TaskSync {
        let ts = TaskSync {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some(NS.into()), ..Default::default() },
            spec,
            status: None,
        };
        self.objects.apply_task_sync(&ts).await.unwrap()
    }

    pub(super) async fn get(&self, name: &str) -> Option<TaskSync> {
        self.objects.get_task_sync(NS, name).await.unwrap()
    }

    pub(super) async fn status(&self, name: &str) -> TaskSyncStatus {
        self.get(name).await.and_then(|t| t.status).unwrap_or_default()
    }

    pub(super) async fn reconcile(&self, name: &str) -> Outcome {
        self.engine.reconcile_task_sync(NS, name).await.unwrap()
    }

    pub(super) async fn set_spec(&self, name: &str, f: impl FnOnce(&mut TaskSyncSpec)) {
        let mut ts = self.get(name).await.unwrap();
        f(&mut ts.spec);
        ts.metadata.resource_version = None;
        self.objects.apply_task_sync(&ts).await.unwrap();
    }
}

pub(super) fn spec(task: &str) -> TaskSyncSpec {
    TaskSyncSpec {
        connection_ref: ConnectionRef { name: "conn".into() },
        task_id: task.into(),
        title: "Complete assignment".into(),
        start: "2026-03-05T14:00:00".into(),
        time_zone: Some("America/New_York".into()),
        duration: None,
        end: None,
        all_day: None,
        category: Some("Homework".into()),
        description: None,
        recurrence: vec![],
        exceptions: Vec::new(),
        calendar_id: None,
        deletion_policy: DeletionPolicy::Delete,
        conflict_policy: ConflictPolicy::Manual,
        schedule: None,
    }
}

pub(super) fn reason(st: &TaskSyncStatus, type_: &str) -> String {
    find(&st.conditions, type_).map(|c| format!("{:?}/{}", c.status, c.reason)).unwrap_or_default()
}

#[tokio::test]
async fn lifecycle_create_noop_update_delete() {
    let w = World::new();
    w.connection().await;
    let conn = w.objects.get_connection(NS, "conn").await.unwrap().unwrap();
    let cst = conn.status.unwrap();
    assert_eq!(reason_c(&cst.conditions, "Ready"), "True/Connected");
    assert_eq!(cst.default_calendar_id.as_deref(), Some("calendar"));
    let labels = w.objects.get_connection(NS, "conn").await.unwrap().unwrap().metadata.labels.unwrap_or_default();
    assert_eq!(labels.get(USER_LABEL), Some(&user_label_value("user123")), "YAML-made connections get the user label");

    let ts = w.task("t1", spec("task456")).await;
    let uid = ts.metadata.uid.clone().unwrap();
    w.reconcile("t1").await;
    let st = w.status("t1").await;
    assert_eq!(reason(&st, "Synced"), "True/EventCreated");
    assert_eq!(reason(&st, "Ready"), "True/InSync");
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(w.calendar.events_for_uid(&uid).len(), 1);
    assert_eq!(st.event_id.as_deref(), Some(w.calendar.events_for_uid(&uid)[0].id.as_str()));
    let ts = w.get("t1").await.unwrap();
    assert_eq!(ts.metadata.finalizers.as_deref(), Some(&[FINALIZER.to_string()][..]));
    assert_eq!(ts.metadata.labels.as_ref().unwrap()[USER_LABEL], user_label_value("user123"));
    assert!(w.objects.events().iter().any(|(_, e)| e.reason == "EventCreated"));
    let conn = w.objects.get_connection(NS, "conn").await.unwrap().unwrap();
    assert_eq!(conn.status.unwrap().history.len(), 1, "the user's history records the create");

    // Unchanged: no provider call and no store write.
    w.calendar.clear_calls();
    w.objects.clear_writes();
    assert!(matches!(w.reconcile("t1").await, Outcome::Requeue(_)));
    assert!(w.calendar.calls().is_empty(), "unchanged reconcile called the provider: {:?}", w.calendar.calls());
    assert!(w.objects.writes().is_empty(), "unchanged reconcile wrote: {:?}", w.objects.writes());

    // Spec change: one update with the last etag.
    w.set_spec("t1", |s| s.title = "Updated assignment title".into()).await;
    w.reconcile("t1").await;
    let st = w.status("t1").await;
    assert_eq!(reason(&st, "Synced"), "True/EventUpdated");
    assert_eq!(st.observed_generation, Some(2));
    assert_eq!(w.calendar.events_for_uid(&uid)[0].title, "Updated assignment title");
    assert_eq!(w.calendar.count(Op::Update), 1);

    // Delete: event removed, then the object goes.
    w.objects.delete(&ObjectKey::task_sync(NS, "t1")).await.unwrap();
    assert!(w.get("t1").await.is_some(), "the finalizer holds the object until the event is gone");
    assert_eq!(w.reconcile("t1").await, Outcome::Done);
    assert!(w.calendar.events_for_uid(&uid).is_empty());
    assert!(w.get("t1").await.is_none());
}

/// The REST API declares a TaskSync with the engine's finalizer: the first reconcile makes no
/// finalizer write, and one deleted before the engine ever saw it still goes, through the
/// engine's deletion path (the finalizer is the engine's to remove).
#[tokio::test]
async fn declared_with_the_finalizer() {
    let w = World::new();
    w.connection().await;
    let declared = |name: &str| TaskSync {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            finalizers: Some(vec![FINALIZER.to_string()]),
            // As the REST API labels it.
            labels: Some(task_sync_labels("user123", "conn", name)),
            ..Default::default()
        },
        spec: spec(name),
        status: None,
    };
    w.objects.apply_task_sync(&declared("t1")).await.unwrap();
    w.objects.clear_writes();
    w.reconcile("t1").await;
    assert_eq!(reason(&w.status("t1").await, "Synced"), "True/EventCreated");
    let ops: Vec<StoreOp> = w.objects.writes().into_iter().map(|(op, _)| op).collect();
    assert_eq!(ops, [StoreOp::AppendHistory, StoreOp::PatchStatus], "no finalizer write");

    let uid = w.objects.apply_task_sync(&declared("t2")).await.unwrap().metadata.uid.unwrap();
    assert_eq!(w.objects.delete(&ObjectKey::task_sync(NS, "t2")).await.unwrap(), Deletion::Marked);
    assert_eq!(w.reconcile("t2").await, Outcome::Done);
    assert!(w.get("t2").await.is_none(), "released by the engine");
    assert!(w.calendar.events_for_uid(&uid).is_empty());
}

fn reason_c(conditions: &[Condition], type_: &str) -> String {
    find(conditions, type_).map(|c| format!("{:?}/{}", c.status, c.reason)).unwrap_or_default()
}

#[tokio::test]
async fn orphan_policy_keeps_the_event() {
    let w = World::new();
    w.connection().await;
    let mut s = spec("t");
    s.deletion_policy = DeletionPolicy::Orphan;
    let uid = w.task("t1", s).await.metadata.uid.unwrap();
    w.reconcile("t1").await;
    assert!(w.get("t1").await.unwrap().metadata.finalizers.unwrap_or_default().is_empty());
    w.objects.delete(&ObjectKey::task_sync(NS, "t1")).await.unwrap();
    assert!(w.get("t1").await.is_none(), "no finalizer: deleted at once");
    assert_eq!(w.calendar.events_for_uid(&uid).len(), 1, "the event stays in the calendar");
}

#[tokio::test]
async fn crash_after_create_never_duplicates() {
    let w = World::new();
    w.connection().await;
    let uid = w.task("t1", spec("t")).await.metadata.uid.unwrap();
    // The event is created, then the status write fails (the process "crashes" before it).
    w.objects.inject(StoreOp::PatchStatus, StoreError::Unavailable("connection reset".into()));
    assert!(w.engine.reconcile_task_sync(NS, "t1").await.is_err());
    assert_eq!(w.calendar.events_for_uid(&uid).len(), 1);
    assert!(w.status("t1").await.event_id.is_none(), "the create was never recorded");
    w.reconcile("t1").await;
    let st = w.status("t1").await;
    assert_eq!(reason(&st, "Synced"), "True/EventAdopted");
    assert_eq!(w.calendar.events_for_uid(&uid).len(), 1, "still exactly one event");
    // And a delete before any create was recorded still finds the event by key.
    let uid2 = w.task("t2", spec("t2")).await.metadata.uid.unwrap();
    w.objects.inject(StoreOp::PatchStatus, StoreError::Unavailable("reset".into()));
    let _ = w.engine.reconcile_task_sync(NS, "t2").await;
    w.objects.delete(&ObjectKey::task_sync(NS, "t2")).await.unwrap();
    w.reconcile("t2").await;
    assert!(w.calendar.events_for_uid(&uid2).is_empty(), "the unrecorded event was deleted");
    assert!(w.get("t2").await.is_none());
}

#[tokio::test]
async fn revoked_credentials_mark_task_and_connection() {
    let w = World::new();
    w.connection().await;
    w.task("t1", spec("t")).await;
    w.calendar.revoke(true);
    w.reconcile("t1").await;
    assert_eq!(reason(&w.status("t1").await, "Synced"), "False/ReconnectRequired");
    let conn = w.objects.get_connection(NS, "conn").await.unwrap().unwrap();
    assert_eq!(reason_c(&conn.status.unwrap().conditions, "Ready"), "False/ReconnectRequired");
    // Now the TaskSync waits without calling the provider.
    w.calendar.clear_calls();
    w.reconcile("t1").await;
    assert!(w.calendar.calls().is_empty());
}

async fn edited_world(policy: ConflictPolicy) -> (World, String) {
    let w = World::new();
    w.connection().await;
    let mut s = spec("t");
    s.conflict_policy = policy;
    let uid = w.task("t1", s).await.metadata.uid.unwrap();
    w.reconcile("t1").await;
    let id = w.status("t1").await.event_id.unwrap();
    w.calendar.edit_external("calendar", &id, |e| e.title = "Moved by the user".into());
    w.set_spec("t1", |s| s.title = "Task renamed".into()).await;
    w.reconcile("t1").await;
    (w, uid)
}

#[tokio::test]
async fn calendar_edit_manual_is_reported_and_held() {
    let (w, uid) = edited_world(ConflictPolicy::Manual).await;
    let st = w.status("t1").await;
    assert_eq!(reason(&st, "Synced"), "False/ConflictDetected");
    let edit = st.calendar_edit.clone().unwrap();
    assert_eq!(edit.title.as_deref(), Some("Moved by the user"));
    assert!(edit.changed.contains(&"title".to_string()));
    assert_eq!(w.calendar.events_for_uid(&uid)[0].title, "Moved by the user", "never silently overwritten");
    w.calendar.clear_calls();
    w.reconcile("t1").await;
    assert!(w.calendar.calls().is_empty(), "a held conflict makes no calls");
    // A newer spec resolves it for the task.
    w.set_spec("t1", |s| s.title = "Task renamed again".into()).await;
    w.reconcile("t1").await;
    assert_eq!(w.calendar.events_for_uid(&uid)[0].title, "Task renamed again");
    assert!(w.status("t1").await.calendar_edit.is_none());
}

#[tokio::test]
async fn calendar_edit_task_wins_overwrites() {
    let (w, uid) = edited_world(ConflictPolicy::TaskWins).await;
    assert_eq!(reason(&w.status("t1").await, "Synced"), "True/EventUpdated");
    assert_eq!(w.calendar.events_for_uid(&uid)[0].title, "Task renamed");
}

#[tokio::test]
async fn calendar_edit_calendar_wins_keeps_the_edit() {
    let (w, uid) = edited_world(ConflictPolicy::CalendarWins).await;
    let st = w.status("t1").await;
    assert_eq!(reason(&st, "Synced"), "True/CalendarWins");
    assert_eq!(w.calendar.events_for_uid(&uid)[0].title, "Moved by the user");
    w.calendar.clear_calls();
    w.reconcile("t1").await;
    assert!(w.calendar.calls().is_empty(), "the accepted calendar version is not rewritten");
}

#[tokio::test]
async fn deleted_in_calendar_is_not_brought_back_silently() {
    let w = World::new();
    w.connection().await;
    let uid = w.task("t1", spec("t")).await.metadata.uid.unwrap();
    w.reconcile("t1").await;
    let id = w.status("t1").await.event_id.unwrap();
    w.calendar.delete_external("calendar", &id);
    w.set_spec("t1", |s| s.title = "renamed".into()).await;
    w.reconcile("t1").await;
    assert_eq!(reason(&w.status("t1").await, "Synced"), "False/DeletedInCalendar");
    assert!(w.calendar.events_for_uid(&uid).is_empty());
    w.reconcile("t1").await;
    assert!(w.calendar.events_for_uid(&uid).is_empty(), "no resurrection without a new spec");
    w.set_spec("t1", |s| s.title = "renamed again".into()).await;
    w.reconcile("t1").await;
    assert_eq!(w.calendar.events_for_uid(&uid).len(), 1, "a newer spec creates it again");
}

#[tokio::test]
async fn invalid_spec_is_a_condition_not_a_hot_loop() {
    let w = World::new();
    w.connection().await;
    let mut s = spec("t");
    s.time_zone = Some("Mars/Olympus".into());
    w.task("t1", s).await;
    let out = w.reconcile("t1").await;
    let st = w.status("t1").await;
    assert_eq!(reason(&st, "Synced"), "False/InvalidSpec");
    assert!(find(&st.conditions, "Synced").unwrap().message.contains("unknown time zone"));
    assert!(matches!(out, Outcome::Requeue(d) if d.as_secs() >= 600), "no hot retry: {out:?}");
    w.objects.clear_writes();
    w.reconcile("t1").await;
    assert!(w.calendar.count(Op::Create) == 0);
    assert!(w.objects.writes().is_empty(), "an unchanged bad spec is not rewritten");
}

#[tokio::test]
async fn missing_connection_waits_then_proceeds() {
    let w = World::new();
    w.task("t1", spec("t")).await;
    w.reconcile("t1").await;
    assert_eq!(reason(&w.status("t1").await, "Synced"), "False/ConnectionNotFound");
    w.connection().await;
    w.reconcile("t1").await;
    assert_eq!(reason(&w.status("t1").await, "Synced"), "True/EventCreated");
}

#[tokio::test]
async fn connection_deleted_first_never_leaves_finalizers_stuck() {
    let w = World::new();
    w.connection().await;
    let uid = w.task("t1", spec("t")).await.metadata.uid.unwrap();
    w.reconcile("t1").await;
    w.objects.delete(&ObjectKey::connection(NS, "conn")).await.unwrap();
    w.objects.delete(&ObjectKey::task_sync(NS, "t1")).await.unwrap();
    w.reconcile("t1").await;
    assert!(w.get("t1").await.is_none(), "finalizer released");
    assert_eq!(w.calendar.events_for_uid(&uid).len(), 1, "the event is left (it cannot be reached)");
    assert!(w.objects.events().iter().any(|(_, e)| e.reason == "ConnectionNotFound" && e.type_ == EventType::Warning));
}

#[tokio::test]
async fn wrong_password_connection_says_reconnect() {
    let w = World::new();
    w.objects.put_secret(
        NS,
        "creds",
        BTreeMap::from([("username".to_string(), b"user".to_vec()), ("password".to_string(), b"nope".to_vec())]),
    );
    w.connection().await;
    w.objects.put_secret(
        NS,
        "creds",
        BTreeMap::from([("username".to_string(), b"user".to_vec()), ("password".to_string(), b"nope".to_vec())]),
    );
    w.objects.patch_connection_status(NS, "conn", &CalendarConnectionStatus::default()).await.unwrap();
    w.engine.reconcile_connection(NS, "conn").await.unwrap();
    let st = w.objects.get_connection(NS, "conn").await.unwrap().unwrap().status.unwrap();
    assert_eq!(reason_c(&st.conditions, "Ready"), "False/ReconnectRequired");
    assert_eq!(reason_c(&st.conditions, "Authenticated"), "False/ReconnectRequired");
    let text = serde_json::to_string(&st).unwrap();
    assert!(!text.contains("nope"), "a secret reached status");
}
