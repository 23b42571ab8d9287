//! The journal of recent updates: what each event became (where it went, how it was found and
//! verified, what it cost), bounded, for the operator console; plus this replica's minute-by-minute
//! figures behind the console's chart.
//!
//! Entries are kept where [`crate::store::journal`] says: in this process, or in a stream every
//! replica writes and reads, so any replica's console shows the deployment.

pub mod entry;
pub mod series;

use std::sync::Arc;

pub use entry::{Entry, Mismatch, Outcome};
pub use series::{Minute, Series};

use crate::store::journal::ring::Ring;
use crate::store::journal::JournalStore;

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
            secure_keys: Vec::new(),
            secure_verified: None,
            custom_keys: Vec::new(),
            custom_verified: None,
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
    use std::collections::BTreeMap;

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
