//! Tests of the Channel answer parsing and of the watch/stop request shapes against a tiny
//! scripted double (the strict fake in `tests/google_push.rs` checks behaviour).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use chrono::{TimeZone, Utc};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::json;

use super::*;
use crate::oauth::AccessTokens;
use crate::providers::google::{GoogleConfig, GoogleProvider};
use crate::providers::{Provider, PushSupport};

const SECRET: &str = "s3cr3t-watch-token-5f2a";

#[test]
fn channel_answers_are_read_with_string_or_number_expirations() {
    let c: GChannel = serde_json::from_value(json!({
        "kind": "api#channel", "id": "ch-1", "resourceId": "ret08u3rv24htgh289g",
        "resourceUri": "https://www.googleapis.com/calendar/v3/calendars/primary/events?alt=json",
        "token": "x", "expiration": "1426325213000",
    }))
    .unwrap();
    assert_eq!(c.resource_id, "ret08u3rv24htgh289g");
    assert_eq!(c.expires_at(), Utc.timestamp_millis_opt(1_426_325_213_000).single());
    let n: GChannel = serde_json::from_value(json!({"resourceId": "r", "expiration": 1_426_325_213_000i64})).unwrap();
    assert_eq!(n.expires_at(), c.expires_at());
    let absent: GChannel = serde_json::from_value(json!({"resourceId": "r"})).unwrap();
    assert_eq!(absent.expires_at(), None);
    let garbage: GChannel = serde_json::from_value(json!({"resourceId": "r", "expiration": "soon"})).unwrap();
    assert_eq!(garbage.expires_at(), None);
    assert!(serde_json::from_value::<GChannel>(json!({"id": "ch-1"})).is_err(), "no resourceId, no way to stop it");
}

#[test]
fn redact_removes_the_secret_from_every_variant() {
    let m = format!("Google answered 400 invalid: token {SECRET} is bad");
    let errs = [
        ProviderError::Invalid { message: m.clone() },
        ProviderError::Transient { message: m.clone() },
        ProviderError::RateLimited { retry_after: None, message: m.clone() },
        ProviderError::NotFound { message: m },
    ];
    for e in errs {
        let s = e.redact(SECRET).to_string();
        assert!(!s.contains(SECRET) && s.contains("[redacted]"), "{s}");
    }
}

// ---- the scripted double ----

#[derive(Default)]
struct Script {
    answers: Mutex<VecDeque<(u16, serde_json::Value)>>,
    seen: Mutex<Vec<(String, String, serde_json::Value)>>,
}

async fn replay(State(s): State<Arc<Script>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    s.seen.lock().unwrap().push((parts.method.to_string(), parts.uri.path().to_string(), body));
    let (code, body) = s.answers.lock().unwrap().pop_front().unwrap_or((599, json!({})));
    if code == 204 {
        return StatusCode::NO_CONTENT.into_response();
    }
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

struct Fixed;

#[async_trait]
impl AccessTokens for Fixed {
    async fn access_token(&self) -> Result<SecretString, ProviderError> {
        Ok(SecretString::from("tok"))
    }
    async fn refresh_after_rejection(&self, _: &SecretString) -> Result<SecretString, ProviderError> {
        Ok(SecretString::from("tok"))
    }
}

async fn double(answers: Vec<(u16, serde_json::Value)>) -> (GoogleProvider, Arc<Script>) {
    let script = Arc::new(Script { answers: Mutex::new(answers.into()), seen: Mutex::default() });
    let app = axum::Router::new().fallback(replay).with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = GoogleConfig { api_url: format!("http://{addr}/calendar/v3"), timeout: Duration::from_secs(5) };
    (GoogleProvider::new(&config, Arc::new(Fixed)).unwrap(), script)
}

fn request() -> WatchRequest {
    WatchRequest {
        id: "0b6c3f0e-1f7c-4c36-9d49-5d1a2f0c9e11".into(),
        address: "https://calsync.example.com/api/calendar/webhooks/google".into(),
        lifecycle_address: None,
        secret: SecretString::from(SECRET),
        ttl: Duration::from_secs(3600),
    }
}

#[tokio::test]
async fn watch_sends_the_channel_and_reads_the_granted_expiration() {
    let answer = json!({"kind": "api#channel", "id": request().id, "resourceId": "res-1",
        "resourceUri": "https://x/calendars/a%40b/events?alt=json", "token": SECRET, "expiration": "1900000000000"});
    let (p, script) = double(vec![(200, answer)]).await;
    assert_eq!(p.push_support(), PushSupport::Recreate);
    let w = p.watch("a@b", &request()).await.unwrap();
    assert_eq!(w.id, request().id);
    assert_eq!(w.provider_id, "res-1");
    assert_eq!(Some(w.expiration), Utc.timestamp_millis_opt(1_900_000_000_000).single());
    let seen = script.seen.lock().unwrap().clone();
    let (method, path, body) = &seen[0];
    assert_eq!((method.as_str(), path.as_str()), ("POST", "/calendar/v3/calendars/a@b/events/watch"));
    assert_eq!(
        body,
        &json!({"id": request().id, "type": "web_hook", "address": request().address, "token": SECRET,
            "params": {"ttl": "3600"}})
    );
}

#[tokio::test]
async fn watch_without_expiration_assumes_the_requested_ttl() {
    let (p, _) = double(vec![(200, json!({"resourceId": "res-1"}))]).await;
    let before = Utc::now();
    let w = p.watch("primary", &request()).await.unwrap();
    let granted = w.expiration - before;
    assert!(granted >= chrono::Duration::seconds(3599) && granted <= chrono::Duration::seconds(3700), "{granted}");
}

#[tokio::test]
async fn watch_errors_are_classified_and_never_carry_the_secret() {
    let echo = json!({"error": {"code": 400, "message": format!("bad token {SECRET}"),
        "errors": [{"domain": "push", "reason": "invalid", "message": format!("bad token {SECRET}")}]}});
    let (p, _) = double(vec![(400, echo), (503, json!({})), (200, json!({"id": "x"}))]).await;
    let e = p.watch("primary", &request()).await.unwrap_err();
    assert!(matches!(&e, ProviderError::Invalid { .. }), "{e:?}");
    assert!(!e.to_string().contains(SECRET) && !format!("{e:?}").contains(SECRET), "{e}");
    assert!(matches!(p.watch("primary", &request()).await, Err(ProviderError::Transient { .. })));
    let unusable = p.watch("primary", &request()).await.unwrap_err();
    assert!(matches!(unusable, ProviderError::Transient { .. }), "an answer without resourceId: {unusable:?}");
    assert!(!format!("{:?}", request()).contains(SECRET));
}

#[tokio::test]
async fn stop_sends_id_and_resource_id_and_treats_gone_as_success() {
    let (p, script) = double(vec![(204, json!(null)), (404, json!({})), (403, json!({}))]).await;
    let w = Watch { id: "ch-1".into(), provider_id: "res-1".into(), expiration: Utc::now() };
    p.stop_watch("primary", &w).await.unwrap();
    p.stop_watch("primary", &w).await.unwrap();
    assert!(p.stop_watch("primary", &w).await.is_err());
    let seen = script.seen.lock().unwrap().clone();
    assert_eq!(seen[0].1, "/calendar/v3/channels/stop");
    assert_eq!(seen[0].2, json!({"id": "ch-1", "resourceId": "res-1"}));
}
