//! The bench calendar service as calsync sees it: `BenchProvider` (one connection's client,
//! each call admitted by the service's quota and faults) and `BenchConnector`, plus the bench
//! account. Applied-but-unanswered faults turn into the errors a lost response gives.
//!
//! Owns: the `Provider`/`Connector` face. Must not touch: quota, faults or the event map (the
//! parent module's), nor anything outside the bench.

use std::sync::Arc;

use async_trait::async_trait;

use super::{BenchService, CALENDAR, Fault, Op};
use calsync::credentials::Credentials;
use calsync::providers::{
    AccountInfo, Connector, Created, EventData, EventPage, Provider, ProviderError, RemoteEvent, Target, Window,
};
use calsync::resources::CalendarInfo;

/// The bench account's calendars.
pub fn account_info() -> AccountInfo {
    AccountInfo {
        email: Some("bench@example.com".into()),
        calendars: vec![CalendarInfo { id: CALENDAR.into(), name: "Calendar".into(), primary: true, writable: true }],
    }
}

fn unknown_calendar(calendar: &str) -> Result<(), ProviderError> {
    if calendar == CALENDAR {
        Ok(())
    } else {
        Err(ProviderError::NotFound { message: format!("calendar {calendar:?} does not exist") })
    }
}

/// Turns an applied-but-unanswered call into the error the caller sees.
fn answered<T>(r: Result<(T, Option<Fault>), ProviderError>) -> Result<T, ProviderError> {
    match r? {
        (_, Some(Fault::Timeout(d))) => Err(ProviderError::Transient {
            message: format!("no answer within {} ms (injected timeout)", d.as_millis()),
        }),
        (_, Some(Fault::Dropped)) => {
            Err(ProviderError::Transient { message: "connection dropped before the answer (injected)".into() })
        }
        (v, _) => Ok(v),
    }
}

/// A client of the in-process service for one connection.
pub struct BenchProvider {
    // The parent module's tests build providers directly.
    pub(super) service: Arc<BenchService>,
    pub(super) conn: String,
}

#[async_trait]
impl Provider for BenchProvider {
    async fn account(&self) -> Result<AccountInfo, ProviderError> {
        answered(self.service.call(&self.conn, Op::Account, "", |_| Ok(account_info())).await)
    }

    async fn create(&self, calendar: &str, key: &str, event: &EventData) -> Result<Created, ProviderError> {
        unknown_calendar(calendar)?;
        let r = answered(self.service.call(&self.conn, Op::Create, key, |m| Ok(m.create(key, event))).await)?;
        if matches!(r, Created::Existing(_)) {
            self.service.count_existing();
        }
        Ok(r)
    }

    async fn update(
        &self,
        calendar: &str,
        id: &str,
        etag: Option<&str>,
        event: &EventData,
    ) -> Result<RemoteEvent, ProviderError> {
        unknown_calendar(calendar)?;
        answered(self.service.call(&self.conn, Op::Update, id, |m| m.update(id, etag, event)).await)
    }

    async fn delete(&self, calendar: &str, id: &str, etag: Option<&str>) -> Result<(), ProviderError> {
        unknown_calendar(calendar)?;
        answered(self.service.call(&self.conn, Op::Delete, id, |m| m.delete(id, etag)).await)
    }

    async fn get(&self, calendar: &str, id: &str) -> Result<Option<RemoteEvent>, ProviderError> {
        unknown_calendar(calendar)?;
        answered(self.service.call(&self.conn, Op::Get, id, |m| Ok(m.get(id))).await)
    }

    async fn find_by_key(&self, calendar: &str, key: &str) -> Result<Option<RemoteEvent>, ProviderError> {
        unknown_calendar(calendar)?;
        answered(self.service.call(&self.conn, Op::FindByKey, key, |m| Ok(m.get(key))).await)
    }

    async fn list(&self, calendar: &str, _window: Window, cursor: Option<&str>) -> Result<EventPage, ProviderError> {
        unknown_calendar(calendar)?;
        if self.service.live {
            return answered(self.service.call(&self.conn, Op::List, "", |m| Ok(m.changes_since(cursor))).await);
        }
        // A full listing without a cursor: these benchmarks measure writes, not incremental import.
        let events = answered(self.service.call(&self.conn, Op::List, "", |m| Ok(m.all())).await)?;
        Ok(EventPage { events, removed: vec![], next_cursor: None, full_resync: false })
    }

    async fn probe(&self, calendar: &str) -> Result<Option<String>, ProviderError> {
        if !self.service.live {
            return Ok(None);
        }
        unknown_calendar(calendar)?;
        answered(self.service.call(&self.conn, Op::Probe, "", |m| Ok(Some(m.probe()))).await)
    }
}

/// Connects every connection to the one in-process service (any Basic credentials).
#[derive(Clone)]
pub struct BenchConnector {
    pub service: Arc<BenchService>,
}

#[async_trait]
impl Connector for BenchConnector {
    async fn connect(&self, target: &Target, credentials: &Credentials) -> Result<Arc<dyn Provider>, ProviderError> {
        if !matches!(credentials, Credentials::Basic { .. }) {
            return Err(ProviderError::Revoked { message: "the bench service takes username/password only".into() });
        }
        Ok(Arc::new(BenchProvider { service: self.service.clone(), conn: target.connection.clone() }))
    }
}
