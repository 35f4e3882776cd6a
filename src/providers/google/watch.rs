//! Google push channels: `events.watch` to open one per calendar, `channels.stop` to close it.
//!
//! Owns: the Channel request body and answer, and which answers mean "stopped". Must not touch
//! when to watch or renew (the engine decides) nor receiving notifications (the REST layer).
//! Google cannot extend a channel, so renewal is a new watch plus a stop of the old one.

use chrono::{DateTime, TimeZone, Utc};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::client::{classify, parse};
use super::{GoogleProvider, api_url};
use crate::providers::{ProviderError, Watch, WatchRequest};

/// The fields of Google's Channel answer we read.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GChannel {
    #[serde(default)]
    pub id: Option<String>,
    /// Without it the channel could never be stopped, so an answer lacking it is unusable.
    pub resource_id: String,
    /// Unix milliseconds; Google sends a string, but a number is read too.
    #[serde(default)]
    pub expiration: Option<Value>,
}

impl GChannel {
    /// The granted expiration, `None` when absent or unreadable.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        let ms = match self.expiration.as_ref()? {
            Value::String(s) => s.trim().parse::<i64>().ok()?,
            Value::Number(n) => n.as_i64()?,
            _ => return None,
        };
        Utc.timestamp_millis_opt(ms).single()
    }
}

/// The watch request body. The secret goes only into this JSON, which is never logged.
fn watch_body(request: &WatchRequest) -> Value {
    // Google's ttl is whole seconds; 0 would not be a lifetime at all.
    let ttl = request.ttl.as_secs().max(1);
    json!({
        "id": request.id,
        "type": "web_hook",
        "address": request.address,
        "token": request.secret.expose_secret(),
        "params": { "ttl": ttl.to_string() },
    })
}

/// `events.watch` on `calendar`.
pub async fn watch(p: &GoogleProvider, calendar: &str, request: &WatchRequest) -> Result<Watch, ProviderError> {
    let url = api_url(&p.base, &["calendars", calendar, "events", "watch"])?;
    let body = watch_body(request);
    let requested_at = Utc::now();
    let what = || format!("opening push channel {} on {calendar}", request.id);
    let secret = request.secret.expose_secret();
    let resp = p.client().send(Method::POST, &url, None, Some(&body)).await.map_err(|e| e.redact(secret))?;
    if resp.status.as_u16() != 200 {
        return Err(classify(&resp, &what()).redact(secret));
    }
    let channel: GChannel = parse(&resp, &what()).map_err(|e| e.redact(secret))?;
    if channel.id.as_deref().is_some_and(|id| id != request.id) {
        tracing::warn!(calendar, channel = %request.id, "google answered a watch with another channel id");
    }
    let expiration = channel.expires_at().unwrap_or_else(|| {
        if channel.expiration.is_some() {
            tracing::warn!(calendar, channel = %request.id, "google's channel expiration is unreadable; assuming the requested ttl");
        }
        let ttl = chrono::Duration::from_std(request.ttl).unwrap_or(chrono::Duration::zero());
        requested_at.checked_add_signed(ttl).unwrap_or(requested_at)
    });
    tracing::debug!(calendar, channel = %request.id, %expiration, "google push channel opened");
    Ok(Watch { id: request.id.clone(), provider_id: channel.resource_id, expiration })
}

/// `channels.stop`. Google answers 404 for a channel it no longer has (expired or stopped).
pub async fn stop(p: &GoogleProvider, calendar: &str, watch: &Watch) -> Result<(), ProviderError> {
    let url = api_url(&p.base, &["channels", "stop"])?;
    let body = json!({ "id": watch.id, "resourceId": watch.provider_id });
    let resp = p.client().send(Method::POST, &url, None, Some(&body)).await?;
    match resp.status.as_u16() {
        200 | 204 => {
            tracing::debug!(calendar, channel = %watch.id, "google push channel stopped");
            Ok(())
        }
        404 => Ok(()),
        _ => Err(classify(&resp, &format!("stopping push channel {} on {calendar}", watch.id))),
    }
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
