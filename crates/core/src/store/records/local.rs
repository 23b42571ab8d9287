//! What this process knows of records: a bounded in-memory cache, each record forgotten an hour
//! after its last use.

use std::time::Duration;

use moka::ops::compute::Op;

use super::{KnownRecord, RecordKey, Records, KEPT};

#[derive(Clone)]
pub struct LocalRecords {
    cache: moka::future::Cache<RecordKey, KnownRecord>,
}

impl std::fmt::Debug for LocalRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRecords").finish_non_exhaustive()
    }
}

impl Default for LocalRecords {
    fn default() -> Self {
        Self {
            cache: moka::future::Cache::builder()
                .max_capacity(50_000)
                .time_to_idle(KEPT)
                .build(),
        }
    }
}

#[async_trait::async_trait]
impl Records for LocalRecords {
    async fn get(&self, key: &RecordKey) -> Option<KnownRecord> {
        self.cache.get(key).await
    }

    async fn insert(&self, key: &RecordKey, known: &KnownRecord) {
        // Compared and kept in one step per key, so two reads answered together keep the newer.
        self.cache
            .entry(key.clone())
            .and_compute_with(|kept| async move {
                match kept {
                    Some(kept) if kept.value().version > known.version => Op::Nop,
                    _ => Op::Put(known.clone()),
                }
            })
            .await;
    }

    async fn forget(&self, key: &RecordKey) {
        self.cache.invalidate(key).await;
    }

    /// Always granted: this process's writes to one record already go one at a time, in its lane.
    async fn claim_create(&self, _key: &RecordKey, _token: &str, _hold: Duration) -> bool {
        true
    }

    async fn end_claim(&self, _key: &RecordKey, _token: &str) {}
}
