//! End to end for a user with two accounts (issue 16, "many calendars"): the built `calsync
//! standalone` binary, a real OAuth server (oidc-provider) and the strict fakes of Google
//! Calendar and Microsoft Graph. Work tasks go to Outlook and Personal tasks to Google by the
//! user's preferences; a task whose category changes moves its event exactly once, also when
//! calsync is killed in the middle of the move. A conflict on each provider is listed with its
//! diff and resolved both ways, the calendar and the task agreeing afterwards.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::calsync_bin::Standalone;
use support::fake_google::{FakeGoogle, FakeGoogleOptions};
use support::fake_graph::{FakeGraph, TokenValidator};
use support::oidc::{OidcClient, OidcOptions, OidcServer};

const FRONTEND: &str = "http://frontend.test";
const USER: &str = "two-accounts";

struct World {
    oidc: Arc<OidcServer>,
    google: FakeGoogle,
    graph: FakeGraph,
    cs: Standalone,
    dir: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
    port: u16,
    browser: reqwest::Client,
}

async fn world() -> World {
    world_with(&[]).await
}

async fn world_with(extra: &[(&'static str, String)]) -> World {
    let port = Standalone::pick_port();
    let base = format!("http://127.0.0.1:{port}");
    // One OAuth client registered for both callbacks plays Google's and Microsoft's.
    let oidc = Arc::new(OidcServer::start(OidcOptions {
        clients: vec![OidcClient::calsync("calsync-both", &base)],
        access_token_ttl_secs: 300,
        rotate_refresh_tokens: false,
    }));
    let client = oidc.client().clone();
    support::calsync_bin::artifacts::record_secret("oauth-client-secret", &client.secret);
    let google =
        FakeGoogle::start(FakeGoogleOptions::introspection(&oidc.introspection_url(), &client.id, &client.secret));
    let peer = oidc.clone();
    let introspect = client.clone();
    let validator: TokenValidator = Arc::new(move |token: String| {
        let (peer, client) = (peer.clone(), introspect.clone());
        Box::pin(async move { peer.introspect(&token, &client.id, &client.secret).await["active"] == json!(true) })
    });
    let graph = FakeGraph::start_with("no-static-token", Some(validator)).await;
    let env = vec![
        ("GOOGLE_CLIENT_ID", client.id.clone()),
        ("GOOGLE_CLIENT_SECRET", client.secret.clone()),
        ("GOOGLE_REDIRECT_URI", format!("{base}/api/calendar/google/callback")),
        ("GOOGLE_AUTH_URL", oidc.auth_url()),
        ("GOOGLE_TOKEN_URL", oidc.token_url()),
        ("GOOGLE_REVOKE_URL", oidc.revocation_url()),
        ("GOOGLE_ISSUER", oidc.issuer().to_string()),
        ("GOOGLE_CALENDAR_API_URL", google.base_url().to_string()),
        ("MICROSOFT_CLIENT_ID", client.id.clone()),
        ("MICROSOFT_CLIENT_SECRET", client.secret.clone()),
        ("MICROSOFT_REDIRECT_URI", format!("{base}/api/calendar/outlook/callback")),
        ("MICROSOFT_AUTH_URL", oidc.auth_url()),
        ("MICROSOFT_TOKEN_URL", oidc.token_url()),
        ("MICROSOFT_ISSUER", oidc.issuer().to_string()),
        ("MICROSOFT_GRAPH_URL", graph.url.clone()),
        ("CALSYNC_FRONTEND_URL", FRONTEND.to_string()),
    ];
    let mut env = env;
    env.extend(extra.iter().cloned());
    let dir = tempfile::tempdir().expect("tempdir");
    let cs = Standalone::start_with(dir.path(), port, &env).await;
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("browser");
    World { oidc, google, graph, cs, dir, env, port, browser }
}

impl World {
    async fn connect(&self, kind: &str) {
        let (s, body) = self.cs.call("POST", &format!("/connect/{kind}"), Some(json!({"user_id": USER}))).await;
        assert_eq!(s, 200, "{body}");
        let callback = self.oidc.follow_authorization(body["authorization_url"].as_str().expect("url")).await;
        let r = self.browser.get(&callback).send().await.expect("callback");
        let location = r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        assert_eq!(location, format!("{FRONTEND}/calendar-connected?type={kind}&status=success"));
    }

    async fn preferences(&self) -> Value {
        let (s, body) = self.cs.call("GET", &format!("/preferences/{USER}"), None).await;
        assert_eq!(s, 200, "{body}");
        body
    }

    /// Our events in Google (live) and in Outlook, by title.
    fn titles(&self) -> (Vec<String>, Vec<String>) {
        let google = self
            .google
            .live_events("primary")
            .into_iter()
            .filter(|e| e["extendedProperties"]["private"]["calsync"].is_string())
            .filter_map(|e| e["summary"].as_str().map(str::to_string))
            .collect();
        let marker = calsync::providers::outlook::marker_prop();
        let outlook = self
            .graph
            .all()
            .into_iter()
            .filter(|e| {
                e["singleValueExtendedProperties"].as_array().into_iter().flatten().any(|p| p["id"] == marker.as_str())
            })
            .filter_map(|e| e["subject"].as_str().map(str::to_string))
            .collect();
        (google, outlook)
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

fn task(id: &str, category: &str) -> Value {
    json!({"user_id": USER, "task_data": {"id": id, "name": format!("{category} {id}"), "category": category,
        "scheduled_time": "2031-05-14T14:00:00", "timezone": "Europe/Berlin"}})
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn work_goes_to_outlook_personal_to_google_and_a_category_change_moves_the_event_once_across_a_crash() {
    let mut w = world().await;
    w.connect("google").await;
    w.connect("outlook").await;
    eventually("both accounts ready with their calendars", || async {
        let p = w.preferences().await;
        p["connections"].as_array().is_some_and(|c| {
            c.len() == 2 && c.iter().all(|c| c["connected"] == true && !c["calendars"].as_array().unwrap().is_empty())
        })
    })
    .await;
    let prefs = w.preferences().await;
    let outlook = prefs["connections"].as_array().unwrap().iter().find(|c| c["calendar_type"] == "outlook").unwrap();
    let outlook_default = outlook["calendars"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["default"] == true)
        .map(|c| c["calendar_id"].as_str().unwrap().to_string())
        .expect("a default Outlook calendar");

    let body = json!({"default_calendar_type": "google", "categories": {
        "Work": {"calendar_type": "outlook", "calendar_id": outlook_default},
        "Personal": {"calendar_type": "google"}}});
    let (s, v) = w.cs.call("PUT", &format!("/preferences/{USER}"), Some(body)).await;
    assert_eq!(s, 200, "{v}");
    let google = v["connections"].as_array().unwrap().iter().find(|c| c["calendar_type"] == "google").unwrap();
    let primary = google["calendars"].as_array().unwrap().iter().find(|c| c["primary"] == true).unwrap();
    assert_eq!(v["categories"]["Personal"]["calendar_id"], primary["calendar_id"], "the account's default: {v}");

    for (id, category) in [("t1", "Work"), ("t2", "Personal")] {
        let (s, v) = w.cs.call("POST", "/task-to-calendar", Some(task(id, category))).await;
        assert_eq!(s, 200, "{v}");
    }
    assert_eq!(w.titles(), (vec!["Personal t2".to_string()], vec!["Work t1".to_string()]));

    // t1 becomes Personal while Microsoft is down: the copy lands in Google, the old event
    // cannot be deleted yet (the move is recorded as half done). calsync is killed right then.
    w.graph.switches(|s| s.unavailable_next = 100_000);
    let (s, v) =
        w.cs.call(
            "PUT",
            "/update-event",
            Some(json!({"user_id": USER, "task_id": "t1",
        "task_data": {"category": "Personal", "name": "Personal t1"}})),
        )
        .await;
    assert!(s == 200 || s == 202, "{s} {v}");
    eventually("the copy in Google", || async { w.titles().0.len() == 2 }).await;
    assert_eq!(w.titles().1, ["Work t1"], "the old copy is still in Outlook");
    w.cs.kill9();
    w.graph.switches(|s| s.unavailable_next = 0);
    w.cs = Standalone::start_with(w.dir.path(), w.port, &w.env).await;
    eventually("the old copy deleted", || async { w.titles().1.is_empty() }).await;
    let (google, outlook) = w.titles();
    assert_eq!(sorted(google), ["Personal t1", "Personal t2"], "exactly one copy each");
    assert!(outlook.is_empty());
    // And it stays that way (nothing re-created by a later pass).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (google, outlook) = w.titles();
    assert_eq!((google.len(), outlook.len()), (2, 0));
    let (s, v) = w.cs.call("GET", &format!("/sync-history/{USER}"), None).await;
    assert_eq!(s, 200, "{v}");
    assert!(v.to_string().contains("moved"), "the history says the event moved: {v}");
}

/// The held conflict of `task`, once the poll has found it.
async fn wait_conflict(w: &World, task: &str) -> Value {
    let started = Instant::now();
    loop {
        let (s, v) = w.cs.call("GET", &format!("/conflicts/{USER}"), None).await;
        assert_eq!(s, 200, "{v}");
        if let Some(c) = v["conflicts"].as_array().into_iter().flatten().find(|c| c["task_id"] == task) {
            return c.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(15), "no conflict listed for {task}: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn title_diff(conflict: &Value) -> (Value, Value) {
    let field = conflict["diff"].as_array().into_iter().flatten().find(|f| f["field"] == "title").cloned();
    let field = field.unwrap_or_else(|| panic!("a title diff: {conflict}"));
    (field["task"].clone(), field["calendar"].clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn conflicts_on_google_and_outlook_are_shown_and_resolved_both_ways() {
    let w = world_with(&[("CALSYNC_POLL_SECONDS", "1".to_string())]).await;
    w.connect("google").await;
    w.connect("outlook").await;
    eventually("both accounts ready", || async {
        let p = w.preferences().await;
        p["connections"].as_array().is_some_and(|c| c.len() == 2 && c.iter().all(|c| c["connected"] == true))
    })
    .await;
    let mut ids = Vec::new();
    // Inside the window change detection watches (a week back, a year ahead).
    let day = (chrono::Utc::now() + chrono::Duration::days(10)).date_naive();
    for (kind, task_id) in [("google", "g-1"), ("outlook", "o-1")] {
        let body = json!({"user_id": USER, "calendar_type": kind, "task_data": {"id": task_id, "name": "Write the report",
            "scheduled_time": format!("{day}T14:00:00"), "timezone": "Europe/Berlin"}});
        let (s, v) = w.cs.call("POST", "/task-to-calendar", Some(body)).await;
        assert_eq!(s, 200, "{v}");
        ids.push(v["event_id"].as_str().expect("event_id").to_string());
    }
    let edit = |kind: &str, id: &str, title: &str| match kind {
        "google" => {
            w.google.edit_title("primary", id, title);
        }
        _ => w.graph.edit_title(id, title),
    };
    let title_now = |kind: &str, id: &str| -> Value {
        match kind {
            "google" => w.google.raw_event("primary", id).expect("event")["summary"].clone(),
            _ => w.graph.get(id).expect("event")["subject"].clone(),
        }
    };
    for ((kind, task_id), id) in [("google", "g-1"), ("outlook", "o-1")].into_iter().zip(&ids) {
        // Edited in the calendar app: held, listed with the diff.
        edit(kind, id, "Write the report (edited in the calendar)");
        let conflict = wait_conflict(&w, task_id).await;
        assert_eq!(conflict["calendar_type"], kind, "{conflict}");
        assert_eq!(conflict["deleted"], false);
        assert_eq!(
            title_diff(&conflict),
            (json!("Write the report"), json!("Write the report (edited in the calendar)")),
            "{kind}: {conflict}"
        );
        // Keep the calendar's: the task follows; the calendar is not written.
        let req = json!({"user_id": USER, "task_id": task_id, "keep": "calendar", "version": conflict["version"]});
        let (s, v) = w.cs.call("POST", "/resolve-conflict", Some(req)).await;
        assert_eq!(s, 200, "{kind}: {v}");
        assert_eq!(v["task"]["name"], "Write the report (edited in the calendar)", "{kind}: {v}");
        assert_eq!(title_now(kind, id), "Write the report (edited in the calendar)");

        // Edited again; keep the task's this time: the calendar gets the task's version back.
        edit(kind, id, "Edited twice");
        let conflict = wait_conflict(&w, task_id).await;
        assert_eq!(title_diff(&conflict).1, json!("Edited twice"), "{kind}: {conflict}");
        // A stale choice (the first conflict's version) is refused with the new diff.
        let req = json!({"user_id": USER, "task_id": task_id, "keep": "task", "version": "stale-version"});
        let (s, v) = w.cs.call("POST", "/resolve-conflict", Some(req)).await;
        assert_eq!((s, v["code"].as_str()), (409, Some("conflict_changed")), "{kind}: {v}");
        let req = json!({"user_id": USER, "task_id": task_id, "keep": "task", "version": conflict["version"]});
        let (s, v) = w.cs.call("POST", "/resolve-conflict", Some(req)).await;
        assert_eq!(s, 200, "{kind}: {v}");
        assert_eq!(
            title_now(kind, id),
            "Write the report (edited in the calendar)",
            "{kind}: the task's version is back"
        );
        let (s, v) =
            w.cs.call("POST", "/resolve-conflict", Some(json!({"user_id": USER, "task_id": task_id, "keep": "task"})))
                .await;
        assert_eq!((s, v["code"].as_str()), (409, Some("no_conflict")), "{kind}: {v}");
    }
    let (_, v) = w.cs.call("GET", &format!("/conflicts/{USER}"), None).await;
    assert_eq!(v["count"], 0, "{v}");
    let (_, v) = w.cs.call("GET", &format!("/sync-history/{USER}"), None).await;
    let notes: Vec<&str> = v["syncs"].as_array().unwrap().iter().filter_map(|e| e["note"].as_str()).collect();
    assert!(notes.iter().filter(|n| n.contains("calendar")).count() >= 2, "who chose what is recorded: {notes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_300_task_batch_gives_300_events_split_by_category_across_both_accounts() {
    let w = world_with(&[("CALSYNC_GOOGLE_RATE_PER_SECOND", "off".to_string())]).await;
    w.connect("google").await;
    w.connect("outlook").await;
    eventually("both accounts ready", || async {
        let p = w.preferences().await;
        p["connections"].as_array().is_some_and(|c| c.len() == 2 && c.iter().all(|c| c["connected"] == true))
    })
    .await;
    let body = json!({"default_calendar_type": "google", "categories": {"Work": {"calendar_type": "outlook"}}});
    let (s, v) = w.cs.call("PUT", &format!("/preferences/{USER}"), Some(body)).await;
    assert_eq!(s, 200, "{v}");
    let tasks: Vec<Value> = (0..300)
        .map(|i| {
            let category = if i % 2 == 0 { "Work" } else { "Personal" };
            json!({"id": format!("b-{i:03}"), "name": format!("{category} b-{i:03}"), "category": category,
                "scheduled_time": format!("2031-06-{:02}T{:02}:00:00", 1 + i % 28, 8 + i % 10), "timezone": "Europe/Berlin"})
        })
        .collect();
    let started = Instant::now();
    let (s, v) = w.cs.call("POST", "/tasks-to-calendar", Some(json!({"user_id": USER, "tasks": tasks}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["count"], 300, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 300);
    assert!(results.iter().enumerate().all(|(i, r)| r["task_id"] == format!("b-{i:03}")), "in request order");
    eventually("300 events", || async {
        let (google, outlook) = w.titles();
        google.len() == 150 && outlook.len() == 150
    })
    .await;
    let (google, outlook) = w.titles();
    assert!(google.iter().all(|t| t.starts_with("Personal")) && outlook.iter().all(|t| t.starts_with("Work")));
    let mut all: Vec<String> = google.into_iter().chain(outlook).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 300, "no duplicates");
    eprintln!("300-task batch: all events in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_google_series_with_a_moved_and_a_cancelled_occurrence_reaches_the_app_as_one_task() {
    let w = world().await;
    w.connect("google").await;
    eventually("google ready", || async {
        let p = w.preferences().await;
        p["connections"].as_array().is_some_and(|c| c.len() == 1 && c[0]["connected"] == true)
    })
    .await;
    let cal = w.google.account();
    let day = (chrono::Utc::now() + chrono::Duration::days(2)).date_naive();
    let at = |d: i64| day + chrono::Duration::days(d);
    let utc = |d: i64, h: u32| json!({"dateTime": format!("{}T{h:02}:00:00Z", at(d)), "timeZone": "UTC"});
    let master = w.google.insert_external(
        &cal,
        json!({"summary": "Standup", "start": utc(0, 9), "end": utc(0, 10), "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=4"]}),
    );
    let id = master["id"].as_str().expect("id").to_string();
    let instance = |d: i64| format!("{id}_{}T090000Z", at(d).format("%Y%m%d"));
    // The user's calendar app cancels the second occurrence and moves the third.
    w.google.user_delete(&cal, &instance(7));
    w.google.edit(&cal, &instance(14), json!({"start": utc(15, 11), "end": utc(15, 12)}));

    let (s, v) = w.cs.call("POST", "/calendar-to-tasks", Some(json!({"user_id": USER, "window_days": 30}))).await;
    assert_eq!(s, 200, "{v}");
    let series: Vec<&Value> = v["tasks"].as_array().expect("tasks").iter().filter(|t| t["name"] == "Standup").collect();
    assert_eq!(series.len(), 1, "one task for the whole series: {v}");
    let task = series[0];
    assert_eq!(task["recurrence"], json!(["RRULE:FREQ=WEEKLY;COUNT=4"]), "{task}");
    let exceptions = task["exceptions"].as_array().expect("exceptions");
    assert_eq!(exceptions.len(), 2, "the moved and the cancelled occurrence (behind the client limiter too): {task}");
    let cancelled = exceptions.iter().find(|e| e["cancelled"] == true).expect("a cancelled occurrence");
    assert!(cancelled["original_start"].as_str().unwrap_or_default().starts_with(&at(7).to_string()), "{task}");
    let moved = exceptions.iter().find(|e| e["cancelled"] == false).expect("a moved occurrence");
    assert!(moved["original_start"].as_str().unwrap_or_default().starts_with(&at(14).to_string()), "{task}");
    assert!(moved["start"].as_str().unwrap_or_default().starts_with(&format!("{}T11:00", at(15))), "{task}");
}
