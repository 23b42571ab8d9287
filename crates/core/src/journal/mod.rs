//! The journal of recent updates: what each event became (where it went, how it was found and
//! verified, what it cost), bounded, for the operator console; plus this replica's minute-by-minute
//! figures behind the console's chart.
//!
//! Entries are kept in this process (a ring of `console.recent`) or, with the Redis backend, in a
//! capped stream every replica writes and reads, so any replica's console shows the deployment.

pub mod series;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

pub use series::{Minute, Series};

/// What became of one update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Genesys shows every key as written.
    Verified,
    /// Written, and not checked (the caller turned verification off).
    Unverified,
    /// Written, and Genesys shows other values for some keys.
    Mismatched { mismatches: Vec<Mismatch> },
    /// Committed as a job, to be applied by a worker.
    Queued,
    /// A repeat under an idempotency key, answered with the first answer.
    Repeated,
    /// Refused or failed, with the problem the caller got.
    Failed {
        code: String,
        status: u16,
        detail: String,
    },
}

impl Outcome {
    /// The outcome's name, as the console filters by it.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Verified => "verified",
            Outcome::Unverified => "unverified",
            Outcome::Mismatched { .. } => "mismatched",
            Outcome::Queued => "queued",
            Outcome::Repeated => "repeated",
            Outcome::Failed { .. } => "failed",
        }
    }

    /// The answer's code: `ok` for a write that landed, the problem's code otherwise.
    pub fn code(&self) -> &str {
        match self {
            Outcome::Verified | Outcome::Unverified => "ok",
            Outcome::Mismatched { .. } => "mismatch",
            Outcome::Queued => "accepted",
            Outcome::Repeated => "repeated",
            Outcome::Failed { code, .. } => code,
        }
    }
}

/// A key Genesys shows otherwise. The values are kept only when `console.show_values` is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    pub key: String,
    pub expected: Option<String>,
    pub actual: Option<String>,
}

/// One update, as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Unique, for opening the entry's whole record.
    pub id: String,
    pub at_ms: i64,
    /// The replica that handled it.
    pub replica: String,
    /// `api`, `hook:<route>` or `queue` (a worker applying a job).
    pub source: String,
    pub request_id: String,
    pub conversation_id: Option<String>,
    pub participant_id: Option<String>,
    /// What a lookup searched for, a caller's number masked (`ani …0123`).
    pub lookup: Option<String>,
    /// `conversationId` (the caller named it), `mirror`, `cache` or `analytics`.
    pub found_by: Option<String>,
    /// `queueEvent`, `detailEvent`, `read` or `none`.
    pub verified_by: Option<String>,
    pub keys: Vec<String>,
    /// The values written, only when `console.show_values` is on: they may be personal data.
    pub values: Option<BTreeMap<String, String>>,
    pub outcome: Outcome,
    /// Genesys calls this update's round made (its PATCH and reads), and how many updates shared
    /// them. Unknown for a failure.
    pub calls: Option<u32>,
    pub shared_with: u32,
    /// Calls made for this update alone beside its round: the read that found its participant by
    /// purpose. (A lookup's query is not counted here.)
    #[serde(default)]
    pub own_calls: u32,
    pub latency_ms: u64,
    pub job_id: Option<String>,
}

impl Entry {
    /// Fills in what an applied update showed: where it went, how it was verified, what it cost.
    pub fn applied(&mut self, outcome: &crate::service::UpdateOutcome) {
        self.conversation_id = Some(outcome.conversation_id.to_string());
        self.participant_id = Some(outcome.participant_id.clone());
        self.verified_by =
            Some(crate::service::Confirmation::answer_name(outcome.verified_by).into());
        self.calls = Some(outcome.shared.calls);
        self.own_calls = u32::from(outcome.resolving_read);
        self.shared_with = outcome.shared.updates.max(1);
        self.outcome = if !outcome.mismatches.is_empty() {
            Outcome::Mismatched {
                mismatches: outcome
                    .mismatches
                    .iter()
                    .map(|m| Mismatch {
                        key: m.key.clone(),
                        expected: Some(m.expected.clone()),
                        actual: m.actual.clone(),
                    })
                    .collect(),
            }
        } else if outcome.verified {
            Outcome::Verified
        } else {
            Outcome::Unverified
        };
    }

    /// Fills in the update's keys, and its values (dropped when recorded, unless shown).
    pub fn writes(&mut self, attributes: &BTreeMap<String, String>) {
        self.keys = attributes.keys().cloned().collect();
        self.values = Some(attributes.clone());
    }

    /// Fills in the problem the update got.
    pub fn failed(&mut self, code: &str, status: u16, detail: &str) {
        self.outcome = Outcome::Failed {
            code: code.to_string(),
            status,
            detail: detail.to_string(),
        };
    }

    /// The Genesys calls this update is charged: its share of its round's.
    pub fn calls_share(&self) -> Option<f64> {
        self.calls
            .map(|c| f64::from(c) / f64::from(self.shared_with.max(1)) + f64::from(self.own_calls))
    }
}

/// Where entries are kept.
#[async_trait::async_trait]
pub trait JournalStore: Send + Sync {
    async fn push(&self, entry: &Entry) -> Result<(), String>;
    /// The newest entries first, at most `limit`.
    async fn recent(&self, limit: usize) -> Result<Vec<Entry>, String>;
}

/// This process's ring of the newest `capacity` entries.
pub struct Ring {
    capacity: usize,
    entries: Mutex<VecDeque<Entry>>,
}

impl Ring {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl JournalStore for Ring {
    async fn push(&self, entry: &Entry) -> Result<(), String> {
        let mut entries = self.entries();
        if self.capacity == 0 {
            return Ok(());
        }
        while entries.len() >= self.capacity {
            entries.pop_back();
        }
        entries.push_front(entry.clone());
        Ok(())
    }

    async fn recent(&self, limit: usize) -> Result<Vec<Entry>, String> {
        Ok(self.entries().iter().take(limit).cloned().collect())
    }
}

/// The journal every handler and worker records to. Cloning is cheap.
#[derive(Clone)]
pub struct Journal {
    store: Arc<dyn JournalStore>,
    series: Series,
    replica: Arc<str>,
    show_values: bool,
    capacity: usize,
}

impl Journal {
    /// `replica` names this process in every entry; `show_values` keeps written values.
    pub fn new(
        store: Arc<dyn JournalStore>,
        replica: &str,
        show_values: bool,
        capacity: usize,
    ) -> Self {
        Self {
            store,
            series: Series::default(),
            replica: replica.into(),
            show_values,
            capacity,
        }
    }

    /// A journal in this process alone.
    pub fn in_memory(capacity: usize) -> Self {
        Self::new(
            Arc::new(Ring::new(capacity)),
            &replica_name(),
            false,
            capacity,
        )
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    pub fn show_values(&self) -> bool {
        self.show_values
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn series(&self) -> &Series {
        &self.series
    }

    /// A new entry for an update from `source`, stamped now by this replica.
    pub fn begin(&self, source: &str, request_id: &str) -> Entry {
        Entry {
            id: uuid::Uuid::new_v4().simple().to_string(),
            at_ms: now_ms(),
            replica: self.replica.to_string(),
            source: source.to_string(),
            request_id: request_id.to_string(),
            conversation_id: None,
            participant_id: None,
            lookup: None,
            found_by: None,
            verified_by: None,
            keys: Vec::new(),
            values: None,
            outcome: Outcome::Queued,
            calls: None,
            shared_with: 1,
            own_calls: 0,
            latency_ms: 0,
            job_id: None,
        }
    }

    /// Keeps `entry`, with the values dropped unless `console.show_values` is on. The store is
    /// written in the background: an answer never waits for the console's bookkeeping.
    pub fn record(&self, mut entry: Entry) {
        if !self.show_values {
            entry.values = None;
            if let Outcome::Mismatched { mismatches } = &mut entry.outcome {
                for m in mismatches {
                    m.expected = None;
                    m.actual = None;
                }
            }
        }
        self.series.record(&entry);
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.push(&entry).await {
                tracing::warn!(error = %e, "could not keep an update for the console");
            }
        });
    }

    /// The newest entries first, at most `limit`.
    pub async fn recent(&self, limit: usize) -> Result<Vec<Entry>, String> {
        self.store.recent(limit.min(self.capacity)).await
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// This replica's name: the pod's (`HOSTNAME`, as Kubernetes sets it), or a random one.
pub fn replica_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| {
            format!(
                "replica-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(n: usize) -> Entry {
        let journal = Journal::in_memory(1);
        let mut e = journal.begin("api", &format!("r{n}"));
        e.outcome = Outcome::Verified;
        e
    }

    proptest! {
        #[test]
        fn the_ring_holds_the_newest_entries_newest_first(capacity in 0usize..20, pushed in 0usize..60) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let ring = Ring::new(capacity);
            rt.block_on(async {
                for n in 0..pushed {
                    ring.push(&entry(n)).await.unwrap();
                }
                let recent = ring.recent(usize::MAX).await.unwrap();
                let expected: Vec<String> = (0..pushed).rev().take(capacity).map(|n| format!("r{n}")).collect();
                let got: Vec<String> = recent.iter().map(|e| e.request_id.clone()).collect();
                assert_eq!(got, expected);
            });
        }
    }

    #[tokio::test]
    async fn values_are_dropped_unless_the_console_shows_them() {
        for show in [false, true] {
            let journal = Journal::new(Arc::new(Ring::new(4)), "r", show, 4);
            let mut e = journal.begin("api", "req");
            e.values = Some(BTreeMap::from([("vip".into(), "true".into())]));
            e.outcome = Outcome::Mismatched {
                mismatches: vec![Mismatch {
                    key: "vip".into(),
                    expected: Some("true".into()),
                    actual: Some("false".into()),
                }],
            };
            journal.record(e);
            tokio::task::yield_now().await;
            let kept = journal.recent(1).await.unwrap().remove(0);
            assert_eq!(kept.values.is_some(), show);
            let Outcome::Mismatched { mismatches } = &kept.outcome else {
                panic!()
            };
            assert_eq!(mismatches[0].expected.is_some(), show);
            assert_eq!(mismatches[0].key, "vip");
        }
    }
}
