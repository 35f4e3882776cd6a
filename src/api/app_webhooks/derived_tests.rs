use std::sync::Mutex;
use std::time::Instant;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use futures::FutureExt;

use super::super::{Secret, Signer};
use super::*;
use crate::engine::memory::MemoryObjects;
use crate::resources::condition::{Condition, set_condition};
use crate::resources::*;

/// (webhook-id, body, answered)
type Got = Arc<Mutex<Vec<(String, String, u16)>>>;

async fn receiver(status: Arc<Mutex<u16>>) -> (String, Got) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let got: Got = Arc::default();
    let g = got.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let (got, status) = (g.clone(), status.clone());
            async move {
                let code = *status.lock().unwrap();
                let id = headers.get("webhook-id").unwrap().to_str().unwrap().to_string();
                got.lock().unwrap().push((id, body, code));
                StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

fn config(url: &str) -> WebhookConfig {
    WebhookConfig {
        url: reqwest::Url::parse(url).unwrap(),
        signer: Signer::parse(&Secret::generate()).unwrap(),
        timeout: Duration::from_secs(2),
        concurrency: 4,
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        give_up: Duration::from_secs(3600),
        max_pending: 1000,
    }
}

fn conditions(t: &str, ok: bool, reason: &str, at: chrono::DateTime<Utc>) -> Vec<Condition> {
    let mut c = Vec::new();
    let s = if ok { ConditionStatus::True } else { ConditionStatus::False };
    set_condition(&mut c, Condition::new(t, s, reason, "why"), Some(1), at);
    c
}

async fn world(objects: &MemoryObjects, synced_at: chrono::DateTime<Utc>) {
    let spec = CalendarConnectionSpec {
        user_id: "alice".into(),
        provider: ProviderKind::Google,
        credentials_secret_ref: SecretRef { name: "s".into(), key: None },
        calendar_id: None,
        server_url: None,
        category_calendars: Default::default(),
        user_default: false,
        import: None,
        active: true,
    };
    let mut c = CalendarConnection::new("conn", spec);
    c.metadata.namespace = Some("ns".into());
    objects.apply_connection(&c).await.unwrap();
    let st = CalendarConnectionStatus {
        conditions: conditions("Ready", true, "Connected", synced_at),
        ..Default::default()
    };
    objects.patch_connection_status("ns", "conn", &st).await.unwrap();
    let spec = TaskSyncSpec {
        connection_ref: ConnectionRef { name: "conn".into() },
        task_id: "t1".into(),
        title: "Essay".into(),
        start: "2026-12-10T10:00:00Z".into(),
        time_zone: None,
        duration: None,
        end: None,
        all_day: None,
        category: None,
        description: None,
        recurrence: vec![],
        exceptions: vec![],
        calendar_id: None,
        deletion_policy: DeletionPolicy::Delete,
        conflict_policy: ConflictPolicy::Manual,
        schedule: None,
    };
    let mut t = TaskSync::new("ts", spec);
    t.metadata.namespace = Some("ns".into());
    objects.apply_task_sync(&t).await.unwrap();
    let st = TaskSyncStatus {
        conditions: conditions("Synced", true, "Synced", synced_at),
        last_sync_time: Some(synced_at),
        event_id: Some("ev1".into()),
        etag: Some("\"1\"".into()),
        ..Default::default()
    };
    objects.patch_task_sync_status("ns", "ts", &st).await.unwrap();
}

/// A leader until the returned sender is dropped or set.
fn start(
    objects: &MemoryObjects,
    c: WebhookConfig,
    leader: bool,
) -> (watch::Sender<bool>, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (lead, leading) = watch::channel(leader);
    let (stop, stopped) = watch::channel(false);
    let shutdown = async move {
        let mut s = stopped;
        let _ = s.wait_for(|v| *v).await;
    }
    .boxed();
    let is_leader = {
        let leading = leading.clone();
        move || *leading.borrow()
    };
    let task = tokio::spawn(run(Arc::new(objects.clone()), Some("ns".into()), c, is_leader, Some(leading), shutdown));
    (lead, stop, task)
}

async fn until(what: &str, got: &Got, f: impl Fn(&[(String, String, u16)]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f(&got.lock().unwrap()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {:?}", got.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn types(got: &Got, status: u16) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = got
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, s)| *s == status)
        .map(|(id, body, _)| {
            (serde_json::from_str::<serde_json::Value>(body).unwrap()["type"].as_str().unwrap().to_string(), id.clone())
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

#[tokio::test]
async fn a_new_leader_delivers_what_the_old_one_owed_with_the_same_ids() {
    let status = Arc::new(Mutex::new(503));
    let (url, got) = receiver(status.clone()).await;
    let objects = MemoryObjects::new();
    let (_lead, stop, task) = start(&objects, config(&url), true);
    world(&objects, Utc::now()).await;
    until("both events tried", &got, |g| g.iter().map(|(id, _, _)| id).collect::<HashSet<_>>().len() == 2).await;
    let refused = types(&got, 503);
    assert_eq!(refused.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["connection.connected", "task.synced"]);
    // The controller stops (a restart) with both still owed; nothing was checkpointed.
    stop.send(true).unwrap();
    task.await.unwrap();
    let ts = objects.get_task_sync("ns", "ts").await.unwrap().unwrap();
    assert!(ts.annotations().get(CHECKPOINT_ANNOTATION).is_none());

    *status.lock().unwrap() = 200;
    let (_lead, stop, task) = start(&objects, config(&url), true);
    until("both delivered", &got, |g| g.iter().filter(|(_, _, s)| *s == 200).count() >= 2).await;
    assert_eq!(types(&got, 200), refused, "the same events under the same webhook-ids");
    // Checkpointed once delivered ...
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ts = objects.get_task_sync("ns", "ts").await.unwrap().unwrap();
        if ts.annotations().contains_key(CHECKPOINT_ANNOTATION) {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint written");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(true).unwrap();
    task.await.unwrap();
    // ... so the next leader sends nothing again.
    let sent = got.lock().unwrap().len();
    let (_lead, stop, task) = start(&objects, config(&url), true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(got.lock().unwrap().len(), sent, "{:?}", got.lock().unwrap());
    // A new transition is news.
    let mut st = objects.get_task_sync("ns", "ts").await.unwrap().unwrap().status.unwrap();
    st.conditions = conditions("Synced", false, "RateLimited", Utc::now());
    objects.patch_task_sync_status("ns", "ts", &st).await.unwrap();
    until("task.failed", &got, |g| g.iter().any(|(_, b, _)| b.contains("task.failed"))).await;
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn only_the_leader_delivers_and_old_news_is_not_sent() {
    let status = Arc::new(Mutex::new(200));
    let (url, got) = receiver(status).await;
    let objects = MemoryObjects::new();
    // Transitions older than the give-up period, with no checkpoint: already given up on.
    world(&objects, Utc::now() - chrono::Duration::days(2)).await;
    let (lead, stop, task) = start(&objects, config(&url), false);
    let mut st = objects.get_task_sync("ns", "ts").await.unwrap().unwrap().status.unwrap();
    st.last_sync_time = Some(Utc::now());
    st.etag = Some("\"2\"".into());
    objects.patch_task_sync_status("ns", "ts", &st).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(got.lock().unwrap().is_empty(), "a follower sent something");
    lead.send(true).unwrap();
    until("the young sync", &got, |g| !g.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        types(&got, 200).iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        ["task.synced"],
        "the two-day-old connection.connected is not news"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}
