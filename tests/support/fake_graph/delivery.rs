//! The fake Graph's outgoing HTTP: the validation handshake of a create, and notification POSTs
//! with bounded retries, sent from a dispatcher task so an event write never waits for them.
//!
//! Graph retries a notification the endpoint did not take (no 2xx, or no answer in time);
//! here a few attempts with doubling backoff stand for Graph's four hours.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use super::Shared;
use super::subscriptions::{Delivery, DeliveryKind, SubscriptionOptions, Validation};

/// One notification entry on its way to one subscription's URL.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub subscription_id: String,
    pub url: String,
    pub item: Value,
}

/// POST `url?validationToken=…` and check the answer as Graph does: 200, `text/plain`, the
/// decoded token as the whole body, within `timeout`.
pub async fn validate(http: &reqwest::Client, url: &str, timeout: Duration) -> Validation {
    // Graph's tokens are opaque text with spaces and colons: a receiver that echoes the
    // encoded form, or trims it, fails.
    let token = format!(
        "Validation: Testing client application reachability for subscription Request-Id: {}",
        uuid::Uuid::new_v4()
    );
    let failed = |status| Validation { url: url.to_string(), status, passed: false };
    let Ok(mut target) = reqwest::Url::parse(url) else { return failed(None) };
    // Query parameters already on the URL are kept, as Graph keeps them.
    target.query_pairs_mut().append_pair("validationToken", &token);
    let exchange = async {
        let resp = http.post(target).header("content-type", "text/plain; charset=utf-8").body("").send().await.ok()?;
        let status = resp.status().as_u16();
        let text_plain = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("text/plain"));
        let body = resp.bytes().await.ok()?;
        Some((status, text_plain, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Some((status, text_plain, body))) => Validation {
            url: url.to_string(),
            status: Some(status),
            passed: status == 200 && text_plain && body.as_ref() == token.as_bytes(),
        },
        Ok(None) | Err(_) => failed(None),
    }
}

/// POST the batch to its URL until it is taken or the attempts run out; every attempt is
/// recorded per subscription. Returns the last status.
pub async fn deliver(
    shared: &Shared,
    http: &reqwest::Client,
    options: &SubscriptionOptions,
    kind: DeliveryKind,
    batch: Vec<Outgoing>,
) -> Option<u16> {
    let url = batch.first().map(|o| o.url.clone())?;
    let body = json!({"value": batch.iter().map(|o| o.item.clone()).collect::<Vec<_>>()});
    let mut per_sub: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for o in &batch {
        per_sub.entry(o.subscription_id.clone()).or_default().push(o.item.clone());
    }
    let mut backoff = options.retry_backoff;
    let mut status = None;
    for attempt in 1..=options.retries.saturating_add(1) {
        let send = http.post(&url).json(&body).send();
        status = match tokio::time::timeout(options.delivery_timeout, send).await {
            Ok(Ok(resp)) => Some(resp.status().as_u16()),
            Ok(Err(_)) | Err(_) => None,
        };
        shared.lock().subs.deliveries.extend(per_sub.iter().map(|(id, items)| Delivery {
            subscription_id: id.clone(),
            kind,
            url: url.clone(),
            items: items.clone(),
            attempt,
            status,
            dropped: false,
        }));
        if status.is_some_and(|s| (200..300).contains(&s)) {
            break;
        }
        if attempt <= options.retries {
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
    }
    status
}

/// Sends queued change notifications: whatever is queued together goes out batched, one POST
/// per notification URL, each on its own task so a slow endpoint delays only itself.
pub async fn dispatch(shared: Arc<Shared>, mut queue: UnboundedReceiver<Outgoing>) {
    while let Some(first) = queue.recv().await {
        let mut by_url: BTreeMap<String, Vec<Outgoing>> = BTreeMap::new();
        by_url.entry(first.url.clone()).or_default().push(first);
        while let Ok(more) = queue.try_recv() {
            by_url.entry(more.url.clone()).or_default().push(more);
        }
        let (options, http) = {
            let st = shared.lock();
            (st.subs.options.clone(), st.subs.http.clone())
        };
        for (_, batch) in by_url {
            let (shared, http, options) = (shared.clone(), http.clone(), options.clone());
            tokio::spawn(async move {
                deliver(&shared, &http, &options, DeliveryKind::Change, batch).await;
            });
        }
    }
}
