//! The finds of this process: a bounded in-memory cache with a time to live.

use std::time::Duration;

use super::Finds;
use crate::domain::lookup::Lookup;
use crate::domain::ConversationId;

/// Finds kept for `ttl`; a zero `ttl` keeps nothing.
#[derive(Clone)]
pub struct LocalFinds {
    cache: moka::future::Cache<Lookup, ConversationId>,
    ttl: Duration,
}

impl std::fmt::Debug for LocalFinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalFinds")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl LocalFinds {
    pub fn new(ttl: Duration) -> Self {
        Self {
            cache: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
            ttl,
        }
    }

    /// How long a find is kept.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

#[async_trait::async_trait]
impl Finds for LocalFinds {
    async fn get(&self, lookup: &Lookup) -> Option<ConversationId> {
        if self.ttl.is_zero() {
            return None;
        }
        self.cache.get(lookup).await
    }

    async fn insert(&self, lookup: &Lookup, cid: ConversationId) {
        if !self.ttl.is_zero() {
            self.cache.insert(lookup.clone(), cid).await;
        }
    }

    async fn forget(&self, lookup: &Lookup, stale: ConversationId) {
        if self.cache.get(lookup).await == Some(stale) {
            self.cache.invalidate(lookup).await;
        }
    }
}
