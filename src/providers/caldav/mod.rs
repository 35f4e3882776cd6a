//! The CalDAV provider (RFC 4791 / RFC 6578), also used for Apple iCloud (`apple` = CalDAV with
//! `https://caldav.icloud.com/` as the default server).
//!
//! Owns: `CaldavConnector` (per-connection client cache, remembered discovery results such as an
//! iCloud partition host) and `CaldavProvider` (the `Provider` port over CalDAV). Must not
//! touch resources, stores or reconcile decisions.
//!
//! Identifiers: a calendar id is the collection's path when it is on the server URL's origin,
//! else its absolute URL (iCloud keeps calendars on `pNN-caldav.icloud.com`, so the id itself
//! remembers the partition host). An event id is the resource name without `.ics`; for our
//! events that is the deterministic key, so `find_by_key` is a plain GET.
//!
//! Files: `http` (requests, auth, limits, error mapping), `xml` (WebDAV bodies), `discovery`,
//! `ical` + `ical_read` + `vtimezone` (iCalendar), `events` (create/update/delete/get), `listing` (window
//! and incremental listing), `calendars` (calsync's own calendar: MKCALENDAR).

mod busy;
mod calendars;
mod discovery;
mod events;
pub mod guard;
mod http;
mod ical;
mod ical_read;
mod listing;
mod vtimezone;
mod xml;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use reqwest::Url;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

pub use discovery::Collection;
pub use http::{MAX_BODY, MAX_REDIRECTS};
pub use ical::{MARKER_PROP, parse_ics, to_ics, uid_for};
pub use listing::{calendar_query_body, count_calendar_data, parse_report};
/// iCalendar writing shared with the ICS feed (`api::ics`).
pub mod ics {
    pub use super::ical::{
        PRODID, escape_text, override_events, property, property_with, start_year, timezone, vevent,
    };
    pub use icalendar::parser::{Calendar, Component, Property};
}

use super::{
    AccountInfo, Connector, Created, EventData, EventPage, Provider, ProviderError, RemoteEvent, Target, Window,
};
use crate::credentials::Credentials;
use crate::resources::{CalendarInfo, ProviderKind};
use http::DavClient;

/// iCloud's CalDAV entry point (`apple` connections without a server URL).
pub const ICLOUD_URL: &str = "https://caldav.icloud.com/";

/// What one connection remembers between reconciles.
struct Conn {
    /// Hash of server URL + user + password: new credentials get a new client.
    fingerprint: [u8; 32],
    base: Url,
    client: Arc<DavClient>,
    /// The calendar home found by discovery (on iCloud, on the partition host).
    home: Mutex<Option<Url>>,
}

/// Connects `apple` and `caldav` connections. Clients and discovery results are cached per
/// connection (`Target::connection`).
pub struct CaldavConnector {
    cache: Mutex<HashMap<String, Arc<Conn>>>,
    policy: Arc<guard::AddressPolicy>,
}

// Library users (tests, benches) talk to servers on this machine; the binary chooses per mode.
impl Default for CaldavConnector {
    fn default() -> Self {
        Self::with_policy(guard::AddressPolicy::local())
    }
}

impl CaldavConnector {
    pub fn new() -> Self {
        Self::default()
    }

    /// A connector whose clients reach only the addresses `policy` allows.
    pub fn with_policy(policy: guard::AddressPolicy) -> Self {
        CaldavConnector { cache: Mutex::default(), policy: Arc::new(policy) }
    }
}

fn server_url(target: &Target) -> Result<Url, ProviderError> {
    let raw = match (&target.server_url, target.provider) {
        (Some(u), _) if !u.trim().is_empty() => u.trim().to_string(),
        (_, ProviderKind::Apple) => ICLOUD_URL.to_string(),
        (_, ProviderKind::Caldav) => {
            return Err(ProviderError::Invalid {
                message: "a caldav connection needs serverUrl (the CalDAV server's URL)".into(),
            });
        }
        (_, other) => {
            return Err(ProviderError::Invalid {
                message: format!("the CalDAV connector cannot serve provider {other}"),
            });
        }
    };
    let mut url = Url::parse(&raw)
        .map_err(|e| ProviderError::Invalid { message: format!("serverUrl {raw:?} is not a URL: {e}") })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ProviderError::Invalid {
            message: format!("serverUrl {raw:?} must be an http(s) URL with a host"),
        });
    }
    // Credentials belong in the Secret, never in the URL (it shows up in messages and status).
    let _ = url.set_username("");
    let _ = url.set_password(None);
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

#[async_trait]
impl Connector for CaldavConnector {
    async fn connect(&self, target: &Target, credentials: &Credentials) -> Result<Arc<dyn Provider>, ProviderError> {
        if !matches!(target.provider, ProviderKind::Apple | ProviderKind::Caldav) {
            return Err(ProviderError::Invalid {
                message: format!("the CalDAV connector cannot serve provider {}", target.provider),
            });
        }
        let Credentials::Basic { username, password } = credentials else {
            return Err(ProviderError::Invalid {
                message: "CalDAV needs a user name and (app-specific) password, not OAuth tokens".into(),
            });
        };
        let base = server_url(target)?;
        let mut h = Sha256::new();
        for part in [base.as_str(), username.as_str(), password.expose_secret()] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        let fingerprint: [u8; 32] = h.finalize().into();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let conn = match cache.get(&target.connection) {
            Some(c) if c.fingerprint == fingerprint => c.clone(),
            _ => {
                let client = Arc::new(DavClient::guarded(username, password, http::MAX_BODY, self.policy.clone())?);
                let c = Arc::new(Conn { fingerprint, base, client, home: Mutex::new(None) });
                cache.insert(target.connection.clone(), c.clone());
                c
            }
        };
        Ok(Arc::new(CaldavProvider { conn }))
    }
}

/// One CalDAV account.
pub struct CaldavProvider {
    conn: Arc<Conn>,
}

impl CaldavProvider {
    /// A provider for `server` without the connector (tests, benchmarks).
    pub fn new(server: &str, username: &str, password: &secrecy::SecretString) -> Result<Self, ProviderError> {
        let target =
            Target { provider: ProviderKind::Caldav, server_url: Some(server.to_string()), connection: String::new() };
        let base = server_url(&target)?;
        let client = Arc::new(DavClient::new(username, password)?);
        Ok(CaldavProvider { conn: Arc::new(Conn { fingerprint: [0; 32], base, client, home: Mutex::new(None) }) })
    }

    fn client(&self) -> &DavClient {
        &self.conn.client
    }

    /// The calendar id for a collection URL (see the module doc).
    fn calendar_id(&self, url: &Url) -> String {
        if url.origin() == self.conn.base.origin() { url.path().to_string() } else { url.to_string() }
    }

    /// The collection URL for a calendar id.
    fn collection(&self, calendar: &str) -> Result<Url, ProviderError> {
        let mut url = if calendar.starts_with("http://") || calendar.starts_with("https://") {
            Url::parse(calendar).map_err(|e| ProviderError::Invalid {
                message: format!("calendar id {calendar:?} is not a URL: {e}"),
            })?
        } else if calendar.starts_with('/') {
            let mut u = self.conn.base.clone();
            u.set_path(calendar);
            u.set_query(None);
            u
        } else {
            return Err(ProviderError::Invalid {
                message: format!("calendar id {calendar:?} is neither a collection path nor a URL"),
            });
        };
        if !url.path().ends_with('/') {
            let p = format!("{}/", url.path());
            url.set_path(&p);
        }
        Ok(url)
    }

    /// The URL of event `id` in `calendar`.
    fn resource(&self, calendar: &str, id: &str) -> Result<Url, ProviderError> {
        if id.is_empty() || id.contains('/') || id == "." || id == ".." {
            return Err(ProviderError::Invalid { message: format!("event id {id:?} is not a CalDAV resource name") });
        }
        let mut url = self.collection(calendar)?;
        let path = format!("{}{id}.ics", url.path());
        url.set_path(&path);
        Ok(url)
    }
}

/// The event id of a resource href: its last segment without `.ics`.
pub fn id_from_href(href: &str) -> Option<String> {
    let path = href.split(['?', '#']).next().unwrap_or(href);
    let name = path.trim_end_matches('/').rsplit('/').next().filter(|n| !n.is_empty())?;
    Some(name.strip_suffix(".ics").unwrap_or(name).to_string())
}

#[async_trait]
impl Provider for CaldavProvider {
    async fn account(&self) -> Result<AccountInfo, ProviderError> {
        let cached = self.conn.home.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (cols, email) = match cached {
            Some(home) => match discovery::list_calendars(self.client(), &home).await {
                Ok(c) => (c, None),
                // The cached home moved (account migrated to another partition): rediscover.
                Err(ProviderError::NotFound { .. } | ProviderError::Invalid { .. }) => {
                    *self.conn.home.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    let home = discovery::find_home(self.client(), &self.conn.base).await?;
                    *self.conn.home.lock().unwrap_or_else(|e| e.into_inner()) = Some(home.url.clone());
                    (discovery::list_calendars(self.client(), &home.url).await?, home.email)
                }
                Err(e) => return Err(e),
            },
            None => {
                let home = discovery::find_home(self.client(), &self.conn.base).await?;
                *self.conn.home.lock().unwrap_or_else(|e| e.into_inner()) = Some(home.url.clone());
                (discovery::list_calendars(self.client(), &home.url).await?, home.email)
            }
        };
        let email = email.or_else(|| Some(self.client().username().to_string()).filter(|u| u.contains('@')));
        // DESIGN §6: the default is the first writable calendar that accepts VEVENT, in server
        // order. A calendar that takes no events cannot receive ours, so it is not "writable".
        let mut calendars: Vec<CalendarInfo> = cols
            .iter()
            .map(|c| CalendarInfo {
                id: self.calendar_id(&c.url),
                name: c.name.clone(),
                primary: false,
                writable: c.writable && c.events,
            })
            .collect();
        if let Some(first) = calendars.iter_mut().find(|c| c.writable) {
            first.primary = true;
        }
        tracing::debug!(calendars = calendars.len(), "caldav account checked");
        Ok(AccountInfo { email, calendars })
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
        let url = self.resource(calendar, id)?;
        match events::fetch(self, &url).await? {
            Some(ev) => Ok(Some(ev)),
            // Other apps may name resources without `.ics` (the id is then the whole name).
            None if !id.ends_with(".ics") => {
                let mut bare = self.collection(calendar)?;
                let path = format!("{}{id}", bare.path());
                bare.set_path(&path);
                events::fetch(self, &bare).await
            }
            None => Ok(None),
        }
    }

    async fn find_by_key(&self, calendar: &str, key: &str) -> Result<Option<RemoteEvent>, ProviderError> {
        // Our resource name is the key, so this is one GET; no search needed.
        let url = self.resource(calendar, key)?;
        events::fetch(self, &url).await
    }

    async fn list(&self, calendar: &str, window: Window, cursor: Option<&str>) -> Result<EventPage, ProviderError> {
        listing::list(self, calendar, window, cursor).await
    }

    async fn list_window(&self, calendar: &str, window: Window) -> Result<EventPage, ProviderError> {
        listing::list_window(self, calendar, window).await
    }

    async fn probe(&self, calendar: &str) -> Result<Option<String>, ProviderError> {
        listing::probe(self, calendar).await
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn target(kind: ProviderKind, url: Option<&str>) -> Target {
        Target { provider: kind, server_url: url.map(str::to_string), connection: "ns/c".into() }
    }

    #[test]
    fn server_urls() {
        assert_eq!(server_url(&target(ProviderKind::Apple, None)).unwrap().as_str(), ICLOUD_URL);
        assert_eq!(
            server_url(&target(ProviderKind::Caldav, Some("http://u:pw@h:5232/dav"))).unwrap().as_str(),
            "http://h:5232/dav/"
        );
        assert!(matches!(server_url(&target(ProviderKind::Caldav, None)), Err(ProviderError::Invalid { .. })));
        assert!(matches!(
            server_url(&target(ProviderKind::Caldav, Some("ftp://x/"))),
            Err(ProviderError::Invalid { .. })
        ));
    }

    #[tokio::test]
    async fn connector_refuses_other_kinds_and_oauth() {
        let c = CaldavConnector::new();
        let basic = Credentials::Basic { username: "u".into(), password: SecretString::from("p") };
        assert!(matches!(
            c.connect(&target(ProviderKind::Google, None), &basic).await,
            Err(ProviderError::Invalid { .. })
        ));
        let oauth = Credentials::OAuth {
            refresh_token: SecretString::from("r"),
            access_token: None,
            expires_at: None,
            refresh_lease: None,
        };
        assert!(matches!(
            c.connect(&target(ProviderKind::Apple, None), &oauth).await,
            Err(ProviderError::Invalid { .. })
        ));
        assert!(c.connect(&target(ProviderKind::Apple, None), &basic).await.is_ok());
    }

    #[tokio::test]
    async fn connector_caches_per_connection_and_renews_on_new_credentials() {
        let c = CaldavConnector::new();
        let t = target(ProviderKind::Apple, None);
        let creds =
            |pw: &str| Credentials::Basic { username: "u".into(), password: SecretString::from(pw.to_string()) };
        let entry = |c: &CaldavConnector| c.cache.lock().unwrap().get("ns/c").cloned().unwrap();
        c.connect(&t, &creds("one")).await.unwrap();
        let first = entry(&c);
        *first.home.lock().unwrap() = Some(Url::parse("https://p07-caldav.icloud.com/1/calendars/").unwrap());
        c.connect(&t, &creds("one")).await.unwrap();
        assert!(Arc::ptr_eq(&first, &entry(&c)), "same credentials reuse the client and discovered home");
        c.connect(&t, &creds("two")).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &entry(&c)), "a new password gets a new client");
        assert!(entry(&c).home.lock().unwrap().is_none());
    }

    #[test]
    fn ids_and_urls() {
        let p = CaldavProvider::new("https://caldav.example.com/", "u", &SecretString::from("p")).unwrap();
        let same = Url::parse("https://caldav.example.com/u/cal/").unwrap();
        let other = Url::parse("https://p31-caldav.example.com:443/123/calendars/abc/").unwrap();
        assert_eq!(p.calendar_id(&same), "/u/cal/");
        assert_eq!(p.calendar_id(&other), "https://p31-caldav.example.com/123/calendars/abc/");
        assert_eq!(p.collection(&p.calendar_id(&other)).unwrap(), other);
        assert_eq!(p.resource("/u/cal", "cs01").unwrap().as_str(), "https://caldav.example.com/u/cal/cs01.ics");
        assert!(p.resource("/u/cal/", "../x").is_err());
        assert_eq!(id_from_href("/u/cal/abc%40x.ics").as_deref(), Some("abc%40x"));
        assert_eq!(id_from_href("https://h/u/cal/plain").as_deref(), Some("plain"));
    }
}
