//! Busy time of one user's connections, read the same way by the engine (placing
//! `spec.schedule` tasks) and the REST API (`POST /suggest-times`): which calendars of a
//! connection count, and a short-lived cache of each connection's answer.
//!
//! The cache: entries live `BUSY_TTL` (60 s), long enough that a user trying a few durations in
//! a row, or a dozen auto-placed tasks re-evaluated together, cost one provider round, short
//! enough that a meeting booked elsewhere shows up within a minute where change detection does
//! not run. The key holds the connection's generation and the sum of its calendars'
//! `status.push.calendars[].changeCount`, so a change live sync has seen is a miss at once; the
//! engine also drops a connection's entries itself when its change sync finds a change
//! (`invalidate`), before the new count is even stored. Only complete answers are stored.
//!
//! Owns: `busy_calendars`, `BusyCache`, `read`. Must not touch: scheduling decisions
//! (`scheduling`, pure) or how a caller reports a failure (the API names it, the engine waits).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono_tz::Tz;
use kube::ResourceExt;

use crate::providers::busy::BusyQuery;
use crate::providers::{Provider, ProviderError, Window};
use crate::resources::CalendarConnection;

/// How long a connection's busy time is reused.
pub const BUSY_TTL: Duration = Duration::from_secs(60);
/// Entries kept at most (expired ones are dropped first).
const MAX_ENTRIES: usize = 10_000;
/// Read past the window's end so the next question (whose window starts a little later) still
/// finds this answer in the cache.
const READ_AHEAD: chrono::Duration = chrono::Duration::hours(1);

/// The calendars a connection's tasks go to: the chosen (or default) calendar and every
/// per-category calendar.
pub fn task_calendars(conn: &CalendarConnection) -> Vec<String> {
    let mut out = BTreeSet::new();
    if let Some(c) = conn
        .spec
        .chosen_calendar()
        .cloned()
        .or_else(|| conn.status.as_ref().and_then(|s| s.default_calendar_id.clone()))
    {
        out.insert(c);
    }
    out.extend(conn.spec.category_calendars.values().cloned());
    out.into_iter().collect()
}

/// The calendars whose busy time counts: where the connection's tasks go (default, explicit,
/// per category) and the account's primary calendar. Other subscribed calendars (holidays,
/// colleagues') are left out: they are not the user's commitments.
pub fn busy_calendars(conn: &CalendarConnection) -> Vec<String> {
    let mut out: BTreeSet<String> = task_calendars(conn).into_iter().collect();
    // `primary` already names it on Google and Outlook: reading its id too would read it twice.
    if let Some(st) = conn.status.as_ref().filter(|_| !out.contains("primary")) {
        out.extend(st.calendars.iter().filter(|c| c.primary).map(|c| c.id.clone()));
    }
    out.into_iter().collect()
}

/// Identifies what a cached answer was computed from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BusyKey {
    /// `namespace/name` of the connection.
    pub connection: String,
    pub generation: i64,
    pub change_count: u64,
    /// Calendars read and the zone all-day events were placed in.
    pub calendars: Vec<String>,
    pub zone: String,
}

impl BusyKey {
    pub fn of(namespace: &str, conn: &CalendarConnection, calendars: &[String], zone: Tz) -> BusyKey {
        let change_count = conn
            .status
            .as_ref()
            .and_then(|s| s.push.as_ref())
            .map_or(0, |p| p.calendars.iter().map(|c| c.change_count).sum());
        BusyKey {
            connection: format!("{namespace}/{}", conn.name_any()),
            generation: conn.metadata.generation.unwrap_or(0),
            change_count,
            calendars: calendars.to_vec(),
            zone: zone.name().to_string(),
        }
    }
}

/// When it was read, the window it covers, and the busy spans in it.
type Entry = (Instant, Window, Vec<Window>);

#[derive(Default)]
pub struct BusyCache {
    entries: Mutex<HashMap<BusyKey, Entry>>,
}

impl BusyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BusyKey, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Busy spans for `window` when a fresh entry covers it.
    pub fn get(&self, key: &BusyKey, window: &Window) -> Option<Vec<Window>> {
        let map = self.lock();
        let (at, covered, spans) = map.get(key)?;
        (at.elapsed() < BUSY_TTL && covered.from <= window.from && window.to <= covered.to)
            .then(|| spans.iter().filter(|s| s.from < window.to && s.to > window.from).copied().collect())
    }

    pub fn put(&self, key: BusyKey, covered: Window, spans: Vec<Window>) {
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (at, _, _)| at.elapsed() < BUSY_TTL);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(key, (Instant::now(), covered, spans));
    }

    /// Forget every answer of the connection `namespace/name` (its calendars changed).
    pub fn invalidate(&self, connection: &str) {
        self.lock().retain(|k, _| k.connection != connection);
    }
}

/// Why one connection's busy time is unknown.
#[derive(Debug)]
pub enum ReadError<E> {
    /// No client for it (the caller's own error: credentials unreadable, ...).
    Connect(E),
    /// The provider could not answer.
    Provider(ProviderError),
}

/// The busy spans of `conn` in `window` (all-day events in `zone`), from `cache` when a fresh
/// answer covers the window, else from the provider `connect` makes (called only on a miss).
pub async fn read<E, F, Fut>(
    cache: &BusyCache,
    namespace: &str,
    conn: &CalendarConnection,
    window: Window,
    zone: Tz,
    connect: F,
) -> Result<Vec<Window>, ReadError<E>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Arc<dyn Provider>, E>>,
{
    let calendars = busy_calendars(conn);
    if calendars.is_empty() {
        return Ok(Vec::new());
    }
    let key = BusyKey::of(namespace, conn, &calendars, zone);
    if let Some(hit) = cache.get(&key, &window) {
        return Ok(hit);
    }
    let provider = connect().await.map_err(ReadError::Connect)?;
    let covered = Window { from: window.from, to: window.to + READ_AHEAD };
    let account = conn.status.as_ref().and_then(|s| s.account_email.clone());
    let query = BusyQuery { calendars, window: covered, zone, account };
    let spans = provider.busy(&query).await.map_err(ReadError::Provider)?;
    cache.put(key, covered, spans.clone());
    Ok(spans.into_iter().filter(|s| s.from < window.to && s.to > window.from).collect())
}
