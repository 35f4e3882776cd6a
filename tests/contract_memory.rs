//! The provider contract suite on the in-memory provider (the reference every real provider
//! must match).

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use calsync::credentials::Credentials;
use calsync::providers::memory::{MemoryCalendar, MemoryConnector};
use calsync::providers::{Connector, EventTime, Provider, ProviderError, RemoteEvent, Target};
use calsync::resources::ProviderKind;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use support::contract::{ContractPeer, RawEvent, run_all};

struct MemoryPeer {
    service: MemoryCalendar,
}

fn target() -> Target {
    Target { provider: ProviderKind::Caldav, server_url: None, connection: "default/test".into() }
}

fn creds(password: &str) -> Credentials {
    Credentials::Basic { username: "user".into(), password: SecretString::from(password) }
}

#[async_trait]
impl ContractPeer for MemoryPeer {
    async fn provider(&self) -> Arc<dyn Provider> {
        MemoryConnector { service: self.service.clone() }.connect(&target(), &creds("secret")).await.expect("connect")
    }

    async fn wrong_credentials(&self) -> Result<(), ProviderError> {
        let p = MemoryConnector { service: self.service.clone() }.connect(&target(), &creds("wrong")).await?;
        p.account().await.map(|_| ())
    }

    async fn raw_get(&self, calendar: &str, id: &str) -> Option<RawEvent> {
        self.service
            .events(calendar)
            .into_iter()
            .find(|e| e.id == id && !e.cancelled)
            .map(|e| RawEvent { title: e.title, has_marker: e.marker.is_some() })
    }

    async fn raw_insert_external(
        &self,
        calendar: &str,
        title: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> String {
        let id = format!("ext-{}", uuid::Uuid::new_v4());
        let t = |u: DateTime<Utc>| EventTime::DateTime { utc: u, local: u.naive_utc(), zone: None };
        self.service.insert_external(
            calendar,
            RemoteEvent {
                id: id.clone(),
                etag: None,
                link: None,
                title: title.into(),
                description: None,
                category: None,
                start: t(start),
                end: t(end),
                zone: None,
                recurrence: vec![],
                marker: None,
                cancelled: false,
                created: None,
                exceptions: Vec::new(),
            },
        );
        id
    }

    async fn raw_edit_title(&self, calendar: &str, id: &str, title: &str) {
        assert!(self.service.edit_external(calendar, id, |e| e.title = title.to_string()), "edit {id}");
    }

    async fn raw_own_calendars(&self) -> Vec<String> {
        self.service.made_calendars()
    }
}

#[tokio::test]
async fn memory_provider_meets_the_contract() {
    run_all(&MemoryPeer { service: MemoryCalendar::new() }, "mem").await;
}
