//! Smart scheduling end to end (issue 17's acceptance): the built `calsync standalone` binary, a
//! user with three connections (a real Radicale over CalDAV, the strict Google Calendar fake and
//! the strict Microsoft Graph fake, the two OAuth ones through a real OAuth server), meetings in
//! all three around the March 2027 DST change in New York:
//!
//! - Radicale: a weekly recurring standup (with a VTIMEZONE, one occurrence moved to another
//!   day), a transparent (free) event and an all-day event;
//! - Google: a lunch before the change, a planning meeting after it;
//! - Outlook: a one-to-one before, a review after.
//!
//! `suggest-times` never proposes time that any of the three calls busy, stays inside 09:00–17:00
//! New York wall-clock time on both sides of the change, and treats the free event, the moved
//! occurrence's old time and the all-day day as what they are. A task that places itself
//! (`auto_schedule`) lands in free time, written free (TRANSP:TRANSPARENT), and moves when a
//! meeting is created on top of it in another of the user's calendars (Outlook), staying before
//! its deadline; a task whose week is full gets `no_room`, and the open tab hears
//! `task.unschedulable`.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc, Weekday};
use serde_json::{Value, json};
use support::app_receiver::EventStream;
use support::calsync_bin::Standalone;
use support::fake_google::{FakeGoogle, FakeGoogleOptions};
use support::fake_graph::{FakeGraph, TokenValidator};
use support::oidc::{OidcClient, OidcOptions, OidcServer};
use support::radicale::{Radicale, line_value, vevent_lines};

const FRONTEND: &str = "http://frontend.test";
const USER: &str = "planner";
const CAL: &str = "/alice/calendar/";
const NY: chrono_tz::Tz = chrono_tz::America::New_York;

struct World {
    oidc: Arc<OidcServer>,
    google: FakeGoogle,
    graph: FakeGraph,
    radicale: Radicale,
    cs: Standalone,
    browser: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let port = Standalone::pick_port();
    let base = format!("http://127.0.0.1:{port}");
    let oidc = Arc::new(OidcServer::start(OidcOptions {
        clients: vec![OidcClient::calsync("calsync-both", &base)],
        access_token_ttl_secs: 300,
        rotate_refresh_tokens: false,
    }));
    let client = oidc.client().clone();
    support::calsync_bin::artifacts::record_secret("oauth-client-secret", &client.secret);
    let google =
        FakeGoogle::start(FakeGoogleOptions::introspection(&oidc.introspection_url(), &client.id, &client.secret));
    let (peer, introspect) = (oidc.clone(), client.clone());
    let validator: TokenValidator = Arc::new(move |token: String| {
        let (peer, client) = (peer.clone(), introspect.clone());
        Box::pin(async move { peer.introspect(&token, &client.id, &client.secret).await["active"] == json!(true) })
    });
    let graph = FakeGraph::start_with("no-static-token", Some(validator)).await;
    let radicale = Radicale::start();
    radicale.raw().mkcalendar(CAL, "Calendar", &["VEVENT"]).await;
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
        // Change detection every second (no push in this test): a meeting is seen at once.
        ("CALSYNC_POLL_SECONDS", "1".to_string()),
        ("CALSYNC_CALDAV_POLL_SECONDS", "1".to_string()),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let cs = Standalone::start_with(dir.path(), port, &env).await;
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("browser");
    World { oidc, google, graph, radicale, cs, browser, _dir: dir }
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

    async fn connect_all(&self) {
        self.connect("google").await;
        self.connect("outlook").await;
        let body = json!({"user_id": USER, "apple_id": self.radicale.user, "app_password": self.radicale.password,
            "server_url": self.radicale.url});
        let (s, v) = self.cs.call("POST", "/apple/connect", Some(body)).await;
        assert_eq!(s, 200, "{v}");
        eventually("three accounts ready", || async {
            let (_, p) = self.cs.call("GET", &format!("/preferences/{USER}"), None).await;
            p["connections"].as_array().is_some_and(|c| c.len() == 3 && c.iter().all(|c| c["connected"] == true))
        })
        .await;
    }

    async fn put_ics(&self, name: &str, body: String) {
        let path = format!("{CAL}{name}.ics");
        let r = self.radicale.raw().put(&path, &body, ("if-none-match", "*")).await;
        assert_eq!(r.status, 201, "PUT {path}: {}", r.body);
    }

    async fn suggest(&self, body: Value) -> Value {
        let (s, v) = self.cs.call("POST", "/suggest-times", Some(body)).await;
        assert_eq!(s, 200, "{v}");
        v
    }
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(45);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// New York wall-clock time as an instant.
fn ny(d: (i32, u32, u32), h: u32, m: u32) -> DateTime<Utc> {
    NY.with_ymd_and_hms(d.0, d.1, d.2, h, m, 0).single().expect("a time that exists").with_timezone(&Utc)
}

fn rfc(t: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t).unwrap_or_else(|e| panic!("{t}: {e}")).with_timezone(&Utc)
}

fn ics(body: &str) -> String {
    format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//e2e//t//EN\r\n{}END:VCALENDAR\r\n", body.replace('\n', "\r\n"))
}

const VTIMEZONE: &str = "BEGIN:VTIMEZONE
TZID:America/New_York
BEGIN:DAYLIGHT
TZOFFSETFROM:-0500
TZOFFSETTO:-0400
TZNAME:EDT
DTSTART:19700308T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU
END:DAYLIGHT
BEGIN:STANDARD
TZOFFSETFROM:-0400
TZOFFSETTO:-0500
TZNAME:EST
DTSTART:19701101T020000
RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU
END:STANDARD
END:VTIMEZONE
";

/// Monday and Wednesday 09:00–10:00 New York from 1 March 2027; the 17 March occurrence moved
/// to Thursday 18 March 15:00–16:00.
fn standup() -> String {
    ics(&format!(
        "{VTIMEZONE}BEGIN:VEVENT
UID:standup@e2e
DTSTAMP:20261201T000000Z
DTSTART;TZID=America/New_York:20270301T090000
DTEND;TZID=America/New_York:20270301T100000
RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=12
SUMMARY:Standup
END:VEVENT
BEGIN:VEVENT
UID:standup@e2e
DTSTAMP:20261201T000000Z
RECURRENCE-ID;TZID=America/New_York:20270317T090000
DTSTART;TZID=America/New_York:20270318T150000
DTEND;TZID=America/New_York:20270318T160000
SUMMARY:Standup (moved)
END:VEVENT
"
    ))
}

fn single(uid: &str, start: DateTime<Utc>, end: DateTime<Utc>, extra: &str) -> String {
    let f = |t: DateTime<Utc>| t.format("%Y%m%dT%H%M%SZ").to_string();
    ics(&format!(
        "BEGIN:VEVENT\nUID:{uid}\nDTSTAMP:20261201T000000Z\nDTSTART:{}\nDTEND:{}\n{extra}SUMMARY:{uid}\nEND:VEVENT\n",
        f(start),
        f(end)
    ))
}

fn google_at(t: DateTime<Utc>) -> Value {
    json!({"dateTime": t.to_rfc3339(), "timeZone": "America/New_York"})
}

fn graph_at(t: DateTime<Utc>) -> Value {
    json!({"dateTime": t.format("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": "UTC"})
}

/// Every slot of an answer as (start, end).
fn slots(answer: &Value) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    answer["slots"]
        .as_array()
        .unwrap_or_else(|| panic!("slots: {answer}"))
        .iter()
        .map(|s| (rfc(s["start"].as_str().unwrap()), rfc(s["end"].as_str().unwrap())))
        .collect()
}

fn overlaps(a: (DateTime<Utc>, DateTime<Utc>), b: (DateTime<Utc>, DateTime<Utc>)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// Inside Monday–Friday 09:00–17:00 on one New York day.
fn in_working_hours(s: (DateTime<Utc>, DateTime<Utc>)) -> bool {
    let (a, b) = (s.0.with_timezone(&NY), s.1.with_timezone(&NY));
    let weekday = !matches!(a.weekday(), Weekday::Sat | Weekday::Sun);
    let minutes = |t: &chrono::DateTime<chrono_tz::Tz>| t.hour() * 60 + t.minute();
    weekday && a.date_naive() == b.date_naive() && minutes(&a) >= 9 * 60 && minutes(&b) <= 17 * 60
}

#[tokio::test(flavor = "multi_thread")]
async fn suggestions_avoid_every_calendar_and_a_placed_task_moves_off_a_new_meeting() {
    let w = world().await;
    w.connect_all().await;
    let march = |d: u32| (2027, 3, d);

    // Radicale: the standup series, a free (transparent) focus block, an all-day conference.
    w.put_ics("standup", standup()).await;
    let focus = (ny(march(9), 13, 0), ny(march(9), 15, 0));
    w.put_ics("focus", single("focus@e2e", focus.0, focus.1, "TRANSP:TRANSPARENT\n")).await;
    w.put_ics(
        "conference",
        ics("BEGIN:VEVENT\nUID:conf@e2e\nDTSTAMP:20261201T000000Z\nDTSTART;VALUE=DATE:20270311\nDTEND;VALUE=DATE:20270312\nSUMMARY:Conference\nEND:VEVENT\n"),
    )
    .await;
    // Google: before and after the change.
    let google_cal = w.google.account();
    let lunch = (ny(march(9), 12, 0), ny(march(9), 13, 0));
    let planning = (ny(march(16), 10, 0), ny(march(16), 11, 30));
    for (title, (a, b)) in [("Lunch review", lunch), ("Planning", planning)] {
        w.google.insert_external(&google_cal, json!({"summary": title, "start": google_at(a), "end": google_at(b)}));
    }
    // Outlook: before and after the change.
    let outlook_cal = w.graph.default_calendar();
    let one_to_one = (ny(march(10), 14, 0), ny(march(10), 15, 0));
    let review = (ny(march(15), 15, 0), ny(march(15), 16, 0));
    for (title, (a, b)) in [("1:1", one_to_one), ("Review", review)] {
        w.graph.insert_body(
            &outlook_cal,
            json!({"subject": title, "start": graph_at(a), "end": graph_at(b), "showAs": "busy"}),
        );
    }
    let standups: Vec<_> = [8, 10, 15]
        .into_iter()
        .map(|d| (ny(march(d), 9, 0), ny(march(d), 10, 0)))
        .chain([(ny(march(18), 15, 0), ny(march(18), 16, 0))])
        .collect();
    let conference = (ny(march(11), 0, 0), ny(march(12), 0, 0));
    let mut busy = vec![lunch, planning, one_to_one, review, conference];
    busy.extend(standups.iter().copied());

    // Two weeks across the change (Sunday 14 March 2027, 02:00 EST → 03:00 EDT).
    let answer = w
        .suggest(json!({"user_id": USER, "duration_minutes": 60, "timezone": "America/New_York", "count": 50,
            "window": {"start": "2027-03-08T00:00:00-05:00", "end": "2027-03-20T00:00:00-04:00"}}))
        .await;
    assert_eq!(answer["partial"], false, "all three calendars answered: {answer}");
    let got = slots(&answer);
    assert_eq!(got.len(), 50, "{answer}");
    for s in &got {
        assert!(in_working_hours(*s), "outside 09:00–17:00 New York: {s:?}");
        for b in &busy {
            assert!(!overlaps(*s, *b), "slot {s:?} overlaps busy {b:?}");
        }
    }
    // Each side of the change starts its day after the standup at 10:00 local: 15:00Z in EST,
    // 14:00Z in EDT.
    let first_on = |d: u32| {
        got.iter()
            .filter(|s| s.0.with_timezone(&NY).date_naive() == NaiveDate::from_ymd_opt(2027, 3, d).unwrap())
            .map(|s| s.0)
            .min()
    };
    assert_eq!(first_on(8), Some(rfc("2027-03-08T15:00:00Z")), "{answer}");
    assert_eq!(first_on(15), Some(rfc("2027-03-15T14:00:00Z")), "{answer}");
    assert_eq!(first_on(11), None, "the all-day conference fills Thursday 11 March");
    assert!(got.iter().any(|s| overlaps(*s, focus)), "a transparent event is free time: {answer}");

    // The moved occurrence's old time (Wednesday 17 March 09:00) is free; its new time is not.
    let answer = w
        .suggest(json!({"user_id": USER, "duration_minutes": 60, "timezone": "America/New_York",
            "window": {"start": "2027-03-17T09:00:00-04:00", "end": "2027-03-17T10:00:00-04:00"}}))
        .await;
    assert_eq!(slots(&answer), vec![(ny(march(17), 9, 0), ny(march(17), 10, 0))], "{answer}");
    let answer = w
        .suggest(json!({"user_id": USER, "duration_minutes": 60, "timezone": "America/New_York",
            "window": {"start": "2027-03-18T15:00:00-04:00", "end": "2027-03-18T16:00:00-04:00"}}))
        .await;
    assert_eq!(answer["reason"], "no_room", "{answer}");

    // A task that places itself, into Radicale: Friday 12 March is free from 09:00.
    let deadline = ny(march(16), 17, 0);
    let task = json!({"user_id": USER, "calendar_type": "apple", "task_data": {"id": "essay", "name": "Write the essay",
        "auto_schedule": {"duration_minutes": 60, "earliest_start": "2027-03-12T09:00:00",
                          "deadline": "2027-03-16T17:00:00", "timezone": "America/New_York"}}});
    let (s, v) = w.cs.call("POST", "/task-to-calendar", Some(task.clone())).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["scheduled_start"], "2027-03-12T09:00:00-05:00", "{v}");
    assert_eq!(v["scheduled_end"], "2027-03-12T10:00:00-05:00", "{v}");
    assert!(v["why"].as_str().is_some_and(|w| w.contains("earliest free time")), "{v}");
    let href = format!("{CAL}{}.ics", v["event_id"].as_str().expect("event_id"));
    let event = w.radicale.raw().get(&href).await.expect("the block in Radicale");
    let lines = vevent_lines(&event.body);
    assert_eq!(line_value(&lines, "TRANSP"), Some("TRANSPARENT"), "written free:\n{}", event.body);

    // A client call is booked over it in Outlook: the block moves right after it, before the
    // deadline, and Radicale's event follows.
    let call = (ny(march(12), 8, 30), ny(march(12), 10, 30));
    w.graph.insert_body(
        &outlook_cal,
        json!({"subject": "Client call", "start": graph_at(call.0), "end": graph_at(call.1)}),
    );
    let started = Instant::now();
    let placed = loop {
        // The same task again: nothing changes in its spec, the answer says where it is now.
        let (_, v) = w.cs.call("POST", "/task-to-calendar", Some(task.clone())).await;
        if v["scheduled_start"] != "2027-03-12T09:00:00-05:00" {
            break v;
        }
        assert!(started.elapsed() < Duration::from_secs(45), "the block did not move off the client call: {v}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!("the block moved {:?} after the meeting was created", started.elapsed());
    let (start, end) =
        (rfc(placed["scheduled_start"].as_str().unwrap()), rfc(placed["scheduled_end"].as_str().unwrap()));
    assert_eq!((start, end), (ny(march(12), 10, 30), ny(march(12), 11, 30)), "{placed}");
    assert!(end <= deadline && !overlaps((start, end), call));
    assert!(placed["why"].as_str().is_some_and(|w| w.starts_with("moved")), "{placed}");
    eventually("Radicale's event at the new time", || async {
        let body = w.radicale.raw().get(&href).await.map(|r| r.body).unwrap_or_default();
        line_value(&vevent_lines(&body), "DTSTART").is_some_and(|v| v.ends_with("20270312T103000"))
    })
    .await;

    // The week of 22 March is taken whole (a Google event over five days): no room, no event,
    // and the open tab hears task.unschedulable.
    let stream = EventStream::open(&w.cs, USER).await;
    w.google.insert_external(
        &google_cal,
        json!({"summary": "Offsite", "start": {"date": "2027-03-22"}, "end": {"date": "2027-03-27"}}),
    );
    let seen = stream.count();
    let full = json!({"user_id": USER, "calendar_type": "google", "task_data": {"id": "report", "name": "Report",
        "auto_schedule": {"duration_minutes": 90, "earliest_start": "2027-03-22T09:00:00-04:00",
                          "deadline": "2027-03-26T17:00:00-04:00", "timezone": "America/New_York"}}});
    let (s, v) = w.cs.call("POST", "/task-to-calendar", Some(full)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["reason"], "no_room", "{v}");
    assert!(v["event_id"].is_null() && v["scheduled_start"].is_null(), "{v}");
    assert!(v["message"].as_str().is_some_and(|m| m.contains("deadline")), "{v}");
    let (heard, _) = stream.wait("task.unschedulable", seen, Duration::from_secs(10)).await;
    assert_eq!(heard["data"]["task_id"], "report", "{heard}");
    assert_eq!(heard["data"]["reason"], "no_room", "{heard}");
    let ours = w.google.live_events(&google_cal).into_iter().filter(|e| e["summary"] == "Report").count();
    assert_eq!(ours, 0, "nothing written for a task with no room");

    // Bad input names the field.
    let bad = json!({"user_id": USER, "task_data": {"id": "x", "name": "X", "scheduled_time": "2027-03-12T09:00:00",
        "timezone": "America/New_York", "auto_schedule": {"duration_minutes": 30}}});
    let (s, v) = w.cs.call("POST", "/task-to-calendar", Some(bad)).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_field")), "{v}");
    assert!(v["error"].as_str().unwrap_or_default().contains("auto_schedule"), "{v}");
}
