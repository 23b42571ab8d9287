//! The OAuth token cache: one grant for any number of concurrent callers, renewed before expiry.
//!
//! A token's and a refusal's lives are measured on the runtime's clock (moka only holds them and
//! makes concurrent misses one grant), so expiry is monotonic and a test can pause it.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use moka::ops::compute::Op;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use super::error::GenesysError;

/// A bearer token and how long it may be used.
pub struct AccessToken {
    secret: SecretString,
    usable_until: Instant,
}

impl AccessToken {
    /// A token usable for `valid_for` from now.
    pub fn new(secret: SecretString, valid_for: Duration) -> Self {
        Self {
            secret,
            usable_until: Instant::now() + valid_for,
        }
    }
    fn usable(&self) -> bool {
        Instant::now() < self.usable_until
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
            .field("usable_until", &self.usable_until)
            .finish_non_exhaustive()
    }
}

/// Caches one token, and remembers a rejected grant for a short while.
///
/// Single flight comes from moka's `try_get_with`: concurrent callers that find the cache empty
/// wait on the one grant the first of them started, instead of each asking the login service.
#[derive(Clone)]
pub struct TokenCache {
    tokens: Cache<(), Arc<AccessToken>>,
    /// A rejected grant, and until when it is believed.
    rejected: Cache<(), (GenesysError, Instant)>,
    negative_ttl: Duration,
    margin: Duration,
}

impl TokenCache {
    /// `margin` is taken off every token's lifetime; `negative_ttl` is how long a rejected grant is believed.
    pub fn new(margin: Duration, negative_ttl: Duration) -> Self {
        Self {
            tokens: Cache::builder().max_capacity(1).build(),
            rejected: Cache::builder().max_capacity(1).build(),
            negative_ttl,
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
            if token.usable() {
                return Ok(token);
            }
            self.invalidate(&token).await;
        }
        // The miss is rare and its state large (the grant, the shared store, moka's single
        // flight): kept on the heap, it does not make every API call's future kilobytes larger to
        // move.
        Box::pin(self.renew(grant)).await
    }

    /// A new token from `grant`, unless a refusal is still believed.
    async fn renew<F, Fut>(&self, grant: F) -> Result<Arc<AccessToken>, GenesysError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(SecretString, Duration), GenesysError>>,
    {
        if let Some((err, until)) = self.rejected.get(&()).await {
            if Instant::now() < until {
                return Err(err);
            }
            self.rejected.invalidate(&()).await;
        }
        let margin = self.margin;
        let rejected = self.rejected.clone();
        let negative_ttl = self.negative_ttl;
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
                            let until = Instant::now() + negative_ttl;
                            rejected.insert((), (err.clone(), until)).await;
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

    #[tokio::test(start_paused = true)]
    async fn a_token_is_renewed_once_its_life_less_the_margin_has_passed() {
        let cache = TokenCache::new(Duration::from_secs(60), Duration::from_secs(1));
        let grants = AtomicUsize::new(0);
        let get = || {
            cache.get(|| async {
                let n = grants.fetch_add(1, Ordering::SeqCst);
                Ok((
                    SecretString::from(format!("t{n}")),
                    Duration::from_secs(3600),
                ))
            })
        };
        assert_eq!(get().await.unwrap().expose(), "t0");
        tokio::time::sleep(Duration::from_secs(3539)).await;
        assert_eq!(get().await.unwrap().expose(), "t0", "still usable");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            get().await.unwrap().expose(),
            "t1",
            "renewed before Genesys's expiry"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_shorter_lived_than_twice_the_margin_is_used_for_half_its_life() {
        let cache = TokenCache::new(Duration::from_secs(60), Duration::from_secs(1));
        let grants = AtomicUsize::new(0);
        let get = || {
            cache.get(|| async {
                grants.fetch_add(1, Ordering::SeqCst);
                Ok((SecretString::from("t"), Duration::from_secs(100)))
            })
        };
        get().await.unwrap();
        tokio::time::sleep(Duration::from_secs(49)).await;
        get().await.unwrap();
        assert_eq!(grants.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        get().await.unwrap();
        assert_eq!(grants.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_grant_is_tried_again_once_its_refusal_has_expired() {
        let cache = TokenCache::new(Duration::from_secs(1), Duration::from_secs(30));
        let grants = AtomicUsize::new(0);
        let refused = || {
            cache.get(|| async {
                grants.fetch_add(1, Ordering::SeqCst);
                Err(GenesysError::Auth {
                    status: 401,
                    correlation_id: None,
                })
            })
        };
        assert!(refused().await.is_err());
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(refused().await.is_err());
        assert_eq!(grants.load(Ordering::SeqCst), 1, "the refusal is believed");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(refused().await.is_err());
        assert_eq!(
            grants.load(Ordering::SeqCst),
            2,
            "then the grant is tried again"
        );
    }
}
