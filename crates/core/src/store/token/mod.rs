//! The OAuth token, kept for this process ([`local`]) or for every replica of the deployment
//! ([`redis`]), so that replicas sharing one OAuth client share one token and one grant.

pub mod local;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use secrecy::SecretString;

use super::StoreError;
use crate::genesys::GenesysError;

/// A client-credentials grant, run at most once, and only if the store has no token.
pub type Grant<'a> =
    Pin<Box<dyn Future<Output = Result<(SecretString, Duration), GenesysError>> + Send + 'a>>;

/// Why the token could not be had: the store, or the grant itself.
#[derive(Debug)]
pub enum TokenError {
    Store(StoreError),
    Grant(GenesysError),
}

/// Where the token is kept. The client caches what it gets in front of the store, so the store is
/// asked only when the client's copy is missing or refused.
#[async_trait::async_trait]
pub trait TokenStore: Send + Sync {
    /// The token and how long it stays usable (its expiry less `margin`), running `grant` (once for
    /// every replica the store serves) when there is none.
    async fn get<'a>(
        &self,
        margin: Duration,
        grant: Grant<'a>,
    ) -> Result<(SecretString, Duration), TokenError>;

    /// Drops the token if it is still `stale`.
    async fn invalidate(&self, stale: &str) -> Result<(), StoreError>;
}

/// How long a granted token stays usable: its expiry less `margin`, but at least half of it, so a
/// short-lived token is still used.
pub fn usable(expires_in: Duration, margin: Duration) -> Duration {
    expires_in.saturating_sub(margin).max(expires_in / 2)
}
