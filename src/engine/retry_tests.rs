//! Engine tests of retries: Retry-After to the millisecond, each failure class on its own
//! curve, rate limits in status, and calls the client limiter held back.

use super::tests::{World, reason, spec};
use chrono::TimeZone;

use super::*;
use crate::providers::ProviderError;
use crate::providers::memory::Op;

#[tokio::test]
async fn retry_after_is_honoured_to_the_millisecond_with_second_precision_status() {
    let w = World::new();
    *w.now.lock().unwrap() += chrono::Duration::milliseconds(900);
    w.connection().await;
    w.task("t1", spec("t")).await;
    w.calendar.inject(
        Op::Create,
        ProviderError::RateLimited { retry_after: Some(std::time::Duration::from_secs(7)), message: "429".into() },
    );
    w.reconcile("t1").await;
    // 12:00:00.900 + 7 s: not before 12:00:08 (rounding down to 12:00:07 would retry 0.9 s early).
    let st = w.status("t1").await;
    assert_eq!(st.next_attempt_time, Some(Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 8).unwrap()));
    w.calendar.clear_calls();
    *w.now.lock().unwrap() += chrono::Duration::milliseconds(6500);
    w.reconcile("t1").await;
    assert!(w.calendar.calls().is_empty(), "called the provider 6.5 s into a 7 s Retry-After");
}

/// Seconds from now to the status' `nextAttemptTime`, and the requeue delay.
async fn retry_wait(w: &World, name: &str, out: Outcome) -> (f64, std::time::Duration) {
    let st = w.status(name).await;
    let next = st.next_attempt_time.expect("a failure sets nextAttemptTime");
    let Outcome::Requeue(d) = out else { panic!("a failure requeues: {out:?}") };
    let now = *w.now.lock().unwrap();
    ((next - now).num_milliseconds() as f64 / 1000.0, d)
}

#[tokio::test]
async fn each_failure_class_waits_its_own_time() {
    let w = World::new();
    *w.now.lock().unwrap() += chrono::Duration::milliseconds(300);
    w.connection().await;
    w.task("t1", spec("t")).await;
    // 5xx, timeouts, drops: 1 s doubling to 2 s, jittered down to half, status on a whole
    // second never before the half; the requeue lands just after the status time, not 10% later.
    for (attempt, lo, hi) in [(1, 0.5, 2.0), (2, 1.0, 3.0), (3, 1.0, 3.0), (6, 1.0, 3.0), (9, 1.0, 3.0)] {
        while w.status("t1").await.failed_attempts < attempt {
            w.calendar.inject(Op::Create, ProviderError::Transient { message: "503".into() });
            let out = w.reconcile("t1").await;
            let (left, requeue) = retry_wait(&w, "t1", out).await;
            assert!(requeue.as_secs_f64() - left < 0.05 && requeue.as_secs_f64() >= left, "{left} {requeue:?}");
            let n = w.status("t1").await.failed_attempts;
            if n == attempt {
                assert!((lo..=hi).contains(&left), "transient failure {n}: {left} s not in {lo}..={hi}");
            }
            w.calendar.clear_calls();
            w.advance((left.ceil() as i64) - 1);
            w.reconcile("t1").await;
            assert!(w.calendar.calls().is_empty(), "retried a second before nextAttemptTime");
            w.advance(1);
        }
    }
    // A Retry-After after nine failures is the provider's time, not the curve's (and not the
    // longer of the two): 3 s from 12:0x:xx.300 is the whole second after 3.3 s.
    w.calendar.inject(
        Op::Create,
        ProviderError::RateLimited { retry_after: Some(std::time::Duration::from_secs(3)), message: "429".into() },
    );
    let out = w.reconcile("t1").await;
    let (left, requeue) = retry_wait(&w, "t1", out).await;
    assert_eq!((w.status("t1").await.failed_attempts, left), (10, 3.7));
    assert_eq!(requeue, std::time::Duration::from_millis(3720), "exact, plus the timer margin, no jitter");
    // An access token still refused after a refresh is not known to pass: the long curve.
    w.advance(4);
    w.calendar.inject(Op::Create, ProviderError::Unauthorized { message: "401".into() });
    let out = w.reconcile("t1").await;
    let (left, _) = retry_wait(&w, "t1", out).await;
    assert!(left >= 150.0, "Unauthorized after 11 failures waits on the long curve: {left} s");
    w.advance(301);
    w.reconcile("t1").await;
    assert_eq!(reason(&w.status("t1").await, "Synced"), "True/EventCreated");
}

#[tokio::test]
async fn rate_limit_backs_off_in_status_and_honours_retry_after() {
    let w = World::new();
    w.connection().await;
    w.task("t1", spec("t")).await;
    w.calendar.inject(
        Op::Create,
        ProviderError::RateLimited { retry_after: Some(std::time::Duration::from_secs(120)), message: "429".into() },
    );
    let out = w.reconcile("t1").await;
    let st = w.status("t1").await;
    assert_eq!(reason(&st, "Synced"), "False/RateLimited");
    assert_eq!(st.failed_attempts, 1);
    assert!(matches!(out, Outcome::Requeue(d) if d.as_secs() >= 120), "{out:?}");
    // A spurious trigger before Retry-After passes makes no call.
    w.calendar.clear_calls();
    w.advance(60);
    w.reconcile("t1").await;
    assert!(w.calendar.calls().is_empty(), "called the provider during Retry-After");
    w.advance(61);
    w.reconcile("t1").await;
    let st = w.status("t1").await;
    assert_eq!(reason(&st, "Synced"), "True/EventCreated");
    assert_eq!(st.failed_attempts, 0, "success resets the backoff");
}

#[tokio::test]
async fn a_held_connection_requeues_at_the_hold_end_without_counting_a_failure() {
    let w = World::new();
    w.connection().await;
    w.task("t1", spec("t")).await;
    let held = |s| ProviderError::Held {
        retry_after: std::time::Duration::from_millis(s),
        message: "held".into(),
        cause: crate::providers::HoldCause::RetryAfter,
    };
    w.calendar.inject(Op::Create, held(1500));
    w.objects.clear_writes();
    let out = w.reconcile("t1").await;
    assert_eq!(out, Outcome::Held(std::time::Duration::from_millis(1520)), "the hold's end, exactly");
    let st = w.status("t1").await;
    assert_eq!(reason(&st, "Synced"), "False/RateLimited");
    assert_eq!((st.failed_attempts, st.next_attempt_time, st.history.len()), (0, None, 0), "nothing failed");
    assert!(
        !w.objects.events().iter().any(|(k, e)| k.name == "t1" && e.type_ == EventType::Warning),
        "no Warning for a call never sent: {:?}",
        w.objects.events()
    );
    let first = w.objects.writes().len();
    assert!(first >= 1, "the condition says why the task waits");
    // Held again: the status already says so, so nothing is written.
    w.calendar.inject(Op::Create, held(700));
    assert_eq!(w.reconcile("t1").await, Outcome::Held(std::time::Duration::from_millis(720)));
    assert_eq!(w.objects.writes().len(), first, "a second hold wrote the status again");
    w.reconcile("t1").await;
    let st = w.status("t1").await;
    assert_eq!((reason(&st, "Synced").as_str(), st.failed_attempts), ("True/EventCreated", 0));
}
