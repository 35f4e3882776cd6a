//! The Google Calendar v3 provider: a thin typed client over Google's REST API.
//!
//! Owns: `GoogleConfig`, `GoogleConnector` (one shared connection pool, a per-connection
//! in-flight limiter, bearer tokens from the `oauth::TokenBroker`) and `GoogleProvider` (the
//! `Provider` port over Google). Must not touch resources, stores, OAuth flows (tokens come
//! from `oauth::AccessTokens`) or reconcile decisions.
//!
//! Identifiers: a calendar id is Google's (`primary`, an e-mail address, or
//! `...@group.calendar.google.com`); an event id is Google's, and for our events the
//! deterministic key (base32hex), so `find_by_key` is a plain GET.
//!
//! Files: `client` (HTTP, auth retry, error classification), `batch` (concurrent event requests
//! of a connection coalesced into Google batch requests), `wire` (JSON ↔ neutral model),
//! `events` (create/update/delete), `listing` (window and incremental listing, cursors),
//! `series` (a recurring event's moved and cancelled instances), `calendars` (calsync's own
//! calendar: calendars.insert/delete), `busy` (freeBusy.query),
//! `watch` (push channels: events.watch, channels.stop).

mod batch;
mod busy;
mod calendars;
mod client;
mod events;
mod listing;
mod series;
mod watch;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, Url};

pub use client::{MAX_BODY, MAX_IN_FLIGHT};
pub use listing::{decode_cursor, encode_cursor};
pub use wire::{CATEGORY_KEY, MARKER_KEY};

use super::batch::{Batching, Lanes};
use super::{
    AccountInfo, Connector, Created, EventData, EventPage, Provider, ProviderError, PushSupport, RemoteEvent, Target,
    Watch, WatchRequest, Window,
};
use crate::credentials::Credentials;
use crate::oauth::{AccessTokens, TokenBroker};
use crate::resources::ProviderKind;
use client::{GoogleClient, classify, parse};
use wire::{GCalendarList, GEvent, to_remote};

/// Google's public API root.
pub const DEFAULT_API_URL: &str = "https://www.googleapis.com/calendar/v3";
/// Pages followed per listing (calendarList, events) before we give up rather than loop.
pub const MAX_PAGES: usize = 100;

/// Where the API is and how long a request may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoogleConfig {
    /// API root, e.g. `https://www.googleapis.com/calendar/v3` (tests point it at a local fake).
    pub api_url: String,
    /// Whole-request timeout.
    pub timeout: Duration,
}

impl Default for GoogleConfig {
    fn default() -> Self {
        GoogleConfig { api_url: DEFAULT_API_URL.to_string(), timeout: Duration::from_secs(30) }
    }
}

/// Parse and check the API root; the result always ends in `/`.
fn api_base(raw: &str) -> Result<Url, ProviderError> {
    let mut url = Url::parse(raw.trim()).map_err(|e| ProviderError::Invalid {
        message: format!("the Google API URL {raw:?} is not a URL: {e}; check the Google configuration"),
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() || url.cannot_be_a_base() {
        return Err(ProviderError::Invalid {
            message: format!("the Google API URL {raw:?} must be an http(s) URL with a host"),
        });
    }
    url.set_query(None);
    url.set_fragment(None);
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

/// `base` + the given path segments, each percent-encoded (calendar ids hold `@` and `#`).
pub fn api_url(base: &Url, segments: &[&str]) -> Result<Url, ProviderError> {
    let mut url = base.clone();
    {
        let mut path = url
            .path_segments_mut()
            .map_err(|_| ProviderError::Invalid { message: format!("the Google API URL {base} cannot take a path") })?;
        // `base` ends in `/`, which leaves an empty last segment to replace.
        path.pop_if_empty();
        for s in segments {
            path.push(s);
        }
    }
    Ok(url)
}

/// Google's batch path for an API root: `https://host/calendar/v3/` → `https://host/batch/calendar/v3`.
fn batch_url(base: &Url) -> Url {
    let mut url = base.clone();
    url.set_path(&format!("/batch{}", base.path().trim_end_matches('/')));
    url
}

/// Connects `google` connections. One `reqwest::Client` (connection pool) serves them all; each
/// connection gets its own in-flight limiter and batching lane, kept across reconciles.
pub struct GoogleConnector {
    base: Url,
    http: reqwest::Client,
    broker: Arc<dyn TokenBroker>,
    in_flight: super::http::InFlight,
    lanes: Lanes<client::Wire>,
}

impl GoogleConnector {
    pub fn new(config: GoogleConfig, broker: Arc<dyn TokenBroker>) -> Result<Self, ProviderError> {
        let base = api_base(&config.api_url)?;
        let http = client::build_http(config.timeout)?;
        Ok(GoogleConnector {
            base,
            http,
            broker,
            in_flight: super::http::InFlight::new(MAX_IN_FLIGHT),
            lanes: Lanes::new(MAX_IN_FLIGHT, Batching::default()),
        })
    }

    /// Whether concurrent event requests of a connection are sent as Google batch requests
    /// (default: on; `CALSYNC_PROVIDER_BATCH`).
    pub fn with_batching(mut self, batching: Batching) -> Self {
        self.lanes = Lanes::new(MAX_IN_FLIGHT, batching);
        self
    }
}

#[async_trait]
impl Connector for GoogleConnector {
    async fn connect(&self, target: &Target, credentials: &Credentials) -> Result<Arc<dyn Provider>, ProviderError> {
        if target.provider != ProviderKind::Google {
            return Err(ProviderError::Invalid {
                message: format!("the Google connector cannot serve provider {}", target.provider),
            });
        }
        if !matches!(credentials, Credentials::OAuth { .. }) {
            return Err(ProviderError::Invalid {
                message: "Google Calendar needs OAuth tokens (a refresh_token), not a user name and password; connect the calendar through the Google sign-in".into(),
            });
        }
        let tokens = self.broker.tokens(target, credentials).await?;
        let slots = self.in_flight.for_connection(&target.connection);
        let lane = self.lanes.for_connection(&target.connection, slots.clone());
        let client = GoogleClient::new(self.http.clone(), tokens, slots, batch_url(&self.base), self.lanes.batching())
            .with_lane(lane);
        Ok(Arc::new(GoogleProvider { base: self.base.clone(), client }))
    }
}

/// One Google account.
#[derive(Debug)]
pub struct GoogleProvider {
    base: Url,
    client: GoogleClient,
}

impl GoogleProvider {
    /// A provider without the connector (tests, benchmarks), batching on.
    pub fn new(config: &GoogleConfig, tokens: Arc<dyn AccessTokens>) -> Result<Self, ProviderError> {
        Self::with_batching(config, tokens, Batching::default())
    }

    /// `new` with batching on or off.
    pub fn with_batching(
        config: &GoogleConfig,
        tokens: Arc<dyn AccessTokens>,
        batching: Batching,
    ) -> Result<Self, ProviderError> {
        let base = api_base(&config.api_url)?;
        let http = client::build_http(config.timeout)?;
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        let client = GoogleClient::new(http, tokens, slots, batch_url(&base), batching);
        Ok(GoogleProvider { base, client })
    }

    fn client(&self) -> &GoogleClient {
        &self.client
    }

    fn events_url(&self, calendar: &str) -> Result<Url, ProviderError> {
        api_url(&self.base, &["calendars", calendar, "events"])
    }

    fn event_url(&self, calendar: &str, id: &str) -> Result<Url, ProviderError> {
        if id.is_empty() {
            return Err(ProviderError::Invalid { message: "an empty event id cannot name a Google event".into() });
        }
        api_url(&self.base, &["calendars", calendar, "events", id])
    }

    /// GET one event, cancelled ones included (Google keeps deleted events as `cancelled`);
    /// `None` when Google does not know it.
    async fn fetch(&self, calendar: &str, id: &str) -> Result<Option<RemoteEvent>, ProviderError> {
        let url = self.event_url(calendar, id)?;
        let resp = self.client().send_event(Method::GET, &url, None, None).await?;
        let what = || format!("reading event {id} in {calendar}");
        match resp.status.as_u16() {
            200 => Ok(Some(to_remote(parse::<GEvent>(&resp, &what())?)?)),
            404 | 410 => Ok(None),
            _ => Err(classify(&resp, &what())),
        }
    }
}

#[async_trait]
impl Provider for GoogleProvider {
    async fn account(&self) -> Result<AccountInfo, ProviderError> {
        let mut calendars = Vec::new();
        let mut page_token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut url = api_url(&self.base, &["users", "me", "calendarList"])?;
            url.query_pairs_mut().append_pair("maxResults", "250");
            if let Some(t) = &page_token {
                url.query_pairs_mut().append_pair("pageToken", t);
            }
            let resp = self.client().send(Method::GET, &url, None, None).await?;
            if resp.status.as_u16() != 200 {
                return Err(classify(&resp, "listing the account's calendars"));
            }
            let page: GCalendarList = parse(&resp, "listing the account's calendars")?;
            calendars.extend(page.items.iter().map(|c| c.to_info()));
            page_token = page.next_page_token.filter(|t| !t.is_empty());
            if page_token.is_none() {
                // Google's primary calendar id is the account's e-mail address.
                let email = calendars.iter().find(|c| c.primary).map(|c| c.id.clone()).filter(|id| id.contains('@'));
                tracing::debug!(calendars = calendars.len(), "google account checked");
                return Ok(AccountInfo { email, calendars });
            }
        }
        Err(ProviderError::Invalid {
            message: format!("Google's calendar list did not end after {MAX_PAGES} pages; not following it further"),
        })
    }

    async fn create(&self, calendar: &str, key: &str, event: &EventData) -> Result<Created, ProviderError> {
        events::create(self, calendar, key, event).await
    }

    async fn update(
        &self,
        calendar: &str,
        id: &str,
        etag: Option<&str>,
        event: &EventData,
    ) -> Result<RemoteEvent, ProviderError> {
        events::update(self, calendar, id, etag, event).await
    }

    async fn delete(&self, calendar: &str, id: &str, etag: Option<&str>) -> Result<(), ProviderError> {
        events::delete(self, calendar, id, etag).await
    }

    async fn get(&self, calendar: &str, id: &str) -> Result<Option<RemoteEvent>, ProviderError> {
        self.fetch(calendar, id).await
    }

    async fn find_by_key(&self, calendar: &str, key: &str) -> Result<Option<RemoteEvent>, ProviderError> {
        // Our event id is the key, so this is one GET; no search needed.
        self.fetch(calendar, key).await
    }

    async fn list(&self, calendar: &str, window: Window, cursor: Option<&str>) -> Result<EventPage, ProviderError> {
        listing::list(self, calendar, window, cursor).await
    }

    async fn series_exceptions(
        &self,
        calendar: &str,
        event: &RemoteEvent,
        window: Window,
    ) -> Result<Vec<super::Exception>, ProviderError> {
        series::exceptions(self, calendar, event, window).await
    }

    async fn dedicated_calendars(&self) -> Result<Vec<super::DedicatedCalendar>, ProviderError> {
        calendars::dedicated(self).await
    }

    async fn create_dedicated_calendar(&self, description: &str) -> Result<super::MadeCalendar, ProviderError> {
        calendars::create(self, description).await
    }

    async fn delete_dedicated_calendar(&self, id: &str) -> Result<(), ProviderError> {
        calendars::delete(self, id).await
    }

    async fn busy(&self, query: &super::busy::BusyQuery) -> Result<Vec<Window>, ProviderError> {
        busy::busy(self, query).await
    }

    fn push_support(&self) -> PushSupport {
        PushSupport::Recreate
    }

    async fn watch(&self, calendar: &str, request: &WatchRequest) -> Result<Watch, ProviderError> {
        watch::watch(self, calendar, request).await
    }

    async fn stop_watch(&self, calendar: &str, watch: &Watch) -> Result<(), ProviderError> {
        watch::stop(self, calendar, watch).await
    }
}

#[cfg(test)]
mod tests;
