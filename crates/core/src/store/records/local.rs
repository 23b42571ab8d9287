//! What this process knows of records: a bounded in-memory cache, each record forgotten an hour
//! after its last use.

use std::time::Duration;

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
        let newer = self
            .cache
            .get(key)
            .await
            .is_none_or(|kept| kept.version <= known.version);
        if newer {
            self.cache.insert(key.clone(), known.clone()).await;
        }
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
