//! The finds of every replica, on Redis, behind this replica's own: a find is looked for here
//! first, then on Redis. Redis errors are logged and the lookup goes on without it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::local::LocalFinds;
use super::Finds;
use crate::domain::lookup::{Lookup, LookupKey, Pick};
use crate::domain::ConversationId;
use crate::store::{unshared, Redis, DELETE_IF_EQUAL};

/// Finds shared by every replica, with this replica's in front.
#[derive(Clone, Debug)]
pub struct RedisFinds {
    local: LocalFinds,
    redis: Redis,
    mac: Hmac<Sha256>,
}

/// The Redis key name of `lookup`: a keyed digest (HMAC-SHA-256), so no caller's number is stored
/// in the clear, nor as a plain hash, which anyone reading Redis could reverse by hashing every
/// number of a country.
fn key_name(mac: &Hmac<Sha256>, lookup: &Lookup) -> String {
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
    let mut mac = mac.clone();
    mac.update(canonical.as_bytes());
    format!("lookup:{}", hex::encode(mac.finalize().into_bytes()))
}

/// The digest's key, from a secret every replica of the deployment holds and Redis does not: the
/// OAuth client's secret, under a label of this use alone.
fn lookup_mac(secret: &[u8]) -> Hmac<Sha256> {
    crate::seal::labelled_mac(secret, b"patchbay lookup cache key v1")
}

impl RedisFinds {
    /// `secret`: the OAuth client's, which keys the digest of every lookup's Redis key.
    pub fn new(local: LocalFinds, redis: Redis, secret: &[u8]) -> Self {
        Self {
            local,
            redis,
            mac: lookup_mac(secret),
        }
    }
}

#[async_trait::async_trait]
impl Finds for RedisFinds {
    async fn get(&self, lookup: &Lookup) -> Option<ConversationId> {
        if self.local.ttl().is_zero() {
            return None;
        }
        if let Some(cid) = self.local.get(lookup).await {
            return Some(cid);
        }
        let mut conn = self.redis.conn.clone();
        let found: Option<String> = match redis::cmd("GET")
            .arg(self.redis.key(&key_name(&self.mac, lookup)))
            .query_async(&mut conn)
            .await
        {
            Ok(found) => found,
            Err(e) => {
                unshared(&e, UNSHARED, "read");
                return None;
            }
        };
        let cid = found?.parse::<ConversationId>().ok()?;
        self.local.insert(lookup, cid).await;
        Some(cid)
    }

    async fn insert(&self, lookup: &Lookup, cid: ConversationId) {
        let ttl = self.local.ttl();
        if ttl.is_zero() {
            return;
        }
        self.local.insert(lookup, cid).await;
        let mut conn = self.redis.conn.clone();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let stored: Result<(), _> = redis::cmd("SET")
            .arg(self.redis.key(&key_name(&self.mac, lookup)))
            .arg(cid.to_string())
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut conn)
            .await;
        if let Err(e) = stored {
            unshared(&e, UNSHARED, "written");
        }
    }

    async fn forget(&self, lookup: &Lookup, stale: ConversationId) {
        self.local.forget(lookup, stale).await;
        let mut conn = self.redis.conn.clone();
        let dropped: Result<i64, _> = redis::Script::new(DELETE_IF_EQUAL)
            .key(self.redis.key(&key_name(&self.mac, lookup)))
            .arg(stale.to_string())
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = dropped {
            unshared(&e, UNSHARED, "cleared");
        }
    }
}

/// This cache, in the fallback metric and the warning.
const UNSHARED: (&str, &str) = ("lookup_cache", "the shared lookup cache");

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
        let mac = lookup_mac(b"client secret");
        let name = key_name(&mac, &lookup("+1 (317) 555-0123", Pick::Only));
        assert_eq!(
            name,
            key_name(&mac, &lookup("tel:+13175550123", Pick::Only))
        );
        assert!(!name.contains("3175550123"), "{name}");
        // Asking for the latest is another search: its find says nothing of ambiguity.
        assert_ne!(name, key_name(&mac, &lookup("+13175550123", Pick::Latest)));
    }

    #[test]
    fn a_lookups_key_is_no_plain_hash_of_the_number_but_keyed_by_the_deployments_secret() {
        let one = lookup("+13175550123", Pick::Only);
        let name = key_name(&lookup_mac(b"client secret"), &one);
        // Whoever reads Redis and hashes every number still finds none.
        let plain = format!("{}\n+13175550123\nvoice\nonly", one.key.kind().name());
        use sha2::Digest;
        assert_ne!(
            name,
            format!("lookup:{}", hex::encode(Sha256::digest(plain)))
        );
        assert_ne!(name, key_name(&lookup_mac(b"another secret"), &one));
    }
}
