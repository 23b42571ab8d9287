//! The journal on Redis: one capped stream (`XADD … MAXLEN ~ N`) that every replica writes its
//! updates to and every replica's console reads, newest first.

use super::JournalStore;
use crate::journal::entry::Entry;
use crate::store::Redis;

/// The journal every replica shares.
pub struct RedisJournal {
    redis: Redis,
    capacity: usize,
}

impl RedisJournal {
    pub fn new(redis: Redis, capacity: usize) -> Self {
        Self { redis, capacity }
    }
}

#[async_trait::async_trait]
impl JournalStore for RedisJournal {
    async fn push(&self, entry: &Entry) -> Result<(), String> {
        let json = serde_json::to_string(entry).map_err(|e| e.to_string())?;
        let mut conn = self.redis.conn.clone();
        // `~` lets Redis trim whole nodes: cheap, and the stream stays at about `capacity`.
        redis::cmd("XADD")
            .arg(self.redis.key("journal"))
            .arg("MAXLEN")
            .arg("~")
            .arg(self.capacity.max(1))
            .arg("*")
            .arg("e")
            .arg(json)
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    async fn recent(&self, limit: usize) -> Result<Vec<Entry>, String> {
        let mut conn = self.redis.conn.clone();
        let rows: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg(self.redis.key("journal"))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(limit.max(1))
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(rows
            .into_iter()
            .filter_map(|(_, fields)| {
                let (_, json) = fields.into_iter().find(|(k, _)| k == "e")?;
                serde_json::from_str(&json).ok()
            })
            .take(limit)
            .collect())
    }
}
