//! The embedded durable queue: SQLite (bundled) in WAL mode with `synchronous = FULL`.
//!
//! Why SQLite: it needs no server, survives a process crash with every committed transaction, lets
//! `patchbay replay` work on the same file while the gateway runs, and its transactions make "claim
//! the head of a lane and merge what follows" one atomic step. `synchronous = FULL` syncs the WAL on
//! every commit, so an accepted job survives power loss too, not only a crash. One connection behind a
//! mutex is enough: SQLite serialises writers anyway, and every call runs on the blocking pool.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::{
    now_ms, Batch, Begun, Enqueued, IdempotencyKey, Job, JobQueue, JobStatus, QueueError,
    QueueStats, StoredProblem, StoredResponse, StoredUpdate,
};

/// `queue.path` for a store that lives in memory and dies with the process (SQLite's own name for it):
/// for the demo, which must run in a read-only container. Nothing in it survives a restart.
pub const IN_MEMORY_STORE: &str = ":memory:";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    lane TEXT NOT NULL,
    target TEXT NOT NULL,
    status TEXT NOT NULL,
    update_json TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    horizon_start INTEGER NOT NULL,
    result_json TEXT,
    problem_json TEXT,
    last_error TEXT,
    request_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_runnable ON jobs (status, next_attempt_at, seq);
CREATE INDEX IF NOT EXISTS jobs_lane ON jobs (lane, status, seq);
CREATE TABLE IF NOT EXISTS applied (
    lane TEXT NOT NULL,
    target TEXT NOT NULL,
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (lane, target, key)
);
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    job_id TEXT,
    response_json TEXT,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency (expires_at);
"#;

const JOB_COLUMNS: &str = "seq, id, status, update_json, attempts, created_at, updated_at, \
    next_attempt_at, result_json, problem_json, last_error, request_id";

/// The SQLite queue. Cheap to clone.
#[derive(Clone)]
pub struct SqliteQueue {
    conn: Arc<Mutex<Connection>>,
    idempotency_ttl_ms: i64,
    lease_ms: i64,
}

fn store<E: std::fmt::Display>(e: E) -> QueueError {
    QueueError::Store(e.to_string())
}

/// A row as read, decoded by [`decode`] where a bad value can be reported as corruption.
struct RawJob {
    seq: i64,
    id: String,
    status: String,
    update: String,
    attempts: u32,
    created_at: i64,
    updated_at: i64,
    next_attempt_at: i64,
    result: Option<String>,
    problem: Option<String>,
    last_error: Option<String>,
    request_id: String,
}

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<RawJob> {
    Ok(RawJob {
        seq: row.get(0)?,
        id: row.get(1)?,
        status: row.get(2)?,
        update: row.get(3)?,
        attempts: row.get(4)?,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
        next_attempt_at: row.get(7)?,
        result: row.get(8)?,
        problem: row.get(9)?,
        last_error: row.get(10)?,
        request_id: row.get(11)?,
    })
}

fn decode(raw: RawJob) -> Result<Job, QueueError> {
    fn json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, QueueError> {
        serde_json::from_str(text).map_err(|e| QueueError::Corrupt(e.to_string()))
    }
    Ok(Job {
        seq: raw.seq,
        id: raw.id,
        status: raw.status.parse()?,
        update: json(&raw.update)?,
        attempts: raw.attempts,
        created_at_ms: raw.created_at,
        updated_at_ms: raw.updated_at,
        next_attempt_at_ms: raw.next_attempt_at,
        result: raw.result.as_deref().map(json).transpose()?,
        problem: raw.problem.as_deref().map(json).transpose()?,
        last_error: raw.last_error,
        request_id: raw.request_id,
    })
}

fn query_jobs(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Job>, QueueError> {
    let mut stmt = conn.prepare_cached(sql).map_err(store)?;
    let rows = stmt.query_map(params, job_from_row).map_err(store)?;
    rows.map(|r| r.map_err(store).and_then(decode)).collect()
}

fn job_by_id(conn: &Connection, id: &str) -> Result<Option<Job>, QueueError> {
    Ok(query_jobs(
        conn,
        &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
        params![id],
    )?
    .into_iter()
    .next())
}

impl SqliteQueue {
    /// Opens (or creates) the store at `path`, creating its directory.
    pub fn open(
        path: &Path,
        idempotency_ttl: Duration,
        lease: Duration,
    ) -> Result<Self, QueueError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(store)?;
        }
        let conn = Connection::open(path).map_err(store)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(store)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(store)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(store)?;
        conn.execute_batch(SCHEMA).map_err(store)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            idempotency_ttl_ms: idempotency_ttl.as_millis() as i64,
            lease_ms: lease.as_millis() as i64,
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(store)?
    }
}

/// What an idempotency key stands for now, within a transaction.
enum KeyState {
    Unused,
    Conflict,
    Job(String),
    Answered(StoredResponse),
    InProgress,
}

fn key_state(tx: &Connection, key: &IdempotencyKey, now: i64) -> Result<KeyState, QueueError> {
    tx.execute(
        "DELETE FROM idempotency WHERE expires_at < ?1",
        params![now],
    )
    .map_err(store)?;
    let row: Option<(String, Option<String>, Option<String>)> = tx
        .query_row(
            "SELECT body_hash, job_id, response_json FROM idempotency WHERE scope = ?1 AND key = ?2",
            params![key.scope, key.key],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(store)?;
    Ok(match row {
        None => KeyState::Unused,
        Some((hash, _, _)) if !key.matches(&hash) => KeyState::Conflict,
        Some((_, Some(job), _)) => KeyState::Job(job),
        Some((_, None, Some(response))) => KeyState::Answered(
            serde_json::from_str(&response).map_err(|e| QueueError::Corrupt(e.to_string()))?,
        ),
        Some((_, None, None)) => KeyState::InProgress,
    })
}

#[async_trait::async_trait]
impl JobQueue for SqliteQueue {
    async fn enqueue(
        &self,
        update: StoredUpdate,
        request_id: &str,
        key: Option<IdempotencyKey>,
    ) -> Result<Enqueued, QueueError> {
        let request_id = request_id.to_string();
        let ttl = self.idempotency_ttl_ms;
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(store)?;
            let now = now_ms();
            if let Some(key) = &key {
                // Checked and recorded in the job's own transaction: of concurrent duplicates, one wins.
                match key_state(&tx, key, now)? {
                    KeyState::Unused => {}
                    KeyState::Conflict => return Ok(Enqueued::Conflict),
                    KeyState::InProgress => return Ok(Enqueued::InProgress),
                    KeyState::Answered(r) => return Ok(Enqueued::Answered(r)),
                    KeyState::Job(id) => {
                        let job = job_by_id(&tx, &id)?.ok_or_else(|| QueueError::Corrupt(format!("job {id} is gone")))?;
                        return Ok(Enqueued::Existing(job));
                    }
                }
            }
            let id = uuid::Uuid::new_v4().to_string();
            let json = serde_json::to_string(&update).map_err(store)?;
            tx.execute(
                "INSERT INTO jobs (id, lane, target, status, update_json, created_at, updated_at, next_attempt_at, horizon_start, request_id) \
                 VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?5, ?5, ?5, ?6)",
                params![id, update.lane(), update.target(), json, now, request_id],
            )
            .map_err(store)?;
            if let Some(key) = &key {
                tx.execute(
                    "INSERT INTO idempotency (scope, key, body_hash, job_id, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![key.scope, key.key, key.body_hash, id, now + ttl],
                )
                .map_err(store)?;
            }
            let job = job_by_id(&tx, &id)?.ok_or_else(|| QueueError::Corrupt("the new job is gone".into()))?;
            tx.commit().map_err(store)?;
            Ok(Enqueued::Created(job))
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<Job>, QueueError> {
        let id = id.to_string();
        self.with(move |conn| job_by_id(conn, &id)).await
    }

    async fn claim(&self, max_batch: usize) -> Result<Option<Batch>, QueueError> {
        let lease = self.lease_ms;
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(store)?;
            let now = now_ms();
            // The head of a lane: due, and no older job of its conversation still pending or running.
            let head: Option<(i64, String, String)> = tx
                .query_row(
                    "SELECT j.seq, j.lane, j.target FROM jobs j \
                     WHERE j.status = 'queued' AND j.next_attempt_at <= ?1 \
                     AND NOT EXISTS (SELECT 1 FROM jobs k WHERE k.lane = j.lane AND k.seq < j.seq \
                                     AND k.status IN ('queued', 'running')) \
                     ORDER BY j.next_attempt_at, j.seq LIMIT 1",
                    params![now],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(store)?;
            let Some((head_seq, lane, target)) = head else {
                return Ok(None);
            };
            // The head and the queued jobs right behind it for the same target.
            let mut jobs = Vec::new();
            for job in query_jobs(
                &tx,
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE lane = ?1 AND seq >= ?2 AND status = 'queued' ORDER BY seq"),
                params![lane, head_seq],
            )? {
                if jobs.len() >= max_batch.max(1) || job.update.target() != target {
                    break;
                }
                jobs.push(job);
            }
            // What each key's last write carried, for this target.
            let written: std::collections::HashMap<String, i64> = {
                let mut stmt = tx
                    .prepare_cached("SELECT key, seq FROM applied WHERE lane = ?1 AND target = ?2")
                    .map_err(store)?;
                let rows = stmt
                    .query_map(params![lane, target], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(store)?;
                rows.collect::<Result<_, _>>().map_err(store)?
            };
            {
                let mut stmt = tx
                    .prepare_cached("UPDATE jobs SET status = 'running', attempts = attempts + 1, updated_at = ?2, next_attempt_at = ?3 WHERE seq = ?1")
                    .map_err(store)?;
                for job in &mut jobs {
                    stmt.execute(params![job.seq, now, now + lease]).map_err(store)?;
                    job.status = JobStatus::Running;
                    job.attempts += 1;
                }
            }
            tx.commit().map_err(store)?;
            Ok(Some(Batch::merge(jobs, &written)))
        })
        .await
    }

    async fn succeed(&self, batch: &Batch, result: serde_json::Value) -> Result<(), QueueError> {
        let seqs: Vec<i64> = batch.jobs.iter().map(|j| j.seq).collect();
        let (lane, target) = (batch.update.lane().to_string(), batch.update.target());
        let key_seqs = batch.key_seqs.clone();
        let result = result.to_string();
        self.with(move |conn| {
            let tx = conn.transaction().map_err(store)?;
            let now = now_ms();
            for seq in &seqs {
                tx.execute(
                    "UPDATE jobs SET status = 'succeeded', result_json = ?2, problem_json = NULL, updated_at = ?3 WHERE seq = ?1",
                    params![seq, result, now],
                )
                .map_err(store)?;
            }
            for (key, seq) in key_seqs {
                tx.execute(
                    "INSERT INTO applied (lane, target, key, seq) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (lane, target, key) DO UPDATE SET seq = max(seq, excluded.seq)",
                    params![lane, target, key, seq],
                )
                .map_err(store)?;
            }
            tx.commit().map_err(store)
        })
        .await
    }

    async fn fail(&self, batch: &Batch, problem: StoredProblem) -> Result<(), QueueError> {
        let seqs: Vec<i64> = batch.jobs.iter().map(|j| j.seq).collect();
        let problem = serde_json::to_string(&problem).map_err(store)?;
        self.with(move |conn| {
            let tx = conn.transaction().map_err(store)?;
            for seq in &seqs {
                tx.execute(
                    "UPDATE jobs SET status = 'failed', problem_json = ?2, updated_at = ?3 WHERE seq = ?1",
                    params![seq, problem, now_ms()],
                )
                .map_err(store)?;
            }
            tx.commit().map_err(store)
        })
        .await
    }

    async fn retry(
        &self,
        batch: &Batch,
        at_ms: i64,
        horizon_ms: i64,
        error: &str,
        problem: StoredProblem,
    ) -> Result<(), QueueError> {
        let seqs: Vec<i64> = batch.jobs.iter().map(|j| j.seq).collect();
        let error = error.to_string();
        let problem = serde_json::to_string(&problem).map_err(store)?;
        self.with(move |conn| {
            let tx = conn.transaction().map_err(store)?;
            for seq in &seqs {
                // Past its horizon a job is dead, and keeps the problem that killed it.
                tx.execute(
                    "UPDATE jobs SET \
                       status = CASE WHEN horizon_start + ?3 < ?2 THEN 'dead' ELSE 'queued' END, \
                       problem_json = CASE WHEN horizon_start + ?3 < ?2 THEN ?5 ELSE NULL END, \
                       next_attempt_at = ?2, last_error = ?4, updated_at = ?6 WHERE seq = ?1",
                    params![seq, at_ms, horizon_ms, error, problem, now_ms()],
                )
                .map_err(store)?;
            }
            tx.commit().map_err(store)
        })
        .await
    }

    async fn release(&self, batch: &Batch) -> Result<(), QueueError> {
        let seqs: Vec<i64> = batch.jobs.iter().map(|j| j.seq).collect();
        self.with(move |conn| {
            let tx = conn.transaction().map_err(store)?;
            for seq in &seqs {
                tx.execute(
                    "UPDATE jobs SET status = 'queued', attempts = max(attempts - 1, 0), next_attempt_at = ?2 WHERE seq = ?1 AND status = 'running'",
                    params![seq, now_ms()],
                )
                .map_err(store)?;
            }
            tx.commit().map_err(store)
        })
        .await
    }

    async fn recover(&self) -> Result<u64, QueueError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE jobs SET status = 'queued', next_attempt_at = ?1 WHERE status = 'running'",
                params![now_ms()],
            )
            .map(|n| n as u64)
            .map_err(store)
        })
        .await
    }

    async fn dead_letters(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Job>, QueueError> {
        let after = after.map(str::to_string);
        self.with(move |conn| {
            let after_seq: i64 = match after {
                Some(id) => conn
                    .query_row("SELECT seq FROM jobs WHERE id = ?1", params![id], |r| r.get(0))
                    .optional()
                    .map_err(store)?
                    .unwrap_or(i64::MAX),
                None => 0,
            };
            query_jobs(
                conn,
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'dead' AND seq > ?1 ORDER BY seq LIMIT ?2"),
                params![after_seq, limit as i64],
            )
        })
        .await
    }

    async fn unfinished(&self, limit: usize) -> Result<Vec<Job>, QueueError> {
        self.with(move |conn| {
            query_jobs(
                conn,
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE status IN ('queued', 'running') ORDER BY seq LIMIT ?1"),
                params![limit as i64],
            )
        })
        .await
    }

    async fn replay(&self, id: &str) -> Result<bool, QueueError> {
        let id = id.to_string();
        self.with(move |conn| {
            // The job keeps its place in acceptance order; the `applied` table keeps newer values safe.
            let now = now_ms();
            conn.execute(
                "UPDATE jobs SET status = 'queued', attempts = 0, next_attempt_at = ?2, horizon_start = ?2, \
                 problem_json = NULL, updated_at = ?2 WHERE id = ?1 AND status = 'dead'",
                params![id, now],
            )
            .map(|n| n == 1)
            .map_err(store)
        })
        .await
    }

    async fn replay_all(&self) -> Result<u64, QueueError> {
        self.with(|conn| {
            let now = now_ms();
            conn.execute(
                "UPDATE jobs SET status = 'queued', attempts = 0, next_attempt_at = ?1, horizon_start = ?1, \
                 problem_json = NULL, updated_at = ?1 WHERE status = 'dead'",
                params![now],
            )
            .map(|n| n as u64)
            .map_err(store)
        })
        .await
    }

    async fn idempotency_begin(&self, key: &IdempotencyKey) -> Result<Begun, QueueError> {
        let key = key.clone();
        let ttl = self.idempotency_ttl_ms;
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(store)?;
            let now = now_ms();
            let begun = match key_state(&tx, &key, now)? {
                KeyState::Unused => {
                    tx.execute(
                        "INSERT INTO idempotency (scope, key, body_hash, expires_at) VALUES (?1, ?2, ?3, ?4)",
                        params![key.scope, key.key, key.body_hash, now + ttl],
                    )
                    .map_err(store)?;
                    Begun::New
                }
                KeyState::Conflict => Begun::Conflict,
                KeyState::InProgress => Begun::InProgress,
                KeyState::Answered(r) => Begun::Answered(r),
                KeyState::Job(id) => Begun::Existing(Box::new(
                    job_by_id(&tx, &id)?.ok_or_else(|| QueueError::Corrupt(format!("job {id} is gone")))?,
                )),
            };
            tx.commit().map_err(store)?;
            Ok(begun)
        })
        .await
    }

    async fn idempotency_finish(
        &self,
        key: &IdempotencyKey,
        response: &StoredResponse,
    ) -> Result<(), QueueError> {
        let key = key.clone();
        let response = serde_json::to_string(response).map_err(store)?;
        self.with(move |conn| {
            conn.execute(
                "UPDATE idempotency SET response_json = ?3 WHERE scope = ?1 AND key = ?2",
                params![key.scope, key.key, response],
            )
            .map(drop)
            .map_err(store)
        })
        .await
    }

    async fn idempotency_abandon(&self, key: &IdempotencyKey) -> Result<(), QueueError> {
        let key = key.clone();
        self.with(move |conn| {
            conn.execute(
                "DELETE FROM idempotency WHERE scope = ?1 AND key = ?2 AND job_id IS NULL AND response_json IS NULL",
                params![key.scope, key.key],
            )
            .map(drop)
            .map_err(store)
        })
        .await
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.with(|conn| {
            let count = |status: &str| -> Result<u64, QueueError> {
                conn.query_row(
                    "SELECT count(*) FROM jobs WHERE status = ?1",
                    params![status],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n as u64)
                .map_err(store)
            };
            let oldest: Option<i64> = conn
                .query_row(
                    "SELECT min(created_at) FROM jobs WHERE status = 'queued'",
                    [],
                    |r| r.get(0),
                )
                .map_err(store)?;
            Ok(QueueStats {
                queued: count("queued")?,
                running: count("running")?,
                dead: count("dead")?,
                oldest_queued_age_ms: oldest.map(|t| now_ms() - t),
            })
        })
        .await
    }
}
