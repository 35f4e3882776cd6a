//! The compiled `calsync api` against the strict fake API server served over loopback HTTP,
//! driven over HTTP as the frontend would, with the real controller (in-process, the CalDAV
//! provider through `Registry::builtin()`) doing the calendar writes into a real Radicale:
//! connect stores the CalendarConnection + Secret in `--namespace`, task-to-calendar answers an
//! event id whose event is really in Radicale (raw CalDAV), update-event and delete-event reach
//! Radicale too, SIGTERM exits 0.

#[path = "support/artifacts.rs"]
mod artifacts;
#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[allow(clippy::duplicate_mod)]
#[path = "support/ports.rs"]
mod ports;
#[path = "support/radicale.rs"]
mod radicale;
#[path = "support/kube_harness.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calsync::providers::registry::Registry;
use radicale::{Radicale, line_value};
use serde_json::{Value, json};
use support::*;

const CAL: &str = "/alice/calendar/";
const API_KEY: &str = "api-binary-test-key";
const USER: &str = "user_42";

struct ApiProcess {
    child: Child,
    base: String,
    log: std::path::PathBuf,
    http: reqwest::Client,
}

impl ApiProcess {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(m, format!("{}{path}", self.base)).bearer_auth(API_KEY);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        artifacts::save_response(&self.log.with_extension("responses.txt"), method, path, status, &text);
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `calsync api --namespace NS` with a kubeconfig whose default namespace is another one, so
/// the flag is what decides where objects go.
fn spawn_api(port: u16, env: &[(&str, &str)]) -> ApiProcess {
    let listen = ports::free_port();
    let log = artifacts::path("calsync-api", "log");
    artifacts::record_secret("api-key", API_KEY);
    artifacts::record_secret("encryption-key", TEST_ENCRYPTION_KEY);
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(["api", &format!("--listen=127.0.0.1:{listen}"), &format!("--namespace={NS}")])
        .env("KUBECONFIG", kubeconfig(port, "default"))
        .env("CALSYNC_API_KEYS", API_KEY)
        .env("ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
        .env("POD_NAME", "calsync-api-0")
        .env_remove("CALSYNC_NAMESPACE")
        .env_remove("POD_NAMESPACE")
        .env_remove("CALSYNC_LISTEN")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    ApiProcess {
        child,
        base: format!("http://127.0.0.1:{listen}"),
        log,
        http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
    }
}

/// Ready once the watches listed the namespace; healthy before that.
async fn wait_ready(api: &ApiProcess) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = api.http.get(format!("{}/readyz", api.base)).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "calsync api never became ready:\n{}", api.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_binary_connects_and_the_controller_writes_to_radicale() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dav = Radicale::start();
    let raw = dav.raw();
    raw.mkcalendar(CAL, "Calendar", &["VEVENT"]).await;
    let server = FakeApiServer::new();
    let port = serve_http(server.clone()).await;
    let controller = Harness::start_connector(&server, Arc::new(Registry::builtin()));
    // In a cluster, a CalDAV server on a loopback or private address is refused (SSRF) unless
    // the operator allows it: by default this Radicale on 127.0.0.1 gets a 400 naming the rule
    // and nothing is stored.
    let strict = spawn_api(port, &[]);
    wait_ready(&strict).await;
    let connect = json!({"user_id": USER, "apple_id": dav.user, "app_password": dav.password, "server_url": dav.url});
    let (s, body) = strict.call("POST", "/api/calendar/apple/connect", Some(connect.clone())).await;
    assert_eq!((s, body["code"].as_str()), (400, Some("server_address_refused")), "{body}");
    assert!(server.list(&format!("/api/v1/namespaces/{NS}/secrets")).is_empty(), "a refused connect stored a Secret");
    drop(strict);
    let mut api = spawn_api(port, &[("CALSYNC_CALDAV_ALLOWED_HOSTS", "127.0.0.1")]);
    wait_ready(&api).await;
    assert!(server.requests().iter().any(|r| r.is_watch() && r.path.contains(&format!("/namespaces/{NS}/"))));
    let (s, _) = api.call("GET", "/healthz", None).await;
    assert_eq!(s, 200);

    // Connect: the credentials are checked against Radicale, then the Secret and the
    // CalendarConnection land in --namespace (and nowhere else).
    let (s, body) = api.call("POST", "/api/calendar/apple/connect", Some(connect)).await;
    assert_eq!(s, 200, "{body}\n{}", api.log());
    assert_eq!(body["success"], true, "{body}");
    assert!(!body.to_string().contains(&dav.password), "the password came back in a response");
    let conns = server.list(&format!("/apis/calendar.getitdone.app/v1alpha1/namespaces/{NS}/calendarconnections"));
    assert_eq!(conns.len(), 1, "{conns:?}");
    let conn = &conns[0];
    assert_eq!(conn["spec"]["provider"], "apple");
    assert_eq!(conn["spec"]["serverUrl"], dav.url.as_str());
    let secret_name = conn["spec"]["credentialsSecretRef"]["name"].as_str().expect("secret ref").to_string();
    let secret = server.get(&secret_path(NS, &secret_name)).expect("the Secret is in the --namespace");
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"], conn["metadata"]["uid"],
        "the Secret is owned by the connection (goes with it): {secret}"
    );
    assert!(
        server.list("/apis/calendar.getitdone.app/v1alpha1/namespaces/default/calendarconnections").is_empty(),
        "nothing in the kubeconfig's namespace"
    );
    let conn_name = conn["metadata"]["name"].as_str().unwrap().to_string();
    eventually(30, "the controller marks the connection Ready", || {
        server
            .get(&connection_path(NS, &conn_name))
            .is_some_and(|c| condition(&c, "Ready").is_some_and(|r| r["status"] == "True"))
    })
    .await;
    let (s, body) = api.call("GET", &format!("/api/calendar/connection-status/{USER}"), None).await;
    assert_eq!((s, &body["connected"], &body["calendar_type"]), (200, &json!(true), &json!("apple")), "{body}");

    // task-to-calendar: the API declares a TaskSync, the controller writes the event, the API
    // answers with its id once status has it.
    let task = json!({"user_id": USER, "task_data": {"id": "task_001", "name": "Hand in homework",
        "scheduled_time": "2026-12-03T14:00:00", "timezone": "Europe/Berlin"}});
    let (s, body) = api.call("POST", "/api/calendar/task-to-calendar", Some(task)).await;
    assert_eq!(s, 200, "{body}\n{}", api.log());
    let event_id = body["event_id"].as_str().expect("event_id").to_string();
    let events = raw.vevents(CAL).await;
    let ours: Vec<_> = events.values().filter(|l| line_value(l, "X-CALSYNC-MARKER").is_some()).collect();
    assert_eq!(ours.len(), 1, "one event in Radicale: {events:?}");
    assert_eq!(line_value(ours[0], "SUMMARY"), Some("Hand in homework"));
    let syncs = server.list(&format!("/apis/calendar.getitdone.app/v1alpha1/namespaces/{NS}/tasksyncs"));
    assert_eq!(syncs.len(), 1, "{syncs:?}");
    assert_eq!(syncs[0]["status"]["eventId"], event_id.as_str());

    // update-event: found by event id (the watch cache), the controller rewrites the event.
    let (s, body) = api
        .call(
            "PUT",
            "/api/calendar/update-event",
            Some(json!({"user_id": USER, "event_id": event_id, "task_data": {"name": "Hand in the homework"}})),
        )
        .await;
    assert_eq!((s, &body["success"]), (200, &json!(true)), "{body}\n{}", api.log());
    let events = raw.vevents(CAL).await;
    assert_eq!(events.len(), 1, "updated in place: {events:?}");
    assert!(events.values().all(|l| line_value(l, "SUMMARY") == Some("Hand in the homework")), "{events:?}");

    // The ICS feed through the real wiring: the token comes from ENCRYPTION_KEY, the record is
    // a Secret in --namespace, the feed lists the task, a revoked URL is 404 at once. The
    // POST's body is the credential, so it is not saved with the other responses.
    let post =
        api.http.post(format!("{}/api/calendar/feeds/{USER}", api.base)).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(post.status().as_u16(), 200);
    let body: Value = post.json().await.unwrap();
    let feed_url = body["feed_url"].as_str().expect("feed_url").to_string();
    let token = feed_url.rsplit('/').next().unwrap().trim_end_matches(".ics").to_string();
    artifacts::record_secret("ics-feed-token", &token);
    assert!(feed_url.starts_with(&format!("{}/api/calendar/feeds/", api.base)), "from the request's Host");
    let feeds = server.list(&format!("/api/v1/namespaces/{NS}/secrets"));
    let record = feeds.iter().find(|s| s["metadata"]["labels"]["calendar.getitdone.app/ics-feed"] == "true");
    assert!(record.is_some_and(|r| !r.to_string().contains(token.split_once('.').unwrap().1)), "{feeds:?}");
    let feed = api.http.get(&feed_url).send().await.unwrap();
    assert_eq!(feed.status().as_u16(), 200);
    let ics = feed.text().await.unwrap();
    assert!(ics.contains("SUMMARY:Hand in the homework") && ics.contains("TZID=Europe/Berlin"), "{ics}");
    let (s, body) = api.call("DELETE", &format!("/api/calendar/feeds/{USER}"), None).await;
    assert_eq!((s, &body["revoked"]), (200, &json!(true)), "{body}");
    assert_eq!(api.http.get(&feed_url).send().await.unwrap().status().as_u16(), 404);

    // delete-event: the TaskSync goes, the controller deletes the event first (finalizer).
    let (s, body) =
        api.call("DELETE", "/api/calendar/delete-event", Some(json!({"user_id": USER, "event_id": event_id}))).await;
    assert_eq!((s, &body["success"]), (200, &json!(true)), "{body}\n{}", api.log());
    assert!(raw.vevents(CAL).await.is_empty(), "the event is gone from Radicale");
    assert!(server.list(&format!("/apis/calendar.getitdone.app/v1alpha1/namespaces/{NS}/tasksyncs")).is_empty());

    // Secrets never reach the log.
    assert!(!api.log().contains(&dav.password), "the password is in the API's log");
    assert!(!api.log().contains(token.split_once('.').unwrap().1), "the feed token is in the API's log");

    // SIGTERM, as the kubelet sends it: exits 0 promptly.
    let pid = api.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = api.child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = api.log();
    assert!(status.success(), "exit status {status:?}: {log}");
    assert!(!log.contains("panicked"), "{log}");
    controller.stop().await;
}
