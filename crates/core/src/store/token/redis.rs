//! One OAuth token for the whole deployment, shared through Redis and renewed by one replica at a time.
//!
//! The token sits at `{prefix}:token` with a TTL that ends `token_expiry_margin_s` before Genesys's
//! expiry, so it disappears while still valid. A replica that finds no token takes
//! `{prefix}:token:lock`, asks for a grant, stores the token and drops the lock; the others poll for
//! the new token meanwhile. Looking for the token and taking the lock is one script: were they two
//! commands, a replica could see no token, then take the lock just after another replica stored a
//! new token and dropped the lock, and grant a second time. A 401 deletes the token only if it is
//! still the refused one, so however many replicas see the 401, one grant follows.

use std::time::Duration;

use redis::Script;
use secrecy::{ExposeSecret, SecretString};

use super::{usable, Grant, TokenError, TokenStore};
use crate::genesys::GenesysError;
use crate::store::{Redis, StoreError, DELETE_IF_EQUAL};

/// Longer than a grant can take (its timeout and retries), so a live holder keeps the lock.
const LOCK_TTL: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(25);

/// The token and its remaining life, or, when there is none, the lock taken for the caller (`1`) or
/// held by another replica (`0`). KEYS: token, lock. ARGV: the caller's lock id, the lock's TTL in ms.
const TOKEN_OR_LOCK: &str = r#"
local token = redis.call('GET', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if token and ttl > 0 then return {token, ttl} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"#;

fn store_error(e: redis::RedisError) -> TokenError {
    TokenError::Store(e.into())
}

/// One token for every replica.
#[derive(Clone, Debug)]
pub struct RedisToken {
    redis: Redis,
}

impl RedisToken {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }
}

#[async_trait::async_trait]
impl TokenStore for RedisToken {
    async fn get<'a>(
        &self,
        margin: Duration,
        grant: Grant<'a>,
    ) -> Result<(SecretString, Duration), TokenError> {
        let (key, lock) = (self.redis.key("token"), self.redis.key("token:lock"));
        let mut conn = self.redis.conn.clone();
        let mut grant = Some(grant);
        let deadline = tokio::time::Instant::now() + LOCK_TTL * 2;
        loop {
            let me = uuid::Uuid::new_v4().to_string();
            let found: redis::Value = Script::new(TOKEN_OR_LOCK)
                .key(&key)
                .key(&lock)
                .arg(&me)
                .arg(LOCK_TTL.as_millis() as u64)
                .invoke_async(&mut conn)
                .await
                .map_err(store_error)?;
            let locked = match found {
                found @ redis::Value::Array(_) => {
                    let (token, ttl): (String, u64) =
                        redis::from_redis_value(found).map_err(|e| store_error(e.into()))?;
                    return Ok((SecretString::from(token), Duration::from_millis(ttl)));
                }
                redis::Value::Int(1) => true,
                _ => false,
            };
            if locked {
                let grant = grant.take().expect("the lock is taken once");
                let result = grant.await;
                // The grant is done: whatever Redis does now, the token is used rather than lost
                // (a second grant for it would be the thing this module exists to prevent).
                if let Ok((token, expires_in)) = &result {
                    let ttl = usable(*expires_in, margin);
                    let stored: Result<(), _> = redis::cmd("SET")
                        .arg(&key)
                        .arg(token.expose_secret())
                        .arg("PX")
                        .arg(ttl.as_millis().max(1) as u64)
                        .query_async(&mut conn)
                        .await;
                    if let Err(e) = stored {
                        tracing::warn!(error = %e, "could not share the new token through Redis");
                    }
                }
                // A lock that cannot be dropped expires by itself.
                let _: Result<i64, _> = Script::new(DELETE_IF_EQUAL)
                    .key(&lock)
                    .arg(&me)
                    .invoke_async(&mut conn)
                    .await;
                return result
                    .map(|(token, expires_in)| (token, usable(expires_in, margin)))
                    .map_err(TokenError::Grant);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(TokenError::Grant(GenesysError::Timeout));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn invalidate(&self, stale: &str) -> Result<(), StoreError> {
        let mut conn = self.redis.conn.clone();
        let _: i64 = Script::new(DELETE_IF_EQUAL)
            .key(self.redis.key("token"))
            .arg(stale)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}
