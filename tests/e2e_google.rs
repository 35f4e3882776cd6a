//! End to end for Google: the built `calsync standalone` binary, a real OAuth server
//! (oidc-provider) and the strict fake Google Calendar API (tokens checked by introspection at
//! that server), driven over HTTP as the app's frontend and the user's browser would.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use calsync::credentials::Credentials;
use calsync::resources::{ProviderKind, connection_name};
use chrono::{Datelike, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use support::calsync_bin::{ENCRYPTION_KEY, SECRET_KEY, Standalone};
use support::fake_google::{FakeGoogle, FakeGoogleOptions};
use support::oidc::{OidcClient, OidcOptions, OidcServer, query_param};

const FRONTEND: &str = "http://frontend.test";
const JWT_SECRET: &str = "e2e-google-jwt-secret";

struct World {
    oidc: OidcServer,
    fake: FakeGoogle,
    cs: Standalone,
    _dir: tempfile::TempDir,
    /// A browser that does not follow redirects (to read the callback's Location).
    browser: reqwest::Client,
}

async fn world(access_token_ttl_secs: u64) -> World {
    world_with(access_token_ttl_secs, None, &[]).await
}

/// A world whose fake grants channels of at most `max_channel` (and push on, with calsync's
/// own address as CALSYNC_PUBLIC_URL, when given), with extra environment for calsync.
async fn world_with(access_token_ttl_secs: u64, max_channel: Option<Duration>, extra: &[(&str, String)]) -> World {
    let port = Standalone::pick_port();
    let base = format!("http://127.0.0.1:{port}");
    let oidc = OidcServer::start(OidcOptions {
        clients: vec![OidcClient::calsync("calsync-google", &base)],
        access_token_ttl_secs,
        rotate_refresh_tokens: false,
    });
    let client = oidc.client().clone();
    support::calsync_bin::artifacts::record_secret("oauth-client-secret", &client.secret);
    support::calsync_bin::artifacts::record_secret("jwt-secret", JWT_SECRET);
    let mut options = FakeGoogleOptions::introspection(&oidc.introspection_url(), &client.id, &client.secret);
    if let Some(max) = max_channel {
        options = options.with_max_channel_lifetime(max);
    }
    let fake = FakeGoogle::start(options);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = vec![
        ("GOOGLE_CLIENT_ID", client.id.clone()),
        ("GOOGLE_CLIENT_SECRET", client.secret.clone()),
        ("GOOGLE_REDIRECT_URI", format!("{base}/api/calendar/google/callback")),
        ("GOOGLE_AUTH_URL", oidc.auth_url()),
        ("GOOGLE_TOKEN_URL", oidc.token_url()),
        ("GOOGLE_REVOKE_URL", oidc.revocation_url()),
        ("GOOGLE_ISSUER", oidc.issuer().to_string()),
        ("GOOGLE_CALENDAR_API_URL", fake.base_url().to_string()),
        ("CALSYNC_FRONTEND_URL", FRONTEND.to_string()),
        ("CALSYNC_JWT_SECRET", JWT_SECRET.to_string()),
    ];
    if max_channel.is_some() {
        env.push(("CALSYNC_PUBLIC_URL", base.clone()));
    }
    env.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    let cs = Standalone::start_with(dir.path(), port, &env).await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("browser");
    World { oidc, fake, cs, _dir: dir, browser }
}

impl World {
    /// `POST /connect/google` for `user`: (authorization URL, state).
    async fn connect(&self, user: &str) -> (String, String) {
        let (s, body) = self.cs.call("POST", "/connect/google", Some(json!({"user_id": user}))).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["calendar_type"], "google");
        let url = body["authorization_url"].as_str().expect("authorization_url").to_string();
        let state = body["state"].as_str().expect("state").to_string();
        (url, state)
    }

    /// Let the browser land on calsync's callback; returns the frontend URL it redirects to.
    async fn land(&self, callback_url: &str) -> String {
        let r = self.browser.get(callback_url).send().await.expect("callback");
        assert_eq!(r.status().as_u16(), 302, "every callback outcome is a redirect");
        let location = r.headers().get("location").and_then(|v| v.to_str().ok()).expect("Location").to_string();
        assert!(location.starts_with(&format!("{FRONTEND}/calendar-connected?type=google&status=")), "{location}");
        location
    }

    /// The whole user journey: connect, consent at the OAuth server, land on the callback.
    async fn connect_user(&self, user: &str) -> String {
        let (url, _) = self.connect(user).await;
        let callback = self.oidc.follow_authorization(&url).await;
        self.land(&callback).await
    }

    /// The refresh token calsync stored (read from its database with its key, as an operator could).
    async fn stored_refresh_token(&self, user: &str) -> Option<SecretString> {
        let key = calsync::credentials::envelope::Key::from_base64(ENCRYPTION_KEY).expect("key");
        let keys = calsync::standalone::secrets::keyring(key).expect("keyring");
        let store = calsync::standalone::SqliteObjects::open(&Standalone::database_url(self._dir.path()), keys)
            .await
            .expect("open the database");
        use calsync::engine::Objects;
        let conn = store.get_connection("default", &connection_name(user, ProviderKind::Google)).await.ok()??;
        match store.read_credentials("default", &conn.spec.credentials_secret_ref).await.ok()?? {
            Credentials::OAuth { refresh_token, .. } => Some(refresh_token),
            Credentials::Basic { .. } => None,
        }
    }

    async fn status(&self, user: &str) -> Value {
        let (s, body) = self.cs.call("GET", &format!("/connection-status/{user}"), None).await;
        assert_eq!(s, 200, "{body}");
        body
    }

    fn ours(&self) -> Vec<Value> {
        self.fake
            .live_events("primary")
            .into_iter()
            .filter(|e| e["extendedProperties"]["private"]["calsync"].is_string())
            .collect()
    }
}

fn reason(location: &str) -> Option<String> {
    query_param(location, "reason")
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
async fn seed_flow_for_google_with_a_real_oauth_server() {
    let w = world(3600).await;
    let user = "test_user_123";

    // 1. Connect: the state in the response is the one in the URL, and it is not the user id.
    let (url, state) = w.connect(user).await;
    assert_eq!(query_param(&url, "state").as_deref(), Some(state.as_str()));
    assert_ne!(state, user);
    assert_eq!(query_param(&url, "code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(query_param(&url, "access_type").as_deref(), Some("offline"));
    assert_eq!(query_param(&url, "prompt").as_deref(), Some("consent"));
    let callback = w.oidc.follow_authorization(&url).await;
    assert!(query_param(&callback, "iss").is_some(), "the server sends RFC 9207 iss: {callback}");
    let landed = w.land(&callback).await;
    assert!(landed.ends_with("status=success"), "{landed}");

    // 2. Connected and ready.
    let body = w.status(user).await;
    assert_eq!((&body["connected"], &body["calendar_type"]), (&json!(true), &json!("google")), "{body}");
    eventually("the connection to be ready", || async { w.status(user).await["ready"] == json!(true) }).await;

    // 3. A task becomes an event in Google, under our base32hex id and marker.
    let day = (Utc::now() + chrono::Duration::days(2)).date_naive();
    let when = format!("{}-{:02}-{:02}T14:00:00", day.year(), day.month(), day.day());
    let task = json!({"user_id": user, "task_data": {"id": "task_001", "name": "Test homework assignment",
        "scheduled_time": when, "category": "Homework", "timezone": "America/New_York"}});
    let (s, body) = w.cs.call("POST", "/task-to-calendar", Some(task.clone())).await;
    assert_eq!(s, 200, "{body}");
    let event_id = body["event_id"].as_str().expect("event_id").to_string();
    assert!(event_id.chars().all(|c| matches!(c, '0'..='9' | 'a'..='v')), "{event_id}");
    let link = body["event_link"].as_str().expect("event_link");
    let stored = w.fake.raw_event("primary", &event_id).expect("the event is in Google");
    assert_eq!(stored["htmlLink"].as_str(), Some(link));
    assert_eq!(stored["summary"], "Test homework assignment");
    assert_eq!(stored["start"]["timeZone"], "America/New_York");
    assert_eq!(w.ours().len(), 1);

    // 4. The same call again: one event, the same id.
    let (s, body) = w.cs.call("POST", "/task-to-calendar", Some(task)).await;
    assert_eq!((s, body["event_id"].as_str()), (200, Some(event_id.as_str())), "{body}");
    assert_eq!(w.ours().len(), 1, "a repeated call made a duplicate");

    // 5. update-event changes it in Google (with If-Match).
    let later = when.replace("T14:00", "T15:00");
    let (s, body) = w
        .cs
        .call(
            "PUT",
            "/update-event",
            Some(json!({"user_id": user, "event_id": event_id, "task_data": {"name": "Updated assignment title", "scheduled_time": later}})),
        )
        .await;
    assert_eq!((s, &body["success"]), (200, &json!(true)), "{body}");
    let stored = w.fake.raw_event("primary", &event_id).expect("event");
    assert_eq!(stored["summary"], "Updated assignment title");
    let patched = w.fake.writes().into_iter().filter(|r| r.method == "PATCH" && r.path.ends_with(&event_id)).count();
    assert!(patched >= 1 && w.fake.writes().iter().filter(|r| r.method == "PATCH").all(|r| r.if_match.is_some()));

    // 6. An event made in Google Calendar comes back as a task; ours does not.
    let start = Utc::now() + chrono::Duration::days(1);
    w.fake.insert_external(
        "primary",
        json!({"summary": "Dentist appointment", "start": {"dateTime": start.to_rfc3339()},
               "end": {"dateTime": (start + chrono::Duration::hours(1)).to_rfc3339()}}),
    );
    let (s, body) = w.cs.call("POST", "/calendar-to-tasks", Some(json!({"user_id": user, "refresh": true}))).await;
    assert_eq!(s, 200, "{body}");
    let names: Vec<&str> = body["tasks"].as_array().expect("tasks").iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.contains(&"Dentist appointment"), "{body}");
    assert!(!names.contains(&"Updated assignment title"), "our own event came back as a task: {body}");

    // 7. delete-event deletes it in Google (cancelled, as Google keeps deleted events).
    let (s, body) = w.cs.call("DELETE", "/delete-event", Some(json!({"user_id": user, "event_id": event_id}))).await;
    assert_eq!((s, &body["success"]), (200, &json!(true)), "{body}");
    assert_eq!(w.fake.raw_event("primary", &event_id).expect("kept as cancelled")["status"], "cancelled");
    assert!(w.ours().is_empty());

    // 8. Disconnect revokes the refresh token at the OAuth server.
    let refresh = w.stored_refresh_token(user).await.expect("a refresh token is stored");
    support::calsync_bin::artifacts::record_secret("google-refresh-token", refresh.expose_secret());
    let client = w.oidc.client().clone();
    let before = w.oidc.introspect(refresh.expose_secret(), &client.id, &client.secret).await;
    assert_eq!(before["active"], true, "{before}");
    let (s, body) = w.cs.call("POST", &format!("/disconnect/{user}"), None).await;
    assert_eq!((s, &body["success"]), (200, &json!(true)), "{body}");
    let after = w.oidc.introspect(refresh.expose_secret(), &client.id, &client.secret).await;
    assert_eq!(after["active"], false, "disconnect must revoke the refresh token: {after}");
    let refreshed = w
        .oidc
        .token_request(&client, &[("grant_type", "refresh_token"), ("refresh_token", refresh.expose_secret())])
        .await;
    assert_eq!(refreshed.error(), Some("invalid_grant"), "{:?}", refreshed.body);
    assert_eq!(w.status(user).await["connected"], false);
    assert!(w.stored_refresh_token(user).await.is_none(), "credentials are deleted on disconnect");

    let log = w.cs.log();
    assert!(!log.contains(refresh.expose_secret()), "the refresh token reached the log");
    assert!(!log.contains(&client.secret), "the client secret reached the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_states_and_refusals_store_nothing() {
    let w = world(3600).await;
    let user = "mallory_target";
    let nothing_stored = || async { w.status(user).await["connected"] == json!(false) };

    // The user says no.
    let (url, _) = w.connect(user).await;
    let denied = w.oidc.follow_authorization(&format!("{url}&login_hint=deny")).await;
    let landed = w.land(&denied).await;
    assert!(landed.contains("status=error") && reason(&landed).as_deref() == Some("access_denied"), "{landed}");

    // Missing code or state.
    let landed = w.land(&format!("{}/api/calendar/google/callback?state=x", w.cs.base)).await;
    assert_eq!(reason(&landed).as_deref(), Some("missing_code_or_state"));

    // A real code with a forged state (the seed's `state=user_id`), an expired state, another
    // provider's state, a state with the wrong PKCE verifier, one without a verifier.
    let (url, _) = w.connect(user).await;
    let callback = w.oidc.follow_authorization(&url).await;
    let code = query_param(&callback, "code").expect("code");
    let cb = |state: &str| {
        let mut u = reqwest::Url::parse(&format!("{}/api/calendar/google/callback", w.cs.base)).expect("url");
        u.query_pairs_mut().append_pair("code", &code).append_pair("state", state);
        u.to_string()
    };
    let sealer = calsync::oauth::StateSealer::new(&SecretString::from(SECRET_KEY));
    let verifier = SecretString::from(calsync::oauth::OAuthClient::new_verifier().expose_secret().to_string());
    let claims =
        |kind, v: &str, at| calsync::oauth::StateSealer::claims(user, kind, SecretString::from(v.to_string()), at);
    let expired = sealer.seal(&claims(
        ProviderKind::Google,
        verifier.expose_secret(),
        Utc::now() - chrono::Duration::minutes(11),
    ));
    let outlook = sealer.seal(&claims(ProviderKind::Outlook, verifier.expose_secret(), Utc::now()));
    let wrong_verifier = sealer.seal(&claims(ProviderKind::Google, verifier.expose_secret(), Utc::now()));
    let no_verifier = sealer.seal(&claims(ProviderKind::Google, "", Utc::now()));
    let other_key = calsync::oauth::StateSealer::new(&SecretString::from("another-secret-key")).seal(&claims(
        ProviderKind::Google,
        verifier.expose_secret(),
        Utc::now(),
    ));
    for (state, want) in [
        (user.to_string(), "invalid_state"),
        (expired, "state_expired"),
        (outlook, "invalid_state"),
        (other_key, "invalid_state"),
        (wrong_verifier, "exchange_failed"),
        (no_verifier, "exchange_failed"),
    ] {
        let landed = w.land(&cb(&state)).await;
        assert_eq!(reason(&landed).as_deref(), Some(want), "{landed}");
        assert!(nothing_stored().await, "a refused callback stored a connection");
    }
    // A wrong `iss` (RFC 9207 mix-up defence).
    let (url, _) = w.connect(user).await;
    let callback = w.oidc.follow_authorization(&url).await;
    let mut u = reqwest::Url::parse(&callback).expect("url");
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            if k == "iss" { (k.into_owned(), "https://evil.example".into()) } else { (k.into_owned(), v.into_owned()) }
        })
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs);
    assert_eq!(reason(&w.land(u.as_str()).await).as_deref(), Some("issuer_mismatch"));
    assert!(nothing_stored().await);

    // Another user's JWT cannot start a flow for this user.
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "someone_else", "exp": Utc::now().timestamp() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("jwt");
    let r =
        w.cs.http
            .post(format!("{}/api/calendar/connect/google", w.cs.base))
            .bearer_auth(jwt)
            .json(&json!({"user_id": user}))
            .send()
            .await
            .expect("connect");
    assert_eq!(r.status().as_u16(), 403);

    // A good flow works once; replaying its callback is refused and breaks nothing.
    let (url, _) = w.connect(user).await;
    let callback = w.oidc.follow_authorization(&url).await;
    assert!(w.land(&callback).await.ends_with("status=success"));
    let replay = w.land(&callback).await;
    assert_eq!(reason(&replay).as_deref(), Some("state_already_used"), "{replay}");
    eventually("the connection to stay ready", || async { w.status(user).await["ready"] == json!(true) }).await;
    let (s, body) = w
        .cs
        .call(
            "POST",
            "/task-to-calendar",
            Some(json!({"user_id": user, "task_data": {"id": "t1", "name": "Still works", "scheduled_time": "2031-03-04"}})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn expiring_tokens_refresh_and_a_revoked_grant_says_reconnect() {
    // Access tokens live 3 s: every step below outlives one.
    let w = world(3).await;
    let user = "refresh_user";
    assert!(w.connect_user(user).await.ends_with("status=success"));
    let mut ids = HashMap::new();
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(3200)).await;
        let task = json!({"user_id": user, "task_data": {"id": format!("t{i}"), "name": format!("Task {i}"),
            "scheduled_time": "2031-05-14T09:00:00Z"}});
        let (s, body) = w.cs.call("POST", "/task-to-calendar", Some(task)).await;
        assert_eq!(s, 200, "the task failed after its access token expired: {body}");
        ids.insert(i, body["event_id"].as_str().expect("event_id").to_string());
    }
    assert_eq!(w.ours().len(), 3);

    // The user revokes calsync's access at the provider.
    let refresh = w.stored_refresh_token(user).await.expect("stored");
    support::calsync_bin::artifacts::record_secret("google-refresh-token", refresh.expose_secret());
    let client = w.oidc.client().clone();
    assert_eq!(w.oidc.revoke(&client, refresh.expose_secret(), Some("refresh_token")).await, 200);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let task = json!({"user_id": user, "task_data": {"id": "after", "name": "After revocation", "scheduled_time": "2031-05-15"}});
    let (s, body) = w.cs.call("POST", "/task-to-calendar", Some(task)).await;
    assert!(s >= 400 || body["pending"] == json!(true), "{s} {body}");
    eventually("connection-status to say ReconnectRequired", || async {
        let b = w.status(user).await;
        b["connected"] == json!(true) && b["ready"] == json!(false) && b["reason"] == json!("ReconnectRequired")
    })
    .await;
}

/// Move (or delete) an event as another client of the Google Calendar API would (the user's
/// phone), with a token of its own.
async fn phone_patch(fake: &FakeGoogle, id: &str, hours: i64) {
    fake.accept_token("phone-app-token", &["calendar.events"]);
    let ev = fake.raw_event("primary", id).expect("event");
    let shift = |v: &Value| {
        let t = chrono::DateTime::parse_from_rfc3339(v["dateTime"].as_str().expect("dateTime")).expect("rfc3339");
        json!({"dateTime": (t + chrono::Duration::hours(hours)).to_rfc3339(), "timeZone": v["timeZone"].clone()})
    };
    let body = json!({"start": shift(&ev["start"]), "end": shift(&ev["end"])});
    let url = format!("{}/calendars/primary/events/{id}", fake.base_url());
    let r = reqwest::Client::new().patch(url).bearer_auth("phone-app-token").json(&body).send().await.expect("patch");
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread")]
async fn edits_in_google_reach_the_task_sync_by_push_and_channels_renew() {
    use support::live::{condition, metric, synced, until, until_connection};
    // Polling is off in effect (10 min): what is seen within seconds came by push.
    let slow_poll =
        [("CALSYNC_POLL_SECONDS", "600".to_string()), ("CALSYNC_PUSH_SAFETY_POLL_SECONDS", "600".to_string())];
    let w = world_with(3600, Some(Duration::from_secs(8)), &slow_poll).await;
    let dir = w._dir.path();
    let user = "push_user";
    assert_eq!(reason(&w.connect_user(user).await), None);
    let day = (Utc::now() + chrono::Duration::days(2)).date_naive();
    let when = format!("{}-{:02}-{:02}T14:00:00", day.year(), day.month(), day.day());
    let task = json!({"user_id": user, "task_data": {"id": "g-1", "name": "Read chapter 5",
        "scheduled_time": when, "timezone": "Europe/Berlin"}});
    let (s, body) = w.cs.call("POST", "/task-to-calendar", Some(task)).await;
    assert_eq!(s, 200, "{body}");
    let event_id = body["event_id"].as_str().expect("event_id").to_string();

    // A channel on the primary calendar, recorded in status, its sync message answered 200.
    let conn =
        until_connection(dir, Duration::from_secs(20), |c| c["status"]["push"]["calendars"][0]["mode"] == "Push").await;
    assert_eq!(condition(&conn, "Push"), Some(("True".into(), "Subscribed".into())), "{conn:#}");
    let watch_id = conn["status"]["push"]["calendars"][0]["watchId"].as_str().expect("watchId").to_string();
    // The channel token calsync derived for this watch: CI checks it never reaches a log or a
    // saved response.
    let keys = calsync::credentials::envelope::Keyring::new(
        calsync::credentials::envelope::Key::from_base64(ENCRYPTION_KEY).expect("key"),
    )
    .push_keys();
    support::calsync_bin::artifacts::record_secret("google-channel-token", keys.secret_for(&watch_id).expose_secret());
    let channels = w.fake.channels();
    assert_eq!(channels.len(), 1, "{channels:?}");
    assert_eq!(channels[0].id, watch_id);
    assert!(channels[0].address.ends_with("/api/calendar/webhooks/google"), "{:?}", channels[0].address);
    let sync = w.fake.wait_for_deliveries(&watch_id, 1, Duration::from_secs(5)).await;
    assert_eq!((sync[0].resource_state.as_str(), sync[0].status), ("sync", Some(200)), "{sync:?}");

    // Moved on the phone: the TaskSync (Manual) reports the edit within 5 s, no REST call.
    phone_patch(&w.fake, &event_id, 2).await;
    let took = until(dir, "g-1", Duration::from_secs(5), |t| !t["status"]["calendarEdit"].is_null()).await;
    eprintln!("Google edit detected {took:?} after the PATCH");
    let ts = support::live::task_sync(dir, "g-1");
    assert!(ts["status"]["calendarEdit"]["changed"].as_array().is_some_and(|c| c.contains(&json!("start"))), "{ts:#}");
    assert_eq!(synced(&ts).map(|s| s.1), Some("ConflictDetected".into()), "{ts:#}");

    // Our own write resolves it for the task and is not reported back.
    let later = when.replace("T14:00", "T17:00");
    let (s, body) =
        w.cs.call(
            "PUT",
            "/update-event",
            Some(json!({"user_id": user, "event_id": event_id, "task_data": {"scheduled_time": later}})),
        )
        .await;
    assert_eq!((s, &body["success"]), (200, &json!(true)), "{body}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ts = support::live::task_sync(dir, "g-1");
    assert!(ts["status"]["calendarEdit"].is_null(), "our own write was reported: {ts:#}");

    // The channel (8 s granted) is renewed by a new one before it expires; the old one is stopped.
    let renewed = until_connection(dir, Duration::from_secs(15), |c| {
        c["status"]["push"]["calendars"][0]["watchId"].as_str().is_some_and(|id| id != watch_id)
    })
    .await;
    let new_id = renewed["status"]["push"]["calendars"][0]["watchId"].as_str().expect("watchId").to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    while w.fake.channels().iter().any(|c| c.id == watch_id) {
        assert!(Instant::now() < deadline, "the old channel was not stopped: {:?}", w.fake.channels());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A lost channel (Google expired it early) is noticed at renewal; deletions through the new
    // channel are reported within 5 s and not undone.
    let phone = reqwest::Client::new();
    let url = format!("{}/calendars/primary/events/{event_id}", w.fake.base_url());
    let r = phone.delete(url).bearer_auth("phone-app-token").send().await.expect("delete");
    assert_eq!(r.status().as_u16(), 204);
    let took = until(dir, "g-1", Duration::from_secs(5), |t| t["status"]["calendarEdit"]["deleted"] == true).await;
    eprintln!("Google deletion detected {took:?} after the DELETE (channel {new_id})");
    assert!(w.ours().is_empty(), "the deleted event came back");

    // A forged notification (right channel id, wrong token) is refused and counted.
    let r = phone
        .post(format!("{}/api/calendar/webhooks/google", w.cs.base))
        .header("X-Goog-Channel-ID", &new_id)
        .header("X-Goog-Channel-Token", "forged")
        .header("X-Goog-Resource-State", "exists")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 401);
    let metrics =
        phone.get(format!("{}/metrics", w.cs.base)).send().await.expect("metrics").text().await.expect("text");
    assert!(
        metric(&metrics, "calsync_push_notifications_total{provider=\"google\",outcome=\"forged\"}") >= 1,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "calsync_push_notifications_total{provider=\"google\",outcome=\"accepted\"}") >= 2,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "calsync_change_syncs_total{trigger=\"poll\"}"), 0, "{metrics}");

    // Disconnect stops the channel before the grant is revoked (a revoked grant could not).
    let (s, body) = w.cs.call("POST", &format!("/disconnect/{user}"), None).await;
    assert_eq!((s, &body["success"]), (200, &json!(true)), "{body}");
    assert!(w.fake.channels().is_empty(), "the channel outlived the disconnect: {:?}", w.fake.channels());
    let conn = until_connection(dir, Duration::from_secs(10), |c| {
        c["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty())
    })
    .await;
    assert_eq!(condition(&conn, "Ready").map(|c| c.1), Some("Disconnected".into()), "{conn:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_public_url_google_is_polled_incrementally() {
    use support::live::{condition, metric, until, until_connection};
    let w = world_with(3600, None, &[("CALSYNC_POLL_SECONDS", "2".to_string())]).await;
    let dir = w._dir.path();
    let user = "poll_user";
    assert_eq!(reason(&w.connect_user(user).await), None);
    let day = (Utc::now() + chrono::Duration::days(2)).date_naive();
    let when = format!("{}-{:02}-{:02}T09:00:00", day.year(), day.month(), day.day());
    let task = json!({"user_id": user, "task_data": {"id": "p-1", "name": "Lab", "scheduled_time": when, "timezone": "Europe/Berlin"}});
    let (s, body) = w.cs.call("POST", "/task-to-calendar", Some(task)).await;
    assert_eq!(s, 200, "{body}");
    let event_id = body["event_id"].as_str().expect("event_id").to_string();
    let conn = until_connection(dir, Duration::from_secs(20), |c| condition(c, "Push").is_some()).await;
    assert_eq!(condition(&conn, "Push").map(|c| c.1), Some("Polling".into()), "{conn:#}");
    assert!(w.fake.channels().is_empty(), "no channel without a public URL");
    tokio::time::sleep(Duration::from_secs(3)).await;
    phone_patch(&w.fake, &event_id, 1).await;
    let took = until(dir, "p-1", Duration::from_secs(6), |t| !t["status"]["calendarEdit"].is_null()).await;
    eprintln!("Google edit found by polling after {took:?} (poll every 2 s)");
    let metrics = reqwest::get(format!("{}/metrics", w.cs.base)).await.expect("metrics").text().await.expect("text");
    assert!(metric(&metrics, "calsync_change_listings_total{kind=\"incremental\"}") >= 1, "{metrics}");
}
