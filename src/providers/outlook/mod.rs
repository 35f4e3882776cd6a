//! The Outlook provider: Microsoft Graph v1.0 calendars and events for one mailbox.
//!
//! Owns: `OutlookConfig`, `OutlookConnector` (one shared `reqwest::Client`, one semaphore of
//! `MAX_IN_FLIGHT` per connection, shared by every client made for that connection) and
//! `OutlookProvider` (the `Provider` port over Graph). Must not touch resources, stores, token
//! storage (tokens come from the `TokenBroker`) or reconcile decisions.
//!
//! Identity and idempotence: every event we create carries `transactionId` = the key and two
//! single-value extended properties, our marker and the key. A create first looks the key up
//! by property, so a retry after a lost answer or a crash adopts the first event whatever Graph
//! does with a repeated `transactionId` (undocumented). Event ids are mailbox-wide, so get,
//! update and delete address `/me/events/{id}`.
//!
//! Files: `client` (HTTP, auth retry, limits, error mapping), `batch` (concurrent event
//! requests of a mailbox coalesced into `$batch` requests), `wire` (event JSON),
//! `recurrence` (RRULE ↔ patternedRecurrence), `events` (single-event calls), `listing`
//! (calendarView and delta), `calendars` (calsync's own calendar), `series` (a series' moved and cancelled occurrences), `subscriptions` (change notifications: create, PATCH-renew, delete).

mod batch;
mod busy;
mod calendars;
mod client;
mod events;
mod listing;
mod recurrence;
mod series;
mod subscriptions;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, Url};
use serde::Deserialize;

pub use client::{MAX_BODY, MAX_IN_FLIGHT};
pub use recurrence::PatternedRecurrence;
pub use wire::{key_prop, marker_prop};

use super::batch::{Batching, Lanes};
use super::{
    AccountInfo, Connector, Created, EventData, EventPage, Provider, ProviderError, PushSupport, RemoteEvent, Target,
    Watch, WatchRequest, Window,
};
use crate::credentials::Credentials;
use crate::oauth::TokenBroker;
use crate::resources::{CalendarInfo, ProviderKind};
use client::{Graph, classify};

/// Where Graph is and how long a request may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutlookConfig {
    /// Graph's base URL with the version (`MICROSOFT_GRAPH_URL`).
    pub api_url: String,
    /// Whole-request timeout.
    pub timeout: Duration,
}

impl Default for OutlookConfig {
    fn default() -> Self {
        OutlookConfig { api_url: "https://graph.microsoft.com/v1.0".into(), timeout: Duration::from_secs(30) }
    }
}

/// Connects `outlook` connections.
pub struct OutlookConnector {
    http: reqwest::Client,
    base: Url,
    broker: Arc<dyn TokenBroker>,
    /// One limiter per connection (`Target::connection`), so every client of a mailbox,
    /// however many reconciles made one, shares Graph's four-request budget.
    in_flight: super::http::InFlight,
    lanes: Lanes<client::GraphWire>,
}

impl OutlookConnector {
    /// Whether concurrent event requests of a mailbox are sent as `$batch` requests (default:
    /// on; `CALSYNC_PROVIDER_BATCH`).
    pub fn with_batching(mut self, batching: Batching) -> Self {
        self.lanes = Lanes::new(MAX_IN_FLIGHT, batching);
        self
    }

    pub fn new(config: OutlookConfig, broker: Arc<dyn TokenBroker>) -> Result<Self, ProviderError> {
        let mut base = Url::parse(config.api_url.trim()).map_err(|e| ProviderError::Invalid {
            message: format!("MICROSOFT_GRAPH_URL {:?} is not a URL: {e}", config.api_url),
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(ProviderError::Invalid {
                message: format!("MICROSOFT_GRAPH_URL {:?} must be an http(s) URL with a host", config.api_url),
            });
        }
        let path = base.path().trim_end_matches('/').to_string();
        base.set_path(&path);
        base.set_query(None);
        // reqwest is built without a bundled crypto provider; the binary installs ring at
        // start-up. Library users (tests) may not have: `Err` means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            // Graph does not redirect API calls; following one could carry the token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("calsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Transient { message: format!("could not build the HTTP client: {e}") })?;
        Ok(OutlookConnector {
            http,
            base,
            broker,
            in_flight: super::http::InFlight::new(MAX_IN_FLIGHT),
            lanes: Lanes::new(MAX_IN_FLIGHT, Batching::default()),
        })
    }
}

#[async_trait]
impl Connector for OutlookConnector {
    async fn connect(&self, target: &Target, credentials: &Credentials) -> Result<Arc<dyn Provider>, ProviderError> {
        if target.provider != ProviderKind::Outlook {
            return Err(ProviderError::Invalid {
                message: format!("the Outlook connector cannot serve provider {}", target.provider),
            });
        }
        if !matches!(credentials, Credentials::OAuth { .. }) {
            return Err(ProviderError::Invalid {
                message: "Outlook needs OAuth tokens (connect through /api/calendar/outlook/connect), not a user name and password".into(),
            });
        }
        let tokens = self.broker.tokens(target, credentials).await?;
        let slots = self.in_flight.for_connection(&target.connection);
        let lane = self.lanes.for_connection(&target.connection, slots.clone());
        let graph = Graph::new(self.http.clone(), self.base.clone(), tokens, slots).with_lane(lane);
        Ok(Arc::new(OutlookProvider { graph }))
    }
}

/// One Outlook mailbox.
pub struct OutlookProvider {
    graph: Graph,
}

/// `Prefer` for every event read: times in UTC (we keep the zone from `originalStartTimeZone`),
/// bodies as text (the description is plain text).
pub(crate) const PREFER: (&str, &str) = ("prefer", r#"outlook.timezone="UTC", outlook.body-content-type="text""#);
/// Items per listing page. Graph's calendarView default is 10, which makes a week of a busy
/// calendar many round trips; delta takes the page size as a preference.
pub(crate) const PAGE: usize = 100;
pub(crate) const PREFER_PAGED: (&str, &str) =
    ("prefer", r#"outlook.timezone="UTC", outlook.body-content-type="text", odata.maxpagesize=100"#);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphCalendar {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    is_default_calendar: bool,
    #[serde(default)]
    can_edit: bool,
    #[serde(default)]
    owner: Option<Owner>,
}

#[derive(Deserialize)]
struct Owner {
    #[serde(default)]
    address: Option<String>,
}

#[derive(Deserialize)]
struct Page<T> {
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink")]
    next: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta: Option<String>,
}

/// Pages followed before we call a listing runaway.
const MAX_PAGES: usize = 1000;

impl OutlookProvider {
    /// The path of a calendar: `primary` is the mailbox's default calendar.
    fn calendar_path(calendar: &str) -> Vec<&str> {
        if calendar == "primary" { vec!["me", "calendar"] } else { vec!["me", "calendars", calendar] }
    }

    /// GET `first` and every `@odata.nextLink` after it. Returns the items and the final
    /// `@odata.deltaLink`, if any. `Err(resp)` hands an unexpected answer to the caller.
    async fn pages<T: serde::de::DeserializeOwned>(
        &self,
        first: Url,
        headers: &[(&str, &str)],
        what: &str,
    ) -> Result<Result<(Vec<T>, Option<String>), client::GraphResponse>, ProviderError> {
        let mut url = first;
        let mut items = Vec::new();
        for _ in 0..MAX_PAGES {
            let resp = self.graph.send(Method::GET, &url, headers, None).await?;
            if resp.status.as_u16() != 200 {
                return Ok(Err(resp));
            }
            let page: Page<T> = resp.parse(what)?;
            items.extend(page.value);
            match (page.next, page.delta) {
                (Some(next), _) => {
                    url = self.graph.own_link(&next).ok_or_else(|| ProviderError::Invalid {
                        message: format!("Microsoft Graph gave a next page outside its own URL while {what}"),
                    })?;
                }
                (None, delta) => return Ok(Ok((items, delta))),
            }
        }
        Err(ProviderError::Invalid { message: format!("more than {MAX_PAGES} pages while {what}; giving up") })
    }
}

#[async_trait]
impl Provider for OutlookProvider {
    async fn account(&self) -> Result<AccountInfo, ProviderError> {
        let what = "listing the mailbox's calendars";
        let url = self.graph.url(&["me", "calendars"], &[]);
        let cals: Vec<GraphCalendar> = match self.pages(url, &[], what).await? {
            Ok((c, _)) => c,
            Err(resp) => return Err(classify(&resp, what)),
        };
        // `GET /me` would need User.Read, which we do not ask for; the default calendar's
        // owner is the mailbox.
        let email = cals
            .iter()
            .find(|c| c.is_default_calendar)
            .and_then(|c| c.owner.as_ref())
            .and_then(|o| o.address.clone())
            .filter(|a| a.contains('@'));
        let calendars = cals
            .into_iter()
            .map(|c| CalendarInfo { id: c.id, name: c.name, primary: c.is_default_calendar, writable: c.can_edit })
            .collect::<Vec<_>>();
        tracing::debug!(calendars = calendars.len(), "outlook account checked");
        Ok(AccountInfo { email, calendars })
    }

    async fn create(&self, calendar: &str, key: &str, event: &EventData) -> Result<Created, ProviderError> {
        events::create(self, calendar, key, event).await
    }

    async fn update(
        &self,
        _calendar: &str,
        id: &str,
        etag: Option<&str>,
        event: &EventData,
    ) -> Result<RemoteEvent, ProviderError> {
        events::update(self, id, etag, event).await
    }

    async fn delete(&self, _calendar: &str, id: &str, etag: Option<&str>) -> Result<(), ProviderError> {
        events::delete(self, id, etag).await
    }

    async fn get(&self, _calendar: &str, id: &str) -> Result<Option<RemoteEvent>, ProviderError> {
        events::get(self, id).await
    }

    async fn dedicated_calendars(&self) -> Result<Vec<super::DedicatedCalendar>, ProviderError> {
        calendars::dedicated(self).await
    }

    async fn create_dedicated_calendar(&self, _description: &str) -> Result<super::MadeCalendar, ProviderError> {
        calendars::create(self).await
    }

    async fn delete_dedicated_calendar(&self, id: &str) -> Result<(), ProviderError> {
        calendars::delete(self, id).await
    }

    async fn find_by_key(&self, calendar: &str, key: &str) -> Result<Option<RemoteEvent>, ProviderError> {
        events::find_by_key(self, calendar, key).await
    }

    async fn list(&self, calendar: &str, window: Window, cursor: Option<&str>) -> Result<EventPage, ProviderError> {
        listing::list(self, calendar, window, cursor).await
    }

    async fn series_exceptions(
        &self,
        _calendar: &str,
        event: &RemoteEvent,
        window: Window,
    ) -> Result<Vec<super::Exception>, ProviderError> {
        series::exceptions(self, event, window).await
    }

    async fn busy(&self, query: &super::busy::BusyQuery) -> Result<Vec<Window>, ProviderError> {
        busy::busy(self, query).await
    }

    fn push_support(&self) -> PushSupport {
        PushSupport::Renew
    }

    async fn watch(&self, calendar: &str, request: &WatchRequest) -> Result<Watch, ProviderError> {
        subscriptions::watch(self, calendar, request).await
    }

    /// A 400 from Graph is reported as `NotFound` too, so the engine recreates (see
    /// `subscriptions::renew_error`).
    async fn renew_watch(&self, watch: &Watch, request: &WatchRequest) -> Result<Watch, ProviderError> {
        subscriptions::renew(self, watch, request).await
    }

    async fn stop_watch(&self, calendar: &str, watch: &Watch) -> Result<(), ProviderError> {
        subscriptions::stop(self, calendar, watch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    struct NoBroker;
    #[async_trait]
    impl TokenBroker for NoBroker {
        async fn tokens(
            &self,
            _: &Target,
            _: &Credentials,
        ) -> Result<Arc<dyn crate::oauth::AccessTokens>, ProviderError> {
            Err(ProviderError::Revoked { message: "test broker has no tokens".into() })
        }
    }

    fn target(kind: ProviderKind) -> Target {
        Target { provider: kind, server_url: None, connection: "ns/c".into() }
    }

    #[tokio::test]
    async fn connector_checks_kind_credentials_and_url() {
        let c = OutlookConnector::new(OutlookConfig::default(), Arc::new(NoBroker)).unwrap();
        let basic = Credentials::Basic { username: "u".into(), password: SecretString::from("p") };
        match c.connect(&target(ProviderKind::Outlook), &basic).await {
            Err(ProviderError::Invalid { message }) => assert!(message.contains("needs OAuth"), "{message}"),
            other => panic!("{:?}", other.err()),
        }
        assert!(matches!(c.connect(&target(ProviderKind::Google), &basic).await, Err(ProviderError::Invalid { .. })));
        let oauth = Credentials::OAuth {
            refresh_token: SecretString::from("r"),
            access_token: None,
            expires_at: None,
            refresh_lease: None,
        };
        // The broker's answer comes through unchanged.
        assert!(matches!(c.connect(&target(ProviderKind::Outlook), &oauth).await, Err(ProviderError::Revoked { .. })));
        let bad = OutlookConfig { api_url: "not a url".into(), ..OutlookConfig::default() };
        assert!(matches!(OutlookConnector::new(bad, Arc::new(NoBroker)), Err(ProviderError::Invalid { .. })));
        assert_eq!(OutlookConfig::default().api_url, "https://graph.microsoft.com/v1.0");
    }

    #[test]
    fn one_limiter_per_connection() {
        let c = OutlookConnector::new(OutlookConfig::default(), Arc::new(NoBroker)).unwrap();
        assert_eq!(c.in_flight.for_connection("ns/a").available_permits(), MAX_IN_FLIGHT);
    }
}
