//! The bench service across a process boundary, for scenarios where calsync is killed and must
//! find the calendar as it left it: `calsync-bench provider-server` serves a `BenchService` over
//! a minimal JSON-over-HTTP protocol, and `HttpConnector` is the thin client provider a
//! `calsync-bench node` uses. Faults travel as real HTTP: 5xx, 429 with a `Retry-After` header,
//! a late 504 after the write was applied (timeout), and a connection reset in the middle of the
//! response after the write was applied (dropped connection).
//!
//! Owns: the wire protocol of the bench service. Must not touch: the service's rules (provider.rs).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::provider::{self, BenchService, Fault, Op, Stats};
use calsync::credentials::Credentials;
use calsync::providers::{
    AccountInfo, Connector, Created, EventData, EventPage, EventTime, Marker, Provider, ProviderError, RemoteEvent,
    Target, Window,
};

/// One call, as sent by the client.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CallRequest {
    pub conn: String,
    #[serde(flatten)]
    pub call: Call,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Call {
    Account,
    Create { key: String, event: EventData },
    Update { id: String, etag: Option<String>, event: EventData },
    Delete { id: String, etag: Option<String> },
    Get { id: String },
    FindByKey { key: String },
    List,
}

/// `RemoteEvent` on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireEvent {
    id: String,
    etag: Option<String>,
    link: Option<String>,
    title: String,
    description: Option<String>,
    category: Option<String>,
    start: EventTime,
    end: EventTime,
    zone: Option<String>,
    recurrence: Vec<String>,
    marker: Option<Marker>,
}

impl From<RemoteEvent> for WireEvent {
    fn from(e: RemoteEvent) -> Self {
        WireEvent {
            id: e.id,
            etag: e.etag,
            link: e.link,
            title: e.title,
            description: e.description,
            category: e.category,
            start: e.start,
            end: e.end,
            zone: e.zone,
            recurrence: e.recurrence,
            marker: e.marker,
        }
    }
}

impl From<WireEvent> for RemoteEvent {
    fn from(e: WireEvent) -> Self {
        RemoteEvent {
            id: e.id,
            etag: e.etag,
            link: e.link,
            title: e.title,
            description: e.description,
            category: e.category,
            start: e.start,
            end: e.end,
            zone: e.zone,
            recurrence: e.recurrence,
            marker: e.marker,
            cancelled: false,
            created: None,
            exceptions: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Account { email: Option<String>, calendars: Vec<calsync::resources::CalendarInfo> },
    Created { existing: bool, event: WireEvent },
    Event { event: Option<WireEvent> },
    Done,
    Events { events: Vec<WireEvent> },
}

/// What `GET /v1/stats` answers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub stats: Stats,
    /// Marker uid → events carrying it.
    pub by_uid: HashMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
struct WireError {
    kind: String,
    message: String,
}

fn error_response(e: &ProviderError) -> Response {
    let (status, kind) = match e {
        ProviderError::RateLimited { .. } | ProviderError::Held { .. } => {
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        }
        ProviderError::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "unauthorized"),
        ProviderError::Revoked { .. } => (StatusCode::FORBIDDEN, "revoked"),
        ProviderError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
        ProviderError::Conflict { .. } => (StatusCode::PRECONDITION_FAILED, "conflict"),
        ProviderError::Transient { .. } => (StatusCode::SERVICE_UNAVAILABLE, "transient"),
        ProviderError::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid"),
    };
    let mut r = (status, Json(WireError { kind: kind.into(), message: e.to_string() })).into_response();
    if let ProviderError::RateLimited { retry_after: Some(ra), .. } = e
        && let Ok(v) = HeaderValue::from_str(&ra.as_secs().to_string())
    {
        r.headers_mut().insert("retry-after", v);
    }
    r
}

async fn handle(State(service): State<Arc<BenchService>>, Json(req): Json<CallRequest>) -> Response {
    let conn = req.conn.as_str();
    let result = match req.call {
        Call::Account => {
            service
                .call(conn, Op::Account, "", |_| {
                    let a = provider::account_info();
                    Ok(Reply::Account { email: a.email, calendars: a.calendars })
                })
                .await
        }
        Call::Create { key, event } => {
            let r = service.call(conn, Op::Create, &key, |m| Ok(m.create(&key, &event))).await;
            r.map(|(c, f)| {
                let reply = match c {
                    Created::New(e) => Reply::Created { existing: false, event: e.into() },
                    Created::Existing(e) => {
                        service.count_existing();
                        Reply::Created { existing: true, event: e.into() }
                    }
                };
                (reply, f)
            })
        }
        Call::Update { id, etag, event } => {
            service
                .call(conn, Op::Update, &id, |m| {
                    m.update(&id, etag.as_deref(), &event).map(|e| Reply::Event { event: Some(e.into()) })
                })
                .await
        }
        Call::Delete { id, etag } => {
            service.call(conn, Op::Delete, &id, |m| m.delete(&id, etag.as_deref()).map(|()| Reply::Done)).await
        }
        Call::Get { id } => {
            service.call(conn, Op::Get, &id, |m| Ok(Reply::Event { event: m.get(&id).map(Into::into) })).await
        }
        Call::FindByKey { key } => {
            service.call(conn, Op::FindByKey, &key, |m| Ok(Reply::Event { event: m.get(&key).map(Into::into) })).await
        }
        Call::List => {
            service
                .call(conn, Op::List, "", |m| {
                    Ok(Reply::Events { events: m.all().into_iter().map(Into::into).collect() })
                })
                .await
        }
    };
    match result {
        Err(e) => error_response(&e),
        Ok((_, Some(Fault::Timeout(_)))) => {
            let mut r = error_response(&ProviderError::Transient { message: "gateway timeout (injected)".into() });
            *r.status_mut() = StatusCode::GATEWAY_TIMEOUT;
            r
        }
        Ok((_, Some(Fault::Dropped))) => {
            // Headers go out, then the body fails: hyper resets the connection mid-response.
            let stream = futures::stream::once(async {
                Err::<axum::body::Bytes, std::io::Error>(std::io::Error::other("connection dropped (injected)"))
            });
            (StatusCode::OK, Body::from_stream(stream)).into_response()
        }
        Ok((reply, _)) => Json(reply).into_response(),
    }
}

async fn stats(State(service): State<Arc<BenchService>>) -> Json<Snapshot> {
    Json(Snapshot { stats: service.stats(), by_uid: service.events_by_uid() })
}

/// The counters alone: cheap to poll once a second while 100,000 events are stored.
async fn counters(State(service): State<Arc<BenchService>>) -> Json<Stats> {
    Json(service.stats())
}

/// The provider server's routes.
pub fn router(service: Arc<BenchService>) -> Router {
    Router::new()
        .route("/v1/call", post(handle))
        .route("/v1/stats", get(stats))
        .route("/v1/counters", get(counters))
        .with_state(service)
}

/// Serve `service` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, service: Arc<BenchService>) -> std::io::Result<()> {
    axum::serve(listener, router(service)).await
}

/// Read the server's counters (the bench process asks the provider server after a run).
pub async fn snapshot(http: &reqwest::Client, base: &str) -> anyhow::Result<Snapshot> {
    let r = http.get(format!("{}/v1/stats", base.trim_end_matches('/'))).send().await?;
    anyhow::ensure!(r.status().is_success(), "the bench provider server answered {} to /v1/stats", r.status());
    Ok(serde_json::from_slice(&r.bytes().await?)?)
}

/// Read the server's counters only (no per-event map).
pub async fn counters_of(http: &reqwest::Client, base: &str) -> anyhow::Result<Stats> {
    let r = http.get(format!("{}/v1/counters", base.trim_end_matches('/'))).send().await?;
    anyhow::ensure!(r.status().is_success(), "the bench provider server answered {} to /v1/counters", r.status());
    Ok(serde_json::from_slice(&r.bytes().await?)?)
}

/// Connects connections whose `serverUrl` points at a bench provider server.
#[derive(Clone)]
pub struct HttpConnector {
    http: reqwest::Client,
}

impl HttpConnector {
    pub fn new() -> Result<Self, ProviderError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ProviderError::Invalid { message: format!("cannot build the HTTP client: {e}") })?;
        Ok(HttpConnector { http })
    }
}

#[async_trait]
impl Connector for HttpConnector {
    async fn connect(&self, target: &Target, credentials: &Credentials) -> Result<Arc<dyn Provider>, ProviderError> {
        if !matches!(credentials, Credentials::Basic { .. }) {
            return Err(ProviderError::Revoked { message: "the bench service takes username/password only".into() });
        }
        let base = target.server_url.clone().ok_or_else(|| ProviderError::Invalid {
            message: "a bench connection needs serverUrl (the provider server's address)".into(),
        })?;
        Ok(Arc::new(HttpProvider {
            http: self.http.clone(),
            url: format!("{}/v1/call", base.trim_end_matches('/')),
            conn: target.connection.clone(),
        }))
    }
}

/// A client of the provider server for one connection.
pub struct HttpProvider {
    http: reqwest::Client,
    url: String,
    conn: String,
}

impl HttpProvider {
    async fn send(&self, call: Call) -> Result<Reply, ProviderError> {
        let body = serde_json::to_vec(&CallRequest { conn: self.conn.clone(), call })
            .map_err(|e| ProviderError::Invalid { message: format!("cannot encode the request: {e}") })?;
        let transient = |e: reqwest::Error| ProviderError::Transient { message: format!("bench provider server: {e}") };
        let r = self.http.post(&self.url).header("content-type", "application/json").body(body).send().await;
        let r = r.map_err(transient)?;
        let status = r.status();
        let retry_after = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = r.bytes().await.map_err(transient)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| ProviderError::Transient { message: format!("bad answer from the bench server: {e}") });
        }
        let message =
            serde_json::from_slice::<WireError>(&bytes).map(|w| w.message).unwrap_or_else(|_| status.to_string());
        Err(match status.as_u16() {
            429 => ProviderError::RateLimited { retry_after, message },
            401 => ProviderError::Unauthorized { message },
            403 => ProviderError::Revoked { message },
            404 => ProviderError::NotFound { message },
            409 | 412 => ProviderError::Conflict { message },
            400 | 422 => ProviderError::Invalid { message },
            _ => ProviderError::Transient { message },
        })
    }
}

fn unexpected(r: Reply) -> ProviderError {
    ProviderError::Transient { message: format!("unexpected answer from the bench server: {r:?}") }
}

fn calendar_ok(calendar: &str) -> Result<(), ProviderError> {
    if calendar == provider::CALENDAR {
        Ok(())
    } else {
        Err(ProviderError::NotFound { message: format!("calendar {calendar:?} does not exist") })
    }
}

#[async_trait]
impl Provider for HttpProvider {
    async fn account(&self) -> Result<AccountInfo, ProviderError> {
        match self.send(Call::Account).await? {
            Reply::Account { email, calendars } => Ok(AccountInfo { email, calendars }),
            r => Err(unexpected(r)),
        }
    }

    async fn create(&self, calendar: &str, key: &str, event: &EventData) -> Result<Created, ProviderError> {
        calendar_ok(calendar)?;
        match self.send(Call::Create { key: key.into(), event: event.clone() }).await? {
            Reply::Created { existing: false, event } => Ok(Created::New(event.into())),
            Reply::Created { existing: true, event } => Ok(Created::Existing(event.into())),
            r => Err(unexpected(r)),
        }
    }

    async fn update(
        &self,
        calendar: &str,
        id: &str,
        etag: Option<&str>,
        event: &EventData,
    ) -> Result<RemoteEvent, ProviderError> {
        calendar_ok(calendar)?;
        let call = Call::Update { id: id.into(), etag: etag.map(Into::into), event: event.clone() };
        match self.send(call).await? {
            Reply::Event { event: Some(e) } => Ok(e.into()),
            r => Err(unexpected(r)),
        }
    }

    async fn delete(&self, calendar: &str, id: &str, etag: Option<&str>) -> Result<(), ProviderError> {
        calendar_ok(calendar)?;
        match self.send(Call::Delete { id: id.into(), etag: etag.map(Into::into) }).await? {
            Reply::Done => Ok(()),
            r => Err(unexpected(r)),
        }
    }

    async fn get(&self, calendar: &str, id: &str) -> Result<Option<RemoteEvent>, ProviderError> {
        calendar_ok(calendar)?;
        match self.send(Call::Get { id: id.into() }).await? {
            Reply::Event { event } => Ok(event.map(Into::into)),
            r => Err(unexpected(r)),
        }
    }

    async fn find_by_key(&self, calendar: &str, key: &str) -> Result<Option<RemoteEvent>, ProviderError> {
        calendar_ok(calendar)?;
        match self.send(Call::FindByKey { key: key.into() }).await? {
            Reply::Event { event } => Ok(event.map(Into::into)),
            r => Err(unexpected(r)),
        }
    }

    async fn list(&self, calendar: &str, _window: Window, _cursor: Option<&str>) -> Result<EventPage, ProviderError> {
        calendar_ok(calendar)?;
        match self.send(Call::List).await? {
            Reply::Events { events } => Ok(EventPage {
                events: events.into_iter().map(Into::into).collect(),
                removed: vec![],
                next_cursor: None,
                full_resync: false,
            }),
            r => Err(unexpected(r)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{CALENDAR, Profile};
    use calsync::resources::ProviderKind;
    use chrono::{TimeZone, Utc};
    use secrecy::SecretString;

    fn event() -> EventData {
        let t = Utc.with_ymd_and_hms(2030, 1, 1, 10, 0, 0).single().expect("valid date");
        let at = |u: chrono::DateTime<Utc>| EventTime::DateTime { utc: u, local: u.naive_utc(), zone: None };
        EventData {
            title: "t".into(),
            description: None,
            category: None,
            start: at(t),
            end: at(t + chrono::Duration::hours(1)),
            transparent: false,
            recurrence: vec![],
            exceptions: Vec::new(),
            marker: Marker { owner: "calsync".into(), uid: "u1".into(), task_id: "1".into(), hash: "h".into() },
        }
    }

    async fn client(profile: Profile) -> (Arc<dyn Provider>, String, tokio::task::JoinHandle<std::io::Result<()>>) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(serve(listener, BenchService::new(profile)));
        let target =
            Target { provider: ProviderKind::Caldav, server_url: Some(base.clone()), connection: "ns/c".into() };
        let creds = Credentials::Basic { username: "u".into(), password: SecretString::from("p") };
        let p = HttpConnector::new().expect("client").connect(&target, &creds).await.expect("connect");
        (p, base, server)
    }

    #[tokio::test]
    async fn round_trips_the_provider_contract_over_http() {
        let (p, base, server) =
            client(Profile { latency_ms: 0, quota_rps: 0, quota_concurrency: 0, ..Profile::default() }).await;
        assert_eq!(p.account().await.expect("account").calendars.len(), 1);
        let first = match p.create(CALENDAR, "k1", &event()).await.expect("create") {
            Created::New(e) => e,
            other => panic!("{other:?}"),
        };
        assert!(matches!(p.create(CALENDAR, "k1", &event()).await, Ok(Created::Existing(_))));
        assert!(matches!(
            p.update(CALENDAR, "k1", Some("\"stale\""), &event()).await,
            Err(ProviderError::Conflict { .. })
        ));
        let updated = p.update(CALENDAR, "k1", first.etag.as_deref(), &event()).await.expect("update");
        assert_ne!(updated.etag, first.etag);
        assert!(p.find_by_key(CALENDAR, "k1").await.expect("find").is_some());
        p.delete(CALENDAR, "k1", None).await.expect("delete");
        assert!(p.get(CALENDAR, "k1").await.expect("get").is_none());
        let snap = snapshot(&reqwest::Client::new(), &base).await.expect("stats");
        assert_eq!((snap.stats.events, snap.stats.creates_existing), (0, 1));
        server.abort();
    }

    #[tokio::test]
    async fn faults_arrive_as_http_failures() {
        let mut profile = Profile { latency_ms: 0, quota_rps: 0, quota_concurrency: 0, ..Profile::default() };
        profile.fault_drop = 1.0;
        let (p, base, server) = client(profile).await;
        assert!(matches!(p.create(CALENDAR, "k1", &event()).await, Err(ProviderError::Transient { .. })));
        assert_eq!(snapshot(&reqwest::Client::new(), &base).await.expect("stats").by_uid.get("u1"), Some(&1));
        server.abort();

        let mut profile = Profile { latency_ms: 0, quota_rps: 1, quota_concurrency: 0, ..Profile::default() };
        profile.retry_after_ms = 3000;
        let (p, _, server) = client(profile).await;
        p.get(CALENDAR, "a").await.expect("within quota");
        match p.get(CALENDAR, "b").await {
            Err(ProviderError::RateLimited { retry_after: Some(d), .. }) => assert_eq!(d, Duration::from_secs(1)),
            other => panic!("{other:?}"),
        }
        server.abort();
    }
}
