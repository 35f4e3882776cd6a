//! Live sync with Google end to end: push channels (and polling without a public URL) bring
//! edits made through the Calendar API by another client into TaskSync status, with the built
//! `calsync standalone` binary, oidc-provider and the strict fake Google Calendar API.

mod support;

use std::time::{Duration, Instant};

use chrono::{Datelike, Utc};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use support::calsync_bin::ENCRYPTION_KEY;
use support::fake_google::FakeGoogle;
use support::google_world::{reason, world_with};

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
    let dir = w.dir.path();
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
    // Deliveries are recorded as they complete, and a change notification sent right after the
    // sync message can complete first (CI saw message 3 before message 1): find the sync one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let sync = loop {
        let seen = w.fake.deliveries(&watch_id);
        if seen.iter().any(|d| d.resource_state == "sync") || tokio::time::Instant::now() >= deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let first = sync.iter().find(|d| d.resource_state == "sync");
    assert_eq!(first.map(|d| (d.message_number, d.status)), Some((1, Some(200))), "{sync:?}");

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
    // The finalizer goes first, the Disconnected status right after it (same reconcile).
    until_connection(dir, Duration::from_secs(10), |c| {
        c["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty())
            && condition(c, "Ready").map(|c| c.1) == Some("Disconnected".into())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_public_url_google_is_polled_incrementally() {
    use support::live::{condition, metric, until, until_connection};
    let w = world_with(3600, None, &[("CALSYNC_POLL_SECONDS", "2".to_string())]).await;
    let dir = w.dir.path();
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
