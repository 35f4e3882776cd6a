//! End to end for Google: the built `calsync standalone` binary, a real OAuth server
//! (oidc-provider) and the strict fake Google Calendar API (tokens checked by introspection at
//! that server), driven over HTTP as the app's frontend and the user's browser would.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use calsync::resources::ProviderKind;
use chrono::{Datelike, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use support::calsync_bin::SECRET_KEY;
use support::google_world::{JWT_SECRET, eventually, reason, world};
use support::oidc::query_param;

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
