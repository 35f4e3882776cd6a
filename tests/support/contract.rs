//! The shared provider contract: one generic test body every provider runs (in-memory here,
//! Radicale for CalDAV, the strict fakes for Google and Graph), so they all behave the same.
//!
//! A provider under test is reached through a `ContractPeer`, which also gives the test a way
//! to look at and change the calendar *without* our client (a raw request), so a passing test
//! proves the event really is in the calendar.

#![allow(dead_code)]

use std::sync::Arc;

use async_trait::async_trait;
use calsync::providers::dedicated::ensure;
use calsync::providers::recurrence::with_exceptions;
use calsync::providers::{
    Created, EventData, EventTime, Exception, Marker, Provider, ProviderError, RemoteEvent, Window, event_key,
};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};

/// What a raw read of the peer shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEvent {
    pub title: String,
    /// The event carries calsync's ownership marker.
    pub has_marker: bool,
}

/// A provider plus raw access to the calendar behind it.
#[async_trait]
pub trait ContractPeer: Send + Sync {
    /// A client connected with valid credentials.
    async fn provider(&self) -> Arc<dyn Provider>;
    /// Try to connect (and use) a client with a wrong password / token.
    async fn wrong_credentials(&self) -> Result<(), ProviderError>;
    /// Read an event straight from the peer, bypassing calsync's client.
    async fn raw_get(&self, calendar: &str, id: &str) -> Option<RawEvent>;
    /// Create an event as the user's calendar app would (no marker); returns its id.
    async fn raw_insert_external(
        &self,
        calendar: &str,
        title: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> String;
    /// Change an event's title as the user's calendar app would (gives it a new version).
    async fn raw_edit_title(&self, calendar: &str, id: &str, title: &str);
    /// Ids of the calendars that carry calsync's own-calendar marker, read straight from the
    /// peer (Google: the description; Graph: the name; CalDAV: the fixed collection path).
    async fn raw_own_calendars(&self) -> Vec<String>;
}

fn at(h: u32) -> DateTime<Utc> {
    // Far enough ahead that windows around "now" never include leftovers of other runs.
    Utc.with_ymd_and_hms(2031, 5, 14, h, 0, 0).single().unwrap_or_else(Utc::now)
}

fn timed(h: u32, zone: &str) -> EventTime {
    let tz: chrono_tz::Tz = zone.parse().unwrap_or(chrono_tz::UTC);
    let utc = at(h);
    EventTime::DateTime { utc, local: utc.with_timezone(&tz).naive_local(), zone: Some(zone.to_string()) }
}

/// A desired event for the TaskSync `uid`.
pub fn event(uid: &str, title: &str) -> EventData {
    let mut e = EventData {
        title: title.to_string(),
        description: Some("from the contract suite".into()),
        category: Some("Homework".into()),
        start: timed(14, "America/New_York"),
        end: timed(15, "America/New_York"),
        transparent: false,
        recurrence: vec![],
        exceptions: Vec::new(),
        marker: Marker {
            owner: "calsync".into(),
            uid: uid.into(),
            task_id: format!("task-{uid}"),
            hash: String::new(),
        },
    };
    e.marker.hash = e.content_hash("x");
    e
}

fn window() -> Window {
    Window { from: at(0), to: at(0) + Duration::days(2) }
}

async fn calendar(p: &dyn Provider) -> String {
    let info = p.account().await.expect("account() with valid credentials");
    assert!(!info.calendars.is_empty(), "the account lists no calendars");
    info.default_calendar().expect("a writable default calendar").id.clone()
}

fn created(c: Created) -> (bool, RemoteEvent) {
    match c {
        Created::New(e) => (true, e),
        Created::Existing(e) => (false, e),
    }
}

/// Run every contract check. Each uses its own uid, so a peer may be shared.
pub async fn run_all(peer: &dyn ContractPeer, run: &str) {
    create_is_stored_and_idempotent(peer, run).await;
    update_needs_current_version(peer, run).await;
    calendar_edit_is_a_conflict(peer, run).await;
    delete_is_idempotent(peer, run).await;
    window_listing_marks_ours(peer, run).await;
    incremental_listing_and_bad_cursor(peer, run).await;
    all_day_and_zones_round_trip(peer, run).await;
    series_lists_once_with_its_exceptions(peer, run).await;
    dedicated_calendar_is_made_once(peer, run).await;
    wrong_credentials_are_an_auth_error(peer).await;
}

/// `calendarId: auto` at the provider: made once, found again when its id was never recorded
/// (a crash between create and status write), one calendar when three fresh clients race, and
/// events can be written to it.
pub async fn dedicated_calendar_is_made_once(peer: &dyn ContractPeer, run: &str) {
    let p = peer.provider().await;
    let before = peer.raw_own_calendars().await;
    assert!(before.len() <= 1, "at most one calendar of ours to begin with: {before:?}");
    let listed = p.account().await.expect("account").calendars;
    let first = ensure(p.as_ref(), None, &listed).await.expect("find or create our calendar");
    assert_eq!(first.created, before.is_empty(), "created only when none existed");
    assert_eq!(peer.raw_own_calendars().await, vec![first.calendar.id.clone()], "really in the account, once");
    // The id was never recorded: found, not made again.
    let again = ensure(p.as_ref(), None, &listed).await.expect("find again");
    assert!(!again.created, "a repeat must adopt, not create");
    assert_eq!(again.calendar.id, first.calendar.id);
    let listed = p.account().await.expect("account").calendars;
    let info = listed.iter().find(|c| c.id == first.calendar.id).expect("the account lists it");
    assert!(info.writable, "our calendar is writable: {info:?}");
    let kept = ensure(p.as_ref(), Some(&first.calendar.id), &listed).await.expect("recorded and listed");
    assert_eq!((kept.calendar.id.as_str(), kept.created), (first.calendar.id.as_str(), false));

    // Three replicas with no recorded id race for it.
    p.delete_dedicated_calendar(&first.calendar.id).await.expect("delete ours");
    p.delete_dedicated_calendar(&first.calendar.id).await.expect("deleting it again is success");
    assert!(peer.raw_own_calendars().await.is_empty());
    let (a, b, c) = (peer.provider().await, peer.provider().await, peer.provider().await);
    let (ra, rb, rc) =
        tokio::join!(ensure(a.as_ref(), None, &[]), ensure(b.as_ref(), None, &[]), ensure(c.as_ref(), None, &[]));
    let ids: Vec<String> =
        [ra, rb, rc].into_iter().map(|r| r.expect("each racer ends with a calendar").calendar.id).collect();
    let own = peer.raw_own_calendars().await;
    assert_eq!(own.len(), 1, "exactly one calendar after the race: {own:?}");
    assert!(ids.iter().all(|id| *id == own[0]), "every racer keeps the same one: {ids:?} vs {own:?}");

    let uid = format!("{run}-own-calendar");
    let (new, ev) =
        created(p.create(&own[0], &event_key(&uid), &event(&uid, "in our own calendar")).await.expect("create"));
    assert!(new);
    let raw = peer.raw_get(&own[0], &ev.id).await.expect("the event is in our calendar");
    assert_eq!(raw, RawEvent { title: "in our own calendar".into(), has_marker: true });
}

pub async fn create_is_stored_and_idempotent(peer: &dyn ContractPeer, run: &str) {
    let p = peer.provider().await;
    let cal = calendar(p.as_ref()).await;
    let uid = format!("{run}-create");
    let key = event_key(&uid);
    let (new, ev) = created(p.create(&cal, &key, &event(&uid, "Complete assignment")).await.expect("create"));
    assert!(new, "first create must make a new event");
    assert!(ev.etag.is_some(), "create must return the event's version");
    assert!(ev.link.is_some(), "create must return a link");
    let raw = peer.raw_get(&cal, &ev.id).await.expect("the event must really be in the calendar");
    assert_eq!(raw, RawEvent { title: "Complete assignment".into(), has_marker: true });
    // A crash between create and recording it: the retry finds the first event.
    let (new2, ev2) = created(p.create(&cal, &key, &event(&uid, "Complete assignment")).await.expect("repeat create"));
    assert!(!new2, "repeating a create must adopt, not duplicate");
    assert_eq!(ev2.id, ev.id);
    let ours: Vec<_> = p
        .list(&cal, window(), None)
        .await
        .expect("list")
        .events
        .into_iter()
        .filter(|e| e.marker.as_ref().is_some_and(|m| m.uid == uid))
        .collect();
    assert_eq!(ours.len(), 1, "exactly one event for the task");
    let found = p.find_by_key(&cal, &key).await.expect("find_by_key").expect("found by key");
    assert_eq!(found.id, ev.id);
    let got = p.get(&cal, &ev.id).await.expect("get").expect("get finds it");
    let m = got.marker.expect("our marker survives the round trip");
    assert_eq!((m.uid.as_str(), m.owner.as_str()), (uid.as_str(), "calsync"));
    assert_eq!(got.category.as_deref(), Some("Homework"));
}

pub async fn update_needs_current_version(peer: &dyn ContractPeer, run: &str) {
    let p = peer.provider().await;
    let cal = calendar(p.as_ref()).await;
    let uid = format!("{run}-update");
    let (_, ev) = created(p.create(&cal, &event_key(&uid), &event(&uid, "v1")).await.expect("create"));
    let v2 = p.update(&cal, &ev.id, ev.etag.as_deref(), &event(&uid, "v2")).await.expect("update with current etag");
    assert_ne!(v2.etag, ev.etag, "an update must give a new version");
    assert_eq!(peer.raw_get(&cal, &ev.id).await.map(|r| r.title).as_deref(), Some("v2"));
    let stale = p.update(&cal, &ev.id, ev.etag.as_deref(), &event(&uid, "v3")).await;
    assert!(matches!(stale, Err(ProviderError::Conflict { .. })), "stale etag must be a Conflict, got {stale:?}");
    assert_eq!(
        peer.raw_get(&cal, &ev.id).await.map(|r| r.title).as_deref(),
        Some("v2"),
        "a conflicting update must not write"
    );
    let gone = p.update(&cal, "no-such-event-1234", None, &event(&uid, "x")).await;
    assert!(
        matches!(gone, Err(ProviderError::NotFound { .. })),
        "update of a missing event must be NotFound, got {gone:?}"
    );
}

pub async fn calendar_edit_is_a_conflict(peer: &dyn ContractPeer, run: &str) {
    let p = peer.provider().await;
    let cal = calendar(p.as_ref()).await;
    let uid = format!("{run}-edit");
    let (_, ev) = created(p.create(&cal, &event_key(&uid), &event(&uid, "ours")).await.expect("create"));
    peer.raw_edit_title(&cal, &ev.id, "edited in the calendar app").await;
    let res = p.update(&cal, &ev.id, ev.etag.as_deref(), &event(&uid, "overwrite")).await;
    assert!(
        matches!(res, Err(ProviderError::Conflict { .. })),
        "an edit in the calendar app must surface as Conflict, got {res:?}"
    );
    assert_eq!(peer.raw_get(&cal, &ev.id).await.map(|r| r.title).as_deref(), Some("edited in the calendar app"));
}

pub async fn delete_is_idempotent(peer: &dyn ContractPeer, run: &str) {
    let p = peer.provider().await;
    let cal = calendar(p.as_ref()).await;
    let uid = format!("{run}-delete");
    let key = event_key(&uid);
    let (_, ev) = created(p.create(&cal, &key, &event(&uid, "to delete")).await.expect("create"));
    p.delete(&cal, &ev.id, ev.etag.as_deref()).await.expect("delete");
    assert_eq!(peer.raw_get(&cal, &ev.id).await, None, "the event must be gone from the calendar");
    p.delete(&cal, &ev.id, None).await.expect("deleting a deleted event is success");
    assert!(p.get(&cal, &ev.id).await.expect("get").is_none_or(|e| e.cancelled));
    assert!(p.find_by_key(&cal, &key).await.expect("find_by_key").is_none_or(|e| e.cancelled));
}

pub async fn window_listing_marks_ours(peer: &dyn ContractPeer, run: &str) {
    let p = peer.provider().await;
    let cal = calendar(p.as_ref()).await;
    let uid = format!("{run}-list");
    let (_, ours) = created(p.create(&cal, &event_key(&uid), &event(&uid, "ours")).await.expect("create"));
    let ext = peer.raw_insert_external(&cal, &format!("Dentist {run}"), at(10), at(11)).await;
    let far = peer
        .raw_insert_external(&cal, &format!("Far away {run}"), at(10) + Duration::days(30), at(11) + Duration::days(30))
        .await;
    let page = p.list(&cal, window(), None).await.expect("list window");
    let by_id = |id: &str| page.events.iter().find(|e| e.id == id);
    let ext_ev = by_id(&ext).expect("an event the user made is listed");
    assert!(ext_ev.marker.is_none(), "an external event must not look like ours");
    assert_eq!(ext_ev.title, format!("Dentist {run}"));
    assert!(by_id(&ours.id).and_then(|e| e.marker.as_ref()).is_some(), "our event is listed with our marker");
    assert!(by_id(&far).is_none(), "events outside the window are not listed");
    // The listing for callers that keep no cursor lists the same events.
    let windowed = p.list_window(&cal, window()).await.expect("list_window");
    assert!(windowed.removed.is_empty() && !windowed.full_resync, "{windowed:?}");
    let sorted = |mut v: Vec<RemoteEvent>| {
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    };
    assert_eq!(sorted(windowed.events), sorted(page.events.clone()), "list_window lists what list(None) lists");
}

pub async fn incremental_listing_and_bad_cursor(peer: &dyn ContractPeer, run: &str) {
    let p = peer.provider().await;
    let cal = calendar(p.as_ref()).await;
    let first = p.list(&cal, window(), None).await.expect("full listing");
    let cursor = first.next_cursor.clone().expect("a full listing gives a cursor");
    let uid = format!("{run}-cursor");
    let (_, ev) = created(p.create(&cal, &event_key(&uid), &event(&uid, "new since cursor")).await.expect("create"));
    let delta = p.list(&cal, window(), Some(&cursor)).await.expect("incremental listing");
    assert!(!delta.full_resync);
    assert!(delta.events.iter().any(|e| e.id == ev.id), "the change since the cursor is listed");
    p.delete(&cal, &ev.id, None).await.expect("delete");
    let delta2 = p.list(&cal, window(), delta.next_cursor.as_deref()).await.expect("incremental after delete");
    assert!(delta2.removed.contains(&ev.id) || delta2.full_resync, "a deletion since the cursor is reported");
    let bogus = p.list(&cal, window(), Some("bogus-cursor-value")).await.expect("a rejected cursor is not an error");
    assert!(bogus.full_resync, "a rejected cursor gives a full listing flagged full_resync");
}

pub async fn all_day_and_zones_round_trip(peer: &dyn ContractPeer, run: &str) {
    let p = peer.provider().await;
    let cal = calendar(p.as_ref()).await;
    let uid = format!("{run}-allday");
    let mut e = event(&uid, "all day");
    let day = NaiveDate::from_ymd_opt(2031, 5, 14).unwrap_or_default();
    e.start = EventTime::Date(day);
    e.end = EventTime::Date(day + Duration::days(1));
    let (_, ev) = created(p.create(&cal, &event_key(&uid), &e).await.expect("create all-day"));
    let got = p.get(&cal, &ev.id).await.expect("get").expect("exists");
    assert_eq!(got.start, EventTime::Date(day), "an all-day event is a date, not a timed event");
    assert_eq!(got.end, EventTime::Date(day + Duration::days(1)));
    let uid = format!("{run}-zone");
    let e = event(&uid, "zoned");
    let (_, ev) = created(p.create(&cal, &event_key(&uid), &e).await.expect("create timed"));
    let got = p.get(&cal, &ev.id).await.expect("get").expect("exists");
    match (&got.start, &e.start) {
        (EventTime::DateTime { utc: a, .. }, EventTime::DateTime { utc: b, .. }) => assert_eq!(a, b, "start instant"),
        other => panic!("timed event came back as {other:?}"),
    }
    assert_eq!(got.zone.as_deref(), Some("America/New_York"), "the display zone survives");
}

pub async fn wrong_credentials_are_an_auth_error(peer: &dyn ContractPeer) {
    match peer.wrong_credentials().await {
        Err(ProviderError::Revoked { .. } | ProviderError::Unauthorized { .. }) => {}
        other => panic!("wrong credentials must be an auth error, got {other:?}"),
    }
}

/// A series of ours with a cancelled and a moved occurrence lists once (no instances) and
/// reads back with those exceptions (`Provider::series_exceptions` plus its EXDATEs).
pub async fn series_lists_once_with_its_exceptions(peer: &dyn ContractPeer, run: &str) {
    let p = peer.provider().await;
    let cal = calendar(p.as_ref()).await;
    let uid = format!("{run}-series");
    let mut e = event(&uid, "daily series");
    e.recurrence = vec!["RRULE:FREQ=DAILY;COUNT=5".into()];
    let shifted = |t: &EventTime, d: i64, h: i64| match t {
        EventTime::DateTime { utc, zone, .. } => {
            let tz: chrono_tz::Tz = zone.as_deref().unwrap_or("UTC").parse().unwrap_or(chrono_tz::UTC);
            let u = *utc + Duration::days(d) + Duration::hours(h);
            EventTime::DateTime { utc: u, local: u.with_timezone(&tz).naive_local(), zone: zone.clone() }
        }
        EventTime::Date(day) => EventTime::Date(*day + Duration::days(d)),
    };
    e.exceptions = vec![
        Exception::cancelled(shifted(&e.start, 1, 0)),
        Exception::moved(shifted(&e.start, 2, 0), shifted(&e.start, 2, 3), shifted(&e.end, 2, 3)),
    ];
    let (_, ev) = created(p.create(&cal, &event_key(&uid), &e).await.expect("create a series"));
    let w = Window { from: at(0), to: at(0) + Duration::days(7) };
    let page = p.list(&cal, w, None).await.expect("list");
    let mine: Vec<&RemoteEvent> =
        page.events.iter().filter(|x| x.marker.as_ref().is_some_and(|m| m.uid == uid)).collect();
    assert_eq!(mine.len(), 1, "the series once, not its instances: {mine:?}");
    assert_eq!(mine[0].id, ev.id);
    let read = with_exceptions(p.as_ref(), &cal, mine[0].clone(), w).await.expect("series exceptions");
    assert_eq!(read.exceptions, e.exceptions);
}
