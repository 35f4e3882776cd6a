//! App webhooks on Kubernetes: the real controllers and engine against the strict fake API
//! server, with the webhook follower on the controller's own watches. A controller restart
//! with deliveries owed (the receiver answering 503) loses nothing: the next start derives what
//! is owed from status against each object's checkpoint annotation and sends it with the same
//! webhook-ids; once delivered and checkpointed, a further restart sends nothing again, and the
//! checkpoint writes never trigger reconciles.

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "support/kube_harness.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use calsync::api::app_webhooks::derived::{self, CHECKPOINT_ANNOTATION};
use calsync::api::app_webhooks::{Secret, Signer, WebhookConfig};
use calsync::providers::memory::MemoryCalendar;
use calsync::resources::{CalendarConnection, TaskSync};
use futures::FutureExt;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use serde_json::Value;
use support::*;

/// (webhook-id, event type, status answered)
type Got = Arc<Mutex<Vec<(String, String, u16)>>>;

async fn receiver(status: Arc<Mutex<u16>>) -> (String, Got) {
    let got: Got = Arc::default();
    let g = got.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let (got, status) = (g.clone(), status.clone());
            async move {
                let code = *status.lock().unwrap();
                let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                let kind = serde_json::from_str::<Value>(&body).unwrap()["type"].as_str().unwrap().to_string();
                got.lock().unwrap().push((id, kind, code));
                StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

fn config(url: &str, secret: &str) -> WebhookConfig {
    WebhookConfig {
        url: reqwest::Url::parse(url).unwrap(),
        signer: Signer::parse(secret).unwrap(),
        timeout: Duration::from_secs(2),
        concurrency: 4,
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        give_up: Duration::from_secs(3600),
        max_pending: 1000,
    }
}

/// The controller plus the webhook follower on its watches, as `calsync controller` runs them.
struct Controller {
    harness: Harness,
    stop: tokio::sync::oneshot::Sender<()>,
    hooks: tokio::task::JoinHandle<()>,
}

fn start(server: &FakeApiServer, calendar: &MemoryCalendar, config: WebhookConfig) -> Controller {
    let harness = Harness::start(server, calendar);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let objects: Arc<dyn calsync::engine::Objects> = Arc::new(harness.objects.clone());
    let leader = harness.leadership.clone();
    let hooks = tokio::spawn(derived::run(
        objects,
        Some(NS.to_string()),
        config,
        move || leader.is_leader(),
        Some(harness.leadership.subscribe()),
        stopped.map(|_| ()),
    ));
    Controller { harness, stop, hooks }
}

impl Controller {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.hooks).await;
        self.harness.stop().await;
    }
}

/// Distinct (type, id) answered `status`.
fn seen(got: &Got, status: u16) -> BTreeMap<String, String> {
    got.lock().unwrap().iter().filter(|(_, _, s)| *s == status).map(|(id, k, _)| (k.clone(), id.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_restart_loses_no_delivery_and_repeats_none_after_the_checkpoint() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = FakeApiServer::new();
    let calendar = MemoryCalendar::new();
    create::<KubeSecret>(&server, secret("creds")).await;
    create::<CalendarConnection>(&server, connection("cal", "creds")).await;
    create::<TaskSync>(&server, task_sync("t1", "cal", "Write report")).await;
    let status = Arc::new(Mutex::new(503));
    let (url, got) = receiver(status.clone()).await;
    let secret = Secret::generate();

    let c = start(&server, &calendar, config(&url, &secret));
    // When the TaskSync is reconciled before its connection is Ready, a `task.failed`
    // (ConnectionNotReady) comes first; a restart derives from status, so only the latest state
    // of each object is owed again (documented: intermediate transitions may coalesce).
    let latest = |status: u16| -> BTreeMap<String, String> {
        seen(&got, status).into_iter().filter(|(k, _)| k == "connection.connected" || k == "task.synced").collect()
    };
    eventually(20, "both events tried (and refused)", || latest(503).len() == 2).await;
    let owed = latest(503);
    assert_eq!(owed.keys().map(String::as_str).collect::<Vec<_>>(), ["connection.connected", "task.synced"]);
    c.stop().await;
    let ts_path = task_sync_path(NS, "t1");
    let annotations = |path: &str| server.get(path).unwrap()["metadata"]["annotations"].clone();
    assert!(annotations(&ts_path).get(CHECKPOINT_ANNOTATION).is_none(), "nothing delivered, nothing checkpointed");

    // The receiver recovers; the controller starts again and derives what is owed.
    *status.lock().unwrap() = 200;
    let c = start(&server, &calendar, config(&url, &secret));
    eventually(20, "both delivered", || latest(200).len() == 2).await;
    assert_eq!(latest(200), owed, "the same events under the same webhook-ids");
    eventually(10, "checkpoints written", || {
        annotations(&ts_path).get(CHECKPOINT_ANNOTATION).is_some()
            && annotations(&connection_path(NS, "cal")).get(CHECKPOINT_ANNOTATION).is_some()
    })
    .await;
    // Checkpoint writes are metadata only: no reconcile, no calendar call follows.
    tokio::time::sleep(Duration::from_millis(500)).await;
    calendar.clear_calls();
    server.clear_requests();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(server.requests().iter().all(|r| !r.is_write()), "{:?}", server.requests());
    c.stop().await;

    // Delivered and checkpointed: a further restart sends nothing again.
    let sent = got.lock().unwrap().len();
    let c = start(&server, &calendar, config(&url, &secret));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(got.lock().unwrap().len(), sent, "{:?}", got.lock().unwrap());
    c.stop().await;
}
