//! The rate budget for Genesys calls: GCRA, deployment-wide in Redis (a Lua script), or in-process.
//!
//! GCRA keeps one number, the theoretical arrival time (TAT). With an emission interval
//! `T = 60 s / (rate − burst)` and a tolerance of `burst − 1` intervals, any window of length `W`
//! admits at most `burst + W / T` calls, so any minute admits at most `rate_per_minute`. A call that
//! must wait gets its slot reserved and sleeps until it; a synchronous caller whose deadline comes
//! first gets `rate_limited` with the wait as Retry-After instead. A 429 from Genesys pushes the TAT
//! out by its Retry-After, which slows every replica, not just the one that got it.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota};
use redis::Script;

use super::Redis;

/// ARGV: now_ms, interval_ms (float), tolerance_ms, max_wait_ms. Returns the wait in ms, or -wait
/// when it exceeds max_wait (nothing reserved then).
const ACQUIRE: &str = r#"
local now, t, tol, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat - tol
local wait = allow_at - now
if wait < 0 then wait = 0 end
if wait > max_wait then return -math.ceil(wait) end
local new_tat = tat + t
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now + tol + 60000))
return math.ceil(wait)
"#;

/// ARGV: until_ms, tolerance_ms. Nobody gets a slot before `until`: a slot is allowed at TAT − tolerance.
const PENALIZE: &str = r#"
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local new_tat = tonumber(ARGV[1]) + tonumber(ARGV[2])
if new_tat > tat then redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - tonumber(ARGV[1]) + 120000)) end
return 1
"#;

/// The budget's shape.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub per_minute: u32,
    pub burst: u32,
}

impl Budget {
    fn interval_ms(&self) -> f64 {
        60_000.0 / f64::from(self.per_minute.saturating_sub(self.burst).max(1))
    }
    fn tolerance_ms(&self) -> f64 {
        self.interval_ms() * f64::from(self.burst.max(1) - 1)
    }
}

/// Refused: wait this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitTooLong(pub Duration);

/// Where the budget is kept.
#[derive(Clone)]
pub struct RateBudget {
    budget: Budget,
    local: Arc<DefaultDirectRateLimiter>,
    shared: Option<Redis>,
}

impl std::fmt::Debug for RateBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateBudget")
            .field("budget", &self.budget)
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

impl RateBudget {
    /// `shared`: the deployment's Redis; without it, or while it is down, the budget is this process's.
    pub fn new(budget: Budget, shared: Option<Redis>) -> Self {
        let per_minute = NonZeroU32::new(budget.per_minute.saturating_sub(budget.burst).max(1))
            .expect("non-zero");
        let burst = NonZeroU32::new(budget.burst.max(1)).expect("non-zero");
        Self {
            budget,
            local: Arc::new(DefaultDirectRateLimiter::direct(
                Quota::per_minute(per_minute).allow_burst(burst),
            )),
            shared,
        }
    }

    /// Waits for a slot, at most `max_wait`.
    pub async fn acquire(&self, max_wait: Duration) -> Result<(), WaitTooLong> {
        if let Some(redis) = &self.shared {
            match self.acquire_shared(redis, max_wait).await {
                Ok(result) => return result,
                Err(e) => {
                    metrics::counter!("patchbay_redis_fallbacks_total", "what" => "rate_budget")
                        .increment(1);
                    tracing::warn!(error = %e, "Redis is unreachable: using this replica's own rate budget");
                }
            }
        }
        self.acquire_local(max_wait).await
    }

    async fn acquire_shared(
        &self,
        redis: &Redis,
        max_wait: Duration,
    ) -> Result<Result<(), WaitTooLong>, redis::RedisError> {
        let mut conn = redis.conn.clone();
        let waited: i64 = Script::new(ACQUIRE)
            .key(redis.key("rate"))
            .arg(crate::queue::now_ms())
            .arg(self.budget.interval_ms())
            .arg(self.budget.tolerance_ms())
            .arg(max_wait.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        if waited < 0 {
            return Ok(Err(WaitTooLong(Duration::from_millis(
                waited.unsigned_abs(),
            ))));
        }
        if waited > 0 {
            metrics::counter!("patchbay_rate_budget_waits_total").increment(1);
            tokio::time::sleep(Duration::from_millis(waited as u64)).await;
        }
        Ok(Ok(()))
    }

    async fn acquire_local(&self, max_wait: Duration) -> Result<(), WaitTooLong> {
        match self.local.check() {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ));
                if wait > max_wait {
                    return Err(WaitTooLong(wait));
                }
                metrics::counter!("patchbay_rate_budget_waits_total").increment(1);
                self.local.until_ready().await;
                Ok(())
            }
        }
    }

    /// Genesys answered 429 anyway: nobody in the deployment calls before `retry_after` has passed.
    pub async fn penalize(&self, retry_after: Duration) {
        if let Some(redis) = &self.shared {
            let mut conn = redis.conn.clone();
            let until = crate::queue::now_ms() + retry_after.as_millis() as i64;
            let done: Result<i64, _> = Script::new(PENALIZE)
                .key(redis.key("rate"))
                .arg(until)
                .arg(self.budget.tolerance_ms())
                .invoke_async(&mut conn)
                .await;
            if let Err(e) = done {
                tracing::warn!(error = %e, "could not share a 429's Retry-After through Redis");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_never_admits_more_than_the_budget() {
        let b = Budget {
            per_minute: 240,
            burst: 10,
        };
        // burst + W / T for W = 60 s.
        let admitted = f64::from(b.burst) + 60_000.0 / b.interval_ms();
        assert!(admitted <= 240.0 + 1e-9, "{admitted}");
    }

    #[tokio::test]
    async fn the_local_budget_refuses_a_wait_past_the_deadline() {
        let limiter = RateBudget::new(
            Budget {
                per_minute: 62,
                burst: 2,
            },
            None,
        );
        assert!(limiter.acquire(Duration::ZERO).await.is_ok());
        assert!(limiter.acquire(Duration::ZERO).await.is_ok());
        // The third call must wait about a second.
        let refused = limiter
            .acquire(Duration::from_millis(10))
            .await
            .unwrap_err();
        assert!(refused.0 > Duration::from_millis(500), "{refused:?}");
    }
}
