//! The deployment's notification channels, counted: Genesys allows 20 per OAuth client and, past
//! that, removes the least recently used (unconnected ones first). So a replica holds a channel only
//! while it holds one of `mirror.max_channels` slots, and the connected channels of the whole
//! deployment never pass the limit: creating one evicts, at worst, a channel nobody is connected to.
//!
//! On Redis a slot is `{prefix}:mirror:channel:<n>`, set with NX and a TTL, renewed by its holder;
//! a replica that stops renewing (it died, or Redis lost it) frees its slot when the TTL runs out.
//! A replica that loses its slot closes its socket. Without Redis the slots are this process's.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use redis::Script;

use super::{Redis, DELETE_IF_EQUAL};
use crate::mirror::feed::{ChannelSlots, Slot, SLOT_TTL};

const RENEW_IF_OWNER: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"#;

/// The deployment's channel slots.
#[derive(Clone, Debug)]
pub struct Slots {
    limit: u32,
    redis: Option<Redis>,
    /// This replica's id, the value of each slot it holds.
    owner: String,
    local: Arc<Mutex<HashSet<u32>>>,
}

impl Slots {
    pub fn new(limit: u32, redis: Option<Redis>) -> Self {
        Self {
            limit,
            redis,
            owner: uuid::Uuid::new_v4().to_string(),
            local: Arc::default(),
        }
    }

    fn key(redis: &Redis, n: u32) -> String {
        redis.key(&format!("mirror:channel:{n}"))
    }
}

#[async_trait::async_trait]
impl ChannelSlots for Slots {
    /// A free slot, if the deployment has one. An unreachable Redis gives none: a channel that
    /// might evict another replica's is worse than no mirror.
    async fn acquire(&self) -> Option<Slot> {
        let Some(redis) = &self.redis else {
            let mut held = self.local.lock().unwrap_or_else(|p| p.into_inner());
            let n = (0..self.limit).find(|n| !held.contains(n))?;
            held.insert(n);
            return Some(Slot(n));
        };
        let mut conn = redis.conn.clone();
        for n in 0..self.limit {
            let taken: Option<String> = redis::cmd("SET")
                .arg(Self::key(redis, n))
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
        let Some(redis) = &self.redis else {
            return true;
        };
        let mut conn = redis.conn.clone();
        Script::new(RENEW_IF_OWNER)
            .key(Self::key(redis, slot.0))
            .arg(&self.owner)
            .arg(SLOT_TTL.as_millis() as u64)
            .invoke_async::<i64>(&mut conn)
            .await
            .is_ok_and(|n| n == 1)
    }

    async fn release(&self, slot: Slot) {
        let Some(redis) = &self.redis else {
            self.local
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&slot.0);
            return;
        };
        let mut conn = redis.conn.clone();
        let _ = Script::new(DELETE_IF_EQUAL)
            .key(Self::key(redis, slot.0))
            .arg(&self.owner)
            .invoke_async::<i64>(&mut conn)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_process_holds_no_more_slots_than_the_limit_and_a_released_one_is_free_again() {
        let slots = Slots::new(2, None);
        let a = slots.acquire().await.unwrap();
        let b = slots.acquire().await.unwrap();
        assert_ne!(a, b);
        assert!(slots.acquire().await.is_none());
        slots.release(a).await;
        assert!(slots.acquire().await.is_some());
        assert!(slots.renew(&b).await);
    }
}
