//! Per-object failure backoff, kept in status so it survives restarts (kube-runtime has none,
//! kube#1916; cert-manager persists it the same way), and the retry policy that picks a delay
//! by what failed.
//!
//! Owns: the delay arithmetic and which provider errors wait how long (`Wait::of`). Must not
//! touch: status fields themselves, or when a call is made (`plan`, the drivers).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

use crate::providers::ProviderError;

/// Exponential backoff: `base · 2^(attempts-1)`, capped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    /// The long curve: failures not known to pass by themselves.
    fn default() -> Self {
        Backoff { base: Duration::from_secs(5), cap: Duration::from_secs(300) }
    }
}

impl Backoff {
    /// The short curve for failures that pass by themselves (5xx, timeouts, dropped
    /// connections): Google's documented schedule starts at 1 s. The cap is low because this
    /// curve is per object and suits independent faults, where a retry usually succeeds and a
    /// long cap only stretches a bulk sync's tail: the last task to converge is the one that
    /// failed most often in a row, 6 to 8 times among 10,000 at 22% faults (measured, 2,000
    /// tasks with 30% 5xx: 63 s at a 15 s cap, 33 s at 4 s; 10,000 tasks with 22% 5xx, timeouts
    /// and drops: the 8-failure tail took 20 s at 4 s, see README note 3). Outages, where faults
    /// come together, are the connection's breaker's (`providers::breaker`): it holds all of
    /// the connection's calls, doubling up to a minute, and the client limiter keeps retries
    /// under the provider's quota meanwhile, so a short per-object cap never raises the rate a
    /// provider sees.
    pub const TRANSIENT: Backoff = Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(2) };

    /// Delay after `attempts` consecutive failures (`attempts` ≥ 1), at least `retry_after`.
    pub fn delay(&self, attempts: u32, retry_after: Option<Duration>) -> Duration {
        let d = self.step(attempts);
        retry_after.map_or(d, |r| d.max(r))
    }

    /// `base · 2^(attempts-1)`, capped; no jitter.
    fn step(&self, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(20);
        self.base.saturating_mul(1u32 << exp).min(self.cap)
    }

    /// The step with "equal jitter": uniformly in `[d/2, d]` for `roll` in `[0, 1]`, so objects
    /// that failed together spread out without ever waiting longer than the curve says.
    fn jittered(&self, attempts: u32, roll: f64) -> Duration {
        let d = self.step(attempts);
        d / 2 + d.mul_f64(roll.clamp(0.0, 1.0) / 2.0)
    }
}

/// What a retried provider failure waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// The provider named the time (`Retry-After`, or the client limiter's pause that carries
    /// it): retry then, never earlier, and not later than the next whole second.
    Exactly(Duration),
    /// 5xx, timeouts, dropped connections, throttling without a time: short, jittered, capped
    /// low.
    Transient,
    /// Retried although not known to pass by itself (an access token still refused after a
    /// refresh): long.
    Persistent,
}

impl Wait {
    /// How long a failure that the engine retries waits. Errors it does not retry (revoked
    /// credentials, rejected requests, conflicts) never reach here; should one, it waits long.
    pub fn of(e: &ProviderError) -> Wait {
        match e {
            ProviderError::RateLimited { retry_after: Some(d), .. } | ProviderError::Held { retry_after: d, .. } => {
                Wait::Exactly(*d)
            }
            // Google's 403/429 rateLimitExceeded carries no time; it documents exponential
            // backoff from 1 s, the transient curve.
            ProviderError::RateLimited { retry_after: None, .. } | ProviderError::Transient { .. } => Wait::Transient,
            ProviderError::Unauthorized { .. }
            | ProviderError::Revoked { .. }
            | ProviderError::NotFound { .. }
            | ProviderError::Conflict { .. }
            | ProviderError::Invalid { .. } => Wait::Persistent,
        }
    }

    /// Whether the delay is a time the provider set (so it must not be shortened or jittered).
    pub fn is_exact(&self) -> bool {
        matches!(self, Wait::Exactly(_))
    }
}

/// The engine's retry policy: a curve per class, the exact time for a Retry-After.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub transient: Backoff,
    pub persistent: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { transient: Backoff::TRANSIENT, persistent: Backoff::default() }
    }
}

impl RetryPolicy {
    /// Delay after the `attempts`-th consecutive failure (`attempts` ≥ 1), jittered on the
    /// curves. `attempts` counts every failure, so a Retry-After among them still grows the
    /// curve of the next 5xx.
    pub fn delay(&self, attempts: u32, wait: Wait) -> Duration {
        self.delay_with(attempts, wait, rand::rng().random())
    }

    /// The shortest delay `delay` can give: the curve's lower bound (half its step), or the
    /// exact time.
    pub fn earliest(&self, attempts: u32, wait: Wait) -> Duration {
        self.delay_with(attempts, wait, 0.0)
    }

    /// `delay` with the jitter's random number given (`roll` in `[0, 1]`).
    pub fn delay_with(&self, attempts: u32, wait: Wait, roll: f64) -> Duration {
        match wait {
            Wait::Exactly(d) => d,
            Wait::Transient => self.transient.jittered(attempts, roll),
            Wait::Persistent => self.persistent.jittered(attempts, roll),
        }
    }
}

/// The whole second at which a retry `delay` from `now` is due, never sooner than `earliest`:
/// status times have second precision (as Kubernetes' own), and the plan compares them with a
/// `now` rounded down, so `now + delay` as such could let a retry come up to a second before a
/// provider's Retry-After ran out. A Retry-After (`earliest == delay`) is rounded up. A jittered
/// delay may be anywhere in `[earliest, delay]`, so it takes the whole second below it when that
/// is still in the window: rounding every retry up made each one 0.5 s longer than its curve on
/// average, seconds on the tail of a task that fails several times in a row (`calsync-bench
/// faults` with its call trace showed those gaps).
pub fn retry_time(now: DateTime<Utc>, earliest: Duration, delay: Duration) -> DateTime<Utc> {
    let span = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    let at = now + span(delay);
    let whole = DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at);
    if whole == at || whole >= now + span(earliest) { whole } else { whole + chrono::Duration::seconds(1) }
}

/// `d` plus up to 10% random jitter, so objects that failed together do not retry together.
pub fn jitter(d: Duration) -> Duration {
    let extra = d.as_millis() as u64 / 10;
    if extra == 0 {
        return d;
    }
    d + Duration::from_millis(rand::rng().random_range(0..=extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn grows_caps_and_honours_retry_after() {
        let b = Backoff::default();
        assert_eq!(b.delay(1, None), Duration::from_secs(5));
        assert_eq!(b.delay(2, None), Duration::from_secs(10));
        assert_eq!(b.delay(10, None), Duration::from_secs(300));
        assert_eq!(b.delay(u32::MAX, None), Duration::from_secs(300));
        assert_eq!(b.delay(1, Some(Duration::from_secs(42))), Duration::from_secs(42));
        let j = jitter(Duration::from_secs(10));
        assert!(j >= Duration::from_secs(10) && j <= Duration::from_secs(11));
    }

    #[test]
    fn each_error_has_its_class() {
        let m = String::new;
        let cases = [
            (ProviderError::RateLimited { retry_after: Some(ms(2000)), message: m() }, Wait::Exactly(ms(2000))),
            (ProviderError::RateLimited { retry_after: Some(ms(0)), message: m() }, Wait::Exactly(ms(0))),
            (ProviderError::RateLimited { retry_after: None, message: m() }, Wait::Transient),
            (ProviderError::Transient { message: m() }, Wait::Transient),
            (ProviderError::Unauthorized { message: m() }, Wait::Persistent),
            (ProviderError::Invalid { message: m() }, Wait::Persistent),
        ];
        for (e, want) in cases {
            assert_eq!(Wait::of(&e), want, "{e:?}");
        }
    }

    /// (class, attempts) → the range the delay must fall in, whatever the jitter.
    #[test]
    fn each_class_stays_in_its_range() {
        let p = RetryPolicy::default();
        let cases: [(Wait, u32, Duration, Duration); 12] = [
            (Wait::Exactly(ms(2000)), 1, ms(2000), ms(2000)),
            (Wait::Exactly(ms(2000)), 9, ms(2000), ms(2000)),
            (Wait::Exactly(ms(120_000)), 1, ms(120_000), ms(120_000)),
            (Wait::Transient, 1, ms(500), ms(1000)),
            (Wait::Transient, 2, ms(1000), ms(2000)),
            (Wait::Transient, 3, ms(1000), ms(2000)),
            (Wait::Transient, 4, ms(1000), ms(2000)),
            (Wait::Transient, 9, ms(1000), ms(2000)),
            (Wait::Transient, u32::MAX, ms(1000), ms(2000)),
            (Wait::Persistent, 1, ms(2500), ms(5000)),
            (Wait::Persistent, 4, ms(20_000), ms(40_000)),
            (Wait::Persistent, 30, ms(150_000), ms(300_000)),
        ];
        for (wait, attempts, lo, hi) in cases {
            for roll in [0.0, 0.25, 0.5, 0.999, 1.0] {
                let d = p.delay_with(attempts, wait, roll);
                assert!(lo <= d && d <= hi, "{wait:?} attempt {attempts} roll {roll}: {d:?} not in {lo:?}..={hi:?}");
            }
            let d = p.delay(attempts, wait);
            assert!(lo <= d && d <= hi, "{wait:?} attempt {attempts}: {d:?} not in {lo:?}..={hi:?}");
        }
    }

    #[test]
    fn jitter_spans_its_bounds_and_retry_after_is_never_jittered() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_with(3, Wait::Transient, 0.0), ms(1000));
        assert_eq!(p.delay_with(3, Wait::Transient, 1.0), ms(2000));
        assert_eq!(p.delay_with(3, Wait::Transient, 7.0), ms(2000), "an out-of-range roll is clamped");
        let many: Vec<Duration> = (0..200).map(|_| p.delay(3, Wait::Transient)).collect();
        assert!(many.iter().any(|d| *d < ms(1250)) && many.iter().any(|d| *d > ms(1750)), "jitter spreads");
        assert!((0..200).all(|_| p.delay(7, Wait::Exactly(ms(1234))) == ms(1234)));
        assert!(Wait::Exactly(ms(1)).is_exact() && !Wait::Transient.is_exact());
    }

    #[test]
    fn earliest_is_the_curve_floor_or_the_exact_time() {
        let p = RetryPolicy::default();
        assert_eq!(p.earliest(1, Wait::Transient), ms(500));
        assert_eq!(p.earliest(3, Wait::Transient), ms(1000));
        assert_eq!(p.earliest(2, Wait::Persistent), ms(5000));
        assert_eq!(p.earliest(4, Wait::Exactly(ms(1234))), ms(1234));
    }

    #[test]
    fn retry_times_are_whole_seconds_never_before_the_earliest() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let now = t("2026-12-06T10:00:00.300Z");
        // A Retry-After is rounded up: 2 s from .300 is 02.300, so 03.
        assert_eq!(retry_time(now, ms(2000), ms(2000)), t("2026-12-06T10:00:03Z"));
        // Already whole: kept.
        assert_eq!(retry_time(t("2026-12-06T10:00:00Z"), ms(2000), ms(2000)), t("2026-12-06T10:00:02Z"));
        // A jittered 3.5 s in [2, 4]: 03.800 → 03, still after the earliest 02.300.
        assert_eq!(retry_time(now, ms(2000), ms(3500)), t("2026-12-06T10:00:03Z"));
        // A jittered 0.9 s in [0.5, 1]: 01.200 → 01 would be 0.7 s, fine; 0.6 s → 00.900 → 01.
        assert_eq!(retry_time(now, ms(500), ms(900)), t("2026-12-06T10:00:01Z"));
        assert_eq!(retry_time(now, ms(500), ms(600)), t("2026-12-06T10:00:01Z"));
        // The whole second below is before the earliest: round up instead.
        assert_eq!(retry_time(t("2026-12-06T10:00:00.800Z"), ms(500), ms(700)), t("2026-12-06T10:00:02Z"));
        for (earliest, delay) in [(500, 1000), (1000, 2000), (2000, 4000), (4000, 4000), (0, 0)] {
            for frac in [0, 1, 250, 500, 999] {
                let now = t("2026-12-06T10:00:00Z") + chrono::Duration::milliseconds(frac);
                let at = retry_time(now, ms(earliest), ms(delay));
                assert_eq!(at.timestamp_subsec_nanos(), 0, "whole second");
                assert!(at >= now + chrono::Duration::milliseconds(earliest as i64), "{now} {earliest} {delay}: {at}");
                assert!(
                    at < now + chrono::Duration::milliseconds(delay as i64 + 1000),
                    "{now} {earliest} {delay}: {at}"
                );
            }
        }
    }

    #[test]
    fn a_long_failure_streak_stays_short_on_the_transient_curve() {
        // The bench's tail: 9 transient failures in a row wait at most 1+2·8 = 17 s (a 4 s cap:
        // 31 s; 15 s: 90 s; the old single curve: 5+10+...+160+300·3 = 1,215 s).
        let p = RetryPolicy::default();
        let worst: Duration = (1..=9).map(|n| p.delay_with(n, Wait::Transient, 1.0)).sum();
        assert_eq!(worst, Duration::from_secs(17));
    }
}
