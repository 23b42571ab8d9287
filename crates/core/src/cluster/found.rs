//! What lookups found, remembered for a short while: by this replica, and on Redis by every replica,
//! so a CRM's burst for one record costs one analytics query however the load balancer spreads it.
//!
//! The cache only saves queries; it is never trusted. Every use is confirmed by a read, and a call
//! that ended is forgotten everywhere. So Redis being slow or down costs queries, never correctness:
//! its errors are logged and the lookup goes on without it.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::Redis;
use crate::domain::lookup::{Lookup, LookupKey, Pick};
use crate::domain::ConversationId;

/// Lookups' finds, kept for `ttl`; a zero `ttl` keeps nothing.
#[derive(Clone)]
pub struct FoundCache {
    local: moka::future::Cache<Lookup, ConversationId>,
    shared: Option<Redis>,
    ttl: Duration,
}

impl std::fmt::Debug for FoundCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoundCache")
            .field("ttl", &self.ttl)
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

/// The Redis key name of `lookup`: a digest, so no caller's number is stored in the clear.
fn key_name(lookup: &Lookup) -> String {
    let value = match &lookup.key {
        LookupKey::Ani(n) => n.e164().to_string(),
        LookupKey::UserId(id) | LookupKey::ExternalContactId(id) => id.to_string(),
    };
    let pick = match lookup.pick {
        Pick::Only => "only",
        Pick::Latest => "latest",
    };
    let canonical = format!(
        "{}\n{value}\n{}\n{pick}",
        lookup.key.kind().name(),
        lookup.media_type.as_str()
    );
    format!("lookup:{}", hex::encode(Sha256::digest(canonical)))
}

impl FoundCache {
    /// A cache for `ttl` (none when zero), shared on `shared` when the deployment runs on Redis.
    pub fn new(ttl: Duration, shared: Option<Redis>) -> Self {
        Self {
            local: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
            shared,
            ttl,
        }
    }

    /// What a replica found for `lookup` within the last `ttl`, if any.
    pub async fn get(&self, lookup: &Lookup) -> Option<ConversationId> {
        if self.ttl.is_zero() {
            return None;
        }
        if let Some(cid) = self.local.get(lookup).await {
            return Some(cid);
        }
        let redis = self.shared.as_ref()?;
        let mut conn = redis.conn.clone();
        let found: Option<String> = match redis::cmd("GET")
            .arg(redis.key(&key_name(lookup)))
            .query_async(&mut conn)
            .await
        {
            Ok(found) => found,
            Err(e) => {
                unshared(&e, "read");
                return None;
            }
        };
        let cid = found?.parse::<ConversationId>().ok()?;
        self.local.insert(lookup.clone(), cid).await;
        Some(cid)
    }

    /// Remembers that `lookup` found `cid`.
    pub async fn insert(&self, lookup: &Lookup, cid: ConversationId) {
        if self.ttl.is_zero() {
            return;
        }
        self.local.insert(lookup.clone(), cid).await;
        let Some(redis) = &self.shared else { return };
        let mut conn = redis.conn.clone();
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let stored: Result<(), _> = redis::cmd("SET")
            .arg(redis.key(&key_name(lookup)))
            .arg(cid.to_string())
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut conn)
            .await;
        if let Err(e) = stored {
            unshared(&e, "written");
        }
    }

    /// Forgets that `lookup` found `stale`, on every replica: the call ended or no longer matches.
    /// A newer find (another replica's, after the caller called again) is kept.
    pub async fn forget(&self, lookup: &Lookup, stale: ConversationId) {
        if self.local.get(lookup).await == Some(stale) {
            self.local.invalidate(lookup).await;
        }
        let Some(redis) = &self.shared else { return };
        let mut conn = redis.conn.clone();
        let dropped: Result<i64, _> = redis::Script::new(super::DELETE_IF_EQUAL)
            .key(redis.key(&key_name(lookup)))
            .arg(stale.to_string())
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = dropped {
            unshared(&e, "cleared");
        }
    }
}

/// Redis did not answer: this replica goes on with its own finds, counted with the other fallbacks.
fn unshared(e: &redis::RedisError, what: &str) {
    metrics::counter!(crate::metrics::REDIS_FALLBACKS, "what" => "lookup_cache").increment(1);
    tracing::warn!(error = %e, "Redis is unreachable: the shared lookup cache could not be {what}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn lookup(key: &str, pick: Pick) -> Lookup {
        Lookup {
            key: LookupKey::Ani(FromStr::from_str(key).unwrap()),
            media_type: crate::domain::lookup::MediaType::voice(),
            pick,
        }
    }

    #[test]
    fn a_lookups_key_names_the_number_in_no_form_and_is_the_same_for_every_form() {
        let name = key_name(&lookup("+1 (317) 555-0123", Pick::Only));
        assert_eq!(name, key_name(&lookup("tel:+13175550123", Pick::Only)));
        assert!(!name.contains("3175550123"), "{name}");
        // Asking for the latest is another search: its find says nothing of ambiguity.
        assert_ne!(name, key_name(&lookup("+13175550123", Pick::Latest)));
    }
}
