//! End to end for Outlook: the built `calsync standalone` binary, a real OAuth server
//! (oidc-provider) that ROTATES refresh tokens like Microsoft's identity platform (and revokes
//! the whole grant when a rotated token is reused), and the strict fake Graph API checking
//! tokens by introspection at that server.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use calsync::credentials::Credentials;
use calsync::engine::Objects;
use calsync::oauth::TokenBroker;
use calsync::oauth::config::OAuthConfig;
use calsync::providers::Target;
use calsync::resources::{ProviderKind, connection_name};
use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use support::calsync_bin::{ENCRYPTION_KEY, Standalone};
use support::fake_graph::{FakeGraph, TokenValidator};
use support::oidc::{OidcClient, OidcOptions, OidcServer, query_param};

const FRONTEND: &str = "http://frontend.test";
const TTL: u64 = 3;

struct World {
    oidc: Arc<OidcServer>,
    graph: FakeGraph,
    cs: Standalone,
    dir: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
    browser: reqwest::Client,
}

async fn world() -> World {
    world_with(&[], false).await
}

/// A world with extra environment for calsync; `push`: calsync's own address is its
/// CALSYNC_PUBLIC_URL and the fake Graph accepts short subscription lifetimes.
async fn world_with(extra: &[(&'static str, String)], push: bool) -> World {
    let port = Standalone::pick_port();
    let base = format!("http://127.0.0.1:{port}");
    let oidc = Arc::new(OidcServer::start(OidcOptions {
        clients: vec![OidcClient::calsync("calsync-outlook", &base)],
        access_token_ttl_secs: TTL,
        rotate_refresh_tokens: true,
    }));
    let client = oidc.client().clone();
    support::calsync_bin::artifacts::record_secret("oauth-client-secret", &client.secret);
    // Graph accepts exactly the tokens the OAuth server says are active.
    let peer = oidc.clone();
    let validator: TokenValidator = Arc::new(move |token: String| {
        let (peer, client) = (peer.clone(), client.clone());
        Box::pin(async move { peer.introspect(&token, &client.id, &client.secret).await["active"] == json!(true) })
    });
    let graph = FakeGraph::start_with("no-static-token", Some(validator)).await;
    if push {
        graph.subscription_options(|o| o.min_lifetime = Duration::from_secs(1));
    }
    let client = oidc.client().clone();
    let mut env = vec![
        ("MICROSOFT_CLIENT_ID", client.id.clone()),
        ("MICROSOFT_CLIENT_SECRET", client.secret.clone()),
        ("MICROSOFT_REDIRECT_URI", format!("{base}/api/calendar/outlook/callback")),
        ("MICROSOFT_AUTH_URL", oidc.auth_url()),
        ("MICROSOFT_TOKEN_URL", oidc.token_url()),
        ("MICROSOFT_ISSUER", oidc.issuer().to_string()),
        ("MICROSOFT_GRAPH_URL", graph.url.clone()),
        ("CALSYNC_FRONTEND_URL", FRONTEND.to_string()),
    ];
    if push {
        env.push(("CALSYNC_PUBLIC_URL", base.clone()));
    }
    env.extend(extra.iter().cloned());
    let dir = tempfile::tempdir().expect("tempdir");
    let cs = Standalone::start_with(dir.path(), port, &env).await;
    let browser =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("browser client");
    World { oidc, graph, cs, dir, env, browser }
}

impl World {
    async fn status(&self, user: &str) -> Value {
        let (s, body) = self.cs.call("GET", &format!("/connection-status/{user}"), None).await;
        assert_eq!(s, 200, "{body}");
        body
    }

    async fn store(&self) -> calsync::standalone::SqliteObjects {
        let key = calsync::credentials::envelope::Key::from_base64(ENCRYPTION_KEY).expect("key");
        let keys = calsync::standalone::secrets::keyring(key).expect("keyring");
        calsync::standalone::SqliteObjects::open(&Standalone::database_url(self.dir.path()), keys).await.expect("open")
    }

    async fn stored_credentials(&self, user: &str) -> Option<Credentials> {
        let store = self.store().await;
        let conn = store.get_connection("default", &connection_name(user, ProviderKind::Outlook)).await.ok()??;
        store.read_credentials("default", &conn.spec.credentials_secret_ref).await.ok()?
    }

    fn ours(&self) -> Vec<Value> {
        let marker = calsync::providers::outlook::marker_prop();
        self.graph
            .all()
            .into_iter()
            .filter(|e| {
                e["singleValueExtendedProperties"].as_array().into_iter().flatten().any(|p| p["id"] == marker.as_str())
            })
            .collect()
    }
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_flow_for_outlook_with_rotating_refresh_tokens() {
    let w = world().await;
    let user = "test_user_123";

    // Connect through the real authorization server.
    let (s, body) = w.cs.call("POST", "/connect/outlook", Some(json!({"user_id": user}))).await;
    assert_eq!((s, &body["calendar_type"]), (200, &json!("outlook")), "{body}");
    let url = body["authorization_url"].as_str().expect("url");
    assert_eq!(query_param(url, "state").as_deref(), body["state"].as_str());
    assert!(
        query_param(url, "scope").is_some_and(|s| s.contains("offline_access") && s.contains("Calendars.ReadWrite"))
    );
    let callback = w.oidc.follow_authorization(url).await;
    let r = w.browser.get(&callback).send().await.expect("callback");
    let location = r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert_eq!(location, format!("{FRONTEND}/calendar-connected?type=outlook&status=success"));
    eventually("ready", || async { w.status(user).await["ready"] == json!(true) }).await;
    let first = w.stored_credentials(user).await.expect("stored");
    let Credentials::OAuth { refresh_token: rt0, access_token, .. } = &first else { panic!("oauth credentials") };
    assert!(access_token.is_none(), "access tokens live in memory only");
    support::calsync_bin::artifacts::record_secret("outlook-refresh-token", rt0.expose_secret());

    // A task becomes an event (webLink as the link); repeating it changes nothing; an update
    // lands; each step outlives an access token, so refreshes (and rotations) happen between.
    let task = json!({"user_id": user, "task_data": {"id": "task_001", "name": "Test homework assignment",
        "scheduled_time": "2031-05-14T14:00:00", "category": "Homework", "timezone": "Europe/Berlin"}});
    let (s, body) = w.cs.call("POST", "/task-to-calendar", Some(task.clone())).await;
    assert_eq!(s, 200, "{body}");
    let event_id = body["event_id"].as_str().expect("event_id").to_string();
    let stored = w.graph.get(&event_id).expect("the event is in Outlook");
    assert_eq!(body["event_link"], stored["webLink"]);
    assert_eq!(stored["subject"], "Test homework assignment");
    tokio::time::sleep(Duration::from_millis(TTL * 1000 + 300)).await;
    let (s, body) = w.cs.call("POST", "/task-to-calendar", Some(task)).await;
    assert_eq!((s, body["event_id"].as_str()), (200, Some(event_id.as_str())), "{body}");
    assert_eq!(w.ours().len(), 1, "a repeated call made a duplicate");
    tokio::time::sleep(Duration::from_millis(TTL * 1000 + 300)).await;
    let (s, body) =
        w.cs.call(
            "PUT",
            "/update-event",
            Some(json!({"user_id": user, "event_id": event_id, "task_data": {"name": "Updated assignment title"}})),
        )
        .await;
    assert_eq!((s, &body["success"]), (200, &json!(true)), "{body}");
    assert_eq!(w.graph.get(&event_id).expect("event")["subject"], "Updated assignment title");

    // The refresh token rotated and the stored one is the live one.
    let Some(Credentials::OAuth { refresh_token: rt_now, refresh_lease, .. }) = w.stored_credentials(user).await else {
        panic!("credentials gone")
    };
    support::calsync_bin::artifacts::record_secret("outlook-refresh-token", rt_now.expose_secret());
    assert_ne!(rt_now.expose_secret(), rt0.expose_secret(), "the refresh token was rotated and stored");
    assert!(refresh_lease.is_none(), "no refresh lease left behind");
    let client = w.oidc.client().clone();
    assert_eq!(w.oidc.introspect(rt_now.expose_secret(), &client.id, &client.secret).await["active"], true);

    // Events made in Outlook come back as tasks; ours do not.
    let start = Utc::now() + chrono::Duration::days(1);
    w.graph.insert_external(
        &w.graph.default_calendar(),
        "Dentist appointment",
        start,
        start + chrono::Duration::hours(1),
    );
    let (s, body) = w.cs.call("POST", "/calendar-to-tasks", Some(json!({"user_id": user, "refresh": true}))).await;
    assert_eq!(s, 200, "{body}");
    let names: Vec<&str> = body["tasks"].as_array().expect("tasks").iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.contains(&"Dentist appointment") && !names.contains(&"Updated assignment title"), "{body}");

    // delete-event removes it from Outlook.
    let (s, body) = w.cs.call("DELETE", "/delete-event", Some(json!({"user_id": user, "event_id": event_id}))).await;
    assert_eq!((s, &body["success"]), (200, &json!(true)), "{body}");
    assert!(w.graph.get(&event_id).is_none());

    // Disconnect: Graph has no per-token revocation, so the tokens are deleted here.
    let (s, body) = w.cs.call("POST", &format!("/disconnect/{user}"), None).await;
    assert_eq!((s, &body["success"]), (200, &json!(true)), "{body}");
    assert_eq!(w.status(user).await["connected"], false);
    assert!(w.stored_credentials(user).await.is_none());
    assert!(!w.cs.log().contains(rt_now.expose_secret()));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_concurrent_refreshes_keep_a_rotating_grant() {
    let w = world().await;
    let user = "race_user";
    let (_, body) = w.cs.call("POST", "/connect/outlook", Some(json!({"user_id": user}))).await;
    let callback = w.oidc.follow_authorization(body["authorization_url"].as_str().expect("url")).await;
    w.browser.get(&callback).send().await.expect("callback");
    eventually("ready", || async { w.status(user).await["ready"] == json!(true) }).await;

    // Two more processes' worth of token managers, each with its own store client on the same
    // database, refresh the same connection at the same moment (the running calsync is a third).
    let config =
        OAuthConfig::from_lookup(&|k| w.env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).expect("config");
    let name = connection_name(user, ProviderKind::Outlook);
    let target = Target { provider: ProviderKind::Outlook, server_url: None, connection: format!("default/{name}") };
    let mut managers = Vec::new();
    for _ in 0..2 {
        let store: Arc<dyn Objects> = Arc::new(w.store().await);
        let vault = Arc::new(calsync::engine::vault::ObjectsVault::new(store));
        managers.push(calsync::oauth::token_manager(&config, vault).expect("oauth").expect("outlook"));
    }
    let creds = w.stored_credentials(user).await.expect("stored");
    let a = managers[0].tokens(&target, &creds).await.expect("tokens");
    let b = managers[1].tokens(&target, &creds).await.expect("tokens");
    let (ra, rb) = tokio::join!(a.access_token(), b.access_token());
    let (ta, tb) = (ra.expect("refresh A"), rb.expect("refresh B"));
    let client = w.oidc.client().clone();
    for t in [&ta, &tb] {
        support::calsync_bin::artifacts::record_secret("outlook-access-token", t.expose_secret());
        assert_eq!(w.oidc.introspect(t.expose_secret(), &client.id, &client.secret).await["active"], true);
    }
    let Some(Credentials::OAuth { refresh_token, .. }) = w.stored_credentials(user).await else { panic!("gone") };
    support::calsync_bin::artifacts::record_secret("outlook-refresh-token", refresh_token.expose_secret());
    assert_eq!(
        w.oidc.introspect(refresh_token.expose_secret(), &client.id, &client.secret).await["active"],
        true,
        "the stored refresh token must still be live (a reused rotated token revokes the grant)"
    );

    // And calsync itself keeps working on the same grant after its own token expired.
    tokio::time::sleep(Duration::from_millis(TTL * 1000 + 300)).await;
    let task =
        json!({"user_id": user, "task_data": {"id": "t1", "name": "After the race", "scheduled_time": "2031-05-14"}});
    let (s, body) = w.cs.call("POST", "/task-to-calendar", Some(task)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(w.status(user).await["ready"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn edits_in_outlook_reach_the_task_sync_by_subscription_and_lifecycle_events_recover() {
    use support::fake_graph::LifecycleEvent;
    use support::live::{condition, metric, until, until_connection};
    // Polling is off in effect (10 min); subscriptions live 12 s, so renewal happens in the test.
    let extra = [
        ("CALSYNC_POLL_SECONDS", "600".to_string()),
        ("CALSYNC_PUSH_SAFETY_POLL_SECONDS", "600".to_string()),
        ("CALSYNC_OUTLOOK_SUBSCRIPTION_MINUTES", "0.2".to_string()),
    ];
    let w = world_with(&extra, true).await;
    let dir = w.dir.path();
    let user = "push_user";
    let (s, body) = w.cs.call("POST", "/connect/outlook", Some(json!({"user_id": user}))).await;
    assert_eq!(s, 200, "{body}");
    let callback = w.oidc.follow_authorization(body["authorization_url"].as_str().expect("url")).await;
    let r = w.browser.get(&callback).send().await.expect("callback");
    assert_eq!(r.status().as_u16(), 302);
    // Inside the window change syncs list (a year ahead).
    let when = (Utc::now() + chrono::Duration::days(20)).format("%Y-%m-%dT14:00:00").to_string();
    let task = json!({"user_id": user, "task_data": {"id": "o-1", "name": "Group project sync",
        "scheduled_time": when, "timezone": "Europe/Berlin"}});
    let (s, body) = w.cs.call("POST", "/task-to-calendar", Some(task)).await;
    assert_eq!(s, 200, "{body}");
    let event_id = body["event_id"].as_str().expect("event_id").to_string();

    // A subscription whose two URLs passed Graph's validation handshake, recorded in status.
    let conn =
        until_connection(dir, Duration::from_secs(20), |c| c["status"]["push"]["calendars"][0]["mode"] == "Push").await;
    assert_eq!(condition(&conn, "Push"), Some(("True".into(), "Subscribed".into())), "{conn:#}");
    let subs = w.graph.subscriptions();
    assert_eq!(subs.len(), 1, "{subs:?}");
    let sub = subs[0].clone();
    // The clientState secret calsync derived: CI checks it never reaches a log or a response.
    if let Some((_, secret)) = sub.client_state.as_deref().and_then(|c| c.split_once('.')) {
        support::calsync_bin::artifacts::record_secret("graph-client-state", secret);
    }
    assert_eq!(conn["status"]["push"]["calendars"][0]["providerId"], json!(sub.id));
    assert!(sub.notification_url.ends_with("/api/calendar/webhooks/outlook"), "{}", sub.notification_url);
    assert!(sub.lifecycle_url.as_deref().is_some_and(|u| u.ends_with("/api/calendar/webhooks/outlook/lifecycle")));
    let validations = w.graph.validations();
    assert!(validations.len() >= 2 && validations.iter().all(|v| v.passed), "{validations:?}");

    // Edited in Outlook: reported within 5 s, no REST call.
    w.graph.edit_title(&event_id, "Group project sync (moved by Bob)");
    let took = until(dir, "o-1", Duration::from_secs(5), |t| !t["status"]["calendarEdit"].is_null()).await;
    eprintln!("Outlook edit detected {took:?} after the change");
    let ts = support::live::task_sync(dir, "o-1");
    assert!(ts["status"]["calendarEdit"]["changed"].as_array().is_some_and(|c| c.contains(&json!("title"))), "{ts:#}");

    // Renewed in place (PATCH) before it expires: same subscription, later expiration.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = w.graph.subscriptions();
        if now.iter().any(|s| s.id == sub.id && s.expiration > sub.expiration) {
            break;
        }
        assert!(Instant::now() < deadline, "not renewed: {now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Notifications lost (Graph throttled us): `missed` makes calsync list in full and find it.
    w.graph.subscription_options(|o| o.drop_notifications = true);
    w.graph.edit_title(&event_id, "Second edit while notifications were dropped");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ts = support::live::task_sync(dir, "o-1");
    assert_ne!(ts["status"]["calendarEdit"]["title"], "Second edit while notifications were dropped", "{ts:#}");
    w.graph.subscription_options(|o| o.drop_notifications = false);
    assert_eq!(w.graph.send_lifecycle(&sub.id, LifecycleEvent::Missed).await, Some(202));
    until(dir, "o-1", Duration::from_secs(5), |t| {
        t["status"]["calendarEdit"]["title"] == "Second edit while notifications were dropped"
    })
    .await;

    // Removed by Microsoft (e.g. a password reset): re-created, under a new id.
    assert_eq!(w.graph.send_lifecycle(&sub.id, LifecycleEvent::SubscriptionRemoved).await, Some(202));
    let conn = until_connection(dir, Duration::from_secs(10), |c| {
        c["status"]["push"]["calendars"][0]["providerId"].as_str().is_some_and(|id| id != sub.id)
    })
    .await;
    let new_id = conn["status"]["push"]["calendars"][0]["providerId"].as_str().expect("providerId").to_string();
    assert!(w.graph.subscriptions().iter().any(|s| s.id == new_id), "{:?}", w.graph.subscriptions());

    let metrics = reqwest::get(format!("{}/metrics", w.cs.base)).await.expect("metrics").text().await.expect("text");
    assert!(
        metric(&metrics, "calsync_push_notifications_total{provider=\"outlook\",outcome=\"accepted\"}") >= 2,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "calsync_change_syncs_total{trigger=\"poll\"}"), 0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn outlook_changes_reach_the_app_by_subscription_then_by_cursor() {
    use support::app_receiver::{EventStream, first_pull, pull};
    use support::live::until_connection;
    let extra = [("CALSYNC_POLL_SECONDS", "600".to_string()), ("CALSYNC_PUSH_SAFETY_POLL_SECONDS", "600".to_string())];
    let w = world_with(&extra, true).await;
    let user = "cursor_user";
    let (s, body) = w.cs.call("POST", "/connect/outlook", Some(json!({"user_id": user}))).await;
    assert_eq!(s, 200, "{body}");
    let callback = w.oidc.follow_authorization(body["authorization_url"].as_str().expect("url")).await;
    assert_eq!(w.browser.get(&callback).send().await.expect("callback").status().as_u16(), 302);
    until_connection(w.dir.path(), Duration::from_secs(20), |c| c["status"]["push"]["calendars"][0]["mode"] == "Push")
        .await;
    let stream = EventStream::open(&w.cs, user).await;
    let (_, mut cursor) = first_pull(&w.cs, user).await;
    let calendar = w.graph.default_calendar();

    // Created, renamed, deleted in Outlook: announced within 5 s, then exactly that change.
    let start = Utc::now() + chrono::Duration::days(2);
    let seen = stream.count();
    let id = w.graph.insert_external(&calendar, "Team lunch", start, start + chrono::Duration::hours(1));
    let (_, took) = stream.wait("calendar.changed", seen, Duration::from_secs(5)).await;
    eprintln!("calendar.changed {took:?} after the Outlook event was created");
    let (changes, body, next) = pull(&w.cs, user, &cursor).await;
    assert_eq!(changes, vec![("created".to_string(), id.clone())], "{body}");
    cursor = next;

    let seen = stream.count();
    w.graph.edit_title(&id, "Team lunch (moved)");
    stream.wait("calendar.changed", seen, Duration::from_secs(5)).await;
    let (changes, body, next) = pull(&w.cs, user, &cursor).await;
    assert_eq!(changes, vec![("updated".to_string(), id.clone())], "{body}");
    assert_eq!(body["changes"][0]["task"]["name"], "Team lunch (moved)");
    cursor = next;

    let seen = stream.count();
    w.graph.delete(&id);
    stream.wait("calendar.changed", seen, Duration::from_secs(5)).await;
    let (changes, body, next) = pull(&w.cs, user, &cursor).await;
    assert_eq!(changes, vec![("deleted".to_string(), id.clone())], "{body}");

    // Unchanged since: no change and no Graph request (the subscription vouches).
    w.graph.clear_requests();
    let (changes, body, _) = pull(&w.cs, user, &next).await;
    assert_eq!(changes, vec![], "{body}");
    assert!(w.graph.requests().is_empty(), "an unchanged calendar cost requests: {:#?}", w.graph.requests());
}

#[tokio::test(flavor = "multi_thread")]
async fn dedicated_calendar_survives_the_oauth_round_trip_and_gets_the_events() {
    let w = world().await;
    let user = "dedicated_outlook";
    let (s, body) =
        w.cs.call("POST", "/connect/outlook", Some(json!({"user_id": user, "dedicated_calendar": true}))).await;
    assert_eq!(s, 200, "{body}");
    let callback = w.oidc.follow_authorization(body["authorization_url"].as_str().expect("url")).await;
    let r = w.browser.get(&callback).send().await.expect("callback");
    let location = r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert_eq!(location, format!("{FRONTEND}/calendar-connected?type=outlook&status=success"));
    eventually("ready", || async { w.status(user).await["ready"] == json!(true) }).await;
    let own = w.graph.calendars_named(calsync::providers::dedicated::DEDICATED_NAME);
    assert_eq!(own.len(), 1, "one calendar of ours in the mailbox: {own:?}");

    let task = json!({"user_id": user, "task_data": {"id": "t1", "name": "Lab report",
        "scheduled_time": "2031-05-14T14:00:00", "timezone": "Europe/Berlin"}});
    let (s, body) = w.cs.call("POST", "/task-to-calendar", Some(task)).await;
    assert_eq!(s, 200, "{body}");
    let event_id = body["event_id"].as_str().expect("event_id");
    assert_eq!(w.graph.event_calendar(event_id).as_deref(), Some(own[0].as_str()), "the event is in our calendar");
    let creates = w.graph.requests().iter().filter(|l| l.method == "POST" && l.uri.ends_with("/me/calendars")).count();
    assert_eq!(creates, 1, "POST /me/calendars once");
}
