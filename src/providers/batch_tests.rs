use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::*;

/// Answers `req * 10` after `delay`; counts what went out and the provider slots in use.
struct Echo {
    delay: Duration,
    max: usize,
    /// Graph-like: a batch occupies up to four slots.
    graph_like: bool,
    singles: AtomicUsize,
    batches: Mutex<Vec<Vec<u32>>>,
    busy: AtomicUsize,
    most_busy: AtomicUsize,
    fail_batches: bool,
}

impl Echo {
    fn new(delay_ms: u64, max: usize) -> Self {
        Echo {
            delay: Duration::from_millis(delay_ms),
            max,
            graph_like: false,
            singles: AtomicUsize::new(0),
            batches: Mutex::new(vec![]),
            busy: AtomicUsize::new(0),
            most_busy: AtomicUsize::new(0),
            fail_batches: false,
        }
    }

    async fn occupy(&self, n: usize) {
        let now = self.busy.fetch_add(n, Ordering::SeqCst) + n;
        self.most_busy.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.busy.fetch_sub(n, Ordering::SeqCst);
    }
}

#[async_trait]
impl Transport for Echo {
    type Req = u32;
    type Resp = u32;

    fn max_parts(&self) -> usize {
        self.max
    }

    fn slots(&self, parts: usize) -> usize {
        if self.graph_like { parts.min(4) } else { 1 }
    }

    async fn single(&self, req: &u32) -> Result<u32, ProviderError> {
        self.singles.fetch_add(1, Ordering::SeqCst);
        self.occupy(1).await;
        if *req == 13 {
            return Err(ProviderError::NotFound { message: "13 is gone".into() });
        }
        Ok(req * 10)
    }

    async fn batch(&self, reqs: &[u32]) -> Result<Vec<Result<u32, ProviderError>>, ProviderError> {
        self.batches.lock().unwrap().push(reqs.to_vec());
        self.occupy(self.slots(reqs.len())).await;
        if self.fail_batches {
            return Err(ProviderError::RateLimited { retry_after: Some(Duration::from_secs(3)), message: "x".into() });
        }
        Ok(reqs
            .iter()
            .map(|r| if *r == 13 { Err(ProviderError::NotFound { message: "13 is gone".into() }) } else { Ok(r * 10) })
            .collect())
    }
}

fn lane(capacity: usize, batching: Batching) -> Arc<Lane<Echo>> {
    Arc::new(Lane::new(Arc::new(Semaphore::new(capacity)), capacity, batching))
}

async fn burst(
    lane: &Arc<Lane<Echo>>,
    t: &Arc<Echo>,
    reqs: impl IntoIterator<Item = u32>,
) -> Vec<Result<u32, ProviderError>> {
    let calls = reqs.into_iter().map(|r| {
        let (lane, t) = (lane.clone(), t.clone());
        tokio::spawn(async move { lane.call(&t, r).await })
    });
    let mut out = vec![];
    for h in calls.collect::<Vec<_>>() {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_lone_call_goes_out_at_once_and_alone() {
    let t = Arc::new(Echo::new(0, 50));
    let l = lane(4, Batching::default());
    let started = Instant::now();
    assert_eq!(l.call(&t, 4).await, Ok(40));
    assert!(started.elapsed() < Duration::from_millis(50), "{:?}", started.elapsed());
    assert_eq!(t.singles.load(Ordering::SeqCst), 1);
    assert!(t.batches.lock().unwrap().is_empty());
}

#[tokio::test]
async fn requests_queued_behind_full_slots_go_out_as_one_batch_each_with_its_own_answer() {
    let t = Arc::new(Echo::new(100, 50));
    let l = lane(1, Batching::default());
    let out = burst(&l, &t, 1..=10).await;
    assert_eq!(out, (1..=10).map(|r| Ok(r * 10)).collect::<Vec<_>>());
    let batches = t.batches.lock().unwrap().clone();
    assert_eq!(t.singles.load(Ordering::SeqCst) + batches.iter().map(Vec::len).sum::<usize>(), 10);
    assert!(batches.len() <= 2, "the first goes alone, the rest queue behind it: {batches:?}");
}

#[tokio::test]
async fn batches_are_split_at_the_provider_maximum() {
    let t = Arc::new(Echo::new(50, 3));
    let l = lane(1, Batching::default());
    let out = burst(&l, &t, 1..=10).await;
    assert!(out.iter().all(Result::is_ok));
    let batches = t.batches.lock().unwrap().clone();
    assert!(batches.iter().all(|b| b.len() <= 3 && b.len() >= 2), "{batches:?}");
}

#[tokio::test]
async fn a_part_error_reaches_only_its_caller_and_a_batch_error_reaches_all() {
    let t = Arc::new(Echo::new(50, 50));
    let l = lane(1, Batching::default());
    let out = burst(&l, &t, [1, 2, 13, 4, 5]).await;
    assert!(matches!(out[2], Err(ProviderError::NotFound { .. })));
    assert_eq!(out.iter().filter(|r| r.is_ok()).count(), 4);

    let t = Arc::new(Echo { fail_batches: true, ..Echo::new(50, 50) });
    let out = burst(&l, &t, 1..=6).await;
    let limited = out.iter().filter(|r| matches!(r, Err(ProviderError::RateLimited { .. }))).count();
    assert!(limited >= 4, "every part of the failed batch gets its error: {out:?}");
}

#[tokio::test]
async fn graph_like_batches_hold_as_many_slots_as_the_provider_runs_at_once() {
    let t = Arc::new(Echo { graph_like: true, ..Echo::new(30, 20) });
    let l = lane(4, Batching::default());
    let out = burst(&l, &t, 100..160).await;
    assert!(out.iter().all(Result::is_ok));
    assert!(t.most_busy.load(Ordering::SeqCst) <= 4, "never more than four slots in use");
    assert!(!t.batches.lock().unwrap().is_empty());
}

#[tokio::test]
async fn switched_off_everything_goes_alone() {
    let t = Arc::new(Echo::new(20, 50));
    let l = lane(2, Batching::OFF);
    let out = burst(&l, &t, 100..108).await;
    assert!(out.iter().all(Result::is_ok));
    assert_eq!(t.singles.load(Ordering::SeqCst), 8);
    assert!(t.batches.lock().unwrap().is_empty());
    assert!(t.most_busy.load(Ordering::SeqCst) <= 2);
}

#[tokio::test]
async fn a_request_whose_caller_gave_up_is_not_sent() {
    let t = Arc::new(Echo::new(100, 50));
    let l = lane(1, Batching::default());
    let first = {
        let (l, t) = (l.clone(), t.clone());
        tokio::spawn(async move { l.call(&t, 1).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Queued behind the first, then abandoned.
    let _ = tokio::time::timeout(Duration::from_millis(20), l.call(&t, 99)).await;
    let third = l.call(&t, 3).await;
    assert_eq!(first.await.unwrap(), Ok(10));
    assert_eq!(third, Ok(30));
    let sent: Vec<u32> = t.batches.lock().unwrap().iter().flatten().copied().collect();
    assert!(!sent.contains(&99), "{sent:?}");
}

#[test]
fn the_switch_parses() {
    assert_eq!(Batching::parse(None), Ok(Batching::default()));
    assert_eq!(Batching::parse(Some("off")), Ok(Batching::OFF));
    assert_eq!(Batching::parse(Some(" ON ")), Ok(Batching { enabled: true }));
    assert!(Batching::parse(Some("maybe")).is_err());
}
