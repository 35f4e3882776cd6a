//! The strict fake Google Calendar API (`support::fake_google`) behaves as documented, proved
//! with raw reqwest calls: id rules, 409 for duplicates (deleted ones too), 410 for a second
//! delete, etags and If-Match, validation, `timeMin`/`timeMax` on END/START, paging with
//! `nextSyncToken` only on the last page, sync tokens, expansion, auth through a real
//! oidc-provider (expired tokens → 401, wrong scopes → 403) and the failure switches.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::fake_google::{ACCOUNT, Failure, FakeGoogle, FakeGoogleOptions, READER_CALENDAR};
use support::oidc::{GOOGLE_SCOPES, OUTLOOK_SCOPES, OidcOptions, OidcServer};

const TOKEN: &str = "static-test-token";

struct Reply {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

impl Reply {
    fn reason(&self) -> &str {
        self.body["error"]["errors"][0]["reason"].as_str().unwrap_or("")
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(fake: &FakeGoogle, token: &str) -> Api {
        Api { http: reqwest::Client::new(), base: fake.base_url().to_string(), token: token.to_string() }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        if_match: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(m, format!("{}{path}", self.base)).query(query).bearer_auth(&self.token);
        if let Some(tag) = if_match {
            req = req.header("if-match", tag);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request to the fake");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).expect("JSON body") };
        Reply { status, body, headers }
    }

    async fn insert(&self, cal: &str, body: Value) -> Reply {
        self.call("POST", &format!("/calendars/{}/events", enc(cal)), &[], None, Some(body)).await
    }
    async fn list(&self, cal: &str, query: &[(&str, &str)]) -> Reply {
        self.call("GET", &format!("/calendars/{}/events", enc(cal)), query, None, None).await
    }
    /// All pages; returns (items, pages, nextSyncToken).
    async fn list_all(&self, cal: &str, query: &[(&str, &str)]) -> (Vec<Value>, usize, String) {
        let (mut items, mut pages, mut page_token) = (Vec::new(), 0, None::<String>);
        loop {
            let mut q = query.to_vec();
            if let Some(t) = &page_token {
                q.push(("pageToken", t));
            }
            let r = self.list(cal, &q).await;
            assert_eq!(r.status, 200, "{}", r.body);
            pages += 1;
            items.extend(r.body["items"].as_array().expect("items").iter().cloned());
            match r.body["nextPageToken"].as_str() {
                Some(t) => {
                    assert!(r.body.get("nextSyncToken").is_none(), "nextSyncToken only on the last page: {}", r.body);
                    page_token = Some(t.to_string());
                }
                None => return (items, pages, r.body["nextSyncToken"].as_str().expect("nextSyncToken").to_string()),
            }
        }
    }
}

fn enc(s: &str) -> String {
    s.replace('#', "%23").replace('@', "%40")
}

fn timed(id: &str, start: &str, end: &str) -> Value {
    json!({ "id": id, "summary": format!("event {id}"), "start": { "dateTime": start }, "end": { "dateTime": end } })
}

fn ids(items: &[Value]) -> Vec<&str> {
    items.iter().map(|e| e["id"].as_str().unwrap_or("")).collect()
}

fn start() -> (FakeGoogle, Api) {
    let fake = FakeGoogle::start(FakeGoogleOptions::static_token(TOKEN));
    let api = Api::new(&fake, TOKEN);
    (fake, api)
}

#[tokio::test]
async fn ids_duplicates_and_deleted_events() {
    let (fake, api) = start();
    for bad in ["ABCDEF12", "abc-def-12", "abcd", "wxyz0"] {
        let r = api.insert("primary", timed(bad, "2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z")).await;
        assert_eq!((r.status, r.reason()), (400, "invalid"), "id {bad}: {}", r.body);
        assert_eq!(r.body["error"]["message"], "Invalid resource id value.");
    }
    let r = api.insert("primary", timed("calevent0001", "2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "confirmed");
    assert!(r.body["htmlLink"].as_str().is_some_and(|l| l.starts_with("https://www.google.com/calendar/event?eid=")));
    assert!(r.body["etag"].as_str().is_some_and(|e| e.starts_with('"') && e.ends_with('"')));

    let dup = api.insert("primary", timed("calevent0001", "2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z")).await;
    assert_eq!(dup.status, 409);
    assert_eq!(
        dup.body,
        json!({"error": {"errors": [{"domain": "global", "reason": "duplicate",
            "message": "The requested identifier already exists."}],
            "code": 409, "message": "The requested identifier already exists."}})
    );

    let del = api.call("DELETE", "/calendars/primary/events/calevent0001", &[], None, None).await;
    assert_eq!(del.status, 204);
    let again = api.call("DELETE", "/calendars/primary/events/calevent0001", &[], None, None).await;
    assert_eq!((again.status, again.reason()), (410, "deleted"));
    let reinsert = api.insert("primary", timed("calevent0001", "2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z")).await;
    assert_eq!((reinsert.status, reinsert.reason()), (409, "duplicate"), "a deleted id stays taken");
    let got = api.call("GET", &format!("/calendars/{}/events/calevent0001", enc(ACCOUNT)), &[], None, None).await;
    assert_eq!((got.status, got.body["status"].as_str()), (200, Some("cancelled")), "get returns cancelled events");
    // Un-deleting is a patch back to confirmed (how calsync adopts its own deleted event).
    let back = api
        .call("PATCH", "/calendars/primary/events/calevent0001", &[], None, Some(json!({"status": "confirmed"})))
        .await;
    assert_eq!((back.status, back.body["status"].as_str()), (200, Some("confirmed")));

    let unknown = api.call("DELETE", "/calendars/primary/events/nosuchevent", &[], None, None).await;
    assert_eq!((unknown.status, unknown.reason()), (404, "notFound"));
    let listed = api.list("primary", &[]).await;
    assert_eq!(ids(listed.body["items"].as_array().expect("items")), ["calevent0001"]);
    assert_eq!(fake.live_events("primary").len(), 1);
}

#[tokio::test]
async fn etags_and_if_match() {
    let (fake, api) = start();
    let created = api.insert("primary", timed("etag00001", "2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z")).await;
    let etag1 = created.body["etag"].as_str().expect("etag").to_string();
    let path = "/calendars/primary/events/etag00001";

    let ok = api.call("PATCH", path, &[], Some(&etag1), Some(json!({"summary": "renamed"}))).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let etag2 = ok.body["etag"].as_str().expect("etag").to_string();
    assert_ne!(etag1, etag2, "every write gives a new etag");

    let stale = api.call("PATCH", path, &[], Some(&etag1), Some(json!({"summary": "lost update"}))).await;
    assert_eq!(stale.status, 412);
    assert_eq!(
        stale.body["error"]["errors"][0],
        json!({"domain": "global", "reason": "conditionNotMet",
        "message": "Precondition Failed", "locationType": "header", "location": "If-Match"})
    );

    // The user edits the event in their calendar app: our etag goes stale.
    let edited = fake.edit_title("primary", "etag00001", "user title");
    assert_ne!(edited["etag"].as_str(), Some(etag2.as_str()));
    let r = api
        .call("PUT", path, &[], Some(&etag2), Some(timed("etag00001", "2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z")))
        .await;
    assert_eq!((r.status, r.reason()), (412, "conditionNotMet"));
    let r = api.call("DELETE", path, &[], Some(&etag2), None).await;
    assert_eq!((r.status, r.reason()), (412, "conditionNotMet"));
    assert_eq!(fake.raw_event("primary", "etag00001").expect("event")["summary"], "user title");

    fake.set_require_if_match(true);
    let r = api.call("PATCH", path, &[], None, Some(json!({"summary": "blind"}))).await;
    assert_eq!(r.status, 428, "{}", r.body);
    let current = edited["etag"].as_str().expect("etag");
    let r = api.call("DELETE", path, &[], Some(current), None).await;
    assert_eq!(r.status, 204);
    let log = fake.writes();
    assert_eq!(
        log.last().map(|w| (w.method.as_str(), w.if_match.as_deref(), w.status)),
        Some(("DELETE", Some(current), 204))
    );
    assert!(log.iter().any(|w| w.method == "PATCH" && w.if_match.is_none() && w.status == 428));
}

#[tokio::test]
async fn patch_merges_and_put_replaces() {
    let (_fake, api) = start();
    let mut body = timed("merge0001", "2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z");
    body["description"] = json!("notes");
    body["extendedProperties"] = json!({"private": {"calsyncTask": "t1", "other": "x"}});
    assert_eq!(api.insert("primary", body).await.status, 200);
    let path = "/calendars/primary/events/merge0001";
    let r = api.call("PATCH", path, &[], None, Some(json!({"extendedProperties": {"private": {"other": null}}}))).await;
    assert_eq!(r.body["extendedProperties"], json!({"private": {"calsyncTask": "t1"}}), "null removes one key only");
    assert_eq!(r.body["description"], "notes");
    let r = api
        .call("PUT", path, &[], None, Some(timed("merge0001", "2030-01-02T10:00:00Z", "2030-01-02T11:00:00Z")))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.get("description").is_none() && r.body.get("extendedProperties").is_none(),
        "PUT resets: {}",
        r.body
    );
    assert_eq!(r.body["sequence"], 1, "a moved event gets a new sequence");
}

#[tokio::test]
async fn validation_like_google() {
    let (_fake, api) = start();
    let cases = [
        (json!({"start": {"date": "2030-01-01"}, "end": {"dateTime": "2030-01-01T11:00:00Z"}}), "invalid"),
        (
            json!({"start": {"date": "2030-01-01", "dateTime": "2030-01-01T10:00:00Z"}, "end": {"date": "2030-01-02"}}),
            "invalid",
        ),
        (
            json!({"start": {"dateTime": "2030-01-01T12:00:00Z"}, "end": {"dateTime": "2030-01-01T11:00:00Z"}}),
            "timeRangeEmpty",
        ),
        (json!({"start": {"date": "2030-01-02"}, "end": {"date": "2030-01-02"}}), "timeRangeEmpty"),
        (json!({"start": {"dateTime": "2030-01-01T10:00:00"}, "end": {"dateTime": "2030-01-01T11:00:00"}}), "invalid"),
        (
            json!({"start": {"dateTime": "2030-01-01T10:00:00", "timeZone": "Mars/Base"},
                "end": {"dateTime": "2030-01-01T11:00:00", "timeZone": "Mars/Base"}}),
            "invalid",
        ),
        (json!({"start": {"date": "2030-1-1"}, "end": {"date": "2030-01-02"}}), "invalid"),
        (json!({"end": {"date": "2030-01-02"}}), "required"),
        (
            json!({"start": {"dateTime": "2030-01-01T10:00:00Z"}, "end": {"dateTime": "2030-01-01T11:00:00Z"},
                "recurrence": ["RRULE:FREQ=WEEKLY"]}),
            "invalid",
        ),
        (
            json!({"start": {"dateTime": "2030-01-01T10:00:00", "timeZone": "Europe/Berlin"},
                "end": {"dateTime": "2030-01-01T11:00:00", "timeZone": "Europe/Berlin"},
                "recurrence": ["DTSTART:20300101T100000Z", "RRULE:FREQ=WEEKLY"]}),
            "invalid",
        ),
        (
            json!({"start": {"date": "2030-01-01"}, "end": {"date": "2030-01-02"},
                "extendedProperties": {"private": {"n": 1}}}),
            "invalid",
        ),
    ];
    for (body, reason) in cases {
        let r = api.insert("primary", body.clone()).await;
        assert_eq!((r.status, r.reason()), (400, reason), "{body} → {}", r.body);
    }
    let ok = api
        .insert(
            "primary",
            json!({"start": {"dateTime": "2030-01-01T10:00:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2030-01-01T11:00:00", "timeZone": "Europe/Berlin"}}),
        )
        .await;
    assert_eq!(ok.status, 200, "a local time with timeZone is fine: {}", ok.body);
    let r = api.insert(READER_CALENDAR, json!({"start": {"date": "2030-01-01"}, "end": {"date": "2030-01-02"}})).await;
    assert_eq!((r.status, r.reason()), (403, "requiredAccessLevel"));
    let r = api.call("POST", "/calendars/primary/events", &[], None, None).await;
    assert_eq!((r.status, r.reason()), (400, "parseError"));
    let r = api.call("GET", "/calendars/primary/events", &[("timemin", "2030-01-01T00:00:00Z")], None, None).await;
    assert_eq!(r.status, 400, "unknown parameters are refused: {}", r.body);
}

#[tokio::test]
async fn time_min_bounds_the_end_and_time_max_the_start() {
    let (_fake, api) = start();
    for (id, s, e) in [
        ("evaaa", "2030-03-01T10:00:00Z", "2030-03-01T11:00:00Z"),
        ("evbbb", "2030-03-01T11:00:00Z", "2030-03-01T12:00:00Z"),
        ("evccc", "2030-03-01T12:00:00Z", "2030-03-01T13:00:00Z"),
    ] {
        assert_eq!(api.insert("primary", timed(id, s, e)).await.status, 200);
    }
    let r = api.list("primary", &[("timeMin", "2030-03-01T11:00:00Z"), ("timeMax", "2030-03-01T12:00:00Z")]).await;
    assert_eq!(ids(r.body["items"].as_array().expect("items")), ["evbbb"], "both bounds exclusive");
    let r = api.list("primary", &[("timeMin", "2030-03-01T10:30:00Z"), ("timeMax", "2030-03-01T12:00:01Z")]).await;
    assert_eq!(ids(r.body["items"].as_array().expect("items")), ["evaaa", "evbbb", "evccc"], "timeMin is on the END");
    let r = api.list("primary", &[("timeMin", "2030-03-01T10:30:00+01:00")]).await;
    assert_eq!(ids(r.body["items"].as_array().expect("items")), ["evaaa", "evbbb", "evccc"]);
    let r = api.list("primary", &[("timeMin", "2030-03-01T10:30:00")]).await;
    assert_eq!(
        (r.status, r.body["error"]["errors"][0]["location"].as_str()),
        (400, Some("timeMin")),
        "offset required"
    );
}

#[tokio::test]
async fn paging_and_sync_tokens() {
    let (fake, api) = start();
    fake.set_page_size(Some(2));
    for n in 0..5 {
        let id = format!("page{n:04}");
        assert_eq!(api.insert("primary", timed(&id, "2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z")).await.status, 200);
    }
    let (items, pages, sync) = api.list_all("primary", &[]).await;
    assert_eq!((items.len(), pages), (5, 3));
    let first = api.list("primary", &[]).await;
    let token = first.body["nextPageToken"].as_str().expect("page token");
    let a = api.list("primary", &[("pageToken", token)]).await;
    let b = api.list("primary", &[("pageToken", token)]).await;
    assert_eq!(a.body["items"], b.body["items"], "a page can be fetched again (retry after a 429)");
    let wrong = api.list("primary", &[("pageToken", token), ("showDeleted", "true")]).await;
    assert_eq!(wrong.status, 400, "a page token belongs to its query");

    // Nothing changed: an empty incremental answer.
    let (items, _, sync) = api.list_all("primary", &[("syncToken", &sync)]).await;
    assert!(items.is_empty(), "{items:?}");
    fake.edit_title("primary", "page0001", "changed");
    fake.user_delete("primary", "page0002");
    assert_eq!(
        api.insert("primary", timed("page0009", "2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z")).await.status,
        200
    );
    let (items, _, _) = api.list_all("primary", &[("syncToken", &sync)]).await;
    let mut changed = ids(&items);
    changed.sort();
    assert_eq!(changed, ["page0001", "page0002", "page0009"]);
    assert_eq!(items.iter().find(|e| e["id"] == "page0002").map(|e| &e["status"]), Some(&json!("cancelled")));
    let full = api.list("primary", &[]).await;
    assert!(
        !ids(full.body["items"].as_array().expect("items")).contains(&"page0002"),
        "cancelled only with showDeleted"
    );
    let shown = api.list_all("primary", &[("showDeleted", "true")]).await.0;
    assert!(ids(&shown).contains(&"page0002"));

    for bad in ["timeMin", "timeMax", "privateExtendedProperty", "orderBy", "q", "iCalUID", "updatedMin"] {
        let r = api.list("primary", &[("syncToken", &sync), (bad, "2030-01-01T00:00:00Z")]).await;
        assert_eq!(r.status, 400, "syncToken with {bad}: {}", r.body);
    }
    fake.expire_sync_tokens();
    let r = api.list("primary", &[("syncToken", &sync)]).await;
    assert_eq!(r.status, 410);
    assert_eq!(
        r.body["error"]["errors"][0],
        json!({"domain": "calendar", "reason": "fullSyncRequired",
        "message": "Sync token is no longer valid, a full sync is required.", "locationType": "parameter", "location": "syncToken"})
    );
}

#[tokio::test]
async fn single_events_expand_in_the_start_zone_across_dst() {
    let (_fake, api) = start();
    let master = json!({
        "id": "standup01", "summary": "standup",
        "start": {"dateTime": "2030-03-18T09:00:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2030-03-18T09:30:00", "timeZone": "Europe/Berlin"},
        "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=4", "EXDATE;TZID=Europe/Berlin:20300325T090000"],
        "extendedProperties": {"private": {"calsyncTask": "t9"}},
    });
    assert_eq!(api.insert("primary", master).await.status, 200);
    let q = [
        ("singleEvents", "true"),
        ("orderBy", "startTime"),
        ("timeMin", "2030-03-01T00:00:00Z"),
        ("timeMax", "2030-05-01T00:00:00Z"),
    ];
    let r = api.list("primary", &q).await;
    let items = r.body["items"].as_array().expect("items");
    // 2030-03-31 is after the switch to summer time: 09:00 Berlin is 07:00Z there, 08:00Z before.
    assert_eq!(ids(items), ["standup01_20300318T080000Z", "standup01_20300401T070000Z", "standup01_20300408T070000Z"]);
    for i in items {
        assert_eq!(i["recurringEventId"], "standup01");
        assert_eq!(i["extendedProperties"]["private"]["calsyncTask"], "t9");
        assert!(i["start"]["dateTime"].as_str().is_some_and(|t| t.contains("T09:00:00")), "{i}");
        assert_eq!(i["originalStartTime"], i["start"]);
        assert!(i.get("recurrence").is_none());
    }
    let r = api.list("primary", &[("timeMin", "2030-03-01T00:00:00Z")]).await;
    assert_eq!(ids(r.body["items"].as_array().expect("items")), ["standup01"], "without singleEvents: the master");
    let r = api.list("primary", &[("orderBy", "startTime")]).await;
    assert_eq!(r.status, 400, "orderBy=startTime needs singleEvents");
    let got = api.call("GET", "/calendars/primary/events/standup01_20300401T070000Z", &[], None, None).await;
    assert_eq!(got.status, 200, "an instance by its id: {}", got.body);
}

#[tokio::test]
async fn private_extended_property_filter_and_calendar_list() {
    let (_fake, api) = start();
    let mut mine = timed("ours00001", "2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z");
    mine["extendedProperties"] = json!({"private": {"calsync": "1", "task": "a"}});
    assert_eq!(api.insert("primary", mine).await.status, 200);
    assert_eq!(
        api.insert("primary", timed("theirs001", "2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z")).await.status,
        200
    );
    let r = api.list("primary", &[("privateExtendedProperty", "calsync=1")]).await;
    assert_eq!(ids(r.body["items"].as_array().expect("items")), ["ours00001"]);
    let r =
        api.list("primary", &[("privateExtendedProperty", "calsync=1"), ("privateExtendedProperty", "task=b")]).await;
    assert!(r.body["items"].as_array().expect("items").is_empty(), "repeated filters are ANDed");

    let cl = api.call("GET", "/users/me/calendarList", &[], None, None).await;
    assert_eq!(cl.status, 200);
    let items = cl.body["items"].as_array().expect("items");
    let primary: Vec<_> = items.iter().filter(|c| c["primary"] == true).collect();
    assert_eq!(primary.len(), 1);
    assert_eq!(primary[0]["id"], ACCOUNT);
    assert!(items.iter().any(|c| c["accessRole"] == "reader" && c["id"] == READER_CALENDAR));
    assert!(items.iter().any(|c| c["accessRole"] == "writer"));
    let reader = api.list(READER_CALENDAR, &[]).await;
    assert_eq!(reader.status, 200, "an encoded calendar id: {}", reader.body);
}

#[tokio::test]
async fn auth_with_static_tokens_and_scopes() {
    let (fake, api) = start();
    let anonymous = Api::new(&fake, "wrong-token");
    let r = anonymous.list("primary", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.body["error"]["errors"][0],
        json!({"domain": "global", "reason": "authError",
        "message": "Invalid Credentials", "locationType": "header", "location": "Authorization"})
    );
    fake.accept_token("list-only", &["calendar.calendarlist.readonly"]);
    let list_only = Api::new(&fake, "list-only");
    let r = list_only.list("primary", &[]).await;
    assert_eq!((r.status, r.reason()), (403, "insufficientPermissions"));
    assert_eq!(list_only.call("GET", "/users/me/calendarList", &[], None, None).await.status, 200);
    fake.accept_token("events-only", &["calendar.events"]);
    let r = Api::new(&fake, "events-only").call("GET", "/users/me/calendarList", &[], None, None).await;
    assert_eq!((r.status, r.reason()), (403, "insufficientPermissions"));
    assert_eq!(api.list("primary", &[]).await.status, 200);
}

#[tokio::test]
async fn rate_limit_and_backend_switches() {
    let (fake, api) = start();
    fake.fail_next(1, Failure::RateLimit429, Some(7));
    fake.fail_next(1, Failure::RateLimit403, None);
    fake.fail_next(1, Failure::UserRateLimit403, None);
    fake.fail_next(2, Failure::Backend503, None);
    let r = api.list("primary", &[]).await;
    assert_eq!((r.status, r.reason()), (429, "rateLimitExceeded"));
    assert_eq!(r.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("7"));
    assert_eq!(r.body["error"]["errors"][0]["domain"], "usageLimits");
    let r = api.list("primary", &[]).await;
    assert_eq!((r.status, r.reason()), (403, "rateLimitExceeded"));
    assert!(r.headers.get("retry-after").is_none());
    let r = api.list("primary", &[]).await;
    assert_eq!((r.status, r.reason()), (403, "userRateLimitExceeded"));
    for _ in 0..2 {
        let r = api.list("primary", &[]).await;
        assert_eq!((r.status, r.reason()), (503, "backendError"));
    }
    assert_eq!(api.list("primary", &[]).await.status, 200);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 403, 403, 503, 503, 200]);
}

#[tokio::test]
async fn bearer_tokens_from_the_real_oauth_server() {
    let oidc = OidcServer::start(OidcOptions { access_token_ttl_secs: 2, ..OidcOptions::default() });
    let client = oidc.client().clone();
    let fake =
        FakeGoogle::start(FakeGoogleOptions::introspection(&oidc.introspection_url(), &client.id, &client.secret));
    let google = oidc.issue_tokens(GOOGLE_SCOPES, "alice").await;
    let api = Api::new(&fake, google.access_token());
    assert_eq!(api.list("primary", &[]).await.status, 200);
    assert_eq!(api.call("GET", "/users/me/calendarList", &[], None, None).await.status, 200);

    let outlook = oidc.issue_tokens(OUTLOOK_SCOPES, "alice").await;
    let r = Api::new(&fake, outlook.access_token()).list("primary", &[]).await;
    assert_eq!((r.status, r.reason()), (403, "insufficientPermissions"), "a token without calendar.events");

    tokio::time::sleep(Duration::from_millis(2600)).await;
    let r = api.list("primary", &[]).await;
    assert_eq!((r.status, r.reason()), (401, "authError"), "an expired access token: {}", r.body);
    assert!(r.headers.get("www-authenticate").is_some());
    // Refreshing gives a token the API accepts again; revoking the grant makes it 401.
    let client = oidc.client().clone();
    let fresh = oidc
        .token_request(&client, &[("grant_type", "refresh_token"), ("refresh_token", google.refresh_token())])
        .await;
    let api = Api::new(&fake, fresh.access_token());
    assert_eq!(api.list("primary", &[]).await.status, 200);
    assert_eq!(oidc.revoke(&client, google.refresh_token(), None).await, 200);
    assert_eq!(api.list("primary", &[]).await.status, 401);
}
