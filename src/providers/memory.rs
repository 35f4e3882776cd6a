//! An in-memory calendar service: a `Provider` + `Connector` test double that records every call
//! and injects failures, so the engine and the provider contract suite run without I/O.
//!
//! Owns: its own event map and, once `enable_push` is called, its watches. It follows the same
//! rules real providers must (idempotent create by key, etags, `If-Match`, gone-is-success
//! delete, cursors that can be rejected, stopping an unknown watch is success).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::{
    AccountInfo, Connector, Created, EventData, EventPage, Provider, ProviderError, PushSupport, RemoteEvent, Target,
    Watch, WatchRequest, Window,
};
use crate::credentials::Credentials;
use crate::providers::event::EventTime;
use crate::resources::CalendarInfo;

// Calendar creation (`calendarId: auto`) lives apart to keep this file short.
#[path = "memory_dedicated.rs"]
mod dedicated;
// What a test does to the calendars behind calsync's back.
#[path = "memory_external.rs"]
mod external;

/// Which provider operation a call or an injected fault concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Account,
    Create,
    Update,
    Delete,
    Get,
    FindByKey,
    List,
    Watch,
    StopWatch,
    /// Listing the calendars carrying calsync's own-calendar marker.
    ListDedicated,
    CreateCalendar,
    DeleteCalendar,
}

/// One recorded call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub op: Op,
    pub calendar: String,
    pub id: String,
}

#[derive(Default)]
struct State {
    /// calendar id → event id → event.
    events: BTreeMap<String, BTreeMap<String, RemoteEvent>>,
    calendars: Vec<CalendarInfo>,
    /// username/refresh token → secret that is accepted.
    accounts: BTreeMap<String, String>,
    revoked: bool,
    version: u64,
    /// (sequence, calendar, id) of every change, for cursors.
    changes: Vec<(u64, String, String)>,
    /// Cursors older than this are refused (the server forgot its change log).
    oldest_cursor: u64,
    calls: Vec<Call>,
    faults: VecDeque<(Op, ProviderError)>,
    /// Off by default, so callers that never asked for push see a poll-only provider.
    push: bool,
    watches: Vec<MemoryWatch>,
    /// Calendars made through the API: id → description (where the marker lives).
    descriptions: BTreeMap<String, String>,
    /// Calendars made so far (their ids count up, so id order is creation order).
    made_calendars: u64,
    /// The account may not create calendars (a read-only grant).
    calendars_read_only: bool,
    /// (calendar, id) of events written free (`EventData::transparent`): not busy.
    transparent: std::collections::BTreeSet<(String, String)>,
}

/// A watch the double holds, as the provider would (Google channel).
#[derive(Clone)]
pub struct MemoryWatch {
    pub id: String,
    pub provider_id: String,
    pub calendar: String,
    pub address: String,
    /// What a notification of this watch must carry (Google `X-Goog-Channel-Token`).
    pub secret: SecretString,
    pub expiration: DateTime<Utc>,
}

impl std::fmt::Debug for MemoryWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryWatch")
            .field("id", &self.id)
            .field("provider_id", &self.provider_id)
            .field("calendar", &self.calendar)
            .field("address", &self.address)
            .field("secret", &"[redacted]")
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// The shared in-memory calendar service. Cloning shares the state.
#[derive(Clone, Default)]
pub struct MemoryCalendar {
    state: Arc<Mutex<State>>,
}

fn account_key(c: &Credentials) -> (String, String) {
    match c {
        Credentials::Basic { username, password } => (username.clone(), password.expose_secret().to_string()),
        Credentials::OAuth { refresh_token, .. } => ("oauth".to_string(), refresh_token.expose_secret().to_string()),
    }
}

impl MemoryCalendar {
    /// A service with calendars `Calendar` (primary, writable) and `Holidays` (read-only), that
    /// accepts user `user` with password `secret`.
    pub fn new() -> Self {
        let cal = MemoryCalendar::default();
        {
            let mut s = cal.lock();
            s.calendars = vec![
                CalendarInfo { id: "calendar".into(), name: "Calendar".into(), primary: true, writable: true },
                CalendarInfo { id: "holidays".into(), name: "Holidays".into(), primary: false, writable: false },
            ];
            s.accounts.insert("user".into(), "secret".into());
        }
        cal
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock can only come from a bug in this test double; keep going
        // with the data as it is rather than poisoning every later test assertion.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offer another calendar (to every account: the service is shared).
    pub fn add_calendar(&self, id: &str, writable: bool) {
        let info = CalendarInfo { id: id.into(), name: id.into(), primary: false, writable };
        self.lock().calendars.push(info);
    }

    /// Accept another account.
    pub fn add_account(&self, user: &str, secret: &str) {
        self.lock().accounts.insert(user.into(), secret.into());
    }

    /// Make every call fail as if the user revoked access.
    pub fn revoke(&self, revoked: bool) {
        self.lock().revoked = revoked;
    }

    /// Fail the next call of `op` with `err`.
    pub fn inject(&self, op: Op, err: ProviderError) {
        self.lock().faults.push_back((op, err));
    }

    /// Every call made so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Number of calls of `op` so far.
    pub fn count(&self, op: Op) -> usize {
        self.lock().calls.iter().filter(|c| c.op == op).count()
    }

    /// Forget recorded calls.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Offer push notifications (`PushSupport::Recreate`, like Google) from now on.
    pub fn enable_push(&self) {
        self.lock().push = true;
    }

    /// The watches held now.
    pub fn watches(&self) -> Vec<MemoryWatch> {
        self.lock().watches.clone()
    }
}

impl State {
    fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    fn enter(&mut self, op: Op, calendar: &str, id: &str) -> Result<(), ProviderError> {
        self.calls.push(Call { op, calendar: calendar.to_string(), id: id.to_string() });
        if let Some(pos) = self.faults.iter().position(|(o, _)| *o == op)
            && let Some((_, err)) = self.faults.remove(pos)
        {
            return Err(err);
        }
        if self.revoked {
            return Err(ProviderError::Revoked { message: "access was revoked by the user".into() });
        }
        Ok(())
    }

    fn writable(&self, calendar: &str) -> Result<(), ProviderError> {
        match self.calendars.iter().find(|c| c.id == calendar) {
            Some(c) if c.writable => Ok(()),
            Some(_) => Err(ProviderError::Invalid { message: format!("calendar {calendar:?} is read-only") }),
            None => Err(ProviderError::NotFound { message: format!("calendar {calendar:?} does not exist") }),
        }
    }

    fn materialize(&mut self, calendar: &str, id: &str, data: &EventData, cancelled: bool) -> RemoteEvent {
        let version = self.next_version();
        // An update keeps the creation time, as real calendars do.
        let created = self.events.get(calendar).and_then(|evs| evs.get(id)).and_then(|e| e.created);
        let ev = RemoteEvent {
            cancelled,
            created: created.or_else(|| Some(chrono::Utc::now())),
            ..RemoteEvent::stored(id, format!("\"{version}\""), format!("memory://{calendar}/{id}"), data)
        };
        self.changes.push((version, calendar.to_string(), id.to_string()));
        self.events.entry(calendar.to_string()).or_default().insert(id.to_string(), ev.clone());
        let key = (calendar.to_string(), id.to_string());
        if data.transparent {
            self.transparent.insert(key);
        } else {
            self.transparent.remove(&key);
        }
        ev
    }

    fn check_etag(current: &RemoteEvent, etag: Option<&str>) -> Result<(), ProviderError> {
        match etag {
            Some(e) if current.etag.as_deref() != Some(e) => Err(ProviderError::Conflict {
                message: format!("event {} has version {:?}, not {e}", current.id, current.etag),
            }),
            _ => Ok(()),
        }
    }
}

/// A client of the in-memory service for one account.
pub struct MemoryProvider {
    service: MemoryCalendar,
}

#[async_trait]
impl Provider for MemoryProvider {
    async fn account(&self) -> Result<AccountInfo, ProviderError> {
        let mut s = self.service.lock();
        s.enter(Op::Account, "", "")?;
        Ok(AccountInfo { email: Some("user@example.com".into()), calendars: s.calendars.clone() })
    }

    async fn create(&self, calendar: &str, key: &str, event: &EventData) -> Result<Created, ProviderError> {
        let mut s = self.service.lock();
        s.enter(Op::Create, calendar, key)?;
        s.writable(calendar)?;
        if let Some(existing) = s.events.get(calendar).and_then(|m| m.get(key)) {
            return Ok(Created::Existing(existing.clone()));
        }
        Ok(Created::New(s.materialize(calendar, key, event, false)))
    }

    async fn update(
        &self,
        calendar: &str,
        id: &str,
        etag: Option<&str>,
        event: &EventData,
    ) -> Result<RemoteEvent, ProviderError> {
        let mut s = self.service.lock();
        s.enter(Op::Update, calendar, id)?;
        let current = s
            .events
            .get(calendar)
            .and_then(|m| m.get(id))
            .cloned()
            .ok_or_else(|| ProviderError::NotFound { message: format!("event {id} does not exist") })?;
        State::check_etag(&current, etag)?;
        Ok(s.materialize(calendar, id, event, false))
    }

    async fn delete(&self, calendar: &str, id: &str, etag: Option<&str>) -> Result<(), ProviderError> {
        let mut s = self.service.lock();
        s.enter(Op::Delete, calendar, id)?;
        let Some(current) = s.events.get(calendar).and_then(|m| m.get(id)).cloned() else { return Ok(()) };
        State::check_etag(&current, etag)?;
        let version = s.next_version();
        if let Some(m) = s.events.get_mut(calendar) {
            m.remove(id);
        }
        s.changes.push((version, calendar.to_string(), id.to_string()));
        Ok(())
    }

    async fn get(&self, calendar: &str, id: &str) -> Result<Option<RemoteEvent>, ProviderError> {
        let mut s = self.service.lock();
        s.enter(Op::Get, calendar, id)?;
        Ok(s.events.get(calendar).and_then(|m| m.get(id)).cloned())
    }

    async fn find_by_key(&self, calendar: &str, key: &str) -> Result<Option<RemoteEvent>, ProviderError> {
        let mut s = self.service.lock();
        s.enter(Op::FindByKey, calendar, key)?;
        Ok(s.events.get(calendar).and_then(|m| m.get(key)).cloned())
    }

    async fn list(&self, calendar: &str, window: Window, cursor: Option<&str>) -> Result<EventPage, ProviderError> {
        let mut s = self.service.lock();
        s.enter(Op::List, calendar, "")?;
        let overlaps = |e: &RemoteEvent| {
            // A series is listed when one of its occurrences overlaps, as servers' time-range
            // filters do.
            if !e.recurrence.is_empty() {
                return super::recurrence::occurs_in(e, &window);
            }
            let bound = |t: &EventTime| match t {
                EventTime::Date(d) => d.and_hms_opt(0, 0, 0).map(|n| n.and_utc()),
                EventTime::DateTime { utc, .. } => Some(*utc),
            };
            match (bound(&e.start), bound(&e.end)) {
                (Some(start), Some(end)) => start < window.to && end > window.from,
                _ => false,
            }
        };
        let all: Vec<RemoteEvent> = s.events.get(calendar).map(|m| m.values().cloned().collect()).unwrap_or_default();
        let since = cursor.map(|c| c.parse::<u64>().ok().filter(|v| *v <= s.version && *v >= s.oldest_cursor));
        let mut page = EventPage { next_cursor: Some(s.version.to_string()), ..EventPage::default() };
        match since {
            Some(Some(since)) => {
                let changed: Vec<&String> =
                    s.changes.iter().filter(|(v, c, _)| *v > since && c == calendar).map(|(_, _, id)| id).collect();
                for id in changed {
                    match all.iter().find(|e| &e.id == id) {
                        Some(e) if overlaps(e) => {
                            if !page.events.iter().any(|p| p.id == e.id) {
                                page.events.push(e.clone());
                            }
                        }
                        Some(_) => {}
                        None => {
                            if !page.removed.contains(id) {
                                page.removed.push(id.clone());
                            }
                        }
                    }
                }
            }
            other => {
                page.full_resync = matches!(other, Some(None));
                page.events = all.into_iter().filter(|e| overlaps(e)).collect();
            }
        }
        Ok(page)
    }

    /// As the listing default, except that events written free (transparent) are not busy, as
    /// on the real providers.
    async fn busy(&self, q: &super::busy::BusyQuery) -> Result<Vec<Window>, ProviderError> {
        let mut out = Vec::new();
        for calendar in &q.calendars {
            let page = self.list_window(calendar, q.window).await?;
            let transparent = self.service.lock().transparent.clone();
            for mut ev in page.events.into_iter().filter(|e| !e.cancelled) {
                if transparent.contains(&(calendar.clone(), ev.id.clone())) {
                    continue;
                }
                if !ev.recurrence.is_empty() {
                    ev.exceptions =
                        super::recurrence::merge_exceptions(&ev.start, &ev.recurrence, ev.exceptions.clone());
                }
                out.extend(super::busy::event_spans(&ev, &q.window, q.zone));
            }
        }
        Ok(out)
    }

    async fn dedicated_calendars(&self) -> Result<Vec<super::DedicatedCalendar>, ProviderError> {
        self.service.dedicated_calendars().await
    }

    async fn create_dedicated_calendar(&self, description: &str) -> Result<super::MadeCalendar, ProviderError> {
        self.service.create_calendar(description).await
    }

    async fn delete_dedicated_calendar(&self, id: &str) -> Result<(), ProviderError> {
        self.service.delete_calendar(id)
    }

    fn push_support(&self) -> PushSupport {
        if self.service.lock().push { PushSupport::Recreate } else { PushSupport::None }
    }

    async fn watch(&self, calendar: &str, request: &WatchRequest) -> Result<Watch, ProviderError> {
        let mut s = self.service.lock();
        s.enter(Op::Watch, calendar, &request.id)?;
        if !s.push {
            return Err(ProviderError::Invalid { message: "this calendar service has no push notifications".into() });
        }
        let ttl = chrono::Duration::from_std(request.ttl).unwrap_or(chrono::Duration::days(7));
        let watch = MemoryWatch {
            id: request.id.clone(),
            provider_id: format!("mem-{calendar}"),
            calendar: calendar.to_string(),
            address: request.address.clone(),
            secret: request.secret.clone(),
            expiration: Utc::now() + ttl,
        };
        let granted =
            Watch { id: watch.id.clone(), provider_id: watch.provider_id.clone(), expiration: watch.expiration };
        s.watches.retain(|w| w.id != request.id);
        s.watches.push(watch);
        Ok(granted)
    }

    async fn stop_watch(&self, calendar: &str, watch: &Watch) -> Result<(), ProviderError> {
        let mut s = self.service.lock();
        s.enter(Op::StopWatch, calendar, &watch.id)?;
        s.watches.retain(|w| w.id != watch.id);
        Ok(())
    }
}

/// Connects to the in-memory service; credentials must match an account it accepts.
#[derive(Clone)]
pub struct MemoryConnector {
    pub service: MemoryCalendar,
}

#[async_trait]
impl Connector for MemoryConnector {
    async fn connect(&self, _target: &Target, credentials: &Credentials) -> Result<Arc<dyn Provider>, ProviderError> {
        let (user, secret) = account_key(credentials);
        let accepted = self.service.lock().accounts.get(&user).is_some_and(|s| *s == secret);
        if !accepted {
            return Err(ProviderError::Revoked {
                message: format!("the calendar service rejected the credentials of {user:?}"),
            });
        }
        Ok(Arc::new(MemoryProvider { service: self.service.clone() }))
    }
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
