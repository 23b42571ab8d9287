//! The budget of this process: the sliding-window log in memory. It is the whole budget of a
//! single replica, and a Redis budget's fallback while Redis is away.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{
    slots, standing, wait_ms, Budget, CallBudget, Reported, Standing, WaitTooLong, WINDOW_MS,
};

/// The log: the same algorithm as the Redis budget's scripts, for one process.
#[derive(Debug, Default)]
struct LocalLog {
    /// Call and slot times in ms, sorted.
    log: VecDeque<i64>,
    paused_until: i64,
    /// Operations held back by limits of their own, until when (ms).
    operations_paused: HashMap<&'static str, i64>,
    /// A lower limit Genesys reported, and until when it holds.
    ceiling: Option<(u32, i64)>,
}

impl LocalLog {
    fn limit(&self, configured: u32, now: i64) -> usize {
        let limit = match self.ceiling {
            Some((allowed, until)) if until > now => configured.min(allowed),
            _ => configured,
        };
        limit.max(1) as usize
    }

    fn insert(&mut self, at: i64) {
        let i = self.log.partition_point(|t| *t <= at);
        self.log.insert(i, at);
    }

    /// The waits in ms of `count` new calls, each the latest in the log; or the wait of the last when
    /// it exceeds `max_wait` (nothing is reserved then).
    fn reserve(
        &mut self,
        now: i64,
        configured: u32,
        count: u32,
        max_wait: i64,
        commit: bool,
    ) -> Result<Vec<i64>, i64> {
        while self.log.front().is_some_and(|t| *t <= now - WINDOW_MS) {
            self.log.pop_front();
        }
        let limit = self.limit(configured, now);
        let mut slots = Vec::with_capacity(count as usize);
        for n in 0..count.max(1) as usize {
            let size = self.log.len() + n;
            let nth = |i: usize| {
                if i < self.log.len() {
                    self.log[i]
                } else {
                    slots[i - self.log.len()]
                }
            };
            let mut at = now.max(self.paused_until);
            if size > 0 {
                at = at.max(nth(size - 1));
            }
            if size >= limit {
                at = at.max(nth(size - limit) + WINDOW_MS);
            }
            slots.push(at);
        }
        let last = slots.last().copied().unwrap_or(now) - now;
        if last > max_wait {
            return Err(last.max(1));
        }
        if commit {
            self.log.extend(slots.iter().copied());
        }
        Ok(slots.into_iter().map(|at| at - now).collect())
    }

    fn observe(&mut self, now: i64, configured: u32, reported: Reported) {
        let reset = reported.reset.as_millis() as i64;
        if reported.allowed < configured {
            self.ceiling = Some((reported.allowed, now + reset));
        }
        if reported.count >= reported.allowed {
            self.paused_until = self.paused_until.max(now + reset);
        }
        // The log is sorted: count the last minute by bisection, since a large budget logs many calls.
        let seen = (self.log.partition_point(|t| *t <= now)
            - self.log.partition_point(|t| *t <= now - WINDOW_MS)) as i64;
        let missing = i64::from(reported.count.min(reported.allowed).min(configured)) - seen;
        for _ in 0..missing.max(0) {
            self.insert(now + reset - WINDOW_MS);
        }
    }
}

/// The budget kept by this process. Cloning is cheap: clones share the log.
///
/// Its times are ms on the runtime's monotonic clock since the budget was made: no other process
/// reads them, a step of the wall clock neither frees nor blocks a call, and a test can pause it.
#[derive(Debug, Clone)]
pub struct LocalBudget {
    budget: Budget,
    log: Arc<Mutex<LocalLog>>,
    origin: tokio::time::Instant,
}

impl LocalBudget {
    pub fn new(budget: Budget) -> Self {
        Self {
            budget,
            log: Arc::default(),
            origin: tokio::time::Instant::now(),
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, LocalLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> i64 {
        self.origin.elapsed().as_millis() as i64
    }

    /// The waits in ms of `count` calls from now, or the wait of a refusal.
    fn waits(&self, count: u32, max_wait: Duration, commit: bool) -> Result<Vec<i64>, i64> {
        let max_wait_ms = wait_ms(max_wait);
        self.log().reserve(
            self.now(),
            self.budget.per_minute,
            count.max(1),
            max_wait_ms,
            commit,
        )
    }

    /// What Genesys reported, in the log (the metrics are the caller's).
    pub(super) fn record(&self, reported: Reported) {
        let now = self.now();
        self.log().observe(now, self.budget.per_minute, reported);
    }
}

#[async_trait::async_trait]
impl CallBudget for LocalBudget {
    fn per_minute(&self) -> u32 {
        self.budget.per_minute
    }

    async fn reserve(
        &self,
        count: u32,
        max_wait: Duration,
    ) -> Result<Vec<tokio::time::Instant>, WaitTooLong> {
        let started = tokio::time::Instant::now();
        slots(started, self.waits(count, max_wait, true), true)
    }

    async fn check(&self, count: u32, max_wait: Duration) -> Result<(), WaitTooLong> {
        let started = tokio::time::Instant::now();
        slots(started, self.waits(count, max_wait, false), false).map(drop)
    }

    async fn observe(&self, reported: Reported) {
        crate::metrics::genesys_budget(reported.count, reported.allowed, reported.reset);
        self.record(reported);
    }

    async fn standing(&self) -> Standing {
        let now = self.now();
        let log = self.log();
        let used = log.log.partition_point(|t| *t <= now)
            - log.log.partition_point(|t| *t <= now - WINDOW_MS);
        let ceiling = log
            .ceiling
            .filter(|(_, until)| *until > now)
            .map(|(allowed, _)| allowed);
        standing(
            now,
            used as u32,
            self.budget.per_minute,
            ceiling,
            log.paused_until,
        )
    }

    async fn pause(&self, retry_after: Duration) {
        let until = self.now() + retry_after.as_millis() as i64;
        let mut log = self.log();
        log.paused_until = log.paused_until.max(until);
    }

    async fn pause_operation(&self, op: &'static str, wait: Duration) {
        let until = self.now() + wait.as_millis() as i64;
        let mut log = self.log();
        let paused = log.operations_paused.entry(op).or_default();
        *paused = (*paused).max(until);
    }

    async fn operation_paused(&self, op: &'static str) -> Option<Duration> {
        let until = self
            .log()
            .operations_paused
            .get(op)
            .copied()
            .unwrap_or_default();
        let left = until - self.now();
        (left > 0).then(|| Duration::from_millis(left as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_full_minute_goes_at_once_and_the_next_call_waits_for_the_oldest_to_leave() {
        let mut log = LocalLog::default();
        for n in 0..5 {
            assert_eq!(log.reserve(1_000 + n, 5, 1, 0, true), Ok(vec![0]));
        }
        // The 6th call may go a minute after the 1st.
        assert_eq!(log.reserve(2_000, 5, 1, 0, true), Err(59_000));
        assert_eq!(log.reserve(2_000, 5, 1, 60_000, true), Ok(vec![59_000]));
    }

    #[test]
    fn reserving_several_calls_is_refused_whole_when_the_last_is_too_late() {
        let mut log = LocalLog::default();
        assert_eq!(log.reserve(0, 3, 2, 0, true), Ok(vec![0, 0]));
        assert_eq!(log.reserve(10, 3, 2, 1_000, true), Err(59_990));
        // Nothing was reserved by the refusal: one call still fits.
        assert_eq!(log.reserve(20, 3, 1, 0, true), Ok(vec![0]));
    }

    #[test]
    fn genesys_counting_more_calls_than_the_log_holds_fills_the_log_until_its_reset() {
        let mut log = LocalLog::default();
        log.reserve(0, 10, 1, 0, true).unwrap();
        // Genesys saw 8 calls on this token, and its window resets in 20 s.
        log.observe(
            1_000,
            10,
            Reported {
                count: 8,
                allowed: 300,
                reset: Duration::from_secs(20),
            },
        );
        assert_eq!(log.reserve(1_000, 10, 2, 0, true), Ok(vec![0, 0]));
        // Full: the next slot comes when Genesys's window resets (21 s), not a minute from now.
        assert_eq!(log.reserve(1_000, 10, 1, 60_000, true), Ok(vec![20_000]));
    }

    #[test]
    fn a_lower_allowed_lowers_the_limit_and_a_spent_window_pauses() {
        let mut log = LocalLog::default();
        log.observe(
            0,
            300,
            Reported {
                count: 180,
                allowed: 180,
                reset: Duration::from_secs(30),
            },
        );
        assert_eq!(log.reserve(0, 300, 1, 0, true), Err(30_000));
    }

    proptest! {
        #[test]
        fn no_minute_ever_holds_more_than_the_limit(
            limit in 1u32..20,
            arrivals in proptest::collection::vec((0i64..500, 1u32..4), 1..80),
        ) {
            let mut log = LocalLog::default();
            let mut now = 0;
            let mut granted = Vec::new();
            for (gap, count) in arrivals {
                now += gap;
                if let Ok(waits) = log.reserve(now, limit, count, 120_000, true) {
                    granted.extend(waits.iter().map(|w| now + w));
                }
            }
            let all: Vec<i64> = log.log.iter().copied().collect();
            for (i, t) in all.iter().enumerate() {
                let in_window = all[i..].iter().take_while(|u| **u < t + WINDOW_MS).count();
                prop_assert!(in_window <= limit as usize, "{} calls in a minute from {}", in_window, t);
            }
            prop_assert!(!granted.is_empty());
        }
    }
}
