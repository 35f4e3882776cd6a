//! `Provider::busy` against real peers: a real Radicale (a weekly series with an EXDATE and a
//! moved occurrence across the New York DST change, transparent, cancelled, declined and all-day
//! events; the series checked against Radicale's own `<C:expand>`), the fake Google Calendar's
//! `freeBusy.query` (two calendars in one call, long windows in chunks) and the fake Graph's
//! `calendarView` with `showAs`.

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use calsync::credentials::Credentials;
use calsync::oauth::{AccessTokens, TokenBroker};
use calsync::providers::busy::BusyQuery;
use calsync::providers::caldav::CaldavConnector;
use calsync::providers::google::{GoogleConfig, GoogleProvider};
use calsync::providers::outlook::{OutlookConfig, OutlookConnector};
use calsync::providers::{Connector, Provider, ProviderError, Target, Window};
use calsync::resources::ProviderKind;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde_json::json;
use support::fake_google::{ACCOUNT, FakeGoogle, FakeGoogleOptions, SECONDARY_CALENDAR};
use support::fake_graph::FakeGraph;
use support::radicale::Radicale;

const NY: chrono_tz::Tz = chrono_tz::America::New_York;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}
fn w(a: &str, b: &str) -> Window {
    Window { from: t(a), to: t(b) }
}
fn sorted(mut v: Vec<Window>) -> Vec<Window> {
    v.sort_by_key(|w| (w.from, w.to));
    v
}

struct Fixed(String);

#[async_trait]
impl AccessTokens for Fixed {
    async fn access_token(&self) -> Result<SecretString, ProviderError> {
        Ok(SecretString::from(self.0.clone()))
    }
    async fn refresh_after_rejection(&self, _: &SecretString) -> Result<SecretString, ProviderError> {
        Ok(SecretString::from(self.0.clone()))
    }
}

#[async_trait]
impl TokenBroker for Fixed {
    async fn tokens(&self, _: &Target, _: &Credentials) -> Result<Arc<dyn AccessTokens>, ProviderError> {
        Ok(Arc::new(Fixed(self.0.clone())))
    }
}

fn ics(body: &str) -> String {
    format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\n{}END:VCALENDAR\r\n", body.replace('\n', "\r\n"))
}

/// As every client writes it: with the VTIMEZONE its TZID names (RFC 5545 §3.6.5).
const SERIES: &str = "BEGIN:VTIMEZONE
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
BEGIN:VEVENT
UID:weekly@test
DTSTAMP:20260101T000000Z
DTSTART;TZID=America/New_York:20260302T100000
DTEND;TZID=America/New_York:20260302T110000
RRULE:FREQ=WEEKLY;COUNT=4
EXDATE;TZID=America/New_York:20260309T100000
SUMMARY:Weekly
END:VEVENT
BEGIN:VEVENT
UID:weekly@test
DTSTAMP:20260101T000000Z
RECURRENCE-ID;TZID=America/New_York:20260316T100000
DTSTART;TZID=America/New_York:20260316T140000
DTEND;TZID=America/New_York:20260316T150000
SUMMARY:Weekly (moved)
END:VEVENT
";

fn single(uid: &str, start: &str, end: &str, extra: &str) -> String {
    ics(&format!(
        "BEGIN:VEVENT\nUID:{uid}\nDTSTAMP:20260101T000000Z\nDTSTART:{start}\nDTEND:{end}\n{extra}SUMMARY:{uid}\nEND:VEVENT\n"
    ))
}

/// `(DTSTART, DTEND)` of every VEVENT in Radicale's `<C:expand>`ed answer (UTC, as RFC 4791
/// §9.6.5 requires).
fn expanded_instances(body: &str) -> Vec<Window> {
    let mut out = Vec::new();
    let (mut s, mut e) = (None, None);
    for line in body.lines().map(str::trim) {
        let value = |l: &str| l.rsplit(':').next().map(|v| v.trim().to_string());
        let at = |v: String| {
            chrono::NaiveDateTime::parse_from_str(v.trim_end_matches('Z'), "%Y%m%dT%H%M%S").ok().map(|n| n.and_utc())
        };
        if line.starts_with("DTSTART") {
            s = value(line).and_then(at);
        } else if line.starts_with("DTEND") {
            e = value(line).and_then(at);
        } else if line.starts_with("END:VEVENT")
            && let (Some(a), Some(b)) = (s.take(), e.take())
        {
            out.push(Window { from: a, to: b });
        }
    }
    sorted(out)
}

#[tokio::test]
async fn radicale_busy_time_expands_series_and_skips_free_events() {
    let server = Radicale::start();
    let raw = server.raw();
    let cal = "/alice/calendar/";
    raw.mkcalendar(cal, "Calendar", &["VEVENT"]).await;
    let put = |name: &str, body: String| {
        let raw = raw.clone();
        let path = format!("{cal}{name}.ics");
        async move {
            let r = raw.put(&path, &body, ("if-none-match", "*")).await;
            assert_eq!(r.status, 201, "PUT {path}: {}", r.body);
        }
    };
    put("weekly", ics(SERIES)).await;
    put("busy", single("busy@test", "20260303T180000Z", "20260303T190000Z", "")).await;
    put("transparent", single("transparent@test", "20260303T150000Z", "20260303T160000Z", "TRANSP:TRANSPARENT\n"))
        .await;
    put("cancelled", single("cancelled@test", "20260304T150000Z", "20260304T160000Z", "STATUS:CANCELLED\n")).await;
    let declined = "ORGANIZER:mailto:boss@example.com\nATTENDEE;PARTSTAT=DECLINED:mailto:alice@example.com\n";
    put("declined", single("declined@test", "20260305T150000Z", "20260305T160000Z", declined)).await;
    put(
        "allday",
        ics("BEGIN:VEVENT\nUID:allday@test\nDTSTAMP:20260101T000000Z\nDTSTART;VALUE=DATE:20260306\nDTEND;VALUE=DATE:20260307\nSUMMARY:Off\nEND:VEVENT\n"),
    )
    .await;

    let target =
        Target { provider: ProviderKind::Caldav, server_url: Some(server.url.clone()), connection: "test/busy".into() };
    let creds =
        Credentials::Basic { username: server.user.clone(), password: SecretString::from(server.password.clone()) };
    let provider = CaldavConnector::new().connect(&target, &creds).await.expect("connect");
    let window = w("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z");
    let query =
        BusyQuery { calendars: vec![cal.to_string()], window, zone: NY, account: Some("alice@example.com".into()) };
    let got = sorted(provider.busy(&query).await.expect("busy"));
    assert_eq!(
        got,
        vec![
            w("2026-03-02T15:00:00Z", "2026-03-02T16:00:00Z"), // 10:00 EST
            w("2026-03-03T18:00:00Z", "2026-03-03T19:00:00Z"),
            w("2026-03-06T05:00:00Z", "2026-03-07T05:00:00Z"), // the all-day event, New York's day
            w("2026-03-16T18:00:00Z", "2026-03-16T19:00:00Z"), // moved to 14:00 EDT
            w("2026-03-23T14:00:00Z", "2026-03-23T15:00:00Z"), // 10:00 EDT after the change
        ]
    );

    // The series as Radicale expands it itself must give the same instances. (Without the
    // VTIMEZONE, Radicale 3.9's expand ignores the EXDATE, the override and the DST change: one
    // more reason calsync expands on the client.)
    let body = r#"<?xml version="1.0" encoding="utf-8"?><C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><C:calendar-data><C:expand start="20260301T000000Z" end="20260401T000000Z"/></C:calendar-data></D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"><C:prop-filter name="UID"><C:text-match collation="i;octet">weekly@test</C:text-match></C:prop-filter></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"#
        .to_string();
    let r = raw.request("REPORT", cal, &[("depth", "1"), ("content-type", "application/xml")], Some(body)).await;
    assert_eq!(r.status, 207, "{}", r.body);
    let series_only = BusyQuery { account: None, ..query };
    let ours: Vec<Window> = sorted(provider.busy(&series_only).await.unwrap())
        .into_iter()
        .filter(|b| b.to - b.from == chrono::Duration::hours(1) && b.from != t("2026-03-03T18:00:00Z"))
        .filter(|b| b.from != t("2026-03-05T15:00:00Z"))
        .collect();
    assert_eq!(ours, expanded_instances(&r.body), "calsync's expansion differs from Radicale's:\n{}", r.body);
}

#[tokio::test]
async fn google_free_busy_reads_two_calendars_in_one_call_and_chunks_long_windows() {
    let mut options = FakeGoogleOptions::static_token("busy-token");
    options.time_zone = "America/New_York".into();
    let fake = FakeGoogle::start(options);
    let ev = |summary: &str, start: &str, end: &str| {
        json!({"summary": summary, "start": {"dateTime": start, "timeZone": "America/New_York"},
               "end": {"dateTime": end, "timeZone": "America/New_York"}})
    };
    fake.insert_external(ACCOUNT, ev("Meeting", "2026-03-03T10:00:00-05:00", "2026-03-03T11:00:00-05:00"));
    let mut free = ev("Free", "2026-03-03T12:00:00-05:00", "2026-03-03T13:00:00-05:00");
    free["transparency"] = json!("transparent");
    fake.insert_external(ACCOUNT, free);
    let mut declined = ev("Declined", "2026-03-04T12:00:00-05:00", "2026-03-04T13:00:00-05:00");
    declined["attendees"] = json!([{"email": ACCOUNT, "self": true, "responseStatus": "declined"}]);
    fake.insert_external(ACCOUNT, declined);
    let mut weekly = ev("Weekly", "2026-03-02T10:00:00-05:00", "2026-03-02T11:00:00-05:00");
    weekly["recurrence"] = json!(["RRULE:FREQ=WEEKLY;COUNT=3", "EXDATE;TZID=America/New_York:20260309T100000"]);
    fake.insert_external(ACCOUNT, weekly);
    fake.insert_external(
        ACCOUNT,
        json!({"summary": "Off", "start": {"date": "2026-03-06"}, "end": {"date": "2026-03-07"}}),
    );
    // Overlaps the meeting: Google merges the two into one span.
    fake.insert_external(SECONDARY_CALENDAR, ev("Overlap", "2026-03-03T10:30:00-05:00", "2026-03-03T11:30:00-05:00"));

    let config = GoogleConfig { api_url: fake.base_url().to_string(), ..Default::default() };
    let provider = GoogleProvider::new(&config, Arc::new(Fixed("busy-token".into()))).expect("provider");
    let query = BusyQuery {
        calendars: vec![ACCOUNT.to_string(), SECONDARY_CALENDAR.to_string()],
        window: w("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"),
        zone: NY,
        account: None,
    };
    fake.clear_requests();
    let got = sorted(provider.busy(&query).await.expect("busy"));
    assert_eq!(
        got,
        vec![
            w("2026-03-02T15:00:00Z", "2026-03-02T16:00:00Z"),
            w("2026-03-03T15:00:00Z", "2026-03-03T16:00:00Z"),
            w("2026-03-03T15:30:00Z", "2026-03-03T16:30:00Z"),
            w("2026-03-06T05:00:00Z", "2026-03-07T05:00:00Z"),
            w("2026-03-16T14:00:00Z", "2026-03-16T15:00:00Z"),
        ]
    );
    let calls: Vec<_> = fake.requests().into_iter().filter(|r| r.path.ends_with("/freeBusy")).collect();
    assert_eq!(calls.len(), 1, "both calendars in one call");

    // 100 days: two requests, each within Google's range limit (the fake refuses > 90 days).
    fake.clear_requests();
    let long = BusyQuery { window: w("2026-03-01T00:00:00Z", "2026-06-09T00:00:00Z"), ..query.clone() };
    assert_eq!(sorted(provider.busy(&long).await.expect("busy")), got);
    assert_eq!(fake.requests().iter().filter(|r| r.path.ends_with("/freeBusy")).count(), 2);

    // A calendar Google does not know is an error, not free time.
    let unknown = BusyQuery { calendars: vec!["nobody@example.com".into()], ..query };
    assert!(matches!(provider.busy(&unknown).await, Err(ProviderError::NotFound { .. })));
}

#[tokio::test]
async fn graph_calendar_view_counts_show_as_busy_tentative_and_oof_only() {
    let fake = FakeGraph::start("busy-token").await;
    let at = |s: &str| json!({"dateTime": s, "timeZone": "UTC"});
    let body = |subject: &str, show_as: &str, start: &str, end: &str| json!({"subject": subject, "showAs": show_as, "start": at(start), "end": at(end)});
    let cal = fake.default_calendar();
    for (subject, show_as, start) in [
        ("busy", "busy", "2026-03-03T15:00:00"),
        ("tentative", "tentative", "2026-03-03T17:00:00"),
        ("oof", "oof", "2026-03-04T15:00:00"),
        ("free", "free", "2026-03-04T17:00:00"),
        ("elsewhere", "workingElsewhere", "2026-03-05T15:00:00"),
    ] {
        let end = start.replace(":00:00", ":30:00");
        fake.insert_body(&cal, body(subject, show_as, start, &end));
    }
    let mut series = body("series", "busy", "2026-03-02T14:00:00", "2026-03-02T15:00:00");
    series["recurrence"] = json!({"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
                                  "range": {"type": "numbered", "numberOfOccurrences": 2, "startDate": "2026-03-02"}});
    fake.insert_body(&cal, series);
    let mut all_day = body("off", "busy", "2026-03-06T00:00:00", "2026-03-07T00:00:00");
    all_day["isAllDay"] = json!(true);
    fake.insert_body(&cal, all_day);

    let config = OutlookConfig { api_url: fake.url.clone(), timeout: std::time::Duration::from_secs(10) };
    let connector = OutlookConnector::new(config, Arc::new(Fixed(fake.token()))).expect("connector");
    let target = Target { provider: ProviderKind::Outlook, server_url: None, connection: "test/busy".into() };
    let creds = Credentials::OAuth {
        refresh_token: SecretString::from("r"),
        access_token: None,
        expires_at: None,
        refresh_lease: None,
    };
    let provider = connector.connect(&target, &creds).await.expect("connect");
    let query = BusyQuery {
        calendars: vec!["primary".into()],
        window: w("2026-03-01T00:00:00Z", "2026-03-15T00:00:00Z"),
        zone: NY,
        account: None,
    };
    let got = sorted(provider.busy(&query).await.expect("busy"));
    assert_eq!(
        got,
        vec![
            w("2026-03-02T14:00:00Z", "2026-03-02T15:00:00Z"),
            w("2026-03-03T15:00:00Z", "2026-03-03T15:30:00Z"),
            w("2026-03-03T17:00:00Z", "2026-03-03T17:30:00Z"),
            w("2026-03-04T15:00:00Z", "2026-03-04T15:30:00Z"),
            w("2026-03-06T05:00:00Z", "2026-03-07T05:00:00Z"),
            w("2026-03-09T14:00:00Z", "2026-03-09T15:00:00Z"),
        ]
    );
    let selects: Vec<_> = fake.requests().into_iter().filter(|r| r.uri.contains("calendarView")).collect();
    assert!(!selects.is_empty() && selects.iter().all(|r| r.uri.contains("select")), "{selects:?}");
}
