//! Calendar providers behind one trait: the neutral event model, the ownership marker, the
//! classified error, and the connector that turns a connection + credentials into a client.
//!
//! Owns: the `Provider` and `Connector` ports the engine calls. Must not touch: resources,
//! stores or reconcile decisions; a provider only talks to its calendar service.

pub mod batch;
pub mod breaker;
pub mod busy;
pub mod caldav;
pub mod dedicated;
pub mod error;
pub mod event;
pub mod gate;
pub mod google;
pub mod http;
pub mod limiter;
pub mod memory;
pub mod outlook;
pub mod push;
pub mod recurrence;
pub mod registry;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use dedicated::{DedicatedCalendar, MadeCalendar};
pub use error::{HoldCause, ProviderError};
pub use event::{EventData, EventPage, EventTime, Exception, Marker, RemoteEvent, event_key};
pub use push::{PushSupport, Watch, WatchRequest};

use crate::credentials::Credentials;
use crate::resources::{CalendarInfo, ProviderKind};

/// What a credential check learns about the account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountInfo {
    pub email: Option<String>,
    pub calendars: Vec<CalendarInfo>,
}

impl AccountInfo {
    /// The calendar new events go to when nothing names one (DESIGN §6): the primary calendar
    /// if writable, else the first writable one in the provider's order.
    pub fn default_calendar(&self) -> Option<&CalendarInfo> {
        self.calendars.iter().find(|c| c.primary && c.writable).or_else(|| self.calendars.iter().find(|c| c.writable))
    }
}

/// Result of a create: a new event, or the one an earlier attempt with the same key made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    New(RemoteEvent),
    /// An event with this key already existed (a crash between create and status write, or a
    /// retried request): adopt it, never create a second one.
    Existing(RemoteEvent),
}

/// A time window for listing, `[from, to)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// One connected calendar account. All calls are idempotent; see DESIGN §5.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Check the credentials and list the account's calendars.
    async fn account(&self) -> Result<AccountInfo, ProviderError>;

    /// Create the event under the deterministic `key` (see `event_key`). If an event with that
    /// key exists, return it as `Created::Existing` instead of making a second one.
    async fn create(&self, calendar: &str, key: &str, event: &EventData) -> Result<Created, ProviderError>;

    /// Replace the event's content. With `etag`, only if the event still has that version
    /// (`Conflict` otherwise). `NotFound` when it is gone.
    async fn update(
        &self,
        calendar: &str,
        id: &str,
        etag: Option<&str>,
        event: &EventData,
    ) -> Result<RemoteEvent, ProviderError>;

    /// Delete the event. Already gone is success. With `etag`, only if unchanged (`Conflict`).
    async fn delete(&self, calendar: &str, id: &str, etag: Option<&str>) -> Result<(), ProviderError>;

    /// The event with this provider id (`None` when it does not exist).
    async fn get(&self, calendar: &str, id: &str) -> Result<Option<RemoteEvent>, ProviderError>;

    /// The event created under `key`, if any (how a delete finds an event whose create was never
    /// recorded).
    async fn find_by_key(&self, calendar: &str, key: &str) -> Result<Option<RemoteEvent>, ProviderError>;

    /// Events overlapping `window`. With a `cursor` from an earlier page, only changes since then
    /// (a rejected cursor gives a full listing with `full_resync`).
    async fn list(&self, calendar: &str, window: Window, cursor: Option<&str>) -> Result<EventPage, ProviderError>;

    /// Events overlapping `window`, for a caller that keeps no cursor (busy reads, an import
    /// whose app stores no cursor); `next_cursor` may be `None`. It exists because establishing
    /// a cursor can cost a request of its own: CalDAV asks for the sync token before the
    /// listing, and Radicale computes it over every item (about a third of a 1,000-event
    /// listing). Default: `list` without a cursor.
    async fn list_window(&self, calendar: &str, window: Window) -> Result<EventPage, ProviderError> {
        self.list(calendar, window, None).await
    }

    /// The moved and cancelled occurrences of the recurring `event` (as `list` returned it) in
    /// `window`, with their original starts. Default: what the listing carried already (CalDAV
    /// resources hold their RECURRENCE-ID overrides); Google and Graph read the series'
    /// instances. EXDATE cancellations are added by `recurrence::with_exceptions`.
    async fn series_exceptions(
        &self,
        calendar: &str,
        event: &RemoteEvent,
        window: Window,
    ) -> Result<Vec<event::Exception>, ProviderError> {
        let _ = (calendar, window);
        Ok(event.exceptions.clone())
    }

    /// How this provider delivers changes (see `push`). Default: no push, poll.
    fn push_support(&self) -> PushSupport {
        PushSupport::None
    }

    /// Start delivering change notifications for `calendar` to `request.address`.
    async fn watch(&self, calendar: &str, request: &WatchRequest) -> Result<Watch, ProviderError> {
        let _ = (calendar, request);
        Err(ProviderError::Invalid {
            message: "this calendar provider has no push notifications; calsync polls it".into(),
        })
    }

    /// Extend a watch in place to about `request.ttl` from now (only `PushSupport::Renew`).
    /// `NotFound` when the provider no longer has it: create a new one.
    async fn renew_watch(&self, watch: &Watch, request: &WatchRequest) -> Result<Watch, ProviderError> {
        let _ = (watch, request);
        Err(ProviderError::Invalid { message: "this calendar provider cannot renew a watch in place".into() })
    }

    /// Stop a watch. Already gone is success.
    async fn stop_watch(&self, calendar: &str, watch: &Watch) -> Result<(), ProviderError> {
        let _ = (calendar, watch);
        Ok(())
    }

    /// The account's calendars that carry calsync's own-calendar marker (see `dedicated`),
    /// normally none or one. Default: calendar creation is not supported.
    async fn dedicated_calendars(&self) -> Result<Vec<DedicatedCalendar>, ProviderError> {
        Err(dedicated::unsupported())
    }

    /// Create calsync's own calendar (`dedicated::DEDICATED_NAME`) with `description` (which
    /// holds the marker; providers that cannot store it mark the calendar by name or path).
    /// `MadeCalendar::Exists` when the provider refuses because it exists already.
    async fn create_dedicated_calendar(&self, description: &str) -> Result<MadeCalendar, ProviderError> {
        let _ = description;
        Err(dedicated::unsupported())
    }

    /// Delete a calendar of ours left over by a creation race. Already gone is success.
    async fn delete_dedicated_calendar(&self, id: &str) -> Result<(), ProviderError> {
        let _ = id;
        Err(dedicated::unsupported())
    }

    /// A cheap fingerprint of the calendar's current state (CalDAV `DAV:sync-token`, else
    /// `CS:getctag`): when it equals the one seen last, nothing changed and no listing is
    /// needed. `None`: the provider has no such probe; list incrementally instead.
    async fn probe(&self, calendar: &str) -> Result<Option<String>, ProviderError> {
        let _ = calendar;
        Ok(None)
    }

    /// Busy time of `query.calendars` in `query.window`, unmerged, as `[from, to)` spans (what
    /// counts: see `busy`). Default: a listing, every live event busy; Google (freeBusy), Graph
    /// (calendarView `showAs`) and CalDAV (TRANSP, STATUS, PARTSTAT) read the real flags.
    async fn busy(&self, query: &busy::BusyQuery) -> Result<Vec<Window>, ProviderError> {
        busy::from_listing(self, query).await
    }
}

/// Where a connection points: everything but the credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub provider: ProviderKind,
    /// CalDAV server URL; provider default when unset.
    pub server_url: Option<String>,
    /// `namespace/name` of the connection: the key for per-connection limiters and caches.
    pub connection: String,
}

/// Makes provider clients. Implementations may cache clients per connection (limiters,
/// discovered hosts, access tokens).
#[async_trait]
pub trait Connector: Send + Sync {
    async fn connect(&self, target: &Target, credentials: &Credentials) -> Result<Arc<dyn Provider>, ProviderError>;
}
