//! A limiter's policy: how one provider kind is limited per connection (rate, calls in flight,
//! pauses, breaker), and parsing the rate settings.
//!
//! Owns: the policy values and their defaults. Must not touch: the per-connection state or how
//! calls are admitted (the parent, `limiter`).

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use governor::Quota;

use crate::providers::ProviderError;
use crate::providers::breaker::BreakerPolicy;

/// Connections whose state the map keeps before it evicts idle ones (~200 bytes each).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// A pause longer than this is not waited out inside a call: the call fails at once with
/// `Held` and the remaining time, so the work queue reschedules the object instead of parking a
/// worker. Short, because a parked worker starves every other connection: with 5 s (before),
/// a full-size bulk run with 30% faults spent most of its time in workers waiting out 2 s
/// Retry-Afters (README Performance, note 3). Waiting out the last few milliseconds of a pause
/// is still cheaper than a status write and a queue hop.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(250);

/// How one provider kind is limited, per connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Calls per connection: `burst` at once, then one per replenish interval. `None`: no pacing.
    pub quota: Option<Quota>,
    /// Calls in flight per connection. `None`: no cap.
    pub max_in_flight: Option<NonZeroUsize>,
    /// Pause the connection for a `RateLimited { retry_after: Some(_) }` answer.
    pub pause_on_rate_limited: bool,
    /// The longest pause a call waits out (see `DEFAULT_MAX_WAIT`).
    pub max_wait: Duration,
    /// Pause the connection while the provider keeps failing. `None`: never.
    pub breaker: Option<BreakerPolicy>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            quota: None,
            max_in_flight: None,
            pause_on_rate_limited: true,
            max_wait: DEFAULT_MAX_WAIT,
            breaker: Some(BreakerPolicy::default()),
        }
    }
}

impl Policy {
    /// `per_second` calls per second with a burst of as many (rounded up): a sliding-window quota
    /// of R per minute, such as Google's 600, is met by R/60 per second with a one-second burst.
    /// Zero, negative or non-finite rates mean no pacing.
    pub fn per_second(per_second: f64) -> Self {
        let burst = per_second.ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
        Policy::default().with_rate(per_second, burst)
    }

    /// `per_second` calls per second with at most `burst` at once (burst 0 is read as 1). A burst
    /// of 1 spaces calls evenly, which is what a short sliding window (N per second) needs.
    pub fn with_rate(mut self, per_second: f64, burst: u32) -> Self {
        self.quota = quota(per_second, burst);
        self
    }

    /// At most `n` calls in flight per connection (0: no cap).
    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = NonZeroUsize::new(n);
        self
    }

    /// Whether a `RateLimited` answer with a Retry-After pauses the connection.
    pub fn with_pause_on_rate_limited(mut self, pause: bool) -> Self {
        self.pause_on_rate_limited = pause;
        self
    }

    /// The longest pause a call waits out before it is `Held` (see `DEFAULT_MAX_WAIT`).
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// The connection's circuit breaker (`None`: off).
    pub fn with_breaker(mut self, breaker: Option<BreakerPolicy>) -> Self {
        self.breaker = breaker;
        self
    }
}

fn quota(per_second: f64, burst: u32) -> Option<Quota> {
    if !per_second.is_finite() || per_second <= 0.0 {
        return None;
    }
    // Below 1 ns the period rounds to zero, which governor refuses: read such rates as unpaced.
    let period = Duration::try_from_secs_f64(1.0 / per_second).ok()?;
    Some(Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN)))
}

/// Parse a calls-per-second setting: a non-negative decimal, `0` or `off` for no pacing.
/// `name` names the setting in the error.
pub fn parse_rate(name: &str, value: &str) -> Result<f64, ProviderError> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("off") {
        return Ok(0.0);
    }
    match v.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(ProviderError::Invalid {
            message: format!(
                "{name}={value:?} is not a rate: give requests per second per connection as a non-negative number (e.g. 10 or 0.5), or 0/off for no limit"
            ),
        }),
    }
}
