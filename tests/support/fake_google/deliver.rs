//! Delivery of push notifications over real HTTP: a bodiless POST with Google's `X-Goog-*`
//! headers to the channel's address, each message in its own task so a slow receiver delays
//! nothing else (and `sync` can beat the watch answer). Retries 500/502/503/504 and unreachable
//! receivers with exponential backoff, a bounded number of times; any other status ends the
//! message (2xx success, the rest a failed message). A channel stopped, forgotten or expired
//! between attempts gets no further attempts.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc::UnboundedReceiver;

use super::Shared;
use super::push::DeliveryAttempt;

/// Tries per message (the first plus retries).
pub const ATTEMPTS: u32 = 4;
/// Wait before the first retry; doubles after each.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// One message for one channel.
#[derive(Debug)]
pub struct Job {
    pub channel_id: String,
    pub resource_id: String,
    pub message_number: u64,
    pub state: &'static str,
    pub address: String,
    pub headers: Vec<(&'static str, String)>,
}

/// Runs on the fake's runtime until the fake stops.
pub async fn run(shared: Arc<Shared>, mut jobs: UnboundedReceiver<Job>) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)")
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fake Google cannot deliver notifications: {e}");
            return;
        }
    };
    while let Some(job) = jobs.recv().await {
        tokio::spawn(deliver(shared.clone(), client.clone(), job));
    }
}

async fn deliver(shared: Arc<Shared>, client: reqwest::Client, job: Job) {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        if !shared.lock().push.is_live(&job.channel_id, &job.resource_id, Utc::now()) {
            return;
        }
        let mut req = client.post(&job.address).body(Vec::<u8>::new());
        for (name, value) in &job.headers {
            req = req.header(*name, value);
        }
        let status = match req.send().await {
            Ok(resp) => Some(resp.status().as_u16()),
            Err(_) => None,
        };
        shared.lock().push.deliveries.push(DeliveryAttempt {
            channel_id: job.channel_id.clone(),
            message_number: job.message_number,
            resource_state: job.state.to_string(),
            attempt,
            status,
        });
        if !matches!(status, None | Some(500 | 502 | 503 | 504)) {
            return;
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
}
