//! Per-object failure backoff, kept in status so it survives restarts (kube-runtime has none,
//! kube#1916; cert-manager persists it the same way).
//!
//! Owns: the delay arithmetic. Must not touch: status fields themselves.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff: `base · 2^(attempts-1)`, capped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: Duration::from_secs(5), cap: Duration::from_secs(300) }
    }
}

impl Backoff {
    /// Delay after `attempts` consecutive failures (`attempts` ≥ 1), at least `retry_after`.
    pub fn delay(&self, attempts: u32, retry_after: Option<Duration>) -> Duration {
        let exp = attempts.saturating_sub(1).min(20);
        let d = self.base.saturating_mul(1u32 << exp).min(self.cap);
        retry_after.map_or(d, |r| d.max(r))
    }
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
}
