//! One journal entry: what became of one update, where it went, and what it cost.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    /// The keys of the conversation's secure attributes written, never their values, whatever
    /// `console.show_values` says.
    #[serde(default)]
    pub secure_keys: Vec<String>,
    /// Whether a read showed every secure key as written.
    #[serde(default)]
    pub secure_verified: Option<bool>,
    /// The fields of the conversation's custom-attributes record written.
    #[serde(default)]
    pub custom_keys: Vec<String>,
    /// Whether a read showed every custom field as written.
    #[serde(default)]
    pub custom_verified: Option<bool>,
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
