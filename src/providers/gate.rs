//! A `Connector` wrapper that lets a process write to calendars only while it is the one writer
//! for the connection: every calendar write (and every watch or calendar made or ended) first asks
//! the `WriteGate`, so a process that lost its right stops in the middle of a reconcile instead of
//! racing the process that took over. The controller's gate is its leader lease; a standalone
//! replica's is the lease of the connection's shard. Reads are never gated. Provider calls are
//! counted for `/metrics` when a counter is given.
//!
//! Owns: the gate and the counting. Must not touch: what the calls do (the wrapped provider), or
//! how the right to write is held (leases: `controller::leader`, `standalone::pg::shards`).

use std::sync::Arc;

use async_trait::async_trait;

use crate::credentials::Credentials;
use crate::providers::{
    AccountInfo, Connector, Created, EventData, EventPage, Provider, ProviderError, RemoteEvent, Target, Window,
};

/// Whether this process may write to a connection's calendars now.
pub trait WriteGate: Send + Sync {
    /// `None` when this process may write for `connection` (`namespace/name`, as in
    /// `Target::connection`); otherwise the metric outcome label and what the refusal means.
    fn refuse(&self, connection: &str) -> Option<(&'static str, &'static str)>;
}

/// Counts provider calls by provider, operation and outcome (the controller's `/metrics`).
pub trait CallCounter: Send + Sync {
    fn provider_call(&self, provider: &str, operation: &str, outcome: &str);
}

/// Wraps the real connector.
pub struct GatedConnector {
    pub inner: Arc<dyn Connector>,
    pub gate: Arc<dyn WriteGate>,
    pub counter: Option<Arc<dyn CallCounter>>,
}

struct GatedProvider {
    inner: Arc<dyn Provider>,
    provider: String,
    connection: String,
    gate: Arc<dyn WriteGate>,
    counter: Option<Arc<dyn CallCounter>>,
}

fn outcome<T>(r: &Result<T, ProviderError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        // Not a provider answer: a call calsync's limiter did not send. Its own label keeps the
        // calendar-429 alert (outcome="RateLimited") to what providers said.
        Err(ProviderError::Held { .. }) => "Held",
        Err(e) => e.reason(),
    }
}

impl GatedProvider {
    fn gate(&self, op: &str) -> Result<(), ProviderError> {
        let Some((label, message)) = self.gate.refuse(&self.connection) else {
            return Ok(());
        };
        if let Some(c) = &self.counter {
            c.provider_call(&self.provider, op, label);
        }
        Err(ProviderError::Transient { message: message.into() })
    }

    fn count<T>(&self, op: &str, r: Result<T, ProviderError>) -> Result<T, ProviderError> {
        if let Some(c) = &self.counter {
            c.provider_call(&self.provider, op, outcome(&r));
        }
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
            connection: target.connection.clone(),
            gate: self.gate.clone(),
            counter: self.counter.clone(),
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

    // Counted as a listing: the same read, without the cursor round trip.
    async fn list_window(&self, calendar: &str, window: Window) -> Result<EventPage, ProviderError> {
        let r = self.inner.list_window(calendar, window).await;
        self.count("list", r)
    }

    // A read: any process may make it. Forwarded, never left to the trait's default, which would
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

    // Watches are provider-side state like events: only the writer makes or ends them, so two
    // processes never both hold a channel for one calendar.
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

    // Calendars are provider-side state like events: only the writer makes or deletes them.
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
    use std::sync::Mutex;

    use super::*;
    use crate::providers::memory::{MemoryCalendar, MemoryConnector, Op};
    use crate::resources::ProviderKind;
    use secrecy::SecretString;

    /// Refuses the connections listed, like a replica that holds some shards and not others.
    #[derive(Default)]
    struct Refusing(Mutex<Vec<String>>);

    impl WriteGate for Refusing {
        fn refuse(&self, connection: &str) -> Option<(&'static str, &'static str)> {
            let refused = self.0.lock().unwrap().iter().any(|c| c == connection);
            refused.then_some(("NotOwner", "another process writes for this connection now"))
        }
    }

    #[derive(Default)]
    struct Counted(Mutex<Vec<(String, String)>>);

    impl CallCounter for Counted {
        fn provider_call(&self, _provider: &str, operation: &str, outcome: &str) {
            self.0.lock().unwrap().push((operation.into(), outcome.into()));
        }
    }

    #[tokio::test]
    async fn a_process_that_lost_the_right_starts_no_write_but_may_read() {
        let service = MemoryCalendar::new();
        let gate = Arc::new(Refusing::default());
        let counted = Arc::new(Counted::default());
        let gated = GatedConnector {
            inner: Arc::new(MemoryConnector { service: service.clone() }),
            gate: gate.clone(),
            counter: Some(counted.clone()),
        };
        let creds = Credentials::Basic { username: "user".into(), password: SecretString::from("secret") };
        let target = |c: &str| Target { provider: ProviderKind::Caldav, server_url: None, connection: c.into() };
        // Handles obtained while the right was held: losing it mid-reconcile must stop them.
        let a = gated.connect(&target("ns/a"), &creds).await.unwrap();
        let b = gated.connect(&target("ns/b"), &creds).await.unwrap();
        gate.0.lock().unwrap().push("ns/b".into());

        let err = b.delete("calendar", "x", None).await.unwrap_err();
        assert!(matches!(err, ProviderError::Transient { .. }), "{err:?}");
        assert_eq!(service.count(Op::Delete), 0, "the write never reached the calendar");
        assert!(b.get("calendar", "x").await.is_ok(), "reads are fine");
        let window = Window { from: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH, to: chrono::Utc::now() };
        assert!(b.list_window("calendar", window).await.is_ok(), "a listing without cursor is a read too");
        assert_eq!(service.count(Op::List), 1, "it reached the calendar");
        let made = b.create_dedicated_calendar("d").await;
        assert!(matches!(made, Err(ProviderError::Transient { .. })), "no calendar made: {made:?}");
        assert_eq!(service.count(Op::CreateCalendar), 0);
        assert!(b.dedicated_calendars().await.is_ok(), "looking for one is a read");

        // The gate is per connection: the one still held writes.
        assert!(a.create_dedicated_calendar("d").await.is_ok());
        assert_eq!(service.count(Op::CreateCalendar), 1);
        let calls = counted.0.lock().unwrap().clone();
        assert!(calls.contains(&("delete".into(), "NotOwner".into())), "{calls:?}");
        assert!(calls.contains(&("create_calendar".into(), "ok".into())), "{calls:?}");
        assert!(calls.contains(&("list".into(), "ok".into())), "counted as a listing: {calls:?}");
    }
}
