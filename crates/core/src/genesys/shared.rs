//! What the client needs from a deployment-wide store: the one shared token and the shared call
//! budget. Traits here, implemented by the Redis backend (`cluster`), so the client never depends
//! on a backend.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use secrecy::SecretString;

use super::GenesysError;

/// A client-credentials grant, run at most once, and only if the store has no token.
pub type Grant<'a> =
    Pin<Box<dyn Future<Output = Result<(SecretString, Duration), GenesysError>> + Send + 'a>>;

/// The store could not answer.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    pub message: String,
    /// A slow or dropped answer, worth one more try.
    pub transient: bool,
}

/// Why the shared token could not be had: the store, or the grant itself.
#[derive(Debug)]
pub enum SharedTokenError {
    Store(StoreError),
    Grant(GenesysError),
}

/// One token for every replica.
#[async_trait::async_trait]
pub trait TokenStore: Send + Sync {
    /// The deployment's token and how long it stays usable (its expiry less `margin`), running
    /// `grant` (once for every replica) when there is none.
    async fn get<'a>(
        &self,
        margin: Duration,
        grant: Grant<'a>,
    ) -> Result<(SecretString, Duration), SharedTokenError>;

    /// Drops the token everywhere if it is still `stale`.
    async fn invalidate(&self, stale: &str) -> Result<(), StoreError>;
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
