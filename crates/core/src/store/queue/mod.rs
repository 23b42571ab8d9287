//! The durable job queue of the asynchronous mode, behind one interface: embedded SQLite for a single
//! replica ([`sqlite`]), or Redis for several ([`redis`]). The workers that run its jobs are the
//! `worker` module.
//!
//! A job is accepted only once it is committed to the store, so the `202 Accepted` a caller receives
//! survives a crash one instant later. Jobs of one conversation (a *lane*) run strictly in the order
//! they were accepted; consecutive pending jobs for the same target are merged into one PATCH, later
//! keys winning. The store also remembers, per target and key, the acceptance sequence of the value
//! last written, so a job replayed from the dead letters never overwrites a newer value.

pub mod redis;
pub mod sqlite;

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::custom::CustomValues;
use crate::domain::{
    AttributeMap, AttributeUpdate, ConversationId, ParticipantId, Purpose, SecureValues, Target,
};
use crate::seal::{Keyring, SealError, Sealed};

/// How a secure attribute's key is named among a batch's `key_seqs` and the store's record of
/// what was written: apart from participant attributes of the same name.
pub const SECURE_KEY: &str = "\u{1f}secure:";

/// How a custom attribute's field is named among `key_seqs`: by its schema and name.
fn custom_key(schema: &str, field: &str) -> String {
    format!("\u{1f}custom:{schema}:{field}")
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Dead,
}

impl JobStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Dead => "dead",
        }
    }
}

impl FromStr for JobStatus {
    type Err = QueueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "dead" => JobStatus::Dead,
            other => return Err(QueueError::Corrupt(format!("unknown job status `{other}`"))),
        })
    }
}

/// An update as the store keeps it: plain data, parsed back into an [`AttributeUpdate`] to run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredUpdate {
    pub conversation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    pub attributes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<bool>,
    /// The names of the conversation's secure attributes it writes: readable, for operators.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secure_keys: Vec<String>,
    /// Their values, sealed under the newest of `secure.keys` ([`crate::seal`]); never in clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<Sealed>,
    /// The custom-attributes schema (id or name) of `custom_attributes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_schema: Option<String>,
    /// Values for the conversation's record of `custom_schema`, checked against it at intake.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_attributes: BTreeMap<String, serde_json::Value>,
    /// The W3C trace context of the request that queued it, so the attempt that applies it, here or
    /// on another replica after a restart, is a span of that request's trace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trace: BTreeMap<String, String>,
}

impl From<&AttributeUpdate> for StoredUpdate {
    fn from(u: &AttributeUpdate) -> Self {
        let (participant_id, purpose) = match &u.target {
            Target::Participant(p) => (Some(p.to_string()), None),
            Target::Purpose(p) => (None, Some(p.to_string())),
        };
        Self {
            conversation_id: u.conversation_id.to_string(),
            participant_id,
            purpose,
            attributes: u.attributes.as_map().clone(),
            verify: u.verify,
            secure_keys: Vec::new(),
            secure: None,
            custom_schema: None,
            custom_attributes: BTreeMap::new(),
            trace: BTreeMap::new(),
        }
    }
}

impl StoredUpdate {
    /// Adds the conversation's secure attributes, sealed for this conversation; `None` when no key
    /// is configured to seal them.
    pub fn with_secure(mut self, values: &SecureValues, keyring: &Keyring) -> Option<Self> {
        self.secure = Some(keyring.seal(values, &self.conversation_id)?);
        self.secure_keys = values.key_names();
        Some(self)
    }

    /// Adds values for the conversation's custom-attributes record.
    pub fn with_custom(mut self, custom: &CustomValues) -> Self {
        self.custom_schema = Some(custom.schema.clone());
        self.custom_attributes = custom
            .values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self
    }

    /// This job's secure attributes, opened with the key that sealed them.
    pub fn open_secure(&self, keyring: &Keyring) -> Result<Option<SecureValues>, SealError> {
        self.secure
            .as_ref()
            .map(|sealed| keyring.open(sealed, &self.conversation_id))
            .transpose()
    }

    /// The lane: every job of one conversation runs in acceptance order.
    pub fn lane(&self) -> &str {
        &self.conversation_id
    }

    /// The target as text; jobs merge and keys are ordered per (lane, target).
    pub fn target(&self) -> String {
        match (&self.participant_id, &self.purpose) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) => format!("purpose:{p}"),
            (None, None) => "purpose:customer".into(),
        }
    }

    /// Back to a validated update; a stored row that no longer parses is corrupt.
    pub fn to_update(&self) -> Result<AttributeUpdate, QueueError> {
        let corrupt = |e: crate::domain::DomainError| QueueError::Corrupt(e.0);
        let target = match (&self.participant_id, &self.purpose) {
            (Some(p), _) => Target::Participant(ParticipantId::from_str(p).map_err(corrupt)?),
            (None, Some(p)) => Target::Purpose(Purpose::from_str(p).map_err(corrupt)?),
            (None, None) => Target::Purpose(Purpose::customer()),
        };
        let object: serde_json::Map<String, serde_json::Value> = self
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        // A job (or a batch) of the conversation's targets alone writes no participant attribute;
        // intake never queues a job that writes nothing.
        let attributes = if object.is_empty() {
            AttributeMap::none()
        } else {
            AttributeMap::from_json(&object).map_err(corrupt)?
        };
        Ok(AttributeUpdate {
            conversation_id: ConversationId::from_str(&self.conversation_id).map_err(corrupt)?,
            target,
            attributes,
            verify: self.verify,
        })
    }
}

/// A caller-visible problem, stored with a failed or dead job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredProblem {
    pub code: String,
    pub status: u16,
    pub title: String,
    pub detail: String,
}

/// One job as stored.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: String,
    /// Acceptance order, across the whole store.
    #[serde(skip)]
    pub seq: i64,
    pub status: JobStatus,
    pub update: StoredUpdate,
    pub attempts: u32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub next_attempt_at_ms: i64,
    /// The answer a synchronous request would have got, once succeeded.
    pub result: Option<serde_json::Value>,
    pub problem: Option<StoredProblem>,
    /// The last transient failure, for operators.
    pub last_error: Option<String>,
    /// The request id of the request that was accepted.
    pub request_id: String,
}

/// Jobs claimed together: one lane's head and the pending jobs for the same target merged into it.
#[derive(Debug, Clone)]
pub struct Batch {
    pub jobs: Vec<Job>,
    /// The merged write: later keys win; keys a newer job has already written are left out.
    pub update: StoredUpdate,
    /// For each key of `update`, the acceptance sequence of the job whose value it carries.
    pub key_seqs: BTreeMap<String, i64>,
    /// The custom-attributes values it writes, one set per schema: each field's value from the
    /// newest job carrying it that no newer write has superseded.
    pub custom: Vec<CustomValues>,
}

impl Batch {
    /// Merges claimed jobs (the head of a lane and the jobs behind it for the same target) into one
    /// write: later keys win, and a key whose last write came from a newer job than the one carrying
    /// it here (`written`: key → acceptance sequence, for this target) is left out, so an older value
    /// never overwrites a newer one. Both backends claim with this.
    pub fn merge(jobs: Vec<Job>, written: &std::collections::HashMap<String, i64>) -> Self {
        let mut attributes = BTreeMap::new();
        let mut key_seqs = BTreeMap::new();
        for job in &jobs {
            for (k, v) in &job.update.attributes {
                attributes.insert(k.clone(), v.clone());
                key_seqs.insert(k.clone(), job.seq);
            }
            // Secure values stay sealed on their jobs; the worker opens each and takes the keys
            // this batch carries from the job named here.
            for k in &job.update.secure_keys {
                key_seqs.insert(format!("{SECURE_KEY}{k}"), job.seq);
            }
            if let Some(schema) = &job.update.custom_schema {
                for k in job.update.custom_attributes.keys() {
                    key_seqs.insert(custom_key(schema, k), job.seq);
                }
            }
        }
        key_seqs.retain(|k, seq| {
            let newer = written.get(k).is_some_and(|w| w > seq);
            if newer {
                attributes.remove(k);
            }
            !newer
        });
        let head = &jobs[0].update;
        let update = StoredUpdate {
            conversation_id: head.conversation_id.clone(),
            participant_id: head.participant_id.clone(),
            purpose: head.purpose.clone(),
            attributes,
            // Verify when any merged job asked to; a job that asked not to is not harmed by it.
            verify: jobs
                .iter()
                .filter_map(|j| j.update.verify)
                .reduce(|a, b| a || b),
            secure_keys: key_seqs
                .keys()
                .filter_map(|k| k.strip_prefix(SECURE_KEY))
                .map(str::to_string)
                .collect(),
            secure: None,
            // Each job's custom values stay on their job: the worker takes them per schema.
            custom_schema: None,
            custom_attributes: BTreeMap::new(),
            // Each job's own context stays with its job; the attempt links them all.
            trace: head.trace.clone(),
        };
        Self {
            custom: custom_of(&jobs, &key_seqs),
            jobs,
            update,
            key_seqs,
        }
    }

    /// Whether the batch writes anything at all.
    pub fn writes_anything(&self) -> bool {
        !self.update.attributes.is_empty()
            || !self.update.secure_keys.is_empty()
            || !self.custom.is_empty()
    }

    /// The secure attributes this batch writes: each key's value from the newest job carrying it
    /// that no newer write has superseded. `None` when it writes none.
    pub fn open_secure(&self, keyring: &Keyring) -> Result<Option<SecureValues>, SealError> {
        let mut values: Option<SecureValues> = None;
        for job in &self.jobs {
            let Some(opened) = job.update.open_secure(keyring)? else {
                continue;
            };
            let kept =
                opened.retain(|k| self.key_seqs.get(&format!("{SECURE_KEY}{k}")) == Some(&job.seq));
            values = match (values, kept) {
                (Some(mut v), Some(k)) => {
                    v.extend(k);
                    Some(v)
                }
                (v, k) => v.or(k),
            };
        }
        Ok(values)
    }

    pub fn ids(&self) -> Vec<String> {
        self.jobs.iter().map(|j| j.id.clone()).collect()
    }
}

/// The custom-attributes values `jobs` write, one set per schema (see [`Batch::custom`]).
fn custom_of(jobs: &[Job], key_seqs: &BTreeMap<String, i64>) -> Vec<CustomValues> {
    let mut by_schema: BTreeMap<String, serde_json::Map<String, serde_json::Value>> =
        BTreeMap::new();
    for job in jobs {
        let Some(schema) = &job.update.custom_schema else {
            continue;
        };
        for (k, v) in &job.update.custom_attributes {
            if key_seqs.get(&custom_key(schema, k)) == Some(&job.seq) {
                by_schema
                    .entry(schema.clone())
                    .or_default()
                    .insert(k.clone(), v.clone());
            }
        }
    }
    by_schema
        .into_iter()
        .map(|(schema, values)| CustomValues { schema, values })
        .collect()
}

/// What an enqueue with an idempotency key found.
#[derive(Debug, Clone)]
pub enum Enqueued {
    /// A new job, committed.
    Created(Job),
    /// The key was seen before with the same body: the original job.
    Existing(Job),
    /// The key was seen before with the same body, answered synchronously: the original answer.
    Answered(StoredResponse),
    /// The key was seen before with the same body, and that request is still being answered.
    InProgress,
    /// The key was seen before with a different body.
    Conflict,
}

/// A synchronous answer kept for an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
    pub content_type: String,
}

/// An idempotency key in a scope (the route), with the fingerprint of the body it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub scope: String,
    pub key: String,
    /// The body's fingerprint, as a new record keeps it.
    pub body_hash: String,
    /// The same body's fingerprints under older keys (`secure.keys`), which a record kept before a
    /// rotation carries: a retry across the rotation is still the same request.
    pub earlier: Vec<String>,
}

impl IdempotencyKey {
    /// Whether a record's fingerprint is this body's.
    pub fn matches(&self, stored: &str) -> bool {
        self.body_hash == stored || self.earlier.iter().any(|h| h == stored)
    }

    /// Every accepted fingerprint, the current first, space-separated (fingerprints hold none):
    /// how Redis's scripts receive them.
    pub fn fingerprints(&self) -> String {
        std::iter::once(&self.body_hash)
            .chain(&self.earlier)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// What starting a synchronous request with an idempotency key found.
#[derive(Debug, Clone)]
pub enum Begun {
    /// First use: the caller must [`JobQueue::idempotency_finish`] or [`JobQueue::idempotency_abandon`].
    New,
    Existing(Box<Job>),
    Answered(StoredResponse),
    InProgress,
    Conflict,
}

/// Figures for operators.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    pub queued: u64,
    pub running: u64,
    pub dead: u64,
    pub oldest_queued_age_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the queue store failed: {0}")]
    Store(String),
    #[error("a stored job is corrupt: {0}")]
    Corrupt(String),
}

/// The queue's one interface; each backend keeps every guarantee described in the module docs.
#[async_trait::async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Commits a job durably, or resolves its idempotency key to what it already stands for.
    async fn enqueue(
        &self,
        update: StoredUpdate,
        request_id: &str,
        key: Option<IdempotencyKey>,
    ) -> Result<Enqueued, QueueError>;
    async fn get(&self, id: &str) -> Result<Option<Job>, QueueError>;
    /// Claims the next runnable batch, if any, and marks its jobs running.
    async fn claim(&self, max_batch: usize) -> Result<Option<Batch>, QueueError>;
    /// The batch's write landed: `result` is the answer to keep.
    async fn succeed(&self, batch: &Batch, result: serde_json::Value) -> Result<(), QueueError>;
    /// The batch failed for good.
    async fn fail(&self, batch: &Batch, problem: StoredProblem) -> Result<(), QueueError>;
    /// The batch failed transiently: run again at `at_ms`, or turn dead past each job's horizon.
    async fn retry(
        &self,
        batch: &Batch,
        at_ms: i64,
        horizon_ms: i64,
        error: &str,
        problem: StoredProblem,
    ) -> Result<(), QueueError>;
    /// Gives the batch back untouched (shutdown).
    async fn release(&self, batch: &Batch) -> Result<(), QueueError>;
    /// Makes jobs left running by a process that died runnable again.
    async fn recover(&self) -> Result<u64, QueueError>;
    /// Dead jobs in acceptance order, after the cursor.
    async fn dead_letters(&self, after: Option<&str>, limit: usize)
        -> Result<Vec<Job>, QueueError>;
    /// Jobs queued or running, oldest first, at most `limit`.
    async fn unfinished(&self, limit: usize) -> Result<Vec<Job>, QueueError>;
    /// Queues a dead job again; `false` when it is not dead.
    async fn replay(&self, id: &str) -> Result<bool, QueueError>;
    async fn replay_all(&self) -> Result<u64, QueueError>;
    /// Starts a synchronous request under an idempotency key.
    async fn idempotency_begin(&self, key: &IdempotencyKey) -> Result<Begun, QueueError>;
    /// Keeps the answer of a synchronous request for its key.
    async fn idempotency_finish(
        &self,
        key: &IdempotencyKey,
        response: &StoredResponse,
    ) -> Result<(), QueueError>;
    /// Forgets a key whose request failed transiently, so a retry runs again.
    async fn idempotency_abandon(&self, key: &IdempotencyKey) -> Result<(), QueueError>;
    async fn stats(&self) -> Result<QueueStats, QueueError>;
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
