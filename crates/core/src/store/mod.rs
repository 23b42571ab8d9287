//! What Patchbay keeps, grouped by concern. Each concern is one trait with two versions side by
//! side: this process's, for a single replica with no server, and Redis's, for several replicas
//! sharing one deployment. Callers hold the trait; start-up picks the version.
//!
//! - [`queue`]: durable jobs, idempotency keys and dead letters (SQLite, or Redis).
//! - [`journal`]: the recent updates the console shows (a ring, or a capped stream).
//! - [`budget`]: the token's calls in any 60 s, and Genesys's pauses.
//! - [`token`]: the OAuth token (granted for this process, or one for every replica).
//! - [`channels`]: the notification channel slots Genesys allows per OAuth client.
//! - [`finds`]: what lookups found, kept for a short while.
//! - [`records`]: what Genesys last showed of each custom-attributes record.
//!
//! On Redis every key lives under `{<redis.key_prefix>}:`. The braces are a Redis Cluster hash tag:
//! all keys share one slot, so the Lua scripts that keep the queue consistent may touch any of them.

pub mod budget;
pub mod channels;
pub mod finds;
pub mod journal;
pub mod queue;
pub mod records;
pub mod token;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisSettings;

/// Deletes KEYS[1] only while it still holds ARGV[1]: a holder never removes what another wrote
/// since (a renewed token, another replica's find or channel slot).
pub(crate) const DELETE_IF_EQUAL: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Redis did not answer a shared cache (`cache`: its metric label and its name): counted among the
/// fallbacks and logged; the replica goes on with what it has of its own.
pub(crate) fn unshared(e: &redis::RedisError, cache: (&'static str, &str), what: &str) {
    metrics::counter!(crate::metrics::REDIS_FALLBACKS, "what" => cache.0).increment(1);
    tracing::warn!(error = %e, "Redis is unreachable: {} could not be {what}", cache.1);
}

/// A Redis store could not answer.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    pub message: String,
    /// A slow or dropped answer, worth one more try.
    pub transient: bool,
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError {
            transient: e.is_timeout() || e.is_connection_dropped() || e.is_io_error(),
            message: e.to_string(),
        }
    }
}

/// A connection to Redis that reconnects by itself, and the key prefix of this deployment.
#[derive(Clone)]
pub struct Redis {
    pub conn: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// Connects lazily: start-up does not wait for Redis, and a Redis that is down is retried on use.
    pub fn connect(settings: &RedisSettings) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(secrecy::ExposeSecret::expose_secret(&settings.url))?;
        let timeout = Duration::from_millis(settings.timeout_ms);
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(timeout);
        Ok(Self {
            conn: ConnectionManager::new_lazy_with_config(client, config)?,
            prefix: format!("{{{}}}", settings.key_prefix),
        })
    }

    /// `{prefix}:name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether Redis answers now.
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok()
    }
}
