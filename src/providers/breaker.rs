//! A connection's circuit breaker: after `threshold` failed calls in a row (5xx, timeouts,
//! dropped connections, throttling without a time) the connection's calls are held for a pause
//! that doubles with every trip, until the provider answers again.
//!
//! Why: the engine retries each object on a short curve (`engine::backoff`, capped at a few
//! seconds), which suits independent faults: a retried call usually succeeds, and a long cap
//! only stretches a bulk sync's tail. When a provider is down, faults are not independent, and
//! every object of the connection retrying every few seconds would keep the connection at its
//! full request rate against a failing provider. The breaker turns that into one call per pause
//! (up to `cap`) for the whole connection, so outages cost the provider almost nothing.
//!
//! Owns: counting failures per connection and the pause arithmetic. Must not touch: holding the
//! calls (the limiter's pause does that) or per-object retries (the engine).

use std::time::Duration;

use super::ProviderError;

/// When a connection's breaker trips and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Failed calls in a row that trip it. With independent faults at rate f, a call trips it
    /// with probability f^threshold: 0.2% at 30% faults and 5.
    pub threshold: u32,
    /// The first trip's pause; each further trip before a success doubles it.
    pub base: Duration,
    pub cap: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy { threshold: 5, base: Duration::from_secs(1), cap: Duration::from_secs(60) }
    }
}

/// What an answer says about the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// It answered (success, or a refusal that shows it works: 401, 404, 409, 400).
    Alive,
    /// It failed in a way that passes by itself.
    Failed,
    /// Says nothing: a 429 with a Retry-After (its own pause) or a call never sent.
    Neutral,
}

impl Answer {
    pub fn of<T>(r: &Result<T, ProviderError>) -> Answer {
        match r {
            Ok(_) => Answer::Alive,
            Err(ProviderError::Transient { .. } | ProviderError::RateLimited { retry_after: None, .. }) => {
                Answer::Failed
            }
            Err(ProviderError::RateLimited { retry_after: Some(_), .. } | ProviderError::Held { .. }) => {
                Answer::Neutral
            }
            Err(
                ProviderError::Unauthorized { .. }
                | ProviderError::Revoked { .. }
                | ProviderError::NotFound { .. }
                | ProviderError::Conflict { .. }
                | ProviderError::Invalid { .. },
            ) => Answer::Alive,
        }
    }
}

/// One connection's breaker state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Breaker {
    failures: u32,
    trips: u32,
}

impl Breaker {
    /// Count `answer` of a call that went out when the breaker had tripped `sent_after_trips`
    /// times (`trips()` at admission); `Some(pause)` when it trips the breaker.
    ///
    /// A failure of a call sent before the latest trip says nothing new: it was in flight while
    /// the provider was already known to fail. Counting it made the calls in flight at a trip
    /// (up to the connection's in-flight cap) re-trip the half-open breaker one after another,
    /// doubling the pause each time: at 22% independent faults a connection sat out 1+2+4+8 s
    /// after one unlucky second (seen in `calsync-bench faults`' call trace). Only a call sent
    /// after the pause can re-trip it. A success of any call closes it.
    pub fn record(&mut self, policy: &BreakerPolicy, answer: Answer, sent_after_trips: u32) -> Option<Duration> {
        match answer {
            Answer::Alive => {
                *self = Breaker::default();
                None
            }
            Answer::Neutral => None,
            Answer::Failed if sent_after_trips < self.trips => None,
            Answer::Failed => {
                self.failures = self.failures.saturating_add(1);
                if self.failures < policy.threshold.max(1) {
                    return None;
                }
                self.trips = self.trips.saturating_add(1);
                // Half-open: after the pause, one more failure trips it again (longer).
                self.failures = policy.threshold.max(1) - 1;
                let exp = (self.trips - 1).min(20);
                Some(policy.base.saturating_mul(1u32 << exp).min(policy.cap))
            }
        }
    }

    /// Times it tripped since the provider last answered.
    pub fn trips(&self) -> u32 {
        self.trips
    }

    /// Failed calls in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient() -> Result<(), ProviderError> {
        Err(ProviderError::Transient { message: "503".into() })
    }

    #[test]
    fn trips_after_threshold_failures_in_a_row_and_doubles_until_an_answer() {
        let p = BreakerPolicy::default();
        let mut b = Breaker::default();
        for _ in 0..4 {
            assert_eq!(b.record(&p, Answer::of(&transient()), b.trips()), None);
        }
        assert_eq!(b.record(&p, Answer::Failed, b.trips()), Some(Duration::from_secs(1)));
        assert_eq!(
            b.record(&p, Answer::Failed, b.trips()),
            Some(Duration::from_secs(2)),
            "half-open: one failure trips again"
        );
        assert_eq!(b.record(&p, Answer::Failed, b.trips()), Some(Duration::from_secs(4)));
        for _ in 0..10 {
            b.record(&p, Answer::Failed, b.trips());
        }
        assert_eq!(b.record(&p, Answer::Failed, b.trips()), Some(Duration::from_secs(60)), "capped");
        assert_eq!(b.record(&p, Answer::of(&Ok(())), b.trips()), None);
        assert_eq!(b, Breaker::default(), "a success closes it");
    }

    #[test]
    fn failures_of_calls_sent_before_a_trip_do_not_trip_it_again() {
        let p = BreakerPolicy::default();
        let mut b = Breaker::default();
        // Four calls in flight together when the fifth failure trips it.
        let before = b.trips();
        for _ in 0..4 {
            b.record(&p, Answer::Failed, before);
        }
        assert_eq!(b.record(&p, Answer::Failed, before), Some(Duration::from_secs(1)));
        for _ in 0..3 {
            assert_eq!(b.record(&p, Answer::Failed, before), None, "in flight at the trip: already counted");
        }
        // The first call after the pause fails: that one re-trips, once, doubled.
        let after = b.trips();
        assert_eq!(b.record(&p, Answer::Failed, after), Some(Duration::from_secs(2)));
        assert_eq!(b.record(&p, Answer::Failed, after), None);
        // A success of an old call still shows the provider answers.
        assert_eq!(b.record(&p, Answer::Alive, before), None);
        assert_eq!(b, Breaker::default());
    }

    #[test]
    fn a_success_between_failures_resets_the_count() {
        let p = BreakerPolicy::default();
        let mut b = Breaker::default();
        for _ in 0..3 {
            for _ in 0..4 {
                assert_eq!(b.record(&p, Answer::Failed, b.trips()), None);
            }
            b.record(&p, Answer::Alive, b.trips());
        }
        assert_eq!(b.failures(), 0);
    }

    #[test]
    fn refusals_show_the_provider_alive_and_retry_afters_count_nothing() {
        let conflict: Result<(), _> = Err(ProviderError::Conflict { message: "412".into() });
        assert_eq!(Answer::of(&conflict), Answer::Alive);
        let paused: Result<(), _> =
            Err(ProviderError::RateLimited { retry_after: Some(Duration::from_secs(2)), message: "429".into() });
        assert_eq!(Answer::of(&paused), Answer::Neutral);
        let unpaced: Result<(), _> = Err(ProviderError::RateLimited { retry_after: None, message: "403".into() });
        assert_eq!(Answer::of(&unpaced), Answer::Failed);
        let p = BreakerPolicy::default();
        let mut b = Breaker::default();
        for _ in 0..4 {
            b.record(&p, Answer::Failed, b.trips());
        }
        assert_eq!(b.record(&p, Answer::Neutral, b.trips()), None);
        assert_eq!(b.failures(), 4, "a Retry-After neither resets nor counts");
    }
}
