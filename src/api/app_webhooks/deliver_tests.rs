use std::sync::Mutex;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

use super::super::outbox::{MemoryOutbox, OutboxMessage};
use super::super::{Secret, message_id};
use super::*;

fn config(url: &str) -> WebhookConfig {
    WebhookConfig {
        url: reqwest::Url::parse(url).unwrap(),
        signer: Signer::parse(&Secret::generate()).unwrap(),
        timeout: Duration::from_millis(300),
        concurrency: 4,
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        give_up: Duration::from_secs(3600),
        max_pending: 1000,
    }
}

fn entry(seq: i64, created_ms: i64, attempts: u32) -> OutboxEntry {
    OutboxEntry { seq, id: format!("msg_{seq}"), body: "{}".into(), created_ms, attempts }
}

#[test]
fn backoff_doubles_with_jitter_and_caps() {
    let mut c = config("http://127.0.0.1:1/");
    c.retry_min = Duration::from_secs(5);
    c.retry_max = Duration::from_secs(3600);
    let plain: Vec<u64> = (1..=12).map(|n| backoff(&c, n, 0.0).as_secs()).collect();
    assert_eq!(plain, [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]);
    assert_eq!(backoff(&c, 1, 1.0), Duration::from_secs(6));
    assert_eq!(backoff(&c, 1, -1.0), Duration::from_secs(4));
    assert_eq!(backoff(&c, 30, 1.0), Duration::from_secs(3600), "jitter never passes the cap");
    // Retrying for 24 h at this schedule is about 30 attempts.
    let (mut t, mut n) = (0u64, 0u32);
    while t < 86_400 {
        n += 1;
        t += backoff(&c, n, 0.0).as_secs();
    }
    assert!((25..=35).contains(&n), "{n} attempts in 24 h");
}

#[test]
fn outcomes_retry_give_up_and_honour_retry_after() {
    let c = config("http://127.0.0.1:1/");
    let now = 10_000_000;
    let failed = Attempt::Failed { error: "HTTP 503".into(), retry_after: None };
    assert_eq!(
        settle_for(&c, &entry(1, now - 1000, 0), &failed, now, 0.0),
        OutboxSettle::Retry { seq: 1, attempts: 1, next_ms: now + 20, error: "HTTP 503".into() }
    );
    let old = entry(2, now - 3_600_000, 7);
    assert_eq!(
        settle_for(&c, &old, &failed, now, 0.0),
        OutboxSettle::Dead { seq: 2, attempts: 8, reason: "HTTP 503".into() }
    );
    let limited = Attempt::Failed { error: "HTTP 429".into(), retry_after: Some(Duration::from_millis(80)) };
    let OutboxSettle::Retry { next_ms, .. } = settle_for(&c, &entry(3, now, 0), &limited, now, 0.0) else { panic!() };
    assert_eq!(next_ms, now + 80);
    let huge = Attempt::Failed { error: "HTTP 429".into(), retry_after: Some(Duration::from_secs(99_999)) };
    let OutboxSettle::Retry { next_ms, .. } = settle_for(&c, &entry(3, now, 0), &huge, now, 0.0) else { panic!() };
    assert_eq!(next_ms, now + 100, "Retry-After is bounded by the longest delay");
    assert_eq!(settle_for(&c, &entry(4, now, 0), &Attempt::Delivered, now, 0.0), OutboxSettle::Delivered { seq: 4 });
}

/// (webhook-id, webhook-timestamp, webhook-signature, body) of one request.
type Seen = Arc<Mutex<Vec<(String, String, String, String)>>>;

/// A receiver answering from a script of statuses (then 200), recording (id, timestamp,
/// signature, body) of every request.
struct Receiver {
    url: String,
    seen: Seen,
}

async fn receiver(script: Vec<u16>, delay: Duration) -> Receiver {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(Mutex::new(script.into_iter()));
    let (s2, sc2) = (seen.clone(), script.clone());
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let (seen, script) = (s2.clone(), sc2.clone());
            async move {
                let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                seen.lock().unwrap().push((h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"), body));
                tokio::time::sleep(delay).await;
                let code = script.lock().unwrap().next().unwrap_or(200);
                StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { url, seen }
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn start(outbox: Arc<MemoryOutbox>, c: WebhookConfig) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, rx) = watch::channel(false);
    let d = Dispatcher::new(outbox, c, Arc::new(Notify::new())).unwrap();
    (stop, tokio::spawn(d.run(rx)))
}

#[tokio::test]
async fn retries_until_delivered_with_the_same_id_and_a_valid_signature() {
    let r = receiver(vec![503, 500, 404], Duration::ZERO).await;
    let c = config(&r.url);
    let outbox = Arc::new(MemoryOutbox::default());
    let id = message_id("uid", "task.synced", "t1");
    outbox.push(OutboxMessage { id: id.clone(), body: r#"{"type":"task.synced"}"#.into() }, now_ms());
    let (stop, task) = start(outbox.clone(), c.clone());
    until("delivery", || outbox.delivered() == [id.clone()]).await;
    let seen = r.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "three failures, then 200");
    for (got_id, ts, sig, body) in &seen {
        assert_eq!(got_id, &id);
        assert_eq!(sig, &c.signer.sign(&id, ts.parse().unwrap(), body.as_bytes()));
    }
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_keeps_the_message() {
    let r = receiver(vec![410], Duration::ZERO).await;
    let c = config(&r.url);
    let outbox = Arc::new(MemoryOutbox::default());
    outbox.push(OutboxMessage { id: "msg_a".into(), body: "{}".into() }, now_ms());
    let (stop, task) = start(outbox.clone(), c.clone());
    let key = c.endpoint_key();
    until("the endpoint to be disabled", || futures::executor::block_on(outbox.disabled(&key)).unwrap().is_some())
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(r.seen.lock().unwrap().len(), 1, "nothing more is sent after 410");
    assert_eq!(outbox.schedule().len(), 1, "the message is kept");
    stop.send(true).unwrap();
    task.await.unwrap();
    // A restart remembers it.
    let (stop, task) = start(outbox.clone(), c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(r.seen.lock().unwrap().len(), 1);
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(stats().endpoint_disabled.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_slow_receiver_times_out_and_is_retried() {
    let r = receiver(vec![], Duration::from_millis(600)).await;
    let c = config(&r.url);
    let entry = entry(1, now_ms(), 0);
    let client = reqwest::Client::new();
    let url = reqwest::Url::parse(&r.url).unwrap();
    let started = Instant::now();
    let got = send(&client, &url, &c.signer, c.timeout, &entry).await;
    assert!(started.elapsed() < Duration::from_millis(550), "the attempt ended at its timeout");
    assert!(matches!(&got, Attempt::Failed { error, .. } if error.starts_with("no answer")), "{got:?}");
    let refused = reqwest::Url::parse("http://127.0.0.1:1/hook").unwrap();
    let got = send(&client, &refused, &c.signer, c.timeout, &entry).await;
    assert_eq!(got, Attempt::Failed { error: "connection failed".into(), retry_after: None });
}

#[tokio::test]
async fn dead_letters_after_the_give_up_period() {
    let r = receiver(vec![503; 1000], Duration::ZERO).await;
    let mut c = config(&r.url);
    c.give_up = Duration::from_millis(150);
    let outbox = Arc::new(MemoryOutbox::default());
    outbox.push(OutboxMessage { id: "msg_dead".into(), body: "{}".into() }, now_ms());
    let before = stats().dead_lettered.load(Ordering::Relaxed);
    let (stop, task) = start(outbox.clone(), c);
    until("dead letter", || !outbox.dead().is_empty()).await;
    assert_eq!(outbox.dead(), [("msg_dead".to_string(), "HTTP 503".to_string())]);
    assert!(r.seen.lock().unwrap().len() >= 2, "retried before giving up");
    assert!(stats().dead_lettered.load(Ordering::Relaxed) > before);
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn many_messages_flow_with_bounded_concurrency() {
    let r = receiver(vec![], Duration::from_millis(5)).await;
    let c = config(&r.url);
    let outbox = Arc::new(MemoryOutbox::default());
    for i in 0..200 {
        outbox.push(OutboxMessage { id: format!("msg_{i}"), body: format!("{{\"n\":{i}}}") }, now_ms());
    }
    let (stop, task) = start(outbox.clone(), c);
    until("all delivered", || outbox.delivered().len() == 200).await;
    let mut ids = outbox.delivered();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200);
    assert_eq!(r.seen.lock().unwrap().len(), 200, "no message was sent twice");
    stop.send(true).unwrap();
    task.await.unwrap();
}
