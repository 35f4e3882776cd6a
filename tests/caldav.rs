//! The CalDAV provider against a real Radicale (started by `support::radicale`): the shared
//! provider contract, plus what is specific to CalDAV (raw read-back of the stored iCalendar,
//! repeat-create from a fresh client, strict preconditions, DST-correct recurrence expanded by
//! the server, all-day dates in several zones).

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use calsync::credentials::Credentials;
use calsync::providers::caldav::CaldavConnector;
use calsync::providers::{
    Connector, Created, EventData, EventTime, Marker, Provider, ProviderError, Target, Window, event_key,
};
use calsync::resources::{ProviderKind, TaskSyncSpec};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Timelike, Utc};
use secrecy::SecretString;
use support::contract::{self, ContractPeer, RawEvent};
use support::radicale::{Radicale, RawDav, ics_lines, ics_value};
use support::recording_proxy::RecordingProxy;

const CAL: &str = "/alice/calendar/";

struct RadicalePeer {
    server: Radicale,
    raw: RawDav,
    connector: CaldavConnector,
}

impl RadicalePeer {
    async fn start() -> RadicalePeer {
        let server = Radicale::start();
        let raw = server.raw();
        // A tasks-only calendar first: the default must skip it (it takes no VEVENTs).
        raw.mkcalendar("/alice/a-todos/", "Todos", &["VTODO"]).await;
        raw.mkcalendar(CAL, "Calendar", &["VEVENT", "VTODO"]).await;
        RadicalePeer { server, raw, connector: CaldavConnector::new() }
    }

    fn target(&self) -> Target {
        Target {
            provider: ProviderKind::Caldav,
            server_url: Some(self.server.url.clone()),
            connection: "test/radicale".into(),
        }
    }

    fn creds(&self, password: &str) -> Credentials {
        Credentials::Basic { username: self.server.user.clone(), password: SecretString::from(password.to_string()) }
    }

    /// A client that shares nothing with earlier ones (as after a process restart).
    async fn fresh_provider(&self) -> Arc<dyn Provider> {
        CaldavConnector::new().connect(&self.target(), &self.creds(&self.server.password)).await.expect("connect")
    }
}

#[async_trait]
impl ContractPeer for RadicalePeer {
    async fn provider(&self) -> Arc<dyn Provider> {
        self.connector.connect(&self.target(), &self.creds(&self.server.password)).await.expect("connect")
    }

    async fn wrong_credentials(&self) -> Result<(), ProviderError> {
        let p = self.connector.connect(&self.target(), &self.creds("wrong-password-123")).await?;
        p.account().await.map(|_| ())
    }

    async fn raw_get(&self, calendar: &str, id: &str) -> Option<RawEvent> {
        let r = self.raw.get(&format!("{calendar}{id}.ics")).await?;
        Some(RawEvent {
            title: ics_value(&r.body, "SUMMARY").unwrap_or_default(),
            has_marker: ics_value(&r.body, "X-CALSYNC-MARKER").is_some(),
        })
    }

    async fn raw_insert_external(
        &self,
        calendar: &str,
        title: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> String {
        let id = format!("ext-{}", uuid::Uuid::new_v4().simple());
        let f = |t: DateTime<Utc>| t.format("%Y%m%dT%H%M%SZ").to_string();
        let ics = format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Some Calendar App//EN\r\nBEGIN:VEVENT\r\nUID:{id}@phone\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:{}\r\nDTEND:{}\r\nSUMMARY:{title}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
            f(start),
            f(end)
        );
        let r = self.raw.put(&format!("{calendar}{id}.ics"), &ics, ("If-None-Match", "*")).await;
        assert_eq!(r.status, 201, "raw PUT of an external event: {}", r.body);
        id
    }

    async fn raw_edit_title(&self, calendar: &str, id: &str, title: &str) {
        let path = format!("{calendar}{id}.ics");
        let cur = self.raw.get(&path).await.expect("event to edit exists");
        let edited: String = ics_lines(&cur.body)
            .into_iter()
            .map(|l| if l.starts_with("SUMMARY") { format!("SUMMARY:{title}") } else { l })
            .map(|l| l + "\r\n")
            .collect();
        let etag = cur.etag.expect("Radicale gives ETags");
        let r = self.raw.put(&path, &edited, ("If-Match", &etag)).await;
        assert!(matches!(r.status, 200 | 201 | 204), "raw edit: {} {}", r.status, r.body);
    }

    async fn raw_own_calendars(&self) -> Vec<String> {
        const OWN: &str = "/alice/getitdone-calsync/";
        let r = self.raw.request("PROPFIND", OWN, &[("Depth", "0")], None).await;
        match r.status {
            207 => {
                assert!(r.body.contains("calendar"), "our collection is a calendar: {}", r.body);
                vec![OWN.to_string()]
            }
            404 => vec![],
            s => panic!("raw PROPFIND {OWN}: {s} {}", r.body),
        }
    }
}

#[tokio::test]
async fn radicale_meets_the_provider_contract() {
    let peer = RadicalePeer::start().await;
    contract::run_all(&peer, "radicale").await;
}

fn zoned(y: i32, m: u32, d: u32, h: u32, zone: &str) -> EventTime {
    let tz: chrono_tz::Tz = zone.parse().expect("zone");
    let local = NaiveDate::from_ymd_opt(y, m, d).and_then(|d| d.and_hms_opt(h, 0, 0)).expect("date");
    let utc = tz.from_local_datetime(&local).single().expect("unambiguous").with_timezone(&Utc);
    EventTime::DateTime { utc, local, zone: Some(zone.into()) }
}

fn event(uid: &str, title: &str) -> EventData {
    EventData {
        title: title.into(),
        description: None,
        category: None,
        start: zoned(2031, 5, 14, 9, "Europe/Berlin"),
        end: zoned(2031, 5, 14, 10, "Europe/Berlin"),
        transparent: false,
        recurrence: vec![],
        exceptions: Vec::new(),
        marker: Marker { owner: "calsync".into(), uid: uid.into(), task_id: format!("task-{uid}"), hash: "h".into() },
    }
}

#[tokio::test]
async fn stored_icalendar_is_complete_and_repeat_create_after_restart_adopts() {
    let peer = RadicalePeer::start().await;
    let p = peer.provider().await;
    let info = p.account().await.expect("account");
    assert_eq!(info.default_calendar().map(|c| c.id.as_str()), Some(CAL), "{info:?}");
    assert!(
        info.calendars.iter().any(|c| c.id == "/alice/a-todos/" && !c.writable),
        "a VTODO-only calendar cannot take events: {info:?}"
    );
    let key = event_key("uid-raw");
    let Created::New(ev) = p.create(CAL, &key, &event("uid-raw", "Piano; lesson, 1")).await.expect("create") else {
        panic!("first create must be new")
    };
    assert_eq!(ev.link.as_deref(), Some(format!("{}alice/calendar/{key}.ics", peer.server.url).as_str()));
    // Read the stored bytes with a plain GET, not through our client.
    let raw = peer.raw.get(&format!("{CAL}{key}.ics")).await.expect("stored");
    assert_eq!(raw.etag, ev.etag, "the etag we report is the server's");
    let lines = ics_lines(&raw.body);
    for want in [
        "BEGIN:VTIMEZONE",
        "TZID:Europe/Berlin",
        "DTSTART;TZID=Europe/Berlin:20310514T090000",
        "DTEND;TZID=Europe/Berlin:20310514T100000",
        "SUMMARY:Piano\\; lesson\\, 1",
    ] {
        assert!(lines.iter().any(|l| l == want), "missing {want:?} in\n{}", raw.body);
    }
    assert!(lines.iter().any(|l| l.starts_with("UID:") && l.contains(&key)), "{}", raw.body);
    assert!(lines.iter().any(|l| l.starts_with("DTSTAMP:")), "{}", raw.body);
    assert!(lines.iter().any(|l| l.starts_with("X-CALSYNC-MARKER:v1")), "{}", raw.body);
    // A crash after the PUT but before the status write: a brand-new client retries the create.
    let again = peer
        .fresh_provider()
        .await
        .create(CAL, &key, &event("uid-raw", "Piano; lesson, 1"))
        .await
        .expect("repeat create");
    assert!(matches!(&again, Created::Existing(e) if e.id == ev.id), "{again:?}");
    let listing = peer.raw.request("PROPFIND", CAL, &[("Depth", "1")], None).await;
    assert_eq!(listing.body.matches(&key).count(), 1, "exactly one resource for the key");
    // Update without an etag still sends If-Match (strict_preconditions would reject it otherwise).
    let up = p.update(CAL, &ev.id, None, &event("uid-raw", "Piano (moved)")).await.expect("update without etag");
    assert_ne!(up.etag, ev.etag);
    // ... and refuses to overwrite an event that is not ours.
    let ext = peer.raw_insert_external(CAL, "Not ours", Utc::now(), Utc::now() + Duration::hours(1)).await;
    let res = p.update(CAL, &ext, None, &event("uid-raw", "hijack")).await;
    assert!(matches!(res, Err(ProviderError::Invalid { .. })), "{res:?}");
    // Delete with a stale etag is a conflict and leaves the event.
    let res = p.delete(CAL, &ev.id, ev.etag.as_deref()).await;
    assert!(matches!(res, Err(ProviderError::Conflict { .. })), "{res:?}");
    p.delete(CAL, &ev.id, up.etag.as_deref()).await.expect("delete with the current etag");
    assert!(peer.raw.get(&format!("{CAL}{key}.ics")).await.is_none());
}

#[tokio::test]
async fn wrong_password_is_revoked_and_never_echoed() {
    let peer = RadicalePeer::start().await;
    let res = peer.wrong_credentials().await;
    match res {
        Err(ProviderError::Revoked { ref message }) => {
            assert!(message.contains("app-specific password"), "{message}");
            let shown = format!("{res:?} {}", res.as_ref().err().map(|e| e.to_string()).unwrap_or_default());
            assert!(!shown.contains("wrong-password-123") && !shown.contains(&peer.server.password), "{shown}");
        }
        other => panic!("wrong password must be Revoked, got {other:?}"),
    }
}

/// Instances of a recurring event as Radicale expands them (`<C:expand>`), as UTC DTSTARTs.
async fn expanded_starts(raw: &RawDav, from: &str, to: &str) -> Vec<DateTime<Utc>> {
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><C:calendar-data><C:expand start="{from}" end="{to}"/></C:calendar-data></D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"><C:time-range start="{from}" end="{to}"/></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"#
    );
    let r = raw.request("REPORT", CAL, &[("Depth", "1"), ("content-type", "application/xml")], Some(body)).await;
    assert_eq!(r.status, 207, "{}", r.body);
    let doc = roxmltree::Document::parse(&r.body).expect("multistatus");
    let mut out = Vec::new();
    for data in doc.descendants().filter(|n| n.has_tag_name(("urn:ietf:params:xml:ns:caldav", "calendar-data"))) {
        let text = data.text().unwrap_or_default();
        for line in ics_lines(text).into_iter().filter(|l| l.starts_with("DTSTART")) {
            let v = line.rsplit(':').next().unwrap_or_default();
            let n = chrono::NaiveDateTime::parse_from_str(v.trim_end_matches('Z'), "%Y%m%dT%H%M%S")
                .expect("expanded DTSTART");
            assert!(v.ends_with('Z'), "expanded instances are in UTC (RFC 4791 §9.6.5): {line}");
            out.push(n.and_utc());
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn weekly_nine_am_new_york_stays_nine_across_dst() {
    let peer = RadicalePeer::start().await;
    let p = peer.provider().await;
    // Mondays from 23 Feb 2026; US DST starts Sunday 8 March 2026.
    let mut e = event("uid-dst", "Weekly review");
    e.start = zoned(2026, 2, 23, 9, "America/New_York");
    e.end = zoned(2026, 2, 23, 10, "America/New_York");
    e.recurrence = vec!["RRULE:FREQ=WEEKLY;COUNT=6".into()];
    p.create(CAL, &event_key("uid-dst"), &e).await.expect("create");
    let starts = expanded_starts(&peer.raw, "20260201T000000Z", "20260501T000000Z").await;
    assert_eq!(starts.len(), 6, "{starts:?}");
    let ny = chrono_tz::America::New_York;
    for s in &starts {
        let local = s.with_timezone(&ny);
        assert_eq!((local.hour(), local.minute()), (9, 0), "instance {s} is {local} in New York");
    }
    // The UTC hour moves with DST: 14:00Z before, 13:00Z after.
    assert_eq!(starts[0].hour(), 14);
    assert_eq!(starts[5].hour(), 13);
    // Our own reading keeps the series, in its zone.
    let got = p.get(CAL, &event_key("uid-dst")).await.expect("get").expect("exists");
    assert_eq!(got.recurrence, vec!["RRULE:FREQ=WEEKLY;COUNT=6".to_string()]);
    assert_eq!(got.zone.as_deref(), Some("America/New_York"));
    // The window listing reports the series when a later instance overlaps.
    let w = Window {
        from: Utc.with_ymd_and_hms(2026, 3, 23, 0, 0, 0).unwrap(),
        to: Utc.with_ymd_and_hms(2026, 3, 24, 0, 0, 0).unwrap(),
    };
    let page = p.list(CAL, w, None).await.expect("list");
    assert!(page.events.iter().any(|ev| ev.id == event_key("uid-dst")), "{page:?}");
}

#[tokio::test]
async fn all_day_task_is_a_date_on_the_right_day_in_every_zone() {
    let peer = RadicalePeer::start().await;
    let p = peer.provider().await;
    // 8 March 2026 is the US DST day; +14 and -11 are the extremes.
    let zones = [
        "Pacific/Kiritimati",
        "Pacific/Pago_Pago",
        "America/New_York",
        "Europe/Berlin",
        "Asia/Tokyo",
        "Australia/Lord_Howe",
    ];
    for (i, zone) in zones.iter().enumerate() {
        let spec: TaskSyncSpec = serde_json::from_value(serde_json::json!({
            "connectionRef": {"name": "c"}, "taskId": format!("t{i}"), "title": format!("All day in {zone}"),
            "start": "2026-03-08", "timeZone": zone,
        }))
        .expect("spec");
        let uid = format!("uid-allday-{i}");
        let data = calsync::engine::desired::desired_event(&spec, &uid, "calsync").expect("desired event");
        let key = event_key(&uid);
        p.create(CAL, &key, &data).await.expect("create");
        let raw = peer.raw.get(&format!("{CAL}{key}.ics")).await.expect("stored");
        let lines = ics_lines(&raw.body);
        assert!(lines.iter().any(|l| l == "DTSTART;VALUE=DATE:20260308"), "{zone}: {}", raw.body);
        assert!(lines.iter().any(|l| l == "DTEND;VALUE=DATE:20260309"), "{zone}: {}", raw.body);
        let got = p.get(CAL, &key).await.expect("get").expect("exists");
        assert_eq!(got.start, EventTime::Date(NaiveDate::from_ymd_opt(2026, 3, 8).expect("date")), "{zone}");
    }
    // The server files them on that day: a window of exactly 8 March (UTC) finds all of them.
    let w = Window {
        from: Utc.with_ymd_and_hms(2026, 3, 8, 0, 0, 0).unwrap(),
        to: Utc.with_ymd_and_hms(2026, 3, 9, 0, 0, 0).unwrap(),
    };
    let page = p.list(CAL, w, None).await.expect("list");
    assert_eq!(page.events.iter().filter(|e| e.start.is_date()).count(), zones.len(), "{page:?}");
}

#[tokio::test]
async fn our_uid_under_another_name_is_adopted_not_duplicated() {
    // Some apps re-save an event under their own resource name. Our next create of the same key
    // hits the server's UID check (Radicale: 409 no-uid-conflict with the other href).
    let peer = RadicalePeer::start().await;
    let p = peer.provider().await;
    let key = event_key("uid-moved");
    let ics = calsync::providers::caldav::to_ics(&event("uid-moved", "Moved by an app"), Utc::now());
    let r = peer.raw.put(&format!("{CAL}renamed-by-app.ics"), &ics, ("If-None-Match", "*")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let res = p.create(CAL, &key, &event("uid-moved", "Moved by an app")).await.expect("create adopts");
    assert!(matches!(&res, Created::Existing(e) if e.id == "renamed-by-app"), "{res:?}");
    assert!(peer.raw.get(&format!("{CAL}{key}.ics")).await.is_none(), "no second resource");
    // The adopted event can be updated under its own name: the UID we write stays the same.
    let Created::Existing(adopted) = res else { unreachable!() };
    let up = p.update(CAL, &adopted.id, adopted.etag.as_deref(), &event("uid-moved", "Updated")).await;
    assert!(up.is_ok(), "{up:?}");
    assert_eq!(peer.raw_get(CAL, "renamed-by-app").await.map(|r| r.title).as_deref(), Some("Updated"));
}

#[tokio::test]
async fn sync_collection_reports_exact_changes_and_removals() {
    let peer = RadicalePeer::start().await;
    let p = peer.provider().await;
    let w = Window {
        from: Utc.with_ymd_and_hms(2031, 5, 1, 0, 0, 0).unwrap(),
        to: Utc.with_ymd_and_hms(2031, 6, 1, 0, 0, 0).unwrap(),
    };
    let Created::New(a) = p.create(CAL, &event_key("uid-a"), &event("uid-a", "a")).await.expect("create a") else {
        panic!("a is new")
    };
    let first = p.list(CAL, w, None).await.expect("full");
    assert_eq!(first.events.len(), 1);
    let cursor = first.next_cursor.expect("Radicale supports sync-collection");
    // Nothing changed: nothing listed.
    let same = p.list(CAL, w, Some(&cursor)).await.expect("no changes");
    assert!(same.events.is_empty() && same.removed.is_empty() && !same.full_resync, "{same:?}");
    p.create(CAL, &event_key("uid-b"), &event("uid-b", "b")).await.expect("create b");
    p.delete(CAL, &a.id, None).await.expect("delete a");
    let delta = p.list(CAL, w, Some(&cursor)).await.expect("incremental");
    assert!(!delta.full_resync);
    assert_eq!(delta.events.iter().map(|e| e.title.as_str()).collect::<Vec<_>>(), vec!["b"]);
    assert_eq!(delta.removed, vec![a.id.clone()]);
    assert_ne!(delta.next_cursor.as_deref(), Some(cursor.as_str()));
}

/// `list_window` is the full listing without the sync-token PROPFIND: on the wire one REPORT
/// where `list` sends a PROPFIND first, and the same events, without a cursor.
#[tokio::test]
async fn list_window_lists_the_same_without_asking_for_a_sync_token() {
    let peer = RadicalePeer::start().await;
    let proxy = RecordingProxy::start(&peer.server.url).await;
    let target = Target { server_url: Some(proxy.url.clone()), ..peer.target() };
    let p = CaldavConnector::new().connect(&target, &peer.creds(&peer.server.password)).await.expect("connect");
    let w = Window {
        from: Utc.with_ymd_and_hms(2031, 5, 1, 0, 0, 0).unwrap(),
        to: Utc.with_ymd_and_hms(2031, 6, 1, 0, 0, 0).unwrap(),
    };
    let Created::New(ours) = p.create(CAL, &event_key("uid-w1"), &event("uid-w1", "ours")).await.expect("create")
    else {
        panic!("a new event")
    };
    let day = w.from + Duration::days(3);
    let ext = peer.raw_insert_external(CAL, "Dentist", day, day + Duration::hours(1)).await;
    peer.raw_insert_external(CAL, "Later", w.to + Duration::days(3), w.to + Duration::days(4)).await;

    proxy.clear();
    let listed = p.list(CAL, w, None).await.expect("list");
    let sent = |m: &str| (m.to_string(), CAL.to_string());
    assert_eq!(proxy.requests(), vec![sent("PROPFIND"), sent("REPORT")], "list asks for the token first");
    assert!(listed.next_cursor.is_some(), "Radicale has sync tokens");

    proxy.clear();
    let windowed = p.list_window(CAL, w).await.expect("list_window");
    assert_eq!(proxy.requests(), vec![sent("REPORT")], "no sync-token PROPFIND");
    assert_eq!(windowed.next_cursor, None);
    assert!(!windowed.full_resync && windowed.removed.is_empty());
    let mut ids: Vec<&str> = windowed.events.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    let mut expected = vec![ext.as_str(), ours.id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected, "ours and the external one, not the later one");
    let sorted = |mut v: Vec<calsync::providers::RemoteEvent>| {
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    };
    assert_eq!(sorted(windowed.events), sorted(listed.events), "the same events as list(None)");
}
