//! The mass-deletion guard end to end: the built `calsync standalone` binary on a real Radicale.
//! `calsync delete -f` of 200 TaskSyncs of one connection deletes at most the threshold (default:
//! more than 50 and more than half of the events, so 100 of 200), then holds; a kill -9 while
//! holding keeps holding; a confirm with a stale count is refused and the right count deletes the
//! rest; a cancel keeps the events in the calendar and releases the TaskSyncs. Events are counted
//! in Radicale itself.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use calsync::resources::{CONFIRM_DELETIONS_ANNOTATION, ProviderKind, connection_name};
use serde_json::{Value, json};
use support::calsync_bin::Standalone;
use support::live::{condition, connections, task_syncs};
use support::radicale::{Radicale, RawDav};

const CAL: &str = "/alice/calendar/";
const USER: &str = "guard_user";
const TASKS: usize = 200;
const LIMIT: Duration = Duration::from_secs(120);

/// `.ics` resources in the calendar (PROPFIND depth 1).
async fn calendar_events(raw: &RawDav) -> usize {
    let r = raw
        .request(
            "PROPFIND",
            CAL,
            &[("depth", "1"), ("content-type", "application/xml")],
            Some(r#"<?xml version="1.0"?><propfind xmlns="DAV:"><prop><getetag/></prop></propfind>"#.into()),
        )
        .await;
    assert_eq!(r.status, 207, "PROPFIND: {}", r.body);
    r.body.split("href>").filter(|p| p.split('<').next().is_some_and(|h| h.ends_with(".ics"))).count()
}

async fn wait(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < LIMIT, "not within {LIMIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn connection(dir: &Path) -> Value {
    connections(dir).into_iter().next().expect("one connection")
}

/// Connect, apply 200 TaskSyncs and wait until every one has its event; the YAML file.
async fn two_hundred_synced(raw: &RawDav, server: &Radicale, cs: &Standalone) -> std::path::PathBuf {
    let (s, body) = cs
        .call(
            "POST",
            "/apple/connect",
            Some(json!({"user_id": USER, "apple_id": server.user, "app_password": server.password, "server_url": server.url})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let conn = connection_name(USER, ProviderKind::Apple);
    let yaml: String = (0..TASKS)
        .map(|i| {
            format!(
                "---\napiVersion: calendar.getitdone.app/v1alpha1\nkind: TaskSync\nmetadata:\n  name: g-{i}\nspec:\n  connectionRef:\n    name: {conn}\n  taskId: g-{i}\n  title: Task {i}\n  start: \"2026-06-{:02}T{:02}:00:00\"\n  timeZone: Europe/Berlin\n  duration: 30m\n",
                1 + i % 28,
                8 + i % 10
            )
        })
        .collect();
    let file = cs.dir.join("tasks.yaml");
    std::fs::write(&file, yaml).expect("write");
    let (ok, out, err) = Standalone::cli(&cs.dir, &["apply", "-f", file.to_str().expect("path")]);
    assert!(ok, "{out}{err}");
    wait("200 events in Radicale", async || calendar_events(raw).await == TASKS).await;
    file
}

/// Delete all 200 and wait until the guard holds with what it let through gone.
async fn delete_all_and_hold(raw: &RawDav, cs: &Standalone, file: &Path) {
    let (ok, out, err) = Standalone::cli(&cs.dir, &["delete", "-f", file.to_str().expect("path")]);
    assert!(ok, "{out}{err}");
    let started = Instant::now();
    loop {
        let c = connection(&cs.dir);
        let left = task_syncs(&cs.dir);
        // Every held TaskSync reconciled at least once since it was marked, and says so.
        let all_say_held = left.iter().all(|t| condition(t, "Synced") == Some(("False".into(), "DeletionHeld".into())));
        if condition(&c, "DeletionGuard") == Some(("True".into(), "DeletionsHeld".into()))
            && c["status"]["deletionGuard"]["held"] == 100
            && left.len() == 100
            && all_say_held
        {
            break;
        }
        assert!(
            started.elapsed() < LIMIT,
            "the guard does not hold 100 ({} TaskSyncs left, all say held: {all_say_held}): {:#}",
            left.len(),
            c["status"]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(calendar_events(raw).await, 100, "at most the threshold was deleted");
    let c = connection(&cs.dir);
    let g = &c["status"]["deletionGuard"];
    assert_eq!((&g["deletedInWindow"], &g["held"], &g["total"]), (&json!(100), &json!(100), &json!(200)), "{c:#}");
    let message = c["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "DeletionGuard"))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(message.starts_with("100 calendar deletions are held: 100 were deleted"), "{message}");
}

/// Set the decision annotation on the connection with `calsync apply`, as a person would.
fn decide(dir: &Path, value: &str) {
    let mut c = connection(dir);
    c["metadata"]["annotations"][CONFIRM_DELETIONS_ANNOTATION] = json!(value);
    if let Some(m) = c.as_object_mut() {
        m.remove("status");
    }
    let file = dir.join("decision.json");
    std::fs::write(&file, c.to_string()).expect("write");
    let (ok, out, err) = Standalone::cli(dir, &["apply", "-f", file.to_str().expect("path")]);
    assert!(ok, "{out}{err}");
}

fn annotation(dir: &Path) -> Value {
    connection(dir)["metadata"]["annotations"][CONFIRM_DELETIONS_ANNOTATION].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn holds_past_the_threshold_survives_kill_9_and_deletes_on_the_right_count() {
    let server = Radicale::start();
    let raw = server.raw();
    raw.mkcalendar(CAL, "Calendar", &["VEVENT"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = Standalone::pick_port();
    let mut cs = Standalone::start_with(dir.path(), port, &[]).await;
    let file = two_hundred_synced(&raw, &server, &cs).await;
    delete_all_and_hold(&raw, &cs, &file).await;

    // kill -9 while holding; the restarted process reconciles every held TaskSync again.
    cs.kill9();
    let cs = Standalone::start_with(dir.path(), port, &[]).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(calendar_events(&raw).await, 100, "still holding after the restart");
    assert_eq!(task_syncs(dir.path()).len(), 100);
    assert_eq!(condition(&connection(dir.path()), "DeletionGuard"), Some(("True".into(), "DeletionsHeld".into())));

    // A stale count is refused with the current one; nothing is deleted.
    decide(dir.path(), "150");
    wait("the stale confirm is refused", async || {
        annotation(dir.path()).is_null()
            && condition(&connection(dir.path()), "DeletionGuard") == Some(("True".into(), "ConfirmRefused".into()))
    })
    .await;
    let c = connection(dir.path());
    let message = c["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "DeletionGuard"))
        .expect("condition")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("100 deletions are held now"), "{message}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(calendar_events(&raw).await, 100);

    // The right count deletes the rest.
    decide(dir.path(), "100");
    wait("the confirmed deletions", async || task_syncs(dir.path()).is_empty()).await;
    assert_eq!(calendar_events(&raw).await, 0);
    let c = connection(dir.path());
    assert_eq!(condition(&c, "DeletionGuard"), Some(("False".into(), "DeletionsConfirmed".into())));
    assert_eq!(c["status"]["deletionGuard"]["decision"]["count"], 100);
    drop(cs);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_keeps_the_events_and_releases_the_task_syncs() {
    let server = Radicale::start();
    let raw = server.raw();
    raw.mkcalendar(CAL, "Calendar", &["VEVENT"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cs = Standalone::start(dir.path()).await;
    let file = two_hundred_synced(&raw, &server, &cs).await;
    delete_all_and_hold(&raw, &cs, &file).await;

    decide(dir.path(), "cancel");
    wait("the cancelled TaskSyncs are released", async || task_syncs(dir.path()).is_empty()).await;
    assert_eq!(calendar_events(&raw).await, 100, "the held events stay in the calendar");
    let c = connection(dir.path());
    assert_eq!(condition(&c, "DeletionGuard"), Some(("False".into(), "DeletionsCancelled".into())));
    let orphaned = c["status"]["history"].as_array().map(|h| h.iter().filter(|e| e["operation"] == "orphan").count());
    assert_eq!(orphaned, Some(100), "history records each kept event");
}
