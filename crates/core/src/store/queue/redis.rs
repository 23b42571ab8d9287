//! The shared queue on Redis: the same contract as the SQLite store, for several replicas.
//!
//! Design (instead of Streams consumer groups, which know nothing of lanes): every job is a hash;
//! each conversation's pending jobs form a *lane*, a sorted set by acceptance sequence (`INCR`, so the
//! order is global across replicas). `due` holds lanes whose head is queued, scored by when it may
//! run; `running` holds lanes a replica has claimed, scored by the lease's end. Claiming moves a lane
//! from `due` to `running` atomically, so one lane runs on one replica at a time, in order. A replica
//! that dies leaves its lane in `running`; when the lease ends, the next claim by any replica puts the
//! lane back in `due`. Workers bound a job's processing to half the lease, so a live replica never loses
//! its lease. Every state change is one Lua script, hence atomic.
//!
//! Durability: a job is accepted once Redis has acknowledged the script. It survives a Redis restart
//! as far as Redis persistence allows: run Redis with `appendonly yes` (and `appendfsync always` for
//! the same guarantee as the embedded store).

use std::collections::HashMap;

use redis::Script;

use super::{
    now_ms, Batch, Begun, Enqueued, IdempotencyKey, Job, JobQueue, QueueError, QueueStats,
    StoredProblem, StoredResponse, StoredUpdate,
};
use crate::store::Redis;

/// How long finished jobs stay readable at `GET /v1/jobs/<id>`.
const FINISHED_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;
/// Expired leases reclaimed per claim, to bound the script's work.
const RECLAIM_PER_CLAIM: i64 = 16;

/// Helpers shared by the scripts; `P` is the key prefix, passed as `ARGV[1]`.
const PRELUDE: &str = r#"
local P = ARGV[1]
local function jk(id) return P .. ':job:' .. id end
local function lk(lane) return P .. ':lane:' .. lane end
-- A lane whose batch ended: free it, and make it due at its head's time if it has one.
local function settle(lane)
  redis.call('ZREM', P .. ':running', lane)
  local head = redis.call('ZRANGE', lk(lane), 0, 0)
  if #head > 0 then
    redis.call('ZADD', P .. ':due', redis.call('HGET', jk(head[1]), 'next'), lane)
  else
    redis.call('ZREM', P .. ':due', lane)
  end
end
local function finish(id, status, field, value, now)
  local seq = redis.call('HGET', jk(id), 'seq')
  local lane = redis.call('HGET', jk(id), 'lane')
  redis.call('HSET', jk(id), 'status', status, field, value, 'updated', now)
  redis.call('PEXPIRE', jk(id), ARGV[2])
  redis.call('ZREM', lk(lane), id)
  redis.call('ZREM', P .. ':pending', id)
  return seq
end
-- A body's fingerprints, space-separated, the current first: the one a new record keeps.
local function current(hashes) return string.match(hashes, '^%S*') end
-- What an idempotency key stands for: nil when unused.
local function key_state(ik, hashes)
  local h = redis.call('HGET', ik, 'hash')
  if not h then return nil end
  if not string.find(' ' .. hashes .. ' ', ' ' .. h .. ' ', 1, true) then return {'conflict'} end
  local job = redis.call('HGET', ik, 'job')
  if job then return {'existing', job} end
  local resp = redis.call('HGET', ik, 'response')
  if resp then return {'answered', resp} end
  return {'inprogress'}
end
"#;

/// ARGV: P, retention, id, lane, target, update, now, request_id, idem_key ('' for none), hash, ttl
const ENQUEUE: &str = r#"
local id, lane, now = ARGV[3], ARGV[4], ARGV[7]
local ik = P .. ':idem:' .. ARGV[9]
if ARGV[9] ~= '' then
  local state = key_state(ik, ARGV[10])
  if state then return state end
end
local seq = redis.call('INCR', P .. ':seq')
redis.call('HSET', jk(id), 'seq', seq, 'lane', lane, 'target', ARGV[5], 'status', 'queued',
  'update', ARGV[6], 'attempts', 0, 'created', now, 'updated', now, 'next', now, 'horizon', now,
  'reqid', ARGV[8])
redis.call('ZADD', lk(lane), seq, id)
redis.call('ZADD', P .. ':pending', now, id)
if not redis.call('ZSCORE', P .. ':running', lane) and not redis.call('ZSCORE', P .. ':due', lane) then
  redis.call('ZADD', P .. ':due', now, lane)
end
if ARGV[9] ~= '' then
  redis.call('HSET', ik, 'hash', current(ARGV[10]), 'job', id)
  redis.call('PEXPIRE', ik, ARGV[11])
end
return {'created', id}
"#;

/// ARGV: P, retention, now, lease_ms, max_batch, reclaim_limit
const CLAIM: &str = r#"
local now, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
-- Lanes whose replica let the lease run out (it died): their running jobs are queued again.
for _, lane in ipairs(redis.call('ZRANGEBYSCORE', P .. ':running', '-inf', now, 'LIMIT', 0, ARGV[6])) do
  for _, id in ipairs(redis.call('ZRANGE', lk(lane), 0, -1)) do
    if redis.call('HGET', jk(id), 'status') == 'running' then
      redis.call('HSET', jk(id), 'status', 'queued', 'next', now)
    end
  end
  redis.call('ZREM', P .. ':running', lane)
  redis.call('ZADD', P .. ':due', now, lane)
end
local lanes = redis.call('ZRANGEBYSCORE', P .. ':due', '-inf', now, 'LIMIT', 0, 1)
if #lanes == 0 then return {} end
local lane = lanes[1]
redis.call('ZREM', P .. ':due', lane)
local ids = redis.call('ZRANGE', lk(lane), 0, tonumber(ARGV[5]) - 1)
if #ids == 0 then return {} end
local target = redis.call('HGET', jk(ids[1]), 'target')
local out = {lane}
for _, id in ipairs(ids) do
  if redis.call('HGET', jk(id), 'target') ~= target or redis.call('HGET', jk(id), 'status') ~= 'queued' then
    break
  end
  redis.call('HSET', jk(id), 'status', 'running', 'updated', now, 'next', now + lease)
  redis.call('HINCRBY', jk(id), 'attempts', 1)
  table.insert(out, id)
end
redis.call('ZADD', P .. ':running', now + lease, lane)
return out
"#;

/// ARGV: P, retention, now, lane, result, n, ids..., then (field, seq) pairs for `applied`
const SUCCEED: &str = r#"
local now, lane, n = ARGV[3], ARGV[4], tonumber(ARGV[6])
for i = 1, n do finish(ARGV[6 + i], 'succeeded', 'result', ARGV[5], now) end
local applied = P .. ':applied:' .. lane
for i = 7 + n, #ARGV, 2 do
  local cur = redis.call('HGET', applied, ARGV[i])
  if not cur or tonumber(cur) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', applied, ARGV[i], ARGV[i + 1])
  end
end
settle(lane)
return 1
"#;

/// ARGV: P, retention, now, lane, problem, ids...
const FAIL: &str = r#"
for i = 6, #ARGV do finish(ARGV[i], 'failed', 'problem', ARGV[5], ARGV[3]) end
settle(ARGV[4])
return 1
"#;

/// ARGV: P, retention, now, lane, at, horizon_ms, error, problem, ids...
const RETRY: &str = r#"
local now, at, horizon = ARGV[3], tonumber(ARGV[5]), tonumber(ARGV[6])
for i = 9, #ARGV do
  local id = ARGV[i]
  if tonumber(redis.call('HGET', jk(id), 'horizon')) + horizon < at then
    local seq = finish(id, 'dead', 'problem', ARGV[8], now)
    redis.call('PERSIST', jk(id))
    redis.call('HSET', jk(id), 'error', ARGV[7])
    redis.call('ZADD', P .. ':dead', seq, id)
  else
    redis.call('HSET', jk(id), 'status', 'queued', 'next', at, 'error', ARGV[7], 'updated', now)
  end
end
settle(ARGV[4])
return 1
"#;

/// ARGV: P, retention, now, lane, ids...
const RELEASE: &str = r#"
for i = 5, #ARGV do
  if redis.call('HGET', jk(ARGV[i]), 'status') == 'running' then
    redis.call('HSET', jk(ARGV[i]), 'status', 'queued', 'next', ARGV[3])
    redis.call('HINCRBY', jk(ARGV[i]), 'attempts', -1)
  end
end
settle(ARGV[4])
return 1
"#;

/// ARGV: P, retention, now, id ('' for every dead job)
const REPLAY: &str = r#"
local now = ARGV[3]
local ids = {ARGV[4]}
if ARGV[4] == '' then ids = redis.call('ZRANGE', P .. ':dead', 0, -1) end
local n = 0
for _, id in ipairs(ids) do
  if redis.call('HGET', jk(id), 'status') == 'dead' then
    local lane = redis.call('HGET', jk(id), 'lane')
    redis.call('HSET', jk(id), 'status', 'queued', 'attempts', 0, 'next', now, 'horizon', now, 'updated', now)
    redis.call('HDEL', jk(id), 'problem')
    redis.call('ZREM', P .. ':dead', id)
    redis.call('ZADD', lk(lane), redis.call('HGET', jk(id), 'seq'), id)
    redis.call('ZADD', P .. ':pending', now, id)
    if not redis.call('ZSCORE', P .. ':running', lane) then
      local head = redis.call('ZRANGE', lk(lane), 0, 0)
      redis.call('ZADD', P .. ':due', redis.call('HGET', jk(head[1]), 'next'), lane)
    end
    n = n + 1
  end
end
return n
"#;

/// ARGV: P, retention, key, hash, ttl
const IDEM_BEGIN: &str = r#"
local ik = P .. ':idem:' .. ARGV[3]
local state = key_state(ik, ARGV[4])
if state then return state end
redis.call('HSET', ik, 'hash', current(ARGV[4]))
redis.call('PEXPIRE', ik, ARGV[5])
return {'new'}
"#;

/// ARGV: P, retention, key, response ('' to abandon)
const IDEM_END: &str = r#"
local ik = P .. ':idem:' .. ARGV[3]
if ARGV[4] ~= '' then
  if redis.call('EXISTS', ik) == 1 then redis.call('HSET', ik, 'response', ARGV[4]) end
elseif not redis.call('HGET', ik, 'job') and not redis.call('HGET', ik, 'response') then
  redis.call('DEL', ik)
end
return 1
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

/// The compiled scripts, loaded once per process (`EVALSHA`, falling back to `EVAL` after a restart).
struct Scripts {
    enqueue: Script,
    claim: Script,
    succeed: Script,
    fail: Script,
    retry: Script,
    release: Script,
    replay: Script,
    idem_begin: Script,
    idem_end: Script,
}

/// The Redis queue. Cheap to clone.
#[derive(Clone)]
pub struct RedisQueue {
    redis: Redis,
    scripts: std::sync::Arc<Scripts>,
    idempotency_ttl_ms: i64,
    lease_ms: i64,
}

fn store(e: redis::RedisError) -> QueueError {
    QueueError::Store(format!("redis: {e}"))
}

fn corrupt<E: std::fmt::Display>(e: E) -> QueueError {
    QueueError::Corrupt(e.to_string())
}

/// A job from its hash.
fn decode(id: &str, h: &HashMap<String, String>) -> Result<Job, QueueError> {
    let get = |f: &str| {
        h.get(f)
            .ok_or_else(|| QueueError::Corrupt(format!("job {id} lacks `{f}`")))
    };
    let num = |f: &str| -> Result<i64, QueueError> { get(f)?.parse().map_err(corrupt) };
    let json_opt = |f: &str| -> Result<Option<serde_json::Value>, QueueError> {
        h.get(f)
            .filter(|v| !v.is_empty())
            .map(|v| serde_json::from_str(v).map_err(corrupt))
            .transpose()
    };
    Ok(Job {
        id: id.to_string(),
        seq: num("seq")?,
        status: get("status")?.parse()?,
        update: serde_json::from_str(get("update")?).map_err(corrupt)?,
        attempts: num("attempts")?.max(0) as u32,
        created_at_ms: num("created")?,
        updated_at_ms: num("updated")?,
        next_attempt_at_ms: num("next")?,
        result: json_opt("result")?,
        problem: json_opt("problem")?
            .map(serde_json::from_value)
            .transpose()
            .map_err(corrupt)?,
        last_error: h.get("error").cloned(),
        request_id: h.get("reqid").cloned().unwrap_or_default(),
    })
}

/// A script's answer about an idempotency key.
fn key_answer(reply: &[String]) -> Option<Result<KeyAnswer, QueueError>> {
    match reply.first().map(String::as_str) {
        Some("conflict") => Some(Ok(KeyAnswer::Conflict)),
        Some("inprogress") => Some(Ok(KeyAnswer::InProgress)),
        Some("existing") => Some(Ok(KeyAnswer::Job(
            reply.get(1).cloned().unwrap_or_default(),
        ))),
        Some("answered") => Some(
            reply
                .get(1)
                .ok_or_else(|| QueueError::Corrupt("answer missing".into()))
                .and_then(|r| serde_json::from_str(r).map_err(corrupt))
                .map(KeyAnswer::Answered),
        ),
        _ => None,
    }
}

enum KeyAnswer {
    Conflict,
    InProgress,
    Job(String),
    Answered(StoredResponse),
}

impl RedisQueue {
    pub fn new(
        redis: Redis,
        idempotency_ttl: std::time::Duration,
        lease: std::time::Duration,
    ) -> Self {
        Self {
            redis,
            scripts: std::sync::Arc::new(Scripts {
                enqueue: script(ENQUEUE),
                claim: script(CLAIM),
                succeed: script(SUCCEED),
                fail: script(FAIL),
                retry: script(RETRY),
                release: script(RELEASE),
                replay: script(REPLAY),
                idem_begin: script(IDEM_BEGIN),
                idem_end: script(IDEM_END),
            }),
            idempotency_ttl_ms: idempotency_ttl.as_millis() as i64,
            lease_ms: lease.as_millis() as i64,
        }
    }

    /// Runs a script with the prefix and the retention first, then `args`.
    async fn run<T: redis::FromRedisValue>(
        &self,
        s: &Script,
        args: &[String],
    ) -> Result<T, QueueError> {
        let mut invocation = s.prepare_invoke();
        invocation
            .arg(self.redis.prefix())
            .arg(FINISHED_RETENTION_MS);
        for a in args {
            invocation.arg(a);
        }
        let mut conn = self.redis.conn.clone();
        invocation.invoke_async(&mut conn).await.map_err(store)
    }

    /// The jobs of `ids` that still exist, in that order.
    async fn load_all(&self, ids: Vec<String>) -> Result<Vec<Job>, QueueError> {
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(job) = self.load(&id).await? {
                jobs.push(job);
            }
        }
        Ok(jobs)
    }

    async fn load(&self, id: &str) -> Result<Option<Job>, QueueError> {
        let key = self.redis.key(&format!("job:{id}"));
        let h: HashMap<String, String> = self.read(redis::cmd("HGETALL").arg(&key)).await?;
        if h.is_empty() {
            return Ok(None);
        }
        decode(id, &h).map(Some)
    }

    /// Runs a read, once more if the connection broke: the first command after Redis comes back
    /// fails while the connection manager reconnects, and a read is safe to repeat (a script is not).
    async fn read<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, QueueError> {
        let mut conn = self.redis.conn.clone();
        match cmd.query_async(&mut conn).await {
            Err(e) if e.is_connection_dropped() || e.is_io_error() || e.is_timeout() => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                cmd.query_async(&mut conn).await.map_err(store)
            }
            other => other.map_err(store),
        }
    }

    async fn require(&self, id: &str) -> Result<Job, QueueError> {
        self.load(id)
            .await?
            .ok_or_else(|| QueueError::Corrupt(format!("job {id} is gone")))
    }

    fn batch_args(batch: &Batch) -> Vec<String> {
        batch.jobs.iter().map(|j| j.id.clone()).collect()
    }
}

#[async_trait::async_trait]
impl JobQueue for RedisQueue {
    async fn enqueue(
        &self,
        update: StoredUpdate,
        request_id: &str,
        key: Option<IdempotencyKey>,
    ) -> Result<Enqueued, QueueError> {
        let id = uuid::Uuid::new_v4().to_string();
        let (idem, hash) = match &key {
            Some(k) => (format!("{}:{}", k.scope, k.key), k.fingerprints()),
            None => (String::new(), String::new()),
        };
        let reply: Vec<String> = self
            .run(
                &self.scripts.enqueue,
                &[
                    id.clone(),
                    update.lane().to_string(),
                    update.target(),
                    serde_json::to_string(&update).map_err(corrupt)?,
                    now_ms().to_string(),
                    request_id.to_string(),
                    idem,
                    hash,
                    self.idempotency_ttl_ms.to_string(),
                ],
            )
            .await?;
        if let Some(answer) = key_answer(&reply) {
            return Ok(match answer? {
                KeyAnswer::Conflict => Enqueued::Conflict,
                KeyAnswer::InProgress => Enqueued::InProgress,
                KeyAnswer::Answered(r) => Enqueued::Answered(r),
                KeyAnswer::Job(existing) => Enqueued::Existing(self.require(&existing).await?),
            });
        }
        Ok(Enqueued::Created(self.require(&id).await?))
    }

    async fn get(&self, id: &str) -> Result<Option<Job>, QueueError> {
        self.load(id).await
    }

    async fn claim(&self, max_batch: usize) -> Result<Option<Batch>, QueueError> {
        let reply: Vec<String> = self
            .run(
                &self.scripts.claim,
                &[
                    now_ms().to_string(),
                    self.lease_ms.to_string(),
                    max_batch.max(1).to_string(),
                    RECLAIM_PER_CLAIM.to_string(),
                ],
            )
            .await?;
        let Some((lane, ids)) = reply.split_first() else {
            return Ok(None);
        };
        if ids.is_empty() {
            return Ok(None);
        }
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            jobs.push(self.require(id).await?);
        }
        let applied: HashMap<String, i64> = self
            .read(redis::cmd("HGETALL").arg(self.redis.key(&format!("applied:{lane}"))))
            .await?;
        // `applied` holds "target\nkey" → sequence for the whole lane: keep this target's.
        let prefix = format!("{}\n", jobs[0].update.target());
        let written = applied
            .into_iter()
            .filter_map(|(field, seq)| field.strip_prefix(&prefix).map(|k| (k.to_string(), seq)))
            .collect();
        Ok(Some(Batch::merge(jobs, &written)))
    }

    async fn succeed(&self, batch: &Batch, result: serde_json::Value) -> Result<(), QueueError> {
        let target = batch.update.target();
        let mut args = vec![
            now_ms().to_string(),
            batch.update.lane().to_string(),
            result.to_string(),
            batch.jobs.len().to_string(),
        ];
        args.extend(Self::batch_args(batch));
        for (k, seq) in &batch.key_seqs {
            args.push(format!("{target}\n{k}"));
            args.push(seq.to_string());
        }
        self.run::<i64>(&self.scripts.succeed, &args)
            .await
            .map(drop)
    }

    async fn fail(&self, batch: &Batch, problem: StoredProblem) -> Result<(), QueueError> {
        let mut args = vec![
            now_ms().to_string(),
            batch.update.lane().to_string(),
            serde_json::to_string(&problem).map_err(corrupt)?,
        ];
        args.extend(Self::batch_args(batch));
        self.run::<i64>(&self.scripts.fail, &args).await.map(drop)
    }

    async fn retry(
        &self,
        batch: &Batch,
        at_ms: i64,
        horizon_ms: i64,
        error: &str,
        problem: StoredProblem,
    ) -> Result<(), QueueError> {
        let mut args = vec![
            now_ms().to_string(),
            batch.update.lane().to_string(),
            at_ms.to_string(),
            horizon_ms.to_string(),
            error.to_string(),
            serde_json::to_string(&problem).map_err(corrupt)?,
        ];
        args.extend(Self::batch_args(batch));
        self.run::<i64>(&self.scripts.retry, &args).await.map(drop)
    }

    async fn release(&self, batch: &Batch) -> Result<(), QueueError> {
        let mut args = vec![now_ms().to_string(), batch.update.lane().to_string()];
        args.extend(Self::batch_args(batch));
        self.run::<i64>(&self.scripts.release, &args)
            .await
            .map(drop)
    }

    /// Other replicas may be running jobs: nothing is reset here. Lanes of a replica that died are
    /// reclaimed by the next claim once their lease ends.
    async fn recover(&self) -> Result<u64, QueueError> {
        Ok(0)
    }

    async fn dead_letters(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Job>, QueueError> {
        let min = match after {
            Some(id) => match self.load(id).await? {
                Some(job) => format!("({}", job.seq),
                None => return Ok(Vec::new()),
            },
            None => "-inf".to_string(),
        };
        let ids: Vec<String> = self
            .read(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(self.redis.key("dead"))
                    .arg(min)
                    .arg("+inf")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        self.load_all(ids).await
    }

    async fn unfinished(&self, limit: usize) -> Result<Vec<Job>, QueueError> {
        let ids: Vec<String> = self
            .read(
                redis::cmd("ZRANGE")
                    .arg(self.redis.key("pending"))
                    .arg(0)
                    .arg(limit.max(1) as i64 - 1),
            )
            .await?;
        self.load_all(ids).await
    }

    async fn replay(&self, id: &str) -> Result<bool, QueueError> {
        if id.is_empty() {
            return Ok(false);
        }
        let n: i64 = self
            .run(
                &self.scripts.replay,
                &[now_ms().to_string(), id.to_string()],
            )
            .await?;
        Ok(n == 1)
    }

    async fn replay_all(&self) -> Result<u64, QueueError> {
        let n: i64 = self
            .run(&self.scripts.replay, &[now_ms().to_string(), String::new()])
            .await?;
        Ok(n as u64)
    }

    async fn idempotency_begin(&self, key: &IdempotencyKey) -> Result<Begun, QueueError> {
        let reply: Vec<String> = self
            .run(
                &self.scripts.idem_begin,
                &[
                    format!("{}:{}", key.scope, key.key),
                    key.fingerprints(),
                    self.idempotency_ttl_ms.to_string(),
                ],
            )
            .await?;
        Ok(match key_answer(&reply) {
            None => Begun::New,
            Some(answer) => match answer? {
                KeyAnswer::Conflict => Begun::Conflict,
                KeyAnswer::InProgress => Begun::InProgress,
                KeyAnswer::Answered(r) => Begun::Answered(r),
                KeyAnswer::Job(id) => Begun::Existing(Box::new(self.require(&id).await?)),
            },
        })
    }

    async fn idempotency_finish(
        &self,
        key: &IdempotencyKey,
        response: &StoredResponse,
    ) -> Result<(), QueueError> {
        let response = serde_json::to_string(response).map_err(corrupt)?;
        self.run::<i64>(
            &self.scripts.idem_end,
            &[format!("{}:{}", key.scope, key.key), response],
        )
        .await
        .map(drop)
    }

    async fn idempotency_abandon(&self, key: &IdempotencyKey) -> Result<(), QueueError> {
        self.run::<i64>(
            &self.scripts.idem_end,
            &[format!("{}:{}", key.scope, key.key), String::new()],
        )
        .await
        .map(drop)
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let mut conn = self.redis.conn.clone();
        let (pending, running, dead, oldest): (u64, u64, u64, Vec<(String, i64)>) = redis::pipe()
            .zcard(self.redis.key("pending"))
            .zcard(self.redis.key("running"))
            .zcard(self.redis.key("dead"))
            .cmd("ZRANGE")
            .arg(self.redis.key("pending"))
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .map_err(store)?;
        Ok(QueueStats {
            queued: pending.saturating_sub(running),
            running,
            dead,
            oldest_queued_age_ms: oldest.first().map(|(_, t)| now_ms() - t),
        })
    }
}
