//! The Genesys call budget: at most N calls in any 60 s per token, counted the way Genesys counts,
//! in this process ([`local`]) or deployment-wide in Redis ([`redis`], a Lua script).
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

pub mod local;
pub mod redis;

use std::time::Duration;

/// The window Genesys counts calls in.
pub const WINDOW: Duration = Duration::from_secs(60);
const WINDOW_MS: i64 = 60_000;

/// The budget's shape: calls allowed in any [`WINDOW`].
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub per_minute: u32,
}

/// Where a token stands, as Genesys reported it on an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    pub count: u32,
    pub allowed: u32,
    pub reset: Duration,
}

/// Where the budget stands now, for operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    /// Calls made (or slots taken) in the last 60 s.
    pub used: u32,
    /// The calls allowed in 60 s: the configured budget, or a lower limit Genesys reported.
    pub limit: u32,
    /// How long nobody may call, after a 429 or a spent window.
    pub paused_for: Option<Duration>,
}

/// Refused: wait this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitTooLong(pub Duration);

/// The token's call budget: at most `per_minute()` calls in any 60 s.
#[async_trait::async_trait]
pub trait CallBudget: Send + Sync {
    fn per_minute(&self) -> u32;

    /// Reserves `count` calls, the last at most `max_wait` from now, and says when each may go
    /// (earliest first). Refused, nothing is reserved, and the answer says how long to wait.
    async fn reserve(
        &self,
        count: u32,
        max_wait: Duration,
    ) -> Result<Vec<tokio::time::Instant>, WaitTooLong>;

    /// Whether `count` calls could be had, the last within `max_wait`; nothing is reserved.
    async fn check(&self, count: u32, max_wait: Duration) -> Result<(), WaitTooLong>;

    /// What Genesys reported on an answer: it corrects the count, the limit and the pause.
    async fn observe(&self, reported: Reported);

    /// Genesys answered 429: nobody calls before `retry_after` has passed.
    async fn pause(&self, retry_after: Duration);

    /// Genesys refused `op` under a limit of that operation's own: nobody calls `op` (other calls
    /// go on) before `wait` has passed.
    async fn pause_operation(&self, op: &'static str, wait: Duration);

    /// How long `op` is still held back by a limit of its own, if it is.
    async fn operation_paused(&self, op: &'static str) -> Option<Duration>;

    /// Where the budget stands now.
    async fn standing(&self) -> Standing;

    /// Waits for one slot, at most `max_wait`.
    async fn acquire(&self, max_wait: Duration) -> Result<(), WaitTooLong> {
        let slots = self.reserve(1, max_wait).await?;
        tokio::time::sleep_until(slots[0]).await;
        Ok(())
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

/// A wait in ms, as the logs count time.
fn wait_ms(wait: Duration) -> i64 {
    wait.as_millis().min(i64::MAX as u128) as i64
}

/// The reserved waits (ms from `started`) as instants, or the wait of a refusal.
fn slots(
    started: tokio::time::Instant,
    waits: Result<Vec<i64>, i64>,
    commit: bool,
) -> Result<Vec<tokio::time::Instant>, WaitTooLong> {
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
