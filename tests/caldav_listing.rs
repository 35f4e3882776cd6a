//! The CalDAV full listing against a real Radicale behind a recording proxy: one
//! `sync-collection` answer gives the events a time-range `calendar-query` gives plus a usable
//! cursor; members the server sends without calendar-data are read with `calendar-multiget`; a
//! server that refuses the report (or answers without a token) is listed the old way (token
//! PROPFIND + `calendar-query`). The last two rewrite Radicale's real answers into what RFC 6578
//! allows another server to send (Radicale always sends the data and never refuses).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use calsync::credentials::Credentials;
use calsync::providers::caldav::{self, CaldavConnector};
use calsync::providers::{Connector, Provider, Target, Window};
use calsync::resources::ProviderKind;
use chrono::{TimeZone, Utc};
use secrecy::SecretString;
use support::radicale::{Radicale, RawDav};
use support::recording_proxy::{Exchange, RecordingProxy, Rewrite};

const CAL: &str = "/alice/calendar/";

fn window() -> Window {
    Window {
        from: Utc.with_ymd_and_hms(2031, 6, 1, 0, 0, 0).unwrap(),
        to: Utc.with_ymd_and_hms(2031, 7, 1, 0, 0, 0).unwrap(),
    }
}

fn ics(uid: &str, start: &str, end: &str, extra: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20300101T000000Z\r\n\
         DTSTART{start}\r\nDTEND{end}\r\nSUMMARY:{uid}\r\n{extra}END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

/// A calendar with events in, before, after and across the window, series that do and do not
/// occur in it, an all-day event and a task (not an event).
async fn fill(raw: &RawDav, extra_inside: usize) {
    raw.mkcalendar(CAL, "Calendar", &["VEVENT", "VTODO"]).await;
    let mut items: Vec<(String, String)> = vec![
        ("in".into(), ics("in", ":20310610T090000Z", ":20310610T100000Z", "")),
        ("before".into(), ics("before", ":20310520T090000Z", ":20310520T100000Z", "")),
        ("after".into(), ics("after", ":20310702T090000Z", ":20310702T100000Z", "")),
        ("across".into(), ics("across", ":20310531T220000Z", ":20310601T020000Z", "")),
        ("allday".into(), ics("allday", ";VALUE=DATE:20310615", ";VALUE=DATE:20310616", "")),
        ("series-running".into(), ics("sr", ":20310105T090000Z", ":20310105T100000Z", "RRULE:FREQ=WEEKLY\r\n")),
        ("series-ended".into(), ics("se", ":20310105T090000Z", ":20310105T100000Z", "RRULE:FREQ=WEEKLY;COUNT=3\r\n")),
        ("series-later".into(), ics("sl", ":20310801T090000Z", ":20310801T100000Z", "RRULE:FREQ=DAILY\r\n")),
        (
            "task".into(),
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VTODO\r\nUID:task\r\nDTSTAMP:20300101T000000Z\r\nSUMMARY:t\r\nEND:VTODO\r\nEND:VCALENDAR\r\n".into(),
        ),
    ];
    for i in 0..extra_inside {
        let day = 1 + i % 28;
        items.push((
            format!("bulk-{i}"),
            ics(
                &format!("bulk-{i}"),
                &format!(":202106{day:02}T0800{:02}Z", i % 60),
                &format!(":202106{day:02}T0900{:02}Z", i % 60),
                "",
            ),
        ));
    }
    for (name, text) in items {
        let text = text.replace("202106", "203106");
        let r = raw.put(&format!("{CAL}{name}.ics"), &text, ("if-none-match", "*")).await;
        assert_eq!(r.status, 201, "PUT {name}: {}", r.body);
    }
}

/// What a time-range `calendar-query` for the window returns, read by calsync's own parser:
/// id → etag.
async fn by_query(raw: &RawDav, server: &Radicale) -> BTreeMap<String, Option<String>> {
    let r = raw
        .request(
            "REPORT",
            CAL,
            &[("depth", "1"), ("content-type", "application/xml")],
            Some(caldav::calendar_query_body(window())),
        )
        .await;
    assert_eq!(r.status, 207, "{}", r.body);
    let base = reqwest::Url::parse(&server.url).unwrap().join(CAL).unwrap();
    caldav::parse_report(r.body.as_bytes(), &base).unwrap().into_iter().map(|e| (e.id, e.etag)).collect()
}

async fn provider(server: &Radicale, proxy: &RecordingProxy) -> Arc<dyn Provider> {
    let target =
        Target { provider: ProviderKind::Caldav, server_url: Some(proxy.url.clone()), connection: "t/c".into() };
    let creds =
        Credentials::Basic { username: server.user.clone(), password: SecretString::from(server.password.clone()) };
    CaldavConnector::new().connect(&target, &creds).await.expect("connect")
}

fn is_data_sync(x: &Exchange<'_>) -> bool {
    let body = String::from_utf8_lossy(x.request);
    x.method == "REPORT" && body.contains("sync-collection") && body.contains("calendar-data")
}

fn reports_and_propfinds(proxy: &RecordingProxy) -> Vec<String> {
    proxy.requests().into_iter().map(|(m, p)| format!("{m} {p}")).collect()
}

#[tokio::test]
async fn one_sync_collection_lists_what_a_window_query_lists_and_its_cursor_works() {
    let server = Radicale::start();
    let raw = server.raw();
    fill(&raw, 0).await;
    let expected = by_query(&raw, &server).await;
    assert!(expected.contains_key("in") && !expected.contains_key("before"), "{expected:?}");
    let proxy = RecordingProxy::start(&server.url).await;
    let p = provider(&server, &proxy).await;

    let page = p.list(CAL, window(), None).await.expect("full listing");
    let listed: BTreeMap<_, _> = page.events.iter().map(|e| (e.id.clone(), e.etag.clone())).collect();
    assert_eq!(listed, expected, "the same events and etags as the server's time-range query");
    assert_eq!(reports_and_propfinds(&proxy), vec![format!("REPORT {CAL}")], "one round trip");
    let cursor = page.next_cursor.expect("the token came with the data");
    assert!(!page.full_resync);

    // The token covers exactly what was listed: a later edit is the only change.
    let edited = ics("in", ":20310611T090000Z", ":20310611T100000Z", "");
    let etag = expected["in"].clone().unwrap();
    let r = raw.put(&format!("{CAL}in.ics"), &edited, ("if-match", &etag)).await;
    assert!(matches!(r.status, 200..=299), "{}", r.body);
    let delta = p.list(CAL, window(), Some(&cursor)).await.expect("incremental");
    assert_eq!(delta.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), vec!["in"]);
    assert!(delta.removed.is_empty() && !delta.full_resync);

    // Half of what that answer held lay outside the window: this calendar's next full listing
    // asks for the window instead (token first, then the time-range query).
    proxy.clear();
    let again = p.list(CAL, window(), None).await.expect("second full listing");
    let expected = by_query(&raw, &server).await;
    let listed: BTreeMap<_, _> = again.events.iter().map(|e| (e.id.clone(), e.etag.clone())).collect();
    assert_eq!(listed, expected);
    assert_eq!(reports_and_propfinds(&proxy), vec![format!("PROPFIND {CAL}"), format!("REPORT {CAL}")]);
    assert!(again.next_cursor.is_some());
}

#[tokio::test]
async fn members_sent_without_calendar_data_are_read_with_multiget_in_batches() {
    let server = Radicale::start();
    let raw = server.raw();
    fill(&raw, 150).await;
    let expected = by_query(&raw, &server).await;
    assert_eq!(expected.len(), 154, "{expected:?}");
    // Every member's calendar-data taken out: every other one as a 404 propstat, the rest
    // simply left out (both are what RFC 6578 allows).
    let rewrite: Rewrite = Arc::new(|x: &Exchange<'_>| {
        if !is_data_sync(x) || x.status != 207 {
            return None;
        }
        let text = String::from_utf8_lossy(x.response);
        let mut out = String::new();
        for (i, part) in text.split("<C:calendar-data>").enumerate() {
            match part.split_once("</C:calendar-data>") {
                Some((_, rest)) if i % 2 == 0 => {
                    let missing =
                        "<C:calendar-data/></prop><status>HTTP/1.1 404 Not Found</status></propstat><propstat><prop>";
                    out.push_str(missing);
                    out.push_str(rest);
                }
                Some((_, rest)) => out.push_str(rest),
                None => out.push_str(part),
            }
        }
        Some((207, out.into_bytes()))
    });
    let proxy = RecordingProxy::start_rewriting(&server.url, rewrite).await;
    let p = provider(&server, &proxy).await;
    let page = p.list(CAL, window(), None).await.expect("full listing");
    let listed: BTreeMap<_, _> = page.events.iter().map(|e| (e.id.clone(), e.etag.clone())).collect();
    assert_eq!(listed, expected);
    // 159 members without data (the task too): the sync report, then multigets of 100 and 59.
    assert_eq!(reports_and_propfinds(&proxy), vec![format!("REPORT {CAL}"); 3]);
    assert!(page.next_cursor.is_some_and(|c| c.starts_with("http://radicale.org/ns/sync/")));
    // Nearly all of it was in the window: the next full listing is one answer again.
    proxy.clear();
    assert_eq!(p.list(CAL, window(), None).await.expect("again").events.len(), 154);
    assert_eq!(reports_and_propfinds(&proxy), vec![format!("REPORT {CAL}"); 3]);
}

#[tokio::test]
async fn a_refused_sync_collection_or_one_without_a_token_is_listed_the_old_way() {
    let server = Radicale::start();
    let raw = server.raw();
    fill(&raw, 0).await;
    let expected = by_query(&raw, &server).await;
    // 403 `supported-report` is what Radicale itself sends for a sync-collection where it
    // cannot run one; 501 what servers without REPORT support send; 207 without a token, an
    // answer that cannot be trusted to be a sync answer.
    let answer = Arc::new(AtomicU16::new(403));
    let a = answer.clone();
    let rewrite: Rewrite = Arc::new(move |x: &Exchange<'_>| {
        if !is_data_sync(x) {
            return None;
        }
        match a.load(Ordering::SeqCst) {
            207 => {
                let text = String::from_utf8_lossy(x.response);
                let start = text.find("<sync-token>")?;
                let end = text.find("</sync-token>")? + "</sync-token>".len();
                Some((207, format!("{}{}", &text[..start], &text[end..]).into_bytes()))
            }
            status => Some((
                status,
                br#"<?xml version="1.0"?><D:error xmlns:D="DAV:"><D:supported-report/></D:error>"#.to_vec(),
            )),
        }
    });
    let proxy = RecordingProxy::start_rewriting(&server.url, rewrite).await;
    for status in [403, 501, 207] {
        answer.store(status, Ordering::SeqCst);
        proxy.clear();
        // A fresh client each time: a client remembers the refusal.
        let p = provider(&server, &proxy).await;
        let page = p.list(CAL, window(), None).await.unwrap_or_else(|e| panic!("listing after {status}: {e}"));
        let listed: BTreeMap<_, _> = page.events.iter().map(|e| (e.id.clone(), e.etag.clone())).collect();
        assert_eq!(listed, expected, "after {status}");
        assert_eq!(
            reports_and_propfinds(&proxy),
            vec![format!("REPORT {CAL}"), format!("PROPFIND {CAL}"), format!("REPORT {CAL}")],
            "after {status}: the refused report, the token, the window query"
        );
        let cursor = page.next_cursor.expect("the token from the PROPFIND");
        // That cursor drives the (unchanged) incremental listing.
        let same = p.list(CAL, window(), Some(&cursor)).await.expect("incremental");
        assert!(same.events.is_empty() && same.removed.is_empty() && !same.full_resync, "{same:?}");
        proxy.clear();
        p.list(CAL, window(), None).await.expect("listing again");
        assert_eq!(
            reports_and_propfinds(&proxy),
            vec![format!("PROPFIND {CAL}"), format!("REPORT {CAL}")],
            "after {status}: the refusal is remembered"
        );
    }
}
