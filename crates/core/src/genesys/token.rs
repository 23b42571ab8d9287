//! The OAuth token cache: one grant for any number of concurrent callers, renewed before expiry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::ops::compute::Op;
use moka::Expiry;
use secrecy::{ExposeSecret, SecretString};

use super::error::GenesysError;

/// A bearer token and how long it may be used.
pub struct AccessToken {
    secret: SecretString,
    valid_for: Duration,
}

impl AccessToken {
    pub fn new(secret: SecretString, valid_for: Duration) -> Self {
        Self { secret, valid_for }
    }
    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }
    fn same_as(&self, other: &AccessToken) -> bool {
        self.secret.expose_secret() == other.secret.expose_secret()
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("valid_for", &self.valid_for)
            .finish_non_exhaustive()
    }
}

/// Each entry lives exactly as long as its token may be used.
struct TokenExpiry;

impl Expiry<(), Arc<AccessToken>> for TokenExpiry {
    fn expire_after_create(
        &self,
        _: &(),
        token: &Arc<AccessToken>,
        _: Instant,
    ) -> Option<Duration> {
        Some(token.valid_for)
    }
}

/// Caches one token, and remembers a rejected grant for a short while.
///
/// Single flight comes from moka's `try_get_with`: concurrent callers that find the cache empty
/// wait on the one grant the first of them started, instead of each asking the login service.
#[derive(Clone)]
pub struct TokenCache {
    tokens: Cache<(), Arc<AccessToken>>,
    rejected: Cache<(), GenesysError>,
    margin: Duration,
}

impl TokenCache {
    /// `margin` is taken off every token's lifetime; `negative_ttl` is how long a rejected grant is believed.
    pub fn new(margin: Duration, negative_ttl: Duration) -> Self {
        Self {
            tokens: Cache::builder()
                .max_capacity(1)
                .expire_after(TokenExpiry)
                .build(),
            rejected: Cache::builder()
                .max_capacity(1)
                .time_to_live(negative_ttl.max(Duration::from_millis(1)))
                .build(),
            margin,
        }
    }

    /// The cached token, or a new one from `grant` (run once however many callers wait).
    pub async fn get<F, Fut>(&self, grant: F) -> Result<Arc<AccessToken>, GenesysError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(SecretString, Duration), GenesysError>>,
    {
        if let Some(token) = self.tokens.get(&()).await {
            return Ok(token);
        }
        if let Some(err) = self.rejected.get(&()).await {
            return Err(err);
        }
        let margin = self.margin;
        let rejected = self.rejected.clone();
        self.tokens
            .try_get_with((), async move {
                match grant().await {
                    Ok((secret, expires_in)) => {
                        // A token shorter-lived than the margin is still used, for half its life.
                        let valid_for = if expires_in > margin * 2 {
                            expires_in - margin
                        } else {
                            expires_in / 2
                        };
                        Ok(Arc::new(AccessToken::new(secret, valid_for)))
                    }
                    Err(err) => {
                        if matches!(err, GenesysError::Auth { .. }) {
                            rejected.insert((), err.clone()).await;
                        }
                        Err(err)
                    }
                }
            })
            .await
            .map_err(|e: Arc<GenesysError>| (*e).clone())
    }

    /// Drops `stale` after the API refused it. A token another caller already renewed stays, so a
    /// burst of 401s for the same old token causes one grant, not one per request.
    pub async fn invalidate(&self, stale: &AccessToken) {
        self.tokens
            .entry(())
            .and_compute_with(|entry| {
                let op = match entry {
                    Some(e) if e.value().same_as(stale) => Op::Remove,
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_grant() {
        let cache = TokenCache::new(Duration::from_secs(1), Duration::from_secs(1));
        let grants = Arc::new(AtomicUsize::new(0));
        let calls = (0..50).map(|_| {
            let cache = cache.clone();
            let grants = grants.clone();
            async move {
                cache
                    .get(|| async move {
                        grants.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok((SecretString::from("t"), Duration::from_secs(3600)))
                    })
                    .await
                    .unwrap()
            }
        });
        futures::future::join_all(calls).await;
        assert_eq!(grants.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_rejected_grant_is_remembered_briefly() {
        let cache = TokenCache::new(Duration::from_secs(1), Duration::from_secs(60));
        let grants = AtomicUsize::new(0);
        for _ in 0..3 {
            let r = cache
                .get(|| async {
                    grants.fetch_add(1, Ordering::SeqCst);
                    Err(GenesysError::Auth {
                        status: 400,
                        correlation_id: None,
                    })
                })
                .await;
            assert!(matches!(r, Err(GenesysError::Auth { .. })));
        }
        assert_eq!(grants.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn invalidating_an_old_token_keeps_a_renewed_one() {
        let cache = TokenCache::new(Duration::from_secs(1), Duration::from_secs(1));
        let first = cache
            .get(|| async { Ok((SecretString::from("one"), Duration::from_secs(3600))) })
            .await
            .unwrap();
        cache.invalidate(&first).await;
        let second = cache
            .get(|| async { Ok((SecretString::from("two"), Duration::from_secs(3600))) })
            .await
            .unwrap();
        cache.invalidate(&first).await;
        let still = cache
            .get(|| async { Ok((SecretString::from("three"), Duration::from_secs(3600))) })
            .await
            .unwrap();
        assert_eq!(second.expose(), "two");
        assert_eq!(still.expose(), "two");
    }
}
