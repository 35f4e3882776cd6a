//! Test helpers for the REST API: an in-process router on `MemoryObjects` + `MemoryCalendar`,
//! and — clearly a test stand-in for the standalone work queue another engineer builds — a tiny
//! loop that reconciles every changed object with the real `Engine`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use calsync::api::{ApiConfig, AppState, Metrics, router};
use calsync::engine::memory::MemoryObjects;
use calsync::engine::{Engine, EngineConfig, Objects};
use calsync::providers::memory::{MemoryCalendar, MemoryConnector};
use http_body_util::BodyExt;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower::ServiceExt;

pub const NS: &str = "default";
pub const API_KEY: &str = "test-api-key-0123456789";
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789";

pub struct Harness {
    pub objects: MemoryObjects,
    pub calendar: MemoryCalendar,
    pub router: Router,
    engine: Option<JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(h) = self.engine.take() {
            h.abort();
        }
    }
}

pub fn config() -> ApiConfig {
    ApiConfig {
        api_keys: vec![API_KEY.to_string().into()],
        jwt_secret: Some(JWT_SECRET.to_string().into()),
        cors_origins: vec!["https://app.example".into()],
        frontend_url: "https://app.example".into(),
        sync_wait: Duration::from_secs(5),
        ..ApiConfig::default()
    }
}

impl Harness {
    /// API only: nothing reconciles (waits end in 202).
    pub fn without_engine(config: ApiConfig) -> Self {
        Self::build(config, false, None)
    }

    /// API only, checking provider notifications with `keys`.
    pub fn with_push_keys(config: ApiConfig, keys: calsync::credentials::push::PushKeys) -> Self {
        Self::build(config, false, Some(keys))
    }

    /// API plus the real engine driven by the test loop, with keys (as every real deployment
    /// has: change cursors and push secrets derive from them).
    pub fn with_engine(config: ApiConfig) -> Self {
        Self::build(config, true, Some(calsync::credentials::push::PushKeys::new(vec![[7u8; 32]])))
    }

    /// API plus the engine, with keys (push checks and ICS feed tokens).
    pub fn with_engine_and_keys(config: ApiConfig, keys: calsync::credentials::push::PushKeys) -> Self {
        Self::build(config, true, Some(keys))
    }

    fn build(config: ApiConfig, engine: bool, push_keys: Option<calsync::credentials::push::PushKeys>) -> Self {
        let objects = MemoryObjects::new();
        let calendar = MemoryCalendar::new();
        let connector = Arc::new(MemoryConnector { service: calendar.clone() });
        let shared: Arc<dyn Objects> = Arc::new(objects.clone());
        let mut state = AppState::new(shared.clone(), connector.clone(), NS, config, Arc::new(Metrics::new()));
        if let Some(keys) = push_keys {
            state = state.with_push_keys(keys);
        }
        let handle = engine.then(|| {
            let engine = Engine::new(shared.clone(), connector, EngineConfig::default());
            spawn_engine_loop(engine)
        });
        Harness { objects, calendar, router: router(state), engine: handle }
    }

    /// Send one request; the body is raw text (so tests can send broken JSON).
    pub async fn raw(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let has_body = body.is_some();
        if has_body && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body.map(Body::from).unwrap_or_else(Body::empty)).expect("request");
        let resp = self.router.clone().oneshot(req).await.expect("router never fails");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, headers, value)
    }

    /// JSON call with the static API key.
    pub async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (s, _, v) = self.raw(method, uri, Some(API_KEY), body.map(|b| b.to_string()), &[]).await;
        (s, v)
    }

    /// Connect `user` to the memory calendar through `/apple/connect`.
    pub async fn connect_apple(&self, user: &str) -> Value {
        let (s, v) = self
            .call(
                Method::POST,
                "/api/calendar/apple/connect",
                Some(json!({"user_id": user, "apple_id": "user", "app_password": "secret", "server_url": "http://127.0.0.1:1/dav/"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }
}

/// An HS256 JWT for `sub`, expiring `exp_offset` seconds from now (negative: expired).
pub fn jwt(sub: &str, exp_offset: i64) -> String {
    let exp = chrono::Utc::now().timestamp() + exp_offset;
    jsonwebtoken::encode(
        &Header::default(),
        &json!({"sub": sub, "exp": exp}),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("jwt")
}

/// Drive the engine with the standalone work queue (the same driver `calsync standalone` uses).
fn spawn_engine_loop(engine: Engine) -> JoinHandle<()> {
    tokio::spawn(calsync::standalone::queue::run(engine, std::future::pending()))
}
