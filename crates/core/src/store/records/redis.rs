//! What every replica knows of records, on Redis. There is no copy of this replica's in front: a
//! record's version moves with every replica's write, and a stale one costs a conflict. Redis
//! errors are logged and counted, and the write reads the record first, as with nothing known.

use std::time::Duration;

use super::{KnownRecord, RecordKey, Records, KEPT};
use crate::store::{unshared, Redis, DELETE_IF_EQUAL};

/// Keeps ARGV[1] (a known record, as JSON) in KEYS[1] for ARGV[3] ms, unless what is kept there is
/// of a newer version than ARGV[2]: a slow replica never puts back what another's write superseded.
const KEEP_NEWER: &str = r#"
local kept = redis.call('GET', KEYS[1])
if kept then
  local ok, known = pcall(cjson.decode, kept)
  if ok and type(known) == 'table' and tonumber(known.version) and tonumber(known.version) > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"#;

/// Records known to every replica.
#[derive(Clone, Debug)]
pub struct RedisRecords {
    redis: Redis,
}

impl RedisRecords {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    /// Conversation and record ids name no person: they are kept as they are.
    fn key(&self, (cid, rid): &RecordKey) -> String {
        self.redis.key(&format!("record:{cid}:{rid}"))
    }

    fn claim_key(&self, (cid, rid): &RecordKey) -> String {
        self.redis.key(&format!("record-create:{cid}:{rid}"))
    }
}

#[async_trait::async_trait]
impl Records for RedisRecords {
    async fn get(&self, key: &RecordKey) -> Option<KnownRecord> {
        let mut conn = self.redis.conn.clone();
        // A record in use stays known: every write's answer keeps it for another while.
        let kept: Option<String> = match redis::cmd("GET")
            .arg(self.key(key))
            .query_async(&mut conn)
            .await
        {
            Ok(kept) => kept,
            Err(e) => {
                unshared(&e, UNSHARED, "read");
                return None;
            }
        };
        serde_json::from_str(&kept?).ok()
    }

    async fn insert(&self, key: &RecordKey, known: &KnownRecord) {
        let Ok(json) = serde_json::to_string(known) else {
            return;
        };
        let mut conn = self.redis.conn.clone();
        let kept: Result<i64, _> = redis::Script::new(KEEP_NEWER)
            .key(self.key(key))
            .arg(json)
            .arg(known.version)
            .arg(KEPT.as_millis() as u64)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = kept {
            unshared(&e, UNSHARED, "written");
        }
    }

    async fn forget(&self, key: &RecordKey) {
        let mut conn = self.redis.conn.clone();
        let dropped: Result<i64, _> = redis::cmd("DEL")
            .arg(self.key(key))
            .query_async(&mut conn)
            .await;
        if let Err(e) = dropped {
            unshared(&e, UNSHARED, "cleared");
        }
    }

    /// A claim Redis could not answer is granted: the write goes on as a single replica's would.
    async fn claim_create(&self, key: &RecordKey, token: &str, hold: Duration) -> bool {
        let mut conn = self.redis.conn.clone();
        let set: Result<Option<String>, _> = redis::cmd("SET")
            .arg(self.claim_key(key))
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(hold.as_millis()).unwrap_or(u64::MAX).max(1))
            .query_async(&mut conn)
            .await;
        match set {
            Ok(set) => set.is_some(),
            Err(e) => {
                unshared(&e, UNSHARED, "claimed");
                true
            }
        }
    }

    async fn end_claim(&self, key: &RecordKey, token: &str) {
        let mut conn = self.redis.conn.clone();
        let ended: Result<i64, _> = redis::Script::new(DELETE_IF_EQUAL)
            .key(self.claim_key(key))
            .arg(token)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = ended {
            unshared(&e, UNSHARED, "released");
        }
    }
}

/// This cache, in the fallback metric and the warning. Without it, the next write of a record
/// reads it first.
const UNSHARED: (&str, &str) = (
    "custom_records",
    "what is known of custom-attributes records",
);
