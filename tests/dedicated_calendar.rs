//! A calendar of calsync's own (`dedicated_calendar: true` / `calendarId: auto`, issue 16) end
//! to end: the built standalone binary against Radicale (MKCALENDAR) and through a real OAuth
//! round trip against the strict fake Google; plus Google's race convergence and a grant that
//! may not create calendars. The per-provider contract (made once, found again, one calendar
//! when clients race) is `support::contract::dedicated_calendar_is_made_once`.

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use calsync::error::ErrorClass;
use calsync::oauth::AccessTokens;
use calsync::providers::dedicated::{DEDICATED_NAME, MARKER_PREFIX, description, ensure};
use calsync::providers::google::{GoogleConfig, GoogleProvider};
use calsync::providers::{Provider, ProviderError};
use chrono::{Datelike, TimeZone, Utc};
use secrecy::SecretString;
use serde_json::{Value, json};
use support::calsync_bin::Standalone;
use support::fake_google::{FakeGoogle, FakeGoogleOptions};
use support::google_world::{eventually, world};
use support::oidc::query_param;
use support::radicale::Radicale;

const OWN: &str = "/alice/getitdone-calsync/";

/// Hrefs of the `.ics` resources in a collection.
async fn hrefs(raw: &support::radicale::RawDav, collection: &str) -> Vec<String> {
    let r = raw
        .request(
            "PROPFIND",
            collection,
            &[("depth", "1"), ("content-type", "application/xml")],
            Some(r#"<?xml version="1.0"?><propfind xmlns="DAV:"><prop><getetag/></prop></propfind>"#.into()),
        )
        .await;
    if r.status == 404 {
        return vec![];
    }
    assert_eq!(r.status, 207, "PROPFIND {collection}: {}", r.body);
    r.body.split(['<', '>']).filter(|p| p.starts_with(collection) && p.ends_with(".ics")).map(str::to_string).collect()
}

fn task(user: &str, id: &str) -> Value {
    let day = (Utc::now() + chrono::Duration::days(2)).date_naive();
    let when = format!("{}-{:02}-{:02}T14:00:00", day.year(), day.month(), day.day());
    json!({"user_id": user, "task_data": {"id": id, "name": "Essay draft", "scheduled_time": when,
        "category": "Homework", "timezone": "America/New_York"}})
}

#[tokio::test(flavor = "multi_thread")]
async fn standalone_apple_connect_with_dedicated_calendar_puts_events_there() {
    let server = Radicale::start();
    let raw = server.raw();
    raw.mkcalendar("/alice/calendar/", "Calendar", &["VEVENT"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cs = Standalone::start(dir.path()).await;
    let user = "dedicated_user";
    let connect = |extra: Value| {
        let mut body = json!({"user_id": user, "apple_id": server.user, "app_password": server.password, "server_url": server.url});
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        body
    };

    // The OpenAPI document describes the new request field on both connect calls.
    let (s, doc) = cs.call("GET", "/openapi.json", None).await;
    assert_eq!(s, 200);
    for schema in ["AppleConnectRequest", "ConnectRequest"] {
        let field = &doc["components"]["schemas"][schema]["properties"]["dedicated_calendar"];
        assert_eq!(field["type"], "boolean", "{schema}: {field}");
        assert!(field["description"].as_str().is_some_and(|d| d.contains("Get It Done!")), "{schema}: {field}");
    }

    // Bad input first: nothing is created.
    let (s, body) = cs.call("POST", "/apple/connect", Some(connect(json!({"dedicated_calendar": "yes"})))).await;
    assert_eq!((s, body["code"].as_str()), (422, Some("invalid_field")), "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("dedicated_calendar")), "names the field: {body}");
    assert!(!body.to_string().contains(&server.password), "{body}");
    let (s, body) = cs.call("POST", "/apple/connect", Some(connect(json!({"dedicated_calendars": true})))).await;
    assert_eq!(s, 422, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("unknown field `dedicated_calendars`")), "{body}");
    let (s, body) = cs
        .call(
            "POST",
            "/apple/connect",
            Some(connect(json!({"dedicated_calendar": true, "calendar_id": "/alice/calendar/"}))),
        )
        .await;
    assert_eq!((s, body["code"].as_str()), (400, Some("invalid_field")), "{body}");
    assert_eq!(raw.request("PROPFIND", OWN, &[("depth", "0")], None).await.status, 404, "nothing made yet");

    // Connect asking for a calendar of our own: made before the answer, listed in it.
    let (s, body) = cs.call("POST", "/apple/connect", Some(connect(json!({"dedicated_calendar": true})))).await;
    assert_eq!(s, 200, "{body}\n{}", cs.log());
    assert!(body["calendars"].as_array().is_some_and(|c| c.contains(&json!(DEDICATED_NAME))), "{body}");
    assert_eq!(raw.request("PROPFIND", OWN, &[("depth", "0")], None).await.status, 207, "the calendar exists");

    // A task's event goes there, not to the account's first calendar.
    let (s, body) = cs.call("POST", "/task-to-calendar", Some(task(user, "t1"))).await;
    assert_eq!(s, 200, "{body}");
    let event_id = body["event_id"].as_str().expect("event_id").to_string();
    let own = hrefs(&raw, OWN).await;
    assert_eq!(own.len(), 1, "one event in our calendar: {own:?}");
    assert!(own[0].contains(&event_id), "{own:?} vs {event_id}");
    assert!(hrefs(&raw, "/alice/calendar/").await.is_empty(), "nothing in the user's calendar");

    // Connecting again (the app retries) keeps the one calendar and the one event.
    let (s, body) = cs.call("POST", "/apple/connect", Some(connect(json!({"dedicated_calendar": true})))).await;
    assert_eq!(s, 200, "{body}");
    let (s, _) = cs.call("POST", "/task-to-calendar", Some(task(user, "t1"))).await;
    assert_eq!(s, 200);
    assert_eq!(hrefs(&raw, OWN).await.len(), 1);
    let r = raw.request("PROPFIND", "/alice/", &[("depth", "1")], None).await;
    assert_eq!(r.body.matches("getitdone-calsync").count(), 1, "one collection of ours: {}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn google_oauth_round_trip_keeps_the_flag_and_events_land_in_the_new_calendar() {
    let w = world(3600).await;
    let user = "dedicated_google";
    let (s, body) = w.cs.call("POST", "/connect/google", Some(json!({"user_id": user, "dedicated_calendar": 1}))).await;
    assert_eq!((s, body["code"].as_str()), (422, Some("invalid_field")), "not a boolean: {body}");
    let (s, body) =
        w.cs.call("POST", "/connect/google", Some(json!({"user_id": user, "dedicated_calendar": true}))).await;
    assert_eq!(s, 200, "{body}");
    let url = body["authorization_url"].as_str().expect("authorization_url").to_string();
    let scope = query_param(&url, "scope").unwrap_or_default();
    assert!(scope.contains("https://www.googleapis.com/auth/calendar.app.created"), "{scope}");
    let callback = w.oidc.follow_authorization(&url).await;
    let landed = w.land(&callback).await;
    assert!(landed.ends_with("status=success"), "{landed}");
    eventually("the connection to be ready", || async { w.status(user).await["ready"] == json!(true) }).await;

    let own: Vec<Value> = w
        .fake
        .raw_calendars()
        .into_iter()
        .filter(|c| c["description"].as_str().is_some_and(|d| d.contains(MARKER_PREFIX)))
        .collect();
    assert_eq!(own.len(), 1, "one calendar of ours in Google: {own:?}");
    assert_eq!(own[0]["summary"], DEDICATED_NAME);
    let own_id = own[0]["id"].as_str().expect("id").to_string();

    let (s, body) = w.cs.call("POST", "/task-to-calendar", Some(task(user, "g1"))).await;
    assert_eq!(s, 200, "{body}");
    let event_id = body["event_id"].as_str().expect("event_id");
    assert!(w.fake.raw_event(&own_id, event_id).is_some(), "the event is in the new calendar");
    assert!(w.ours().is_empty(), "nothing in the primary calendar");
    let inserts =
        w.fake.writes().into_iter().filter(|r| r.method == "POST" && r.path == "/calendar/v3/calendars").count();
    assert_eq!(inserts, 1, "calendars.insert once");
}

struct Token(&'static str);

#[async_trait]
impl AccessTokens for Token {
    async fn access_token(&self) -> Result<SecretString, ProviderError> {
        Ok(SecretString::from(self.0))
    }
    async fn refresh_after_rejection(&self, _: &SecretString) -> Result<SecretString, ProviderError> {
        Ok(SecretString::from(self.0))
    }
}

fn google(fake: &FakeGoogle, token: &'static str) -> GoogleProvider {
    let config = GoogleConfig { api_url: fake.base_url().to_string(), ..Default::default() };
    GoogleProvider::new(&config, Arc::new(Token(token))).expect("provider")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_race_leftovers_converge_to_the_oldest() {
    let fake = FakeGoogle::start(FakeGoogleOptions::static_token("tok"));
    let p = google(&fake, "tok");
    let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
    // Two replicas each made one in a race and died before converging; a user's calendar with
    // the same name but no marker is not ours and stays.
    let newer = fake.raw_insert_calendar(DEDICATED_NAME, Some(&description(t0 + chrono::Duration::milliseconds(3))));
    let older = fake.raw_insert_calendar(DEDICATED_NAME, Some(&description(t0)));
    let users = fake.raw_insert_calendar(DEDICATED_NAME, None);
    let got = ensure(&p, None, &[]).await.expect("ensure");
    assert_eq!(got.calendar.id, older["id"].as_str().unwrap(), "the oldest stays");
    assert!(!got.created);
    assert_eq!(got.removed, vec![newer["id"].as_str().unwrap().to_string()]);
    let left: Vec<Value> = fake.raw_calendars();
    assert!(left.iter().any(|c| c["id"] == older["id"]) && left.iter().any(|c| c["id"] == users["id"]));
    assert!(!left.iter().any(|c| c["id"] == newer["id"]), "the newer one is deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_google_grant_that_cannot_create_calendars_is_not_retried() {
    let fake = FakeGoogle::start(FakeGoogleOptions::static_token("tok"));
    fake.accept_token("narrow", &["calendar.events", "calendar.calendarlist.readonly"]);
    let p = google(&fake, "narrow");
    let err = ensure(&p, None, &[]).await.expect_err("403 insufficientPermissions");
    assert!(!matches!(err.class(), ErrorClass::Retry { .. }), "retrying cannot help: {err:?}");
    assert!(fake.raw_calendars().iter().all(|c| c["summary"] != DEDICATED_NAME), "nothing made");
    // The provider's account check still works with that grant: only creation is refused.
    assert!(p.account().await.is_ok());
}
