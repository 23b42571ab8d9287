//! The retry policy for Genesys calls: what is retried, how long to wait, and when to stop.

use std::time::Duration;

use rand::Rng;

use crate::config::RetrySettings;

/// Genesys's own SDKs wait this long after a 429 that carries no Retry-After.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(3);

/// Why an attempt is worth another try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    RateLimited,
    ServerError,
    Timeout,
    Connect,
}

impl RetryReason {
    /// The metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            RetryReason::RateLimited => "rate_limited",
            RetryReason::ServerError => "server_error",
            RetryReason::Timeout => "timeout",
            RetryReason::Connect => "connect",
        }
    }
}

/// Whether an HTTP status is worth retrying. 401 is handled apart: it renews the token once.
pub fn is_retryable_status(status: u16) -> Option<RetryReason> {
    match status {
        429 => Some(RetryReason::RateLimited),
        500..=599 => Some(RetryReason::ServerError),
        _ => None,
    }
}

/// The one backoff: exponential with "equal jitter". After `attempts_made` failures, a random point
/// in the upper half of `base` doubled each time, at most `max`, so replicas that failed together do
/// not retry together. Genesys calls, jobs and the feed's reconnections all wait by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after `attempts_made` failures.
    pub fn delay(&self, attempts_made: u32) -> Duration {
        let step = self
            .base
            .saturating_mul(2u32.saturating_pow(attempts_made.saturating_sub(1).min(30)))
            .min(self.max);
        let half = step / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    /// The wait after `attempts_made` failures, and never shorter than what Genesys asked for.
    pub fn delay_at_least(&self, attempts_made: u32, retry_after: Option<Duration>) -> Duration {
        self.delay(attempts_made)
            .max(retry_after.unwrap_or_default())
    }
}

/// A bounded schedule: attempts, total time, and the longest Retry-After worth waiting for.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub max_elapsed: Duration,
    pub max_retry_after: Duration,
}

impl From<&RetrySettings> for RetryPolicy {
    fn from(s: &RetrySettings) -> Self {
        Self {
            max_attempts: s.max_attempts,
            base_delay: Duration::from_millis(s.base_delay_ms),
            max_delay: Duration::from_millis(s.max_delay_ms),
            max_elapsed: Duration::from_millis(s.max_elapsed_ms),
            max_retry_after: Duration::from_millis(s.max_retry_after_ms),
        }
    }
}

impl RetryPolicy {
    /// The wait before the next attempt, or `None` when the policy says stop.
    ///
    /// `attempts_made` counts attempts so far (1 after the first). `retry_after` is the server's
    /// Retry-After on a 429, which replaces the backoff; a 429 without one waits
    /// [`DEFAULT_RETRY_AFTER`]. Backoff is exponential with "equal jitter": a random point in the
    /// upper half of the step, so replicas that failed together do not retry together.
    pub fn next_delay(
        &self,
        reason: RetryReason,
        attempts_made: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if attempts_made >= self.max_attempts {
            return None;
        }
        let delay = match reason {
            RetryReason::RateLimited => {
                let wait = retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
                if wait > self.max_retry_after {
                    return None;
                }
                wait
            }
            _ => Backoff {
                base: self.base_delay,
                max: self.max_delay,
            }
            .delay(attempts_made),
        };
        if elapsed + delay > self.max_elapsed {
            return None;
        }
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            max_elapsed: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_429_waits_its_retry_after() {
        let d = policy().next_delay(
            RetryReason::RateLimited,
            1,
            Duration::ZERO,
            Some(Duration::from_secs(2)),
        );
        assert_eq!(d, Some(Duration::from_secs(2)));
    }

    #[test]
    fn a_retry_after_beyond_the_bound_is_not_waited_for() {
        let d = policy().next_delay(
            RetryReason::RateLimited,
            1,
            Duration::ZERO,
            Some(Duration::from_secs(60)),
        );
        assert_eq!(d, None);
    }

    #[test]
    fn only_429_and_5xx_statuses_are_retryable() {
        assert_eq!(is_retryable_status(429), Some(RetryReason::RateLimited));
        assert_eq!(is_retryable_status(503), Some(RetryReason::ServerError));
        for s in [400, 401, 403, 404, 409, 422] {
            assert_eq!(is_retryable_status(s), None, "{s}");
        }
    }

    proptest! {
        #[test]
        fn backoff_is_jittered_within_the_step_and_bounded(attempt in 1u32..4, elapsed_ms in 0u64..20_000) {
            let p = policy();
            let elapsed = Duration::from_millis(elapsed_ms);
            match p.next_delay(RetryReason::ServerError, attempt, elapsed, None) {
                Some(d) => {
                    let step = (p.base_delay * 2u32.pow(attempt - 1)).min(p.max_delay);
                    prop_assert!(d >= step / 2 && d <= step);
                    prop_assert!(elapsed + d <= p.max_elapsed);
                }
                // Steps here are at most 400 ms, so stopping early means the time bound was near.
                None => prop_assert!(elapsed_ms + 400 > 10_000),
            }
        }

        #[test]
        fn attempts_never_exceed_the_maximum(attempt in 4u32..100) {
            prop_assert_eq!(policy().next_delay(RetryReason::ServerError, attempt, Duration::ZERO, None), None);
        }
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::Backoff;
    use proptest::prelude::*;
    use std::time::Duration;

    proptest! {
        #[test]
        fn a_backoff_stays_in_the_upper_half_of_its_step_and_honours_retry_after(
            attempts in 1u32..64,
            after_ms in 0u64..10_000,
        ) {
            let b = Backoff { base: Duration::from_millis(1000), max: Duration::from_secs(300) };
            let step = Duration::from_millis(1000)
                .saturating_mul(2u32.saturating_pow((attempts - 1).min(30)))
                .min(Duration::from_secs(300));
            let d = b.delay(attempts);
            prop_assert!(d >= step / 2 && d <= step);
            let after = Duration::from_millis(after_ms);
            prop_assert!(b.delay_at_least(attempts, Some(after)) >= after);
        }
    }
}
