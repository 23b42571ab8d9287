//! The deployment's budget on Redis: the same log as [`super::local`], kept by Lua scripts in a
//! sorted set every replica shares, so the replicas of one OAuth client never pass its limit
//! together. While Redis is away, each replica falls back to its own log.

use std::time::Duration;

use redis::Script;

use super::local::LocalBudget;
use super::{
    slots, standing, wait_ms, Budget, CallBudget, Reported, Standing, WaitTooLong, WINDOW_MS,
};
use crate::store::Redis;

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

/// Wall-clock ms: replicas compare their calls' times, so the shared log is kept in the time they
/// share.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The budget every replica shares; this replica's own log stands in while Redis is away.
#[derive(Clone)]
pub struct RedisBudget {
    budget: Budget,
    redis: Redis,
    fallback: LocalBudget,
}

impl std::fmt::Debug for RedisBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBudget")
            .field("budget", &self.budget)
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

impl RedisBudget {
    pub fn new(budget: Budget, redis: Redis) -> Self {
        Self {
            budget,
            redis,
            fallback: LocalBudget::new(budget),
        }
    }

    /// Extends the pause kept at `name` to `until` (ms), expiring `wait` from now, so every
    /// replica holds back.
    async fn share_pause(&self, name: &str, until: i64, wait: Duration) {
        let mut conn = self.redis.conn.clone();
        let done: Result<i64, _> = Script::new(PAUSE)
            .key(self.redis.key(name))
            .arg(until)
            .arg(wait.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, name, "could not share a pause through Redis");
        }
    }

    /// The slots of `count` calls from the deployment's log; from this replica's own while Redis
    /// is away.
    async fn shared_slots(
        &self,
        count: u32,
        max_wait: Duration,
        commit: bool,
    ) -> Result<Vec<tokio::time::Instant>, WaitTooLong> {
        let started = tokio::time::Instant::now();
        let max_wait_ms = wait_ms(max_wait);
        match self
            .reserve_shared(now_ms(), count.max(1), max_wait_ms, commit)
            .await
        {
            Ok(waits) => slots(started, waits, commit),
            Err(e) => {
                metrics::counter!(crate::metrics::REDIS_FALLBACKS, "what" => "rate_budget")
                    .increment(1);
                tracing::warn!(error = %e, "Redis is unreachable: using this replica's own rate budget");
                if commit {
                    self.fallback.reserve(count, max_wait).await
                } else {
                    self.fallback
                        .check(count, max_wait)
                        .await
                        .map(|()| Vec::new())
                }
            }
        }
    }

    async fn reserve_shared(
        &self,
        now: i64,
        count: u32,
        max_wait_ms: i64,
        commit: bool,
    ) -> Result<Result<Vec<i64>, i64>, redis::RedisError> {
        let mut conn = self.redis.conn.clone();
        let answer: Vec<i64> = Script::new(RESERVE)
            .key(self.redis.key("rate:log"))
            .key(self.redis.key("rate:pause"))
            .key(self.redis.key("rate:ceiling"))
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
impl CallBudget for RedisBudget {
    fn per_minute(&self) -> u32 {
        self.budget.per_minute
    }

    async fn reserve(
        &self,
        count: u32,
        max_wait: Duration,
    ) -> Result<Vec<tokio::time::Instant>, WaitTooLong> {
        self.shared_slots(count, max_wait, true).await
    }

    async fn check(&self, count: u32, max_wait: Duration) -> Result<(), WaitTooLong> {
        self.shared_slots(count, max_wait, false).await.map(drop)
    }

    async fn observe(&self, reported: Reported) {
        crate::metrics::genesys_budget(reported.count, reported.allowed, reported.reset);
        let now = now_ms();
        let mut conn = self.redis.conn.clone();
        let done: Result<i64, _> = Script::new(OBSERVE)
            .key(self.redis.key("rate:log"))
            .key(self.redis.key("rate:pause"))
            .key(self.redis.key("rate:ceiling"))
            .arg(now)
            .arg(self.budget.per_minute)
            .arg(reported.count)
            .arg(reported.allowed)
            .arg(reported.reset.as_millis() as u64)
            .arg(uuid::Uuid::new_v4().simple().to_string())
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "could not share Genesys's rate figures through Redis");
            self.fallback.record(reported);
        }
    }

    async fn standing(&self) -> Standing {
        let now = now_ms();
        let mut conn = self.redis.conn.clone();
        let read: Result<(u32, Option<i64>, Option<u32>), _> = redis::pipe()
            .cmd("ZCOUNT")
            .arg(self.redis.key("rate:log"))
            .arg(format!("({}", now - WINDOW_MS))
            .arg(now)
            .cmd("GET")
            .arg(self.redis.key("rate:pause"))
            .cmd("GET")
            .arg(self.redis.key("rate:ceiling"))
            .query_async(&mut conn)
            .await;
        match read {
            Ok((used, paused_until, ceiling)) => standing(
                now,
                used,
                self.budget.per_minute,
                ceiling,
                paused_until.unwrap_or_default(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the shared budget from Redis");
                self.fallback.standing().await
            }
        }
    }

    /// Genesys answered 429: nobody in the deployment calls before `retry_after` has passed. This
    /// replica holds back even if Redis cannot be told.
    async fn pause(&self, retry_after: Duration) {
        let until = now_ms() + retry_after.as_millis() as i64;
        self.fallback.pause(retry_after).await;
        self.share_pause("rate:pause", until, retry_after).await;
    }

    async fn pause_operation(&self, op: &'static str, wait: Duration) {
        let until = now_ms() + wait.as_millis() as i64;
        self.fallback.pause_operation(op, wait).await;
        self.share_pause(&format!("rate:pause:{op}"), until, wait)
            .await;
    }

    async fn operation_paused(&self, op: &'static str) -> Option<Duration> {
        let mut conn = self.redis.conn.clone();
        let shared: Option<i64> = redis::cmd("GET")
            .arg(self.redis.key(&format!("rate:pause:{op}")))
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, op, "could not read an operation's pause from Redis");
                None
            });
        let left = shared.unwrap_or_default() - now_ms();
        let shared = (left > 0).then(|| Duration::from_millis(left as u64));
        self.fallback.operation_paused(op).await.max(shared)
    }
}
