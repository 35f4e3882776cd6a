//! End to end: the built `calsync standalone` binary against a real Radicale, driven over HTTP
//! as the seed's curl examples do, with every calendar effect checked by raw CalDAV requests.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{Datelike, Utc};
use serde_json::{Value, json};
use support::calsync_bin::Standalone;
use support::radicale::{Radicale, RawDav, ics_lines};

const CAL: &str = "/alice/calendar/";

async fn radicale() -> (Radicale, RawDav) {
    let server = Radicale::start();
    let raw = server.raw();
    raw.mkcalendar(CAL, "Calendar", &["VEVENT"]).await;
    (server, raw)
}

/// The VEVENT's own lines (a VTIMEZONE has DTSTART and RRULE lines too).
fn vevent(lines: Vec<String>) -> Vec<String> {
    lines.into_iter().skip_while(|l| l != "BEGIN:VEVENT").take_while(|l| l != "END:VEVENT").collect()
}

/// Every event resource in the calendar: href → the VEVENT's unfolded lines.
async fn events(raw: &RawDav) -> BTreeMap<String, Vec<String>> {
    let r = raw
        .request(
            "PROPFIND",
            CAL,
            &[("depth", "1"), ("content-type", "application/xml")],
            Some(r#"<?xml version="1.0"?><propfind xmlns="DAV:"><prop><getetag/></prop></propfind>"#.into()),
        )
        .await;
    assert_eq!(r.status, 207, "PROPFIND {CAL}: {}", r.body);
    let mut out = BTreeMap::new();
    for part in r.body.split("href>").filter(|p| p.contains(".ics<")) {
        let href = part.trim_end_matches("</").trim_end_matches('<').trim_end_matches(':').to_string();
        let href = href.rsplit_once('<').map_or(href.clone(), |(h, _)| h.to_string());
        if let Some(got) = raw.get(&href).await {
            out.insert(href, vevent(ics_lines(&got.body)));
        }
    }
    out
}

fn prop<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
    lines.iter().find(|l| l.starts_with(name) && l[name.len()..].starts_with([':', ';'])).map(|l| l.as_str())
}

fn ours(evs: &BTreeMap<String, Vec<String>>) -> Vec<&Vec<String>> {
    evs.values().filter(|l| prop(l, "X-CALSYNC-MARKER").is_some()).collect()
}

async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, secs: u64, mut f: F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_flow_for_apple_against_radicale() {
    seed_flow(Vec::new()).await
}

/// The same seed flow with standalone on PostgreSQL (a fresh database of the test server); its
/// password is recorded for the CI leak check (never in a log or response).
#[tokio::test(flavor = "multi_thread")]
async fn seed_flow_for_apple_against_radicale_on_postgresql() {
    let pg = tokio::task::spawn_blocking(support::postgres::shared).await.expect("start PostgreSQL");
    support::calsync_bin::artifacts::record_secret("postgresql-password", pg.password());
    let url = tokio::task::spawn_blocking(|| support::postgres::shared().database()).await.expect("database");
    seed_flow(vec![("DATABASE_URL", url)]).await
}

async fn seed_flow(env: Vec<(&'static str, String)>) {
    let (server, raw) = radicale().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cs = Standalone::start_with(dir.path(), Standalone::pick_port(), &env).await;
    let user = "test_user_123";

    // 1. Connect (the Apple form, pointed at Radicale with server_url).
    let (s, body) = cs
        .call(
            "POST",
            "/apple/connect",
            Some(json!({"user_id": user, "apple_id": server.user, "app_password": server.password, "server_url": server.url})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["success"], true);
    assert!(body["calendars"].as_array().is_some_and(|c| c.contains(&json!("Calendar"))), "{body}");
    assert!(!body.to_string().contains(&server.password), "the password came back in a response");

    // 2. Status says connected.
    let (s, body) = cs.call("GET", &format!("/connection-status/{user}"), None).await;
    assert_eq!((s, &body["connected"], &body["calendar_type"]), (200, &json!(true), &json!("apple")), "{body}");

    // 3. A task becomes an event, really stored in Radicale.
    let day = (Utc::now() + chrono::Duration::days(2)).date_naive();
    let when = format!("{}-{:02}-{:02}T14:00:00", day.year(), day.month(), day.day());
    let task = json!({"user_id": user, "task_data": {"id": "task_001", "name": "Test homework assignment",
        "scheduled_time": when, "category": "Homework", "timezone": "America/New_York"}});
    let (s, body) = cs.call("POST", "/task-to-calendar", Some(task.clone())).await;
    assert_eq!(s, 200, "{body}");
    let event_id = body["event_id"].as_str().expect("event_id").to_string();
    assert!(body["event_link"].as_str().is_some_and(|l| l.starts_with("http://127.0.0.1")), "{body}");
    let evs = events(&raw).await;
    let mine = ours(&evs);
    assert_eq!(mine.len(), 1, "one event in Radicale: {evs:?}");
    assert_eq!(prop(mine[0], "SUMMARY"), Some("SUMMARY:Test homework assignment"));
    assert!(prop(mine[0], "DTSTART").is_some_and(|l| l.contains("TZID=America/New_York") && l.ends_with("T140000")));

    // 4. The same call again: still one event, same id.
    let (s, body) = cs.call("POST", "/task-to-calendar", Some(task)).await;
    assert_eq!((s, body["event_id"].as_str()), (200, Some(event_id.as_str())), "{body}");
    assert_eq!(ours(&events(&raw).await).len(), 1, "a repeated call made a duplicate");

    // 5. update-event moves it.
    let later = when.replace("T14:00", "T15:00");
    let (s, body) = cs
        .call(
            "PUT",
            "/update-event",
            Some(json!({"user_id": user, "event_id": event_id, "task_data": {"name": "Updated assignment title", "scheduled_time": later}})),
        )
        .await;
    assert_eq!((s, &body["success"]), (200, &json!(true)), "{body}");
    let evs = events(&raw).await;
    let mine = ours(&evs);
    assert_eq!(mine.len(), 1);
    assert_eq!(prop(mine[0], "SUMMARY"), Some("SUMMARY:Updated assignment title"));
    assert!(prop(mine[0], "DTSTART").is_some_and(|l| l.ends_with("T150000")), "{:?}", prop(mine[0], "DTSTART"));

    // 6. An event made in the calendar app comes back as a task; ours does not.
    let d = day.format("%Y%m%d");
    let ext = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:dentist-1@test\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:{d}T193000Z\r\nDTEND:{d}T203000Z\r\nSUMMARY:Dentist appointment\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    );
    let put = raw.put(&format!("{CAL}dentist-1.ics"), &ext, ("if-none-match", "*")).await;
    assert_eq!(put.status, 201, "{}", put.body);
    let (s, body) = cs.call("POST", "/calendar-to-tasks", Some(json!({"user_id": user, "refresh": true}))).await;
    assert_eq!(s, 200, "{body}");
    let names: Vec<&str> = body["tasks"].as_array().expect("tasks").iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.contains(&"Dentist appointment"), "{body}");
    assert!(!names.contains(&"Updated assignment title"), "our own event came back as a task: {body}");
    assert_eq!(body["count"], json!(names.len()));

    // 7. delete-event removes it from Radicale.
    let (s, body) = cs.call("DELETE", "/delete-event", Some(json!({"user_id": user, "event_id": event_id}))).await;
    assert_eq!((s, &body["success"]), (200, &json!(true)), "{body}");
    let evs = events(&raw).await;
    assert!(ours(&evs).is_empty(), "the event is still in Radicale: {evs:?}");
    assert_eq!(evs.len(), 1, "the user's own event stays");

    // 8. sync-history lists the operations, newest first.
    let (s, body) = cs.call("GET", &format!("/sync-history/{user}"), None).await;
    assert_eq!(s, 200, "{body}");
    let syncs = body["syncs"].as_array().expect("syncs");
    assert!(syncs.len() >= 3, "{body}");
    assert!(syncs.iter().all(|e| e["task_id"] == "task_001" && e["calendar_type"] == "apple"), "{body}");
    assert_eq!(syncs[0]["sync_status"], "success");
    let ids: Vec<i64> = syncs.iter().filter_map(|e| e["id"].as_i64()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");

    // 9. Disconnect; status says not connected.
    let (s, body) = cs.call("POST", &format!("/disconnect/{user}"), None).await;
    assert_eq!((s, &body["success"]), (200, &json!(true)), "{body}");
    let (s, body) = cs.call("GET", &format!("/connection-status/{user}"), None).await;
    assert_eq!((s, &body["connected"]), (200, &json!(false)), "{body}");
    assert!(!cs.log().contains(&server.password), "the password reached the log");
    if env.iter().any(|(k, _)| *k == "DATABASE_URL") {
        assert!(cs.log().contains("opened the PostgreSQL store"), "not on PostgreSQL:\n{}", cs.log());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn examples_applied_with_the_cli_converge() {
    let (server, raw) = radicale().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = env!("CARGO_MANIFEST_DIR");
    // The example as a platform team writes it, pointed at this Radicale.
    let conn = std::fs::read_to_string(format!("{root}/examples/caldav-connection.yaml"))
        .expect("example")
        .replace("https://caldav.example.com/", &server.url)
        .replace("username: alice", &format!("username: {}", server.user))
        .replace("password: change-me", &format!("password: {}", server.password));
    let conn_file = dir.path().join("connection.yaml");
    std::fs::write(&conn_file, conn).expect("write");
    let tasks = format!("{root}/examples/tasksyncs.yaml");
    let _cs = Standalone::start(dir.path()).await;
    for f in [conn_file.to_str().expect("utf-8 path"), tasks.as_str()] {
        let (ok, out, err) = Standalone::cli(dir.path(), &["apply", "-f", f]);
        assert!(ok, "apply -f {f}: {out}{err}");
    }
    wait_until("five events in Radicale", 60, async || ours(&events(&raw).await).len() == 5).await;
    let (ok, out, _) = Standalone::cli(dir.path(), &["get", "tasksyncs", "-o", "json"]);
    assert!(ok);
    let list: Value = serde_json::from_str(&out).expect("json");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 5);
    // The task that places itself: Monday 18 October 2027, 09:00 New York (EDT), free.
    let essay = items.iter().find(|i| i["metadata"]["name"] == "alice-essay").expect("alice-essay");
    assert_eq!(essay["status"]["scheduledStart"], "2027-10-18T13:00:00Z", "{essay}");
    for item in items {
        let synced =
            item["status"]["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Synced")).cloned();
        assert_eq!(synced.as_ref().map(|c| c["status"].clone()), Some(json!("True")), "{item}");
    }
    let evs = events(&raw).await;
    let allday = evs.values().find(|l| prop(l, "SUMMARY") == Some("SUMMARY:Exam day")).expect("all-day event");
    assert_eq!(prop(allday, "DTSTART"), Some("DTSTART;VALUE=DATE:20261020"));
    let weekly = evs.values().find(|l| prop(l, "SUMMARY") == Some("SUMMARY:Weekly review")).expect("weekly");
    assert_eq!(prop(weekly, "RRULE"), Some("RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=10"));

    // Deleting the TaskSyncs deletes their events, except the Orphan one.
    let (ok, out, err) = Standalone::cli(dir.path(), &["delete", "-f", &tasks]);
    assert!(ok, "{out}{err}");
    wait_until("TaskSyncs gone", 60, async || {
        let (_, out, _) = Standalone::cli(dir.path(), &["get", "tasksyncs", "-o", "json"]);
        serde_json::from_str::<Value>(&out).ok().and_then(|v| v["items"].as_array().map(Vec::len)) == Some(0)
    })
    .await;
    let left: Vec<_> =
        ours(&events(&raw).await).into_iter().filter_map(|l| prop(l, "SUMMARY").map(String::from)).collect();
    assert_eq!(left, vec!["SUMMARY:Dentist".to_string()], "only the Orphan event stays");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_a_burst_loses_no_acknowledged_task_and_duplicates_none() {
    let (server, raw) = radicale().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cs = Standalone::start(dir.path()).await;
    let user = "burst-user";
    let (s, body) = cs
        .call("POST", "/apple/connect", Some(json!({"user_id": user, "apple_id": server.user, "app_password": server.password, "server_url": server.url})))
        .await;
    assert_eq!(s, 200, "{body}");
    let day = (Utc::now() + chrono::Duration::days(1)).date_naive().format("%Y-%m-%d").to_string();
    let total = 200;
    let cs_ref = &cs;
    let calls = (0..total).map(|i| {
        let day = day.clone();
        async move {
            let task = json!({"user_id": user, "task_data": {"id": format!("burst-{i}"), "name": format!("Burst task {i}"),
                "scheduled_time": format!("{day}T{:02}:{:02}:00Z", 8 + i / 60, i % 60)}});
            let m = reqwest::Method::POST;
            let r = cs_ref
                .http
                .request(m, format!("{}/api/calendar/task-to-calendar", cs_ref.base))
                .bearer_auth(support::calsync_bin::API_KEY)
                .header("content-type", "application/json")
                .body(task.to_string())
                .send()
                .await;
            (i, r.map(|r| r.status().as_u16()).ok())
        }
    });
    // Fire the burst 8 at a time and kill -9 the process part way through.
    let mut acknowledged = Vec::new();
    let mut pending = futures_like_stream(calls, 8);
    let started = Instant::now();
    let mut killed = false;
    while let Some((i, status)) = pending.next().await {
        if matches!(status, Some(200 | 202)) {
            acknowledged.push(i);
        }
        if !killed && (acknowledged.len() >= 60 || started.elapsed() > Duration::from_secs(20)) {
            killed = true;
            break;
        }
    }
    drop(pending);
    cs.kill9();
    assert!(killed && !acknowledged.is_empty(), "the burst never got going: {}", cs.log());
    let cs = Standalone::start(dir.path()).await;
    // Every acknowledged task ends up as exactly one event.
    wait_until("acknowledged tasks in Radicale", 120, async || {
        let evs = events(&raw).await;
        let titles: Vec<String> = ours(&evs).iter().filter_map(|l| prop(l, "SUMMARY").map(String::from)).collect();
        acknowledged.iter().all(|i| titles.contains(&format!("SUMMARY:Burst task {i}")))
    })
    .await;
    let evs = events(&raw).await;
    let mut per_task: BTreeMap<String, usize> = BTreeMap::new();
    for l in ours(&evs) {
        *per_task.entry(prop(l, "SUMMARY").unwrap_or_default().to_string()).or_default() += 1;
    }
    let dups: Vec<_> = per_task.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicates after kill -9: {dups:?}");
    eprintln!(
        "kill -9 burst: {} acknowledged before the kill, {} events after restart, 0 duplicates",
        acknowledged.len(),
        per_task.len()
    );
    drop(cs);
}

/// A minimal bounded-concurrency stream over futures (the test needs no extra crate).
fn futures_like_stream<F, I>(iter: I, limit: usize) -> Buffered<F, I::IntoIter>
where
    I: IntoIterator<Item = F>,
    F: std::future::Future,
{
    Buffered { iter: iter.into_iter(), running: Vec::new(), limit }
}

struct Buffered<F: std::future::Future, I> {
    iter: I,
    running: Vec<std::pin::Pin<Box<F>>>,
    limit: usize,
}

impl<F: std::future::Future, I: Iterator<Item = F>> Buffered<F, I> {
    async fn next(&mut self) -> Option<F::Output> {
        while self.running.len() < self.limit {
            match self.iter.next() {
                Some(f) => self.running.push(Box::pin(f)),
                None => break,
            }
        }
        if self.running.is_empty() {
            return None;
        }
        std::future::poll_fn(|cx| {
            for i in 0..self.running.len() {
                if let std::task::Poll::Ready(out) = self.running[i].as_mut().poll(cx) {
                    drop(self.running.swap_remove(i));
                    return std::task::Poll::Ready(Some(out));
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

/// Two `calsync standalone` replicas on one PostgreSQL database share the engine's work through
/// shard leases: tasks created through either become exactly one event each; a `sync-history`
/// written through one is read through the other; one replica killed with -9, the other takes
/// its shards over after the leases expire and nothing is lost or duplicated.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_postgresql_share_the_work_and_survive_a_kill_9() {
    let (server, raw) = radicale().await;
    let pg = tokio::task::spawn_blocking(support::postgres::shared).await.expect("start PostgreSQL");
    support::calsync_bin::artifacts::record_secret("postgresql-password", pg.password());
    let db = tokio::task::spawn_blocking(|| support::postgres::shared().create_database()).await.expect("db");
    let url = pg.url_of(&db);
    let env = vec![("DATABASE_URL", url), ("CALSYNC_SYNC_WAIT_SECONDS", "30".to_string())];
    let (dir_a, dir_b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let mut a = Standalone::start_with(dir_a.path(), Standalone::pick_port(), &env).await;
    let b = Standalone::start_with(dir_b.path(), Standalone::pick_port(), &env).await;
    let holders = move || {
        let db = db.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                support::postgres::shared().psql(
                    &db,
                    "SELECT count(DISTINCT holder) FROM shard_leases WHERE holder <> '' AND expires_at > now()",
                )
            })
            .await
            .expect("psql")
        }
    };
    wait_until("both replicas to hold shards", 30, async || holders().await == "2").await;

    let user = "replica_user";
    let (s, body) = a
        .call(
            "POST",
            "/apple/connect",
            Some(json!({"user_id": user, "apple_id": server.user, "app_password": server.password, "server_url": server.url})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let day = (Utc::now() + chrono::Duration::days(3)).date_naive();
    let task = |i: usize| {
        json!({"user_id": user, "task_data": {"id": format!("task_{i:03}"), "name": format!("Replica task {i}"),
            "scheduled_time": format!("{}-{:02}-{:02}T09:00:00", day.year(), day.month(), day.day()), "timezone": "UTC"}})
    };
    for i in 0..20 {
        let via = if i % 2 == 0 { &a } else { &b };
        let (s, body) = via.call("POST", "/task-to-calendar", Some(task(i))).await;
        assert!(s == 200 || s == 202, "{s} {body}");
    }
    let count_ours = async || ours(&events(&raw).await).len();
    wait_until("20 events", 60, async || count_ours().await >= 20).await;
    // The connection's history was written by whichever replica holds its shard; both read it.
    let (s, via_b) = b.call("GET", &format!("/sync-history/{user}"), None).await;
    assert_eq!(s, 200, "{via_b}");
    let (_, via_a) = a.call("GET", &format!("/sync-history/{user}"), None).await;
    assert!(via_b["syncs"].as_array().is_some_and(|l| l.len() >= 20), "{via_b}");
    assert_eq!(via_a["syncs"], via_b["syncs"]);

    a.kill9();
    for i in 20..30 {
        let (s, body) = b.call("POST", "/task-to-calendar", Some(task(i))).await;
        assert!(s == 200 || s == 202, "{s} {body}");
    }
    wait_until("30 events after the kill", 90, async || count_ours().await >= 30).await;
    wait_until("one replica left holding every shard", 30, async || holders().await == "1").await;
    let evs = events(&raw).await;
    let mut names: Vec<&str> = ours(&evs).iter().filter_map(|l| prop(l, "SUMMARY")).collect();
    names.sort();
    let total = names.len();
    names.dedup();
    assert_eq!((total, names.len()), (30, 30), "duplicates or losses: {names:?}");
    assert!(!b.log().contains(pg.password()) && !b.log().contains(&server.password));
}
