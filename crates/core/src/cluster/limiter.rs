//! The Genesys call budget: at most N calls in any 60 s per token, counted the way Genesys counts,
//! deployment-wide in Redis (a Lua script) or in this process.
//!
//! The budget keeps the time of every call of the last minute, and of every slot reserved ahead
//! (a sliding-window log). A new call gets the earliest time at which the minute before it holds
//! fewer than N calls: now, or a minute after the N-th most recent call. So a burst of N calls goes at
//! once, as Genesys would accept it, and no 60 s ever sees more than N. A caller that would have to
//! wait longer than it may is refused at once, with the wait as its Retry-After.
//!
//! Genesys is the authority. Every answer's `inin-ratelimit-*` headers correct the log: calls it
//! counted that the log lacks (another process on the same token, say) are added so that they leave
//! the log when Genesys's window resets, a lower `allowed` lowers N until then, and a spent window, or
//! a 429's `Retry-After`, pauses every call of the deployment until it is over.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Script;

use super::Redis;
use crate::genesys::shared::{CallBudget, Standing};
pub use crate::genesys::shared::{Reported, WaitTooLong};

/// The window Genesys counts calls in.
pub const WINDOW: Duration = Duration::from_secs(60);
const WINDOW_MS: i64 = 60_000;

/// KEYS: log (sorted set of call times), pause (ms), ceiling (a lower N). ARGV: now_ms, limit,
/// max_wait_ms, member, count, commit (1 reserves, 0 only looks). Reserves `count` slots: `{1, wait_1, …, wait_count}` in ms, or
/// `{0, wait}` when the last would come later than max_wait (nothing is reserved then).
/// Each slot is the latest in the log, so "a minute after the N-th most recent" is exact.
const RESERVE: &str = r#"
local now, limit, max_wait, count = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
local window = 60000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local ceiling = tonumber(redis.call('GET', KEYS[3]) or limit)
if ceiling < limit then limit = ceiling end
if limit < 1 then limit = 1 end
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
local size = redis.call('ZCARD', KEYS[1])
-- The i-th call time (0-based) of the log followed by the slots reserved so far.
local slots = {}
local function nth(i)
  if i >= size then return slots[i - size + 1] end
  return tonumber(redis.call('ZRANGE', KEYS[1], i, i, 'WITHSCORES')[2])
end
for n = 1, count do
  local total = size + n - 1
  local at = now
  if paused > at then at = paused end
  if total > 0 and nth(total - 1) > at then at = nth(total - 1) end
  if total >= limit and nth(total - limit) + window > at then at = nth(total - limit) + window end
  slots[n] = at
end
local last = slots[count] - now
if last > max_wait then return {0, last} end
local answer = {1}
if ARGV[6] ~= '1' then
  for n = 1, count do answer[n + 1] = slots[n] - now end
  return answer
end
for n = 1, count do
  redis.call('ZADD', KEYS[1], slots[n], ARGV[4] .. ':' .. n)
  answer[n + 1] = slots[n] - now
end
redis.call('PEXPIRE', KEYS[1], last + window)
return answer
"#;

/// KEYS: log, pause, ceiling. ARGV: now_ms, limit, count, allowed, reset_ms, member. Applies what
/// Genesys reported: its count, its limit, and when its window resets.
const OBSERVE: &str = r#"
local now, limit, count, allowed, reset = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local window = 60000
if allowed < limit then redis.call('SET', KEYS[3], allowed, 'PX', math.max(reset, 1)) end
if count >= allowed then
  local until_ms = now + reset
  local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
  if until_ms > paused then redis.call('SET', KEYS[2], until_ms, 'PX', math.max(reset, 1)) end
end
local seen = redis.call('ZCOUNT', KEYS[1], now - window, now)
local missing = math.min(count, allowed, limit) - seen
for n = 1, missing do
  redis.call('ZADD', KEYS[1], now + reset - window, ARGV[6] .. ':' .. n)
end
return missing
"#;

/// KEYS: pause. ARGV: until_ms, ttl_ms. Nobody calls before `until`.
const PAUSE: &str = r#"
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > paused then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
return 1
"#;

/// The budget's shape: calls allowed in any [`WINDOW`].
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub per_minute: u32,
}

/// The in-process log: the same algorithm as [`RESERVE`] and [`OBSERVE`], for one process.
#[derive(Debug, Default)]
struct LocalLog {
    /// Call and slot times in ms, sorted.
    log: VecDeque<i64>,
    paused_until: i64,
    /// Operations held back by limits of their own, until when (ms).
    operations_paused: std::collections::HashMap<&'static str, i64>,
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

/// Where the budget is kept: Redis for the deployment, or this process while Redis is away.
#[derive(Clone)]
pub struct RateBudget {
    budget: Budget,
    local: Arc<Mutex<LocalLog>>,
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

/// The standing from its parts: `ceiling` is a lower limit Genesys reported, `paused_until` in ms.
fn standing(
    now: i64,
    used: u32,
    per_minute: u32,
    ceiling: Option<u32>,
    paused_until: i64,
) -> Standing {
    Standing {
        used,
        limit: ceiling.map_or(per_minute, |c| c.min(per_minute)),
        paused_for: (paused_until > now)
            .then(|| Duration::from_millis((paused_until - now) as u64)),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl RateBudget {
    /// Extends the pause kept at `name` on Redis to `until` (ms), expiring `wait` from now, so
    /// every replica holds back; without Redis the local pause is the only one.
    async fn share_pause(&self, name: &str, until: i64, wait: Duration) {
        let Some(redis) = &self.shared else { return };
        let mut conn = redis.conn.clone();
        let done: Result<i64, _> = Script::new(PAUSE)
            .key(redis.key(name))
            .arg(until)
            .arg(wait.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, name, "could not share a pause through Redis");
        }
    }

    /// `shared`: the deployment's Redis; without it, or while it is down, the budget is this process's.
    pub fn new(budget: Budget, shared: Option<Redis>) -> Self {
        Self {
            budget,
            local: Arc::new(Mutex::new(LocalLog::default())),
            shared,
        }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, LocalLog> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn slots(
        &self,
        count: u32,
        max_wait: Duration,
        commit: bool,
    ) -> Result<Vec<tokio::time::Instant>, WaitTooLong> {
        let count = count.max(1);
        let started = tokio::time::Instant::now();
        let now = now_ms();
        let max_wait_ms = max_wait.as_millis().min(i64::MAX as u128) as i64;
        let waits = match &self.shared {
            Some(redis) => match self
                .reserve_shared(redis, now, count, max_wait_ms, commit)
                .await
            {
                Ok(w) => w,
                Err(e) => {
                    metrics::counter!(crate::metrics::REDIS_FALLBACKS, "what" => "rate_budget")
                        .increment(1);
                    tracing::warn!(error = %e, "Redis is unreachable: using this replica's own rate budget");
                    self.local()
                        .reserve(now, self.budget.per_minute, count, max_wait_ms, commit)
                }
            },
            None => self
                .local()
                .reserve(now, self.budget.per_minute, count, max_wait_ms, commit),
        };
        match waits {
            Ok(waits) => {
                if commit && waits.iter().any(|w| *w > 0) {
                    metrics::counter!(crate::metrics::RATE_BUDGET_WAITS).increment(1);
                }
                Ok(waits
                    .into_iter()
                    .map(|w| started + Duration::from_millis(w.max(0) as u64))
                    .collect())
            }
            Err(wait) => Err(WaitTooLong(Duration::from_millis(wait as u64))),
        }
    }

    async fn reserve_shared(
        &self,
        redis: &Redis,
        now: i64,
        count: u32,
        max_wait_ms: i64,
        commit: bool,
    ) -> Result<Result<Vec<i64>, i64>, redis::RedisError> {
        let mut conn = redis.conn.clone();
        let answer: Vec<i64> = Script::new(RESERVE)
            .key(redis.key("rate:log"))
            .key(redis.key("rate:pause"))
            .key(redis.key("rate:ceiling"))
            .arg(now)
            .arg(self.budget.per_minute)
            .arg(max_wait_ms)
            .arg(uuid::Uuid::new_v4().simple().to_string())
            .arg(count)
            .arg(if commit { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        Ok(match answer.split_first() {
            Some((1, waits)) => Ok(waits.to_vec()),
            Some((_, [wait, ..])) => Err((*wait).max(1)),
            _ => Err(1),
        })
    }
}

#[async_trait::async_trait]
impl CallBudget for RateBudget {
    fn per_minute(&self) -> u32 {
        self.budget.per_minute
    }

    /// Reserves `count` calls, the last of them at most `max_wait` from now, and returns when each
    /// may go (earliest first). Refused, nothing is reserved, and the answer says how long to wait.
    async fn reserve(
        &self,
        count: u32,
        max_wait: Duration,
    ) -> Result<Vec<tokio::time::Instant>, WaitTooLong> {
        self.slots(count, max_wait, true).await
    }

    /// Whether `count` calls could be had, the last within `max_wait`; nothing is reserved.
    async fn check(&self, count: u32, max_wait: Duration) -> Result<(), WaitTooLong> {
        self.slots(count, max_wait, false).await.map(drop)
    }

    /// What Genesys reported on an answer: it corrects the count, the limit and the pause.
    async fn observe(&self, reported: Reported) {
        crate::metrics::genesys_budget(reported.count, reported.allowed, reported.reset);
        let now = now_ms();
        if let Some(redis) = &self.shared {
            let mut conn = redis.conn.clone();
            let done: Result<i64, _> = Script::new(OBSERVE)
                .key(redis.key("rate:log"))
                .key(redis.key("rate:pause"))
                .key(redis.key("rate:ceiling"))
                .arg(now)
                .arg(self.budget.per_minute)
                .arg(reported.count)
                .arg(reported.allowed)
                .arg(reported.reset.as_millis() as u64)
                .arg(uuid::Uuid::new_v4().simple().to_string())
                .invoke_async(&mut conn)
                .await;
            match done {
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "could not share Genesys's rate figures through Redis")
                }
            }
        }
        self.local().observe(now, self.budget.per_minute, reported);
    }

    async fn standing(&self) -> Standing {
        let now = now_ms();
        if let Some(redis) = &self.shared {
            let mut conn = redis.conn.clone();
            let read: Result<(u32, Option<i64>, Option<u32>), _> = redis::pipe()
                .cmd("ZCOUNT")
                .arg(redis.key("rate:log"))
                .arg(format!("({}", now - WINDOW_MS))
                .arg(now)
                .cmd("GET")
                .arg(redis.key("rate:pause"))
                .cmd("GET")
                .arg(redis.key("rate:ceiling"))
                .query_async(&mut conn)
                .await;
            match read {
                Ok((used, paused_until, ceiling)) => {
                    return standing(
                        now,
                        used,
                        self.budget.per_minute,
                        ceiling,
                        paused_until.unwrap_or_default(),
                    )
                }
                Err(e) => tracing::warn!(error = %e, "could not read the shared budget from Redis"),
            }
        }
        let local = self.local();
        let used = local.log.partition_point(|t| *t <= now)
            - local.log.partition_point(|t| *t <= now - WINDOW_MS);
        let ceiling = local
            .ceiling
            .filter(|(_, until)| *until > now)
            .map(|(allowed, _)| allowed);
        standing(
            now,
            used as u32,
            self.budget.per_minute,
            ceiling,
            local.paused_until,
        )
    }

    /// Genesys answered 429: nobody in the deployment calls before `retry_after` has passed.
    async fn pause(&self, retry_after: Duration) {
        let until = now_ms() + retry_after.as_millis() as i64;
        {
            let mut local = self.local();
            local.paused_until = local.paused_until.max(until);
        }
        self.share_pause("rate:pause", until, retry_after).await;
    }

    async fn pause_operation(&self, op: &'static str, wait: Duration) {
        let until = now_ms() + wait.as_millis() as i64;
        {
            let mut local = self.local();
            let paused = local.operations_paused.entry(op).or_default();
            *paused = (*paused).max(until);
        }
        self.share_pause(&format!("rate:pause:{op}"), until, wait)
            .await;
    }

    async fn operation_paused(&self, op: &'static str) -> Option<Duration> {
        let local = self
            .local()
            .operations_paused
            .get(op)
            .copied()
            .unwrap_or_default();
        let shared = match &self.shared {
            Some(redis) => {
                let mut conn = redis.conn.clone();
                let until: Result<Option<i64>, _> = redis::cmd("GET")
                    .arg(redis.key(&format!("rate:pause:{op}")))
                    .query_async(&mut conn)
                    .await;
                until.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, op, "could not read an operation's pause from Redis");
                    None
                })
            }
            None => None,
        };
        let left = local.max(shared.unwrap_or_default()) - now_ms();
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
