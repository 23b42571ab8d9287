//! The channel slots of every replica. A slot is `{prefix}:mirror:channel:<n>`, set with NX and a
//! TTL, renewed by its holder; a replica that stops renewing (it died, or Redis lost it) frees its
//! slot when the TTL runs out. A replica that loses its slot closes its socket.

use redis::Script;

use super::{ChannelSlots, Slot, SLOT_TTL};
use crate::store::{Redis, DELETE_IF_EQUAL};

const RENEW_IF_OWNER: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"#;

/// The deployment's channel slots, on Redis.
#[derive(Clone, Debug)]
pub struct RedisSlots {
    limit: u32,
    redis: Redis,
    /// This replica's id, the value of each slot it holds.
    owner: String,
}

impl RedisSlots {
    pub fn new(limit: u32, redis: Redis) -> Self {
        Self {
            limit,
            redis,
            owner: uuid::Uuid::new_v4().to_string(),
        }
    }

    fn key(&self, n: u32) -> String {
        self.redis.key(&format!("mirror:channel:{n}"))
    }
}

#[async_trait::async_trait]
impl ChannelSlots for RedisSlots {
    /// A free slot, if the deployment has one. An unreachable Redis gives none: a channel that
    /// might evict another replica's is worse than no mirror.
    async fn acquire(&self) -> Option<Slot> {
        let mut conn = self.redis.conn.clone();
        for n in 0..self.limit {
            let taken: Option<String> = redis::cmd("SET")
                .arg(self.key(n))
                .arg(&self.owner)
                .arg("NX")
                .arg("PX")
                .arg(SLOT_TTL.as_millis() as u64)
                .query_async(&mut conn)
                .await
                .ok()?;
            if taken.is_some() {
                return Some(Slot(n));
            }
        }
        None
    }

    /// Keeps `slot`; `false` when it is no longer this replica's (its TTL ran out and another took
    /// it) or Redis cannot say.
    async fn renew(&self, slot: &Slot) -> bool {
        let mut conn = self.redis.conn.clone();
        Script::new(RENEW_IF_OWNER)
            .key(self.key(slot.0))
            .arg(&self.owner)
            .arg(SLOT_TTL.as_millis() as u64)
            .invoke_async::<i64>(&mut conn)
            .await
            .is_ok_and(|n| n == 1)
    }

    async fn release(&self, slot: Slot) {
        let mut conn = self.redis.conn.clone();
        let _ = Script::new(DELETE_IF_EQUAL)
            .key(self.key(slot.0))
            .arg(&self.owner)
            .invoke_async::<i64>(&mut conn)
            .await;
    }
}
