//! Recurring series with one occurrence moved and one cancelled, on every provider, checked
//! against the provider's own expansion (Radicale's `<C:expand>`, the fake Google's
//! `singleEvents=true` listing, the fake Graph's calendarView):
//! - import: a series made in the user's calendar app reads back as ONE event with its rule and
//!   exceptions;
//! - write: our own series written with exceptions shows exactly those occurrences.
//!
//! The series is weekly at 09:00 in America/New_York and crosses the 2027-03-14 DST change, so
//! every time is checked DST-correct.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use calsync::api::mapping::imported_task_at;
use calsync::credentials::Credentials;
use calsync::oauth::{AccessTokens, TokenBroker};
use calsync::providers::caldav::CaldavConnector;
use calsync::providers::google::{GoogleConfig, GoogleProvider};
use calsync::providers::outlook::{OutlookConfig, OutlookConnector};
use calsync::providers::recurrence::{instant, occurrences, with_exceptions};
use calsync::providers::{
    Connector, Created, EventData, EventTime, Exception, Marker, Provider, ProviderError, RemoteEvent, Target, Window,
    event_key,
};
use calsync::resources::ProviderKind;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use secrecy::SecretString;
use serde_json::{Value, json};
use support::fake_google::{FakeGoogle, FakeGoogleOptions};
use support::fake_graph::FakeGraph;
use support::radicale::{Radicale, RawDav, ics_lines};

const NY: &str = "America/New_York";

fn ny(m: u32, d: u32, h: u32) -> EventTime {
    let tz: chrono_tz::Tz = NY.parse().unwrap();
    let local = NaiveDate::from_ymd_opt(2027, m, d).unwrap().and_hms_opt(h, 0, 0).unwrap();
    let utc = tz.from_local_datetime(&local).single().unwrap().with_timezone(&Utc);
    EventTime::DateTime { utc, local, zone: Some(NY.into()) }
}

fn utc(m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, m, d, 0, 0, 0).unwrap()
}

/// Wednesdays 24 Feb – 14 Apr 2027, 09:00–10:00 New York; 3 Mar cancelled, 17 Mar (after the
/// DST change) moved to Thursday 18 Mar 15:00–16:00.
fn expected_exceptions() -> Vec<Exception> {
    vec![Exception::cancelled(ny(3, 3, 9)), Exception::moved(ny(3, 17, 9), ny(3, 18, 15), ny(3, 18, 16))]
}

fn window() -> Window {
    Window { from: utc(2, 20), to: utc(5, 1) }
}

/// The one series event of a listing (and nothing else from it: no instances).
fn the_series(events: &[RemoteEvent]) -> RemoteEvent {
    assert_eq!(events.len(), 1, "the series once, no instances: {events:#?}");
    let ev = events[0].clone();
    assert_eq!(ev.title, "Standup");
    assert!(ev.recurrence.iter().any(|l| l.starts_with("RRULE:FREQ=WEEKLY")), "{:?}", ev.recurrence);
    assert_eq!(ev.start, ny(2, 24, 9));
    ev
}

/// Our reading (rule + exceptions) against the provider's own instances, and the REST shape.
fn check(ev: &RemoteEvent, provider_starts: Vec<DateTime<Utc>>, source: ProviderKind) {
    assert_eq!(ev.exceptions, expected_exceptions());
    let ours: Vec<DateTime<Utc>> = occurrences(ev, &window()).unwrap().iter().map(|(s, _)| instant(s)).collect();
    assert_eq!(ours, provider_starts, "our expansion must equal {source}'s own");
    assert_eq!(ours.len(), 7, "8 Wednesdays, one cancelled: {ours:?}");
    // 09:00 New York on both sides of the DST change: 14:00Z before, 13:00Z after.
    assert_eq!(ours[0], instant(&ny(2, 24, 9)));
    assert_eq!(ours.last().copied(), Some(instant(&ny(4, 14, 9))));
    let task = serde_json::to_value(imported_task_at(ev, source, utc(3, 10))).unwrap();
    assert_eq!(task["series_start"], "2027-02-24T09:00:00");
    assert_eq!(task["scheduled_time"], "2027-03-10T09:00:00", "the next occurrence");
    assert_eq!(task["timezone"], NY);
    assert_eq!(task["duration_minutes"], 60);
    assert_eq!(
        task["exceptions"],
        json!([
            {"original_start": "2027-03-03T09:00:00", "cancelled": true},
            {"original_start": "2027-03-17T09:00:00", "start": "2027-03-18T15:00:00", "end": "2027-03-18T16:00:00", "cancelled": false}
        ])
    );
}

/// Our own task as a series with the same two exceptions.
fn our_series(uid: &str) -> EventData {
    EventData {
        title: "Standup".into(),
        description: None,
        category: None,
        start: ny(2, 24, 9),
        end: ny(2, 24, 10),
        transparent: false,
        recurrence: vec!["RRULE:FREQ=WEEKLY;BYDAY=WE;COUNT=8".into()],
        exceptions: expected_exceptions(),
        marker: Marker { owner: "calsync".into(), uid: uid.into(), task_id: "t1".into(), hash: "h".into() },
    }
}

/// What the provider must show for `our_series`.
fn expected_starts() -> Vec<DateTime<Utc>> {
    [ny(2, 24, 9), ny(3, 10, 9), ny(3, 18, 15), ny(3, 24, 9), ny(3, 31, 9), ny(4, 7, 9), ny(4, 14, 9)]
        .iter()
        .map(instant)
        .collect()
}

async fn create(p: &dyn Provider, cal: &str, data: &EventData) -> RemoteEvent {
    match p.create(cal, &event_key(&data.marker.uid), data).await.unwrap() {
        Created::New(ev) => ev,
        Created::Existing(ev) => panic!("a first create adopted {ev:?}"),
    }
}

// ---- Google ------------------------------------------------------------------------------

struct Token(String);

#[async_trait]
impl AccessTokens for Token {
    async fn access_token(&self) -> Result<SecretString, ProviderError> {
        Ok(SecretString::from(self.0.clone()))
    }
    async fn refresh_after_rejection(&self, _: &SecretString) -> Result<SecretString, ProviderError> {
        Ok(SecretString::from(self.0.clone()))
    }
}

#[async_trait]
impl TokenBroker for Token {
    async fn tokens(&self, _: &Target, _: &Credentials) -> Result<Arc<dyn AccessTokens>, ProviderError> {
        Ok(Arc::new(Token(self.0.clone())))
    }
}

fn g_time(m: u32, d: u32, h: u32) -> Value {
    let EventTime::DateTime { utc, .. } = ny(m, d, h) else { unreachable!() };
    let tz: chrono_tz::Tz = NY.parse().unwrap();
    json!({"dateTime": utc.with_timezone(&tz).to_rfc3339(), "timeZone": NY})
}

#[tokio::test]
async fn google_series_with_a_moved_and_a_cancelled_instance_is_one_task() {
    let fake = FakeGoogle::start(FakeGoogleOptions::static_token("tok"));
    let cal = fake.account();
    let master = fake.insert_external(
        &cal,
        json!({"summary": "Standup", "start": g_time(2, 24, 9), "end": g_time(2, 24, 10),
               "recurrence": ["RRULE:FREQ=WEEKLY;BYDAY=WE;COUNT=8"]}),
    );
    let id = master["id"].as_str().unwrap().to_string();
    // The user's calendar app: instance ids are `<master>_<UTC start>`.
    fake.user_delete(&cal, &format!("{id}_20270303T140000Z"));
    fake.edit(&cal, &format!("{id}_20270317T130000Z"), json!({"start": g_time(3, 18, 15), "end": g_time(3, 18, 16)}));

    let config = GoogleConfig { api_url: fake.base_url().to_string(), timeout: Duration::from_secs(10) };
    let p = GoogleProvider::new(&config, Arc::new(Token("tok".into()))).unwrap();
    let page = p.list(&cal, window(), None).await.unwrap();
    let ev = with_exceptions(&p, &cal, the_series(&page.events), window()).await.unwrap();

    check(&ev, google_instances(&fake, &cal).await, ProviderKind::Google);

    // An incremental listing after only an instance changed reports the series, not the
    // instance, and no removal for a cancelled instance.
    let cursor = page.next_cursor.clone().unwrap();
    fake.user_delete(&cal, &format!("{id}_20270407T130000Z"));
    let changes = p.list(&cal, window(), Some(&cursor)).await.unwrap();
    assert_eq!(changes.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), vec![id.as_str()]);
    assert!(changes.removed.is_empty(), "{:?}", changes.removed);
}

#[tokio::test]
async fn google_writes_our_series_with_a_cancelled_and_a_moved_occurrence() {
    let fake = FakeGoogle::start(FakeGoogleOptions::static_token("tok"));
    let cal = fake.account();
    let config = GoogleConfig { api_url: fake.base_url().to_string(), timeout: Duration::from_secs(10) };
    let p = GoogleProvider::new(&config, Arc::new(Token("tok".into()))).unwrap();
    let written = create(&p, &cal, &our_series("g-1")).await;
    assert_eq!(google_instances(&fake, &cal).await, expected_starts());
    // The version remembered is the master's after the instance was moved.
    assert_eq!(written.etag.as_deref(), fake.raw_event(&cal, &written.id).unwrap()["etag"].as_str());
    // Writing it again changes nothing the calendar shows.
    p.update(&cal, &written.id, written.etag.as_deref(), &our_series("g-1")).await.unwrap();
    assert_eq!(google_instances(&fake, &cal).await, expected_starts());
    // A crash between the insert and the instance patch: the retried create adopts the series
    // and still moves the occurrence.
    let instance = format!("{}_20270317T130000Z", written.id);
    fake.edit(&cal, &instance, json!({"start": g_time(3, 17, 9), "end": g_time(3, 17, 10)}));
    assert_ne!(google_instances(&fake, &cal).await, expected_starts());
    match p.create(&cal, &written.id, &our_series("g-1")).await.unwrap() {
        Created::Existing(ev) => assert_eq!(ev.id, written.id),
        other => panic!("a repeated create must adopt: {other:?}"),
    }
    assert_eq!(google_instances(&fake, &cal).await, expected_starts());
}

/// Google's own expansion: the instances listing.
async fn google_instances(fake: &FakeGoogle, cal: &str) -> Vec<DateTime<Utc>> {
    let url = format!("{}/calendars/{cal}/events", fake.base_url());
    let (from, to) = (window().from.to_rfc3339(), window().to.to_rfc3339());
    let body: Value = reqwest::Client::new()
        .get(url)
        .bearer_auth("tok")
        .query(&[("singleEvents", "true"), ("orderBy", "startTime"), ("timeMin", &from), ("timeMax", &to)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| DateTime::parse_from_rfc3339(i["start"]["dateTime"].as_str().unwrap()).unwrap().with_timezone(&Utc))
        .collect()
}

// ---- Outlook -----------------------------------------------------------------------------

async fn outlook(fake: &FakeGraph) -> Arc<dyn Provider> {
    let config = OutlookConfig { api_url: fake.url.clone(), timeout: Duration::from_secs(15) };
    let connector = OutlookConnector::new(config, Arc::new(Token(fake.token()))).unwrap();
    let target = Target { provider: ProviderKind::Outlook, server_url: None, connection: "test/recur".into() };
    let creds = Credentials::OAuth {
        refresh_token: SecretString::from("r"),
        access_token: None,
        expires_at: None,
        refresh_lease: None,
    };
    connector.connect(&target, &creds).await.unwrap()
}

/// calendarView of the fake Graph (its own expansion), as (id, start) in UTC.
async fn graph_view(fake: &FakeGraph, cal: &str) -> Vec<(String, DateTime<Utc>)> {
    let w = window();
    let body: Value = reqwest::Client::new()
        .get(format!("{}/me/calendars/{cal}/calendarView", fake.url))
        .bearer_auth(fake.token())
        .query(&[
            ("startDateTime", w.from.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            ("endDateTime", w.to.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            ("$top", "100".into()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let at = |v: &Value| {
        let s = v["dateTime"].as_str().unwrap();
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").unwrap().and_utc()
    };
    let mut out: Vec<(String, DateTime<Utc>)> = body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap().to_string(), at(&i["start"])))
        .collect();
    out.sort_by_key(|x| x.1);
    out
}

#[tokio::test]
async fn outlook_series_with_a_moved_and_a_cancelled_occurrence_is_one_task() {
    let fake = FakeGraph::start("at-1").await;
    let cal = fake.default_calendar();
    let local =
        |m: u32, d: u32, h: u32| json!({"dateTime": format!("2027-{m:02}-{d:02}T{h:02}:00:00"), "timeZone": NY});
    fake.insert_body(
        &cal,
        json!({"subject": "Standup", "start": local(2, 24, 9), "end": local(2, 24, 10),
               "body": {"contentType": "text", "content": ""},
               "recurrence": {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["wednesday"]},
                              "range": {"type": "numbered", "startDate": "2027-02-24", "numberOfOccurrences": 8}}}),
    );
    // The user's Outlook: delete one occurrence, move another.
    let view = graph_view(&fake, &cal).await;
    let occ = |t: &EventTime| view.iter().find(|(_, s)| *s == instant(t)).map(|(id, _)| id.clone()).unwrap();
    let (cancel, moved) = (occ(&ny(3, 3, 9)), occ(&ny(3, 17, 9)));
    let http = reqwest::Client::new();
    let r = http.delete(format!("{}/me/events/{cancel}", fake.url)).bearer_auth(fake.token()).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .patch(format!("{}/me/events/{moved}", fake.url))
        .bearer_auth(fake.token())
        .json(&json!({"start": local(3, 18, 15), "end": local(3, 18, 16)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let p = outlook(&fake).await;
    let page = p.list(&cal, window(), None).await.unwrap();
    let ev = with_exceptions(p.as_ref(), &cal, the_series(&page.events), window()).await.unwrap();
    let starts = graph_view(&fake, &cal).await.into_iter().map(|x| x.1).collect();
    check(&ev, starts, ProviderKind::Outlook);
}

#[tokio::test]
async fn outlook_writes_our_series_with_a_cancelled_and_a_moved_occurrence() {
    let fake = FakeGraph::start("at-1").await;
    let cal = fake.default_calendar();
    let p = outlook(&fake).await;
    let written = create(p.as_ref(), &cal, &our_series("o-1")).await;
    let starts: Vec<DateTime<Utc>> = graph_view(&fake, &cal).await.into_iter().map(|x| x.1).collect();
    assert_eq!(starts, expected_starts());
    // Read back as ours, with the same exceptions.
    let page = p.list(&cal, window(), None).await.unwrap();
    let ev = with_exceptions(p.as_ref(), &cal, the_series(&page.events), window()).await.unwrap();
    assert_eq!((ev.exceptions.clone(), ev.marker.map(|m| m.uid)), (expected_exceptions(), Some("o-1".into())));
    p.update(&cal, &written.id, written.etag.as_deref(), &our_series("o-1")).await.unwrap();
    let again: Vec<DateTime<Utc>> = graph_view(&fake, &cal).await.into_iter().map(|x| x.1).collect();
    assert_eq!(again, expected_starts());
}

// ---- CalDAV (Radicale) -------------------------------------------------------------------

const CAL: &str = "/alice/calendar/";

/// Instances as Radicale expands them (`<C:expand>`, RFC 4791 §9.6.5), as UTC starts.
async fn radicale_expand(raw: &RawDav, w: &Window) -> Vec<DateTime<Utc>> {
    let (from, to) = (w.from.format("%Y%m%dT%H%M%SZ"), w.to.format("%Y%m%dT%H%M%SZ"));
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><C:calendar-data><C:expand start="{from}" end="{to}"/></C:calendar-data></D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"><C:time-range start="{from}" end="{to}"/></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"#
    );
    let r = raw.request("REPORT", CAL, &[("Depth", "1"), ("content-type", "application/xml")], Some(body)).await;
    assert_eq!(r.status, 207, "{}", r.body);
    let doc = roxmltree::Document::parse(&r.body).unwrap();
    let mut out = Vec::new();
    for data in doc.descendants().filter(|n| n.has_tag_name(("urn:ietf:params:xml:ns:caldav", "calendar-data"))) {
        for line in ics_lines(data.text().unwrap_or_default()).into_iter().filter(|l| l.starts_with("DTSTART")) {
            let v = line.rsplit(':').next().unwrap_or_default();
            assert!(v.ends_with('Z'), "expanded instances are in UTC: {line}");
            out.push(
                chrono::NaiveDateTime::parse_from_str(v.trim_end_matches('Z'), "%Y%m%dT%H%M%S").unwrap().and_utc(),
            );
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn caldav_series_with_an_override_and_an_exdate_is_one_task() {
    let server = Radicale::start();
    let raw = server.raw();
    raw.mkcalendar(CAL, "Calendar", &["VEVENT"]).await;
    // As a calendar app stores it: the zone, the master with EXDATE, and a RECURRENCE-ID
    // override (RFC 5545 wants the VTIMEZONE; without it Radicale expands at a fixed offset).
    let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//other app//EN\r\n\
BEGIN:VTIMEZONE\r\nTZID:America/New_York\r\n\
BEGIN:DAYLIGHT\r\nTZOFFSETFROM:-0500\r\nTZOFFSETTO:-0400\r\nTZNAME:EDT\r\nDTSTART:19700308T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU\r\nEND:DAYLIGHT\r\n\
BEGIN:STANDARD\r\nTZOFFSETFROM:-0400\r\nTZOFFSETTO:-0500\r\nTZNAME:EST\r\nDTSTART:19701101T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU\r\nEND:STANDARD\r\n\
END:VTIMEZONE\r\n\
BEGIN:VEVENT\r\nUID:standup-1\r\nDTSTAMP:20270101T000000Z\r\n\
DTSTART;TZID=America/New_York:20270224T090000\r\nDTEND;TZID=America/New_York:20270224T100000\r\n\
SUMMARY:Standup\r\nRRULE:FREQ=WEEKLY;BYDAY=WE;COUNT=8\r\nEXDATE;TZID=America/New_York:20270303T090000\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:standup-1\r\nDTSTAMP:20270101T000000Z\r\nRECURRENCE-ID;TZID=America/New_York:20270317T090000\r\n\
DTSTART;TZID=America/New_York:20270318T150000\r\nDTEND;TZID=America/New_York:20270318T160000\r\n\
SUMMARY:Standup\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let r = raw.put(&format!("{CAL}standup-1.ics"), ics, ("If-None-Match", "*")).await;
    assert!(matches!(r.status, 201 | 204), "{} {}", r.status, r.body);

    let target =
        Target { provider: ProviderKind::Caldav, server_url: Some(server.url.clone()), connection: "t/r".into() };
    let creds =
        Credentials::Basic { username: server.user.clone(), password: SecretString::from(server.password.clone()) };
    let p = CaldavConnector::new().connect(&target, &creds).await.unwrap();
    let page = p.list(CAL, window(), None).await.unwrap();
    let ev = with_exceptions(p.as_ref(), CAL, the_series(&page.events), window()).await.unwrap();
    check(&ev, radicale_expand(&raw, &window()).await, ProviderKind::Caldav);
    // A window holding only the cancelled occurrence shows no task; the moved one's new day does.
    let only = |from: DateTime<Utc>, h: i64| Window { from, to: from + chrono::Duration::hours(h) };
    assert!(!calsync::providers::recurrence::occurs_in(&ev, &only(utc(3, 3), 24)));
    assert!(calsync::providers::recurrence::occurs_in(&ev, &only(utc(3, 18), 24)));
}

#[tokio::test]
async fn caldav_writes_our_series_with_an_exdate_and_an_override() {
    let server = Radicale::start();
    let raw = server.raw();
    raw.mkcalendar(CAL, "Calendar", &["VEVENT"]).await;
    let target =
        Target { provider: ProviderKind::Caldav, server_url: Some(server.url.clone()), connection: "t/w".into() };
    let creds =
        Credentials::Basic { username: server.user.clone(), password: SecretString::from(server.password.clone()) };
    let p = CaldavConnector::new().connect(&target, &creds).await.unwrap();
    create(p.as_ref(), CAL, &our_series("c-1")).await;
    assert_eq!(radicale_expand(&raw, &window()).await, expected_starts());
    let page = p.list(CAL, window(), None).await.unwrap();
    let ev = with_exceptions(p.as_ref(), CAL, the_series(&page.events), window()).await.unwrap();
    assert_eq!(ev.exceptions, expected_exceptions());
}
