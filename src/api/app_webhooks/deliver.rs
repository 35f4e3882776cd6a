//! The dispatcher: takes due messages from an `Outbox`, POSTs them signed to the app's endpoint
//! with at most `concurrency` attempts in flight and a timeout per attempt, and settles outcomes
//! in batches on a task of their own (one store transaction for many acknowledgements, never
//! holding up the next attempts). 2xx: delivered. 410: the
//! receiver asked to stop; the endpoint is disabled (persisted, a warning, a metric). Anything
//! else (other codes, timeouts, refused connections): retried with exponential backoff and
//! jitter (a `Retry-After` is honoured up to the longest delay) until the give-up period has
//! passed since the change, then dead-lettered and counted.
//!
//! Owns: the delivery loop, the retry schedule and the request's headers. Must not touch: what
//! is owed (the outbox's writer decides) or any object; writers never wait for it: they only
//! add rows and wake it.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use chrono::Utc;
use rand::Rng;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use super::outbox::{Outbox, OutboxEntry, OutboxSettle};
use super::stats::WebhookStats;
use super::{Signer, WebhookConfig, stats};

/// How often the pending gauge is read from the outbox, and the longest idle wait.
const IDLE: Duration = Duration::from_secs(1);

/// What one attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// 410 Gone: stop sending to this endpoint.
    Gone,
    Failed {
        error: String,
        retry_after: Option<Duration>,
    },
}

/// The delay before attempt `attempts + 1`, after `attempts` failed ones: `retry_min × 2^(n-1)`,
/// at most `retry_max`, times a jitter factor in [0.8, 1.2] (`jitter` in [-1, 1]) so receivers
/// coming back are not hit by every message at once.
pub fn backoff(config: &WebhookConfig, attempts: u32, jitter: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(40) as i32;
    let base = (config.retry_min.as_secs_f64() * 2f64.powi(exp)).min(config.retry_max.as_secs_f64());
    let with = base * (1.0 + 0.2 * jitter.clamp(-1.0, 1.0));
    Duration::from_secs_f64(with.min(config.retry_max.as_secs_f64()).max(0.0))
}

/// What to record for an entry after `attempt`.
pub fn settle_for(
    config: &WebhookConfig,
    entry: &OutboxEntry,
    attempt: &Attempt,
    now_ms: i64,
    jitter: f64,
) -> OutboxSettle {
    let seq = entry.seq;
    let attempts = entry.attempts.saturating_add(1);
    match attempt {
        Attempt::Delivered => OutboxSettle::Delivered { seq },
        // Kept pending: a receiver that comes back (a new URL) still gets it.
        Attempt::Gone => OutboxSettle::Retry { seq, attempts, next_ms: now_ms, error: "HTTP 410".into() },
        Attempt::Failed { error, retry_after } => {
            let give_up_ms = i64::try_from(config.give_up.as_millis()).unwrap_or(i64::MAX);
            if now_ms.saturating_sub(entry.created_ms) >= give_up_ms {
                return OutboxSettle::Dead { seq, attempts, reason: error.clone() };
            }
            let mut delay = backoff(config, attempts, jitter);
            if let Some(ra) = retry_after {
                delay = delay.max((*ra).min(config.retry_max));
            }
            let next_ms = now_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
            OutboxSettle::Retry { seq, attempts, next_ms, error: error.clone() }
        }
    }
}

/// One signed POST of `entry`.
pub async fn send(
    client: &reqwest::Client,
    url: &reqwest::Url,
    signer: &Signer,
    timeout: Duration,
    entry: &OutboxEntry,
) -> Attempt {
    let timestamp = Utc::now().timestamp();
    let signature = signer.sign(&entry.id, timestamp, entry.body.as_bytes());
    let call = crate::telemetry::spans::ClientCall::start("webhook", &reqwest::Method::POST, url);
    let mut request = client
        .post(url.clone())
        .timeout(timeout)
        .header("content-type", "application/json")
        .header("webhook-id", &entry.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(entry.body.clone());
    if let Some(tp) = call.traceparent() {
        request = request.header("traceparent", tp);
    }
    let sent = request.send().instrument(call.span().clone()).await;
    match &sent {
        Ok(r) => call.status(r.status().as_u16()),
        Err(e) => call.failed(e),
    }
    match sent {
        Ok(r) if r.status().is_success() => Attempt::Delivered,
        Ok(r) if r.status() == reqwest::StatusCode::GONE => Attempt::Gone,
        Ok(r) => {
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Attempt::Failed { error: format!("HTTP {}", r.status().as_u16()), retry_after }
        }
        // Only the error's class: reqwest's text names the URL, which may carry a token.
        Err(e) => {
            let error = if e.is_timeout() {
                format!("no answer within {timeout:?}")
            } else if e.is_connect() {
                "connection failed".to_string()
            } else {
                "request failed".to_string()
            };
            Attempt::Failed { error, retry_after: None }
        }
    }
}

/// Delivers from one outbox to one endpoint; run it in exactly one process per outbox.
pub struct Dispatcher<O: Outbox> {
    outbox: Arc<O>,
    config: WebhookConfig,
    client: reqwest::Client,
    wake: Arc<Notify>,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl<O: Outbox> Dispatcher<O> {
    /// `wake` is notified by whoever adds messages.
    pub fn new(outbox: Arc<O>, config: WebhookConfig, wake: Arc<Notify>) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            // A redirect is a misconfigured endpoint, not a place to send signed payloads to.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(config.concurrency)
            .user_agent(concat!("calsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("building the webhook HTTP client: {e}"))?;
        Ok(Dispatcher { outbox, config, client, wake })
    }

    async fn refresh_depth(&self) {
        if let Ok((n, oldest)) = self.outbox.depth().await {
            let s = stats();
            s.pending.store(n, Ordering::Relaxed);
            let age = oldest.map(|t| now_ms().saturating_sub(t).max(0) as u64).unwrap_or(0);
            s.oldest_pending_ms.store(age, Ordering::Relaxed);
        }
    }

    /// Deliver until `shutdown` is true. Attempts still in flight then are abandoned: their
    /// messages stay pending and go again (same `webhook-id`) on the next start.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let endpoint = self.config.endpoint_key();
        if let Ok(Some(reason)) = self.outbox.disabled(&endpoint).await {
            self.report_disabled(&reason, false);
            let _ = shutdown.wait_for(|s| *s).await;
            return;
        }
        let signer = Arc::new(self.config.signer.clone());
        let url = Arc::new(self.config.url.clone());
        let mut inflight: JoinSet<(OutboxEntry, Attempt, Duration)> = JoinSet::new();
        // In flight or finished but not yet settled: not fetched again.
        let mut busy: HashSet<i64> = HashSet::new();
        // Fetched and due, waiting for a free slot (bounded by `prefetch`).
        let mut ready: VecDeque<OutboxEntry> = VecDeque::new();
        let prefetch = self.config.concurrency.saturating_mul(4).max(256);
        let (settle, settled, settler) = spawn_settler(self.outbox.clone());
        let mut settled = settled;
        let mut depth_at = Instant::now() - IDLE;
        let mut gone = false;
        while !*shutdown.borrow() && !gone {
            if depth_at.elapsed() >= IDLE {
                self.refresh_depth().await;
                depth_at = Instant::now();
            }
            let mut wait = IDLE;
            if ready.is_empty() && inflight.len() < self.config.concurrency {
                // One read for many attempts: what is due, earliest first, minus what is busy.
                match self.outbox.due(now_ms(), prefetch, busy.iter().copied().collect()).await {
                    Ok(entries) => {
                        let now = now_ms();
                        if entries.len() < prefetch
                            && let Ok(Some(next)) = self.outbox.next_due(now).await
                        {
                            let ms = u64::try_from(next.saturating_sub(now).max(1)).unwrap_or(1);
                            wait = wait.min(Duration::from_millis(ms));
                        }
                        for entry in entries {
                            busy.insert(entry.seq);
                            ready.push_back(entry);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reading the app webhook outbox failed; retrying"),
                }
            }
            while inflight.len() < self.config.concurrency
                && let Some(entry) = ready.pop_front()
            {
                let (client, url, signer) = (self.client.clone(), url.clone(), signer.clone());
                let timeout = self.config.timeout;
                inflight.spawn(async move {
                    let started = Instant::now();
                    let attempt = send(&client, &url, &signer, timeout, &entry).await;
                    (entry, attempt, started.elapsed())
                });
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                    let mut batch = vec![done];
                    while let Some(more) = inflight.try_join_next() {
                        batch.push(more);
                    }
                    let mut outcomes = Vec::with_capacity(batch.len());
                    for done in batch {
                        let Ok((entry, attempt, took)) = done else { continue };
                        gone |= self.record(&entry, &attempt, took, &mut outcomes).await;
                    }
                    // Settled off this loop: the next attempts start while the batch commits.
                    let _ = settle.send(outcomes);
                }
                Some(seqs) = settled.recv() => {
                    for s in seqs {
                        busy.remove(&s);
                    }
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        inflight.abort_all();
        // Let what finished commit (acknowledged messages are not sent again needlessly).
        drop(settle);
        let _ = settler.await;
        if gone {
            let _ = shutdown.wait_for(|s| *s).await;
        }
    }

    /// Account for one finished attempt; true when the receiver answered 410.
    async fn record(&self, entry: &OutboxEntry, attempt: &Attempt, took: Duration, outcomes: &mut Outcomes) -> bool {
        let s = stats();
        WebhookStats::bump(&s.attempts);
        s.attempt_seconds.observe(took);
        let now = now_ms();
        let outcome = settle_for(&self.config, entry, attempt, now, rand::rng().random_range(-1.0..=1.0));
        match &outcome {
            OutboxSettle::Delivered { .. } => {
                WebhookStats::bump(&s.delivered);
                let age = u64::try_from(now.saturating_sub(entry.created_ms).max(0)).unwrap_or(0);
                s.delivery_seconds.observe(Duration::from_millis(age));
            }
            OutboxSettle::Retry { attempts, error, .. } if *attempt != Attempt::Gone => {
                WebhookStats::bump(&s.retried);
                tracing::debug!(webhook_id = %entry.id, attempts, %error, "app webhook attempt failed; will retry");
            }
            OutboxSettle::Retry { .. } => {}
            OutboxSettle::Dead { attempts, reason, .. } => {
                WebhookStats::bump(&s.dead_lettered);
                tracing::warn!(webhook_id = %entry.id, attempts, %reason, give_up = ?self.config.give_up,
                    "app webhook message given up on (dead-lettered)");
            }
        }
        outcomes.push((outcome, entry.seq));
        if *attempt == Attempt::Gone {
            WebhookStats::bump(&s.gone);
            let reason = "the receiver answered 410 Gone";
            if let Err(e) = self.outbox.disable(&self.config.endpoint_key(), reason).await {
                tracing::warn!(error = %e, "could not record that the app webhook endpoint is disabled");
            }
            self.report_disabled(reason, true);
            return true;
        }
        false
    }

    fn report_disabled(&self, reason: &str, now: bool) {
        stats().endpoint_disabled.store(1, Ordering::Relaxed);
        let when = if now { "now" } else { "since an earlier run" };
        tracing::warn!(%reason, "app webhook endpoint disabled {when}: nothing more is sent to CALSYNC_APP_WEBHOOK_URL; pending messages are kept; set a different URL to deliver again");
    }
}

type Outcomes = Vec<(OutboxSettle, i64)>;

/// The task that commits outcomes: batches that arrive while one commits are merged into the
/// next transaction (group commit). Reports the seqs it settled (or failed to: those messages
/// stay pending as they were and go again with the same ids).
fn spawn_settler<O: Outbox>(
    outbox: Arc<O>,
) -> (mpsc::UnboundedSender<Outcomes>, mpsc::UnboundedReceiver<Vec<i64>>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Outcomes>();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(mut batch) = rx.recv().await {
            while let Ok(more) = rx.try_recv() {
                batch.extend(more);
            }
            let delivered = batch.iter().filter(|(o, _)| matches!(o, OutboxSettle::Delivered { .. })).count() as u64;
            let seqs: Vec<i64> = batch.iter().map(|(_, s)| *s).collect();
            match outbox.settle(batch.into_iter().map(|(o, _)| o).collect()).await {
                Ok(()) => {
                    let p = &stats().pending;
                    let _ = p.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(delivered)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "recording app webhook outcomes failed; those messages will be sent again");
                    // Not at once: a store that fails now would be hammered with resends.
                    tokio::time::sleep(IDLE).await;
                }
            }
            let _ = done_tx.send(seqs);
        }
    });
    (tx, done_rx, task)
}

#[cfg(test)]
#[path = "deliver_tests.rs"]
mod tests;
