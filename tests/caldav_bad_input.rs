//! The CalDAV client against servers that misbehave, served by a tiny HTTP server in the test:
//! garbage XML, a non-calendar collection, redirect loops, enormous bodies, rate limits and
//! outages give classified errors with clear messages, never a panic. Also an iCloud-shaped
//! discovery (home on another host, default-namespace XML, read-only calendar listed first).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use calsync::credentials::Credentials;
use calsync::providers::caldav::CaldavConnector;
use calsync::providers::{Connector, Created, EventData, EventTime, Marker, Provider, ProviderError, Target, Window};
use calsync::resources::ProviderKind;
use chrono::{TimeZone, Utc};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// (method, path, had an Authorization header)
type Seen = Arc<Mutex<Vec<(String, String, bool)>>>;
type Handler = Arc<dyn Fn(&str, &str, u16) -> Vec<u8> + Send + Sync>;

/// Serve `handler(method, path, port)` on a loopback port; one response per connection.
async fn serve(handler: Handler) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let handler = handler.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let mut first = head.lines().next().unwrap_or_default().split_whitespace();
                let (method, path) =
                    (first.next().unwrap_or_default().to_string(), first.next().unwrap_or_default().to_string());
                let auth = head.lines().any(|l| l.to_ascii_lowercase().starts_with("authorization: basic "));
                seen.lock().unwrap().push((method.clone(), path.clone(), auth));
                let resp = handler(&method, &path, port);
                let _ = sock.write_all(&resp).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (port, seen)
}

fn http(status: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut s = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.push_str(body);
    s.into_bytes()
}

async fn provider(port: u16) -> Arc<dyn Provider> {
    let target = Target {
        provider: ProviderKind::Caldav,
        server_url: Some(format!("http://127.0.0.1:{port}/")),
        connection: format!("t/{port}"),
    };
    let creds =
        Credentials::Basic { username: "me@example.com".into(), password: SecretString::from("app-specific-pw") };
    CaldavConnector::new().connect(&target, &creds).await.expect("connect")
}

fn invalid_with(res: Result<impl std::fmt::Debug, ProviderError>, needle: &str) {
    match res {
        Err(ProviderError::Invalid { message }) => {
            assert!(message.contains(needle), "message {message:?} should mention {needle:?}");
            assert!(!message.contains("app-specific-pw"));
        }
        other => panic!("expected Invalid mentioning {needle:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_xml_is_invalid() {
    let (port, _) = serve(Arc::new(|_, _, _| {
        http(
            "207 Multi-Status",
            &[("content-type", "application/xml")],
            "<d:multistatus xmlns:d=\"DAV:\"><d:response>oops & <<",
        )
    }))
    .await;
    invalid_with(provider(port).await.account().await, "malformed XML");
    let (port, _) =
        serve(Arc::new(|_, _, _| http("207 Multi-Status", &[], "<html><body>Welcome to nginx</body></html>"))).await;
    invalid_with(provider(port).await.account().await, "instead of a WebDAV multistatus");
}

#[tokio::test]
async fn redirect_loops_are_bounded() {
    let (port, seen) = serve(Arc::new(|_, path, _| {
        let next = if path.starts_with("/a") { "/b/" } else { "/a/" };
        http("301 Moved Permanently", &[("location", next)], "")
    }))
    .await;
    invalid_with(provider(port).await.account().await, "redirect loop");
    assert!(seen.lock().unwrap().len() < 20, "the loop was cut short");
    // Ever-new locations: stops after the limit too.
    let (port, seen) = serve(Arc::new(|_, path, _| http("302 Found", &[("location", &format!("{path}x/"))], ""))).await;
    invalid_with(provider(port).await.account().await, "redirected");
    assert!(seen.lock().unwrap().len() <= 2 * (calsync::providers::caldav::MAX_REDIRECTS + 1));
}

#[tokio::test]
async fn enormous_bodies_are_refused() {
    let big = calsync::providers::caldav::MAX_BODY + 1024;
    let (port, _) = serve(Arc::new(move |_, _, _| {
        let mut r = format!("HTTP/1.1 207 Multi-Status\r\ncontent-length: {big}\r\n\r\n").into_bytes();
        r.resize(r.len() + big, b' ');
        r
    }))
    .await;
    invalid_with(provider(port).await.account().await, "larger than 10 MiB");
    // No Content-Length: the cap applies while streaming.
    let (port, _) = serve(Arc::new(move |_, _, _| {
        let mut r = b"HTTP/1.1 207 Multi-Status\r\nconnection: close\r\n\r\n<d:multistatus xmlns:d=\"DAV:\">".to_vec();
        r.resize(r.len() + big, b' ');
        r
    }))
    .await;
    invalid_with(provider(port).await.account().await, "larger than 10 MiB");
}

const PRINCIPAL: &str = r#"<multistatus xmlns="DAV:"><response><href>/</href><propstat><prop><current-user-principal><href>/p/</href></current-user-principal></prop><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#;

#[tokio::test]
async fn a_collection_that_is_not_a_calendar() {
    let (port, _) = serve(Arc::new(|_, path, _| {
        let body = match path {
            "/p/" => r#"<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:response><D:href>/p/</D:href><D:propstat><D:prop><C:calendar-home-set><D:href>/files/</D:href></C:calendar-home-set></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#,
            "/files/" => r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/files/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response><D:response><D:href>/files/photos/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#,
            _ => PRINCIPAL,
        };
        http("207 Multi-Status", &[], body)
    }))
    .await;
    invalid_with(provider(port).await.account().await, "no calendar collections");
    // Listing events in it: the server refuses the REPORT.
    let (port, _) = serve(Arc::new(|method, _, _| match method {
        "REPORT" => http("405 Method Not Allowed", &[], "REPORT is not allowed on a plain collection"),
        _ => http("207 Multi-Status", &[], r#"<multistatus xmlns="DAV:"/>"#),
    }))
    .await;
    let w = Window { from: Utc::now(), to: Utc::now() + chrono::Duration::days(1) };
    invalid_with(provider(port).await.list("/files/", w, None).await, "405");
}

#[tokio::test]
async fn outages_and_rate_limits_are_classified() {
    let cases: [(&str, &[(&str, &str)]); 5] = [
        ("503 Service Unavailable", &[("retry-after", "120")]),
        ("429 Too Many Requests", &[]),
        ("403 Forbidden", &[("retry-after", "5")]),
        ("500 Internal Server Error", &[]),
        ("401 Unauthorized", &[("www-authenticate", "X-MobileMe-AuthToken realm=\"Newcastle\"")]),
    ];
    let mut got = Vec::new();
    for (status, headers) in cases {
        let (port, _) = serve(Arc::new(move |_, _, _| http(status, headers, ""))).await;
        got.push(provider(port).await.account().await.expect_err("must fail"));
    }
    assert!(
        matches!(&got[0], ProviderError::RateLimited { retry_after: Some(d), .. } if *d == Duration::from_secs(120)),
        "{:?}",
        got[0]
    );
    assert!(matches!(&got[1], ProviderError::RateLimited { .. }), "{:?}", got[1]);
    assert!(
        matches!(&got[2], ProviderError::RateLimited { retry_after: Some(d), .. } if *d == Duration::from_secs(5)),
        "{:?}",
        got[2]
    );
    assert!(matches!(&got[3], ProviderError::Transient { .. }), "{:?}", got[3]);
    assert!(matches!(&got[4], ProviderError::Revoked { message } if message.contains("reconnect")), "{:?}", got[4]);
    // Nobody listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert!(matches!(provider(port).await.account().await, Err(ProviderError::Transient { .. })));
}

#[tokio::test]
async fn a_broken_event_does_not_hide_the_others() {
    let good = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:g\r\nDTSTART:20310101T100000Z\r\nDTEND:20310101T110000Z\r\nSUMMARY:good\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let body = format!(
        r#"<d:multistatus xmlns:d="DAV:" xmlns:cal="urn:ietf:params:xml:ns:caldav"><d:response><d:href>/c/bad.ics</d:href><d:propstat><d:prop><d:getetag>"1"</d:getetag><cal:calendar-data>BEGIN:VCALENDAR&#13;
garbage</cal:calendar-data></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response><d:response><d:href>/c/good.ics</d:href><d:propstat><d:prop><d:getetag>"2"</d:getetag><cal:calendar-data>{good}</cal:calendar-data></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>"#
    );
    let (port, _) = serve(Arc::new(move |method, _, _| match method {
        "REPORT" => http("207 Multi-Status", &[], &body),
        _ => http("404 Not Found", &[], ""),
    }))
    .await;
    let w = Window {
        from: Utc.with_ymd_and_hms(2031, 1, 1, 0, 0, 0).unwrap(),
        to: Utc.with_ymd_and_hms(2031, 1, 2, 0, 0, 0).unwrap(),
    };
    let page = provider(port).await.list("/c/", w, None).await.expect("list");
    assert_eq!(
        page.events.iter().map(|e| (e.id.as_str(), e.title.as_str(), e.etag.as_deref())).collect::<Vec<_>>(),
        vec![("good", "good", Some("\"2\""))]
    );
    assert_eq!(page.next_cursor, None, "no sync-token support: no cursor");
}

#[tokio::test]
async fn icloud_shaped_discovery_remembers_the_partition_host() {
    // The home set is on another origin ("localhost" vs "127.0.0.1"), like pNN-caldav.icloud.com.
    let (port, seen) = serve(Arc::new(|method, path, port| {
        let home = format!("http://localhost:{port}/123/calendars/");
        let body = match (method, path) {
            ("PROPFIND", "/") => PRINCIPAL.to_string(),
            ("PROPFIND", "/p/") => format!(
                r#"<multistatus xmlns="DAV:"><response><href>/p/</href><propstat><prop><calendar-home-set xmlns="urn:ietf:params:xml:ns:caldav"><href xmlns="DAV:">{home}</href></calendar-home-set><x:calendar-user-address-set xmlns:x="urn:ietf:params:xml:ns:caldav"><href>mailto:me@icloud.example</href></x:calendar-user-address-set></prop><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#
            ),
            ("PROPFIND", "/123/calendars/") => r#"<ns0:multistatus xmlns:ns0="DAV:" xmlns:ns1="urn:ietf:params:xml:ns:caldav">
<ns0:response><ns0:href>/123/calendars/</ns0:href><ns0:propstat><ns0:prop><ns0:resourcetype><ns0:collection/></ns0:resourcetype></ns0:prop><ns0:status>HTTP/1.1 200 OK</ns0:status></ns0:propstat></ns0:response>
<ns0:response><ns0:href>/123/calendars/holidays/</ns0:href><ns0:propstat><ns0:prop><ns0:displayname>Holidays</ns0:displayname><ns0:resourcetype><ns0:collection/><ns1:calendar/></ns0:resourcetype><ns0:current-user-privilege-set><ns0:privilege><ns0:read/></ns0:privilege></ns0:current-user-privilege-set></ns0:prop><ns0:status>HTTP/1.1 200 OK</ns0:status></ns0:propstat><ns0:propstat><ns0:prop><ns1:supported-calendar-component-set/></ns0:prop><ns0:status>HTTP/1.1 404 Not Found</ns0:status></ns0:propstat></ns0:response>
<ns0:response><ns0:href>/123/calendars/reminders/</ns0:href><ns0:propstat><ns0:prop><ns0:displayname>Reminders</ns0:displayname><ns0:resourcetype><ns0:collection/><ns1:calendar/></ns0:resourcetype><ns1:supported-calendar-component-set><ns1:comp name="VTODO"/></ns1:supported-calendar-component-set></ns0:prop><ns0:status>HTTP/1.1 200 OK</ns0:status></ns0:propstat></ns0:response>
<ns0:response><ns0:href>/123/calendars/home/</ns0:href><ns0:propstat><ns0:prop><ns0:displayname>Home</ns0:displayname><ns0:resourcetype><ns0:collection/><ns1:calendar/></ns0:resourcetype><ns1:supported-calendar-component-set><ns1:comp name="VEVENT"/></ns1:supported-calendar-component-set><ns0:current-user-privilege-set><ns0:privilege><ns0:read/></ns0:privilege><ns0:privilege><ns0:write/></ns0:privilege></ns0:current-user-privilege-set></ns0:prop><ns0:status>HTTP/1.1 200 OK</ns0:status></ns0:propstat></ns0:response>
</ns0:multistatus>"#
                .to_string(),
            ("PUT", _) => return http("201 Created", &[("etag", "\"v1\"")], ""),
            _ => return http("404 Not Found", &[], ""),
        };
        http("207 Multi-Status", &[("content-type", "application/xml")], &body)
    }))
    .await;
    let p = provider(port).await;
    let info = p.account().await.expect("account");
    assert_eq!(info.email.as_deref(), Some("me@icloud.example"));
    let names: Vec<(&str, bool)> = info.calendars.iter().map(|c| (c.name.as_str(), c.writable)).collect();
    assert_eq!(names, vec![("Holidays", false), ("Reminders", false), ("Home", true)]);
    let default = info.default_calendar().expect("default");
    assert_eq!(default.id, format!("http://localhost:{port}/123/calendars/home/"), "the id keeps the partition host");
    let ev = EventData {
        title: "t".into(),
        description: None,
        category: None,
        start: EventTime::Date(chrono::NaiveDate::from_ymd_opt(2031, 1, 1).unwrap()),
        end: EventTime::Date(chrono::NaiveDate::from_ymd_opt(2031, 1, 2).unwrap()),
        transparent: false,
        recurrence: vec![],
        exceptions: Vec::new(),
        marker: Marker { owner: "calsync".into(), uid: "u".into(), task_id: "t".into(), hash: "h".into() },
    };
    let Created::New(created) = p.create(&default.id, "cskey", &ev).await.expect("create") else { panic!("new") };
    assert_eq!(created.link.as_deref(), Some(format!("http://localhost:{port}/123/calendars/home/cskey.ics").as_str()));
    assert_eq!(created.etag.as_deref(), Some("\"v1\""));
    // A second account check goes straight to the remembered home.
    let before = seen.lock().unwrap().len();
    p.account().await.expect("account again");
    let after: Vec<_> = seen.lock().unwrap()[before..].to_vec();
    assert_eq!(
        after.iter().map(|(m, p, _)| (m.as_str(), p.as_str())).collect::<Vec<_>>(),
        vec![("PROPFIND", "/123/calendars/")]
    );
    // Basic auth went with every request, unasked (iCloud's 401 challenge confuses clients).
    assert!(seen.lock().unwrap().iter().all(|(_, _, auth)| *auth));
}

/// RFC 6578 variants another server may use: a bare-hash token, a truncated (507) first page,
/// removed members with 404, and a rejected token as 412 without any body.
#[tokio::test]
async fn sync_collection_variants() {
    let ev = |uid: &str| {
        format!(
            "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTART:20310101T100000Z\r\nDTEND:20310101T110000Z\r\nSUMMARY:{uid}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        )
    };
    let item = |href: &str, data: &str| {
        format!(
            r#"<response><href>{href}</href><propstat><prop><getetag>"e-{href}"</getetag><C:calendar-data>{data}</C:calendar-data></prop><status>HTTP/1.1 200 OK</status></propstat></response>"#
        )
    };
    let (a, b) = (ev("a"), ev("b"));
    // A handler that needs the request body: answer by the token inside it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (a, b, item) = (a.clone(), b.clone(), item);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let len: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let body = &text[end + 4..];
                    let ms = |inner: &str| {
                        format!(
                            r#"<multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">{inner}</multistatus>"#
                        )
                    };
                    let resp = if text.starts_with("PROPFIND") {
                        http(
                            "207 Multi-Status",
                            &[],
                            &ms(
                                r#"<response><href>/c/</href><propstat><prop><sync-token>h0</sync-token></prop><status>HTTP/1.1 200 OK</status></propstat></response>"#,
                            ),
                        )
                    } else if body.contains("calendar-query") {
                        http("207 Multi-Status", &[], &ms(&format!("{}{}", item("/c/a.ics", &a), item("/c/b.ics", &b))))
                    } else if body.contains("calendar-multiget") {
                        let mut inner = String::new();
                        if body.contains("/c/a.ics") {
                            inner.push_str(&item("/c/a.ics", &a));
                        }
                        if body.contains("/c/b.ics") {
                            inner.push_str(&item("/c/b.ics", &b));
                        }
                        http("207 Multi-Status", &[], &ms(&inner))
                    } else if body.contains("<d:sync-token>h0<") {
                        // Truncated: one change, then "ask again" with h1.
                        http(
                            "207 Multi-Status",
                            &[],
                            &ms(
                                r#"<response><href>/c/a.ics</href><propstat><prop><getetag>"1"</getetag></prop><status>HTTP/1.1 200 OK</status></propstat></response><response><href>/c/</href><status>HTTP/1.1 507 Insufficient Storage</status></response><sync-token>h1</sync-token>"#,
                            ),
                        )
                    } else if body.contains("<d:sync-token>h1<") {
                        http(
                            "207 Multi-Status",
                            &[],
                            &ms(
                                r#"<response><href>/c/b.ics</href><propstat><prop><getetag>"2"</getetag></prop><status>HTTP/1.1 200 OK</status></propstat></response><response><href>/c/gone.ics</href><status>HTTP/1.1 404 Not Found</status></response><sync-token>h2</sync-token>"#,
                            ),
                        )
                    } else {
                        http("412 Precondition Failed", &[], "")
                    };
                    let _ = sock.write_all(&resp).await;
                    let _ = sock.shutdown().await;
                    return;
                }
            });
        }
    });
    let p = provider(port).await;
    let w = Window {
        from: Utc.with_ymd_and_hms(2031, 1, 1, 0, 0, 0).unwrap(),
        to: Utc.with_ymd_and_hms(2031, 1, 2, 0, 0, 0).unwrap(),
    };
    let full = p.list("/c/", w, None).await.expect("full");
    assert_eq!((full.events.len(), full.next_cursor.as_deref(), full.full_resync), (2, Some("h0"), false));
    let delta = p.list("/c/", w, Some("h0")).await.expect("incremental");
    let ids: Vec<&str> = delta.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, vec!["a", "b"], "both pages of a truncated report");
    assert_eq!(delta.removed, vec!["gone".to_string()]);
    assert_eq!(delta.next_cursor.as_deref(), Some("h2"));
    assert!(!delta.full_resync);
    let rejected = p.list("/c/", w, Some("h-unknown")).await.expect("a 412 without body is a rejected token");
    assert!(rejected.full_resync);
    assert_eq!((rejected.events.len(), rejected.next_cursor.as_deref()), (2, Some("h0")));
}
