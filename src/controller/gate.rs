//! A `Connector` wrapper for the controller: every calendar write first checks that this replica
//! still holds the lease (so a replica that lost it starts no new write, even in the middle of a
//! reconcile), and every provider call is counted for `/metrics`.
//!
//! Owns: the gate and the counting. Must not touch: what the calls do (the wrapped provider).

use std::sync::Arc;

use async_trait::async_trait;

use super::leader::Leadership;
use super::metrics::Metrics;
use crate::credentials::Credentials;
use crate::providers::{
    AccountInfo, Connector, Created, EventData, EventPage, Provider, ProviderError, RemoteEvent, Target, Window,
};

/// Wraps the real connector.
pub struct GatedConnector {
    pub inner: Arc<dyn Connector>,
    pub leadership: Leadership,
    pub metrics: Arc<Metrics>,
}

struct GatedProvider {
    inner: Arc<dyn Provider>,
    provider: String,
    leadership: Leadership,
    metrics: Arc<Metrics>,
}

fn outcome<T>(r: &Result<T, ProviderError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.reason(),
    }
}

impl GatedProvider {
    fn gate(&self, op: &str) -> Result<(), ProviderError> {
        if self.leadership.is_leader() {
            return Ok(());
        }
        self.metrics.provider_call(&self.provider, op, "NotLeader");
        Err(ProviderError::Transient {
            message: "this replica lost the leader lease; the new leader will do the write".into(),
        })
    }

    fn count<T>(&self, op: &str, r: Result<T, ProviderError>) -> Result<T, ProviderError> {
        self.metrics.provider_call(&self.provider, op, outcome(&r));
        r
    }
}

#[async_trait]
impl Connector for GatedConnector {
    async fn connect(&self, target: &Target, credentials: &Credentials) -> Result<Arc<dyn Provider>, ProviderError> {
        let inner = self.inner.connect(target, credentials).await?;
        Ok(Arc::new(GatedProvider {
            inner,
            provider: target.provider.as_str().to_string(),
            leadership: self.leadership.clone(),
            metrics: self.metrics.clone(),
        }))
    }
}

#[async_trait]
impl Provider for GatedProvider {
    async fn account(&self) -> Result<AccountInfo, ProviderError> {
        let r = self.inner.account().await;
        self.count("account", r)
    }

    async fn create(&self, calendar: &str, key: &str, event: &EventData) -> Result<Created, ProviderError> {
        self.gate("create")?;
        let r = self.inner.create(calendar, key, event).await;
        self.count("create", r)
    }

    async fn update(
        &self,
        calendar: &str,
        id: &str,
        etag: Option<&str>,
        event: &EventData,
    ) -> Result<RemoteEvent, ProviderError> {
        self.gate("update")?;
        let r = self.inner.update(calendar, id, etag, event).await;
        self.count("update", r)
    }

    async fn delete(&self, calendar: &str, id: &str, etag: Option<&str>) -> Result<(), ProviderError> {
        self.gate("delete")?;
        let r = self.inner.delete(calendar, id, etag).await;
        self.count("delete", r)
    }

    async fn get(&self, calendar: &str, id: &str) -> Result<Option<RemoteEvent>, ProviderError> {
        let r = self.inner.get(calendar, id).await;
        self.count("get", r)
    }

    async fn find_by_key(&self, calendar: &str, key: &str) -> Result<Option<RemoteEvent>, ProviderError> {
        let r = self.inner.find_by_key(calendar, key).await;
        self.count("find_by_key", r)
    }

    async fn list(&self, calendar: &str, window: Window, cursor: Option<&str>) -> Result<EventPage, ProviderError> {
        let r = self.inner.list(calendar, window, cursor).await;
        self.count("list", r)
    }

    // A read: followers may make it. Forwarded, never left to the trait's default, which would
    // answer for the inner provider without asking it.
    async fn series_exceptions(
        &self,
        calendar: &str,
        event: &RemoteEvent,
        window: Window,
    ) -> Result<Vec<crate::providers::Exception>, ProviderError> {
        let r = self.inner.series_exceptions(calendar, event, window).await;
        self.count("series_exceptions", r)
    }

    fn push_support(&self) -> crate::providers::PushSupport {
        self.inner.push_support()
    }

    // Watches are provider-side state like events: only the leader makes or ends them, so two
    // replicas never both hold a channel for one calendar.
    async fn watch(
        &self,
        calendar: &str,
        request: &crate::providers::WatchRequest,
    ) -> Result<crate::providers::Watch, ProviderError> {
        self.gate("watch")?;
        let r = self.inner.watch(calendar, request).await;
        self.count("watch", r)
    }

    async fn renew_watch(
        &self,
        watch: &crate::providers::Watch,
        request: &crate::providers::WatchRequest,
    ) -> Result<crate::providers::Watch, ProviderError> {
        self.gate("renew_watch")?;
        let r = self.inner.renew_watch(watch, request).await;
        self.count("renew_watch", r)
    }

    async fn stop_watch(&self, calendar: &str, watch: &crate::providers::Watch) -> Result<(), ProviderError> {
        self.gate("stop_watch")?;
        let r = self.inner.stop_watch(calendar, watch).await;
        self.count("stop_watch", r)
    }

    async fn probe(&self, calendar: &str) -> Result<Option<String>, ProviderError> {
        let r = self.inner.probe(calendar).await;
        self.count("probe", r)
    }

    async fn dedicated_calendars(&self) -> Result<Vec<crate::providers::DedicatedCalendar>, ProviderError> {
        let r = self.inner.dedicated_calendars().await;
        self.count("dedicated_calendars", r)
    }

    // Calendars are provider-side state like events: only the leader makes or deletes them.
    async fn create_dedicated_calendar(
        &self,
        description: &str,
    ) -> Result<crate::providers::MadeCalendar, ProviderError> {
        self.gate("create_calendar")?;
        let r = self.inner.create_dedicated_calendar(description).await;
        self.count("create_calendar", r)
    }

    async fn delete_dedicated_calendar(&self, id: &str) -> Result<(), ProviderError> {
        self.gate("delete_calendar")?;
        let r = self.inner.delete_dedicated_calendar(id).await;
        self.count("delete_calendar", r)
    }

    async fn busy(&self, query: &crate::providers::busy::BusyQuery) -> Result<Vec<Window>, ProviderError> {
        let r = self.inner.busy(query).await;
        self.count("busy", r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::memory::{MemoryCalendar, MemoryConnector, Op};
    use crate::resources::ProviderKind;
    use secrecy::SecretString;

    #[tokio::test]
    async fn a_follower_starts_no_write_but_may_read() {
        let service = MemoryCalendar::new();
        let leadership = Leadership::always();
        let gated = GatedConnector {
            inner: Arc::new(MemoryConnector { service: service.clone() }),
            leadership: leadership.clone(),
            metrics: Arc::new(Metrics::default()),
        };
        let target = Target { provider: ProviderKind::Caldav, server_url: None, connection: "c".into() };
        let creds = Credentials::Basic { username: "user".into(), password: SecretString::from("secret") };
        let provider = gated.connect(&target, &creds).await.unwrap();
        // Lose the lease mid-reconcile: the provider handle obtained before must refuse writes.
        let follower = Leadership::follower();
        let gated_follower = GatedProvider {
            inner: MemoryConnector { service: service.clone() }.connect(&target, &creds).await.unwrap(),
            provider: "caldav".into(),
            leadership: follower,
            metrics: Arc::new(Metrics::default()),
        };
        assert!(provider.account().await.is_ok());
        let err = gated_follower.delete("calendar", "x", None).await.unwrap_err();
        assert!(matches!(err, ProviderError::Transient { .. }));
        assert_eq!(service.count(Op::Delete), 0, "the write never reached the calendar");
        assert!(gated_follower.get("calendar", "x").await.is_ok(), "reads are fine");
        let made = gated_follower.create_dedicated_calendar("d").await;
        assert!(matches!(made, Err(ProviderError::Transient { .. })), "a follower makes no calendar: {made:?}");
        assert_eq!(service.count(Op::CreateCalendar), 0);
        assert!(gated_follower.dedicated_calendars().await.is_ok(), "looking for one is a read");
    }
}
