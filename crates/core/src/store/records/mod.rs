//! What Genesys last showed of each custom-attributes record (by a read or a write's answer: its
//! version, divisions and fields' times), to this replica ([`local`]) or, on Redis, to every
//! replica ([`redis`]), so a write amends a record with its current version without reading it
//! first, whichever replica the load balancer picks.
//!
//! A record nobody knows is created under a claim, so two replicas never both create it.
//!
//! Knowledge only saves reads; it is never trusted. A stale version is refused by Genesys (409),
//! which costs a read and a retry, never a field; a record nobody knows is read before it is
//! written. So Redis being slow or down costs calls, never correctness.

pub mod local;
pub mod redis;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::ConversationId;

/// How long a record is remembered after its last use, here and on Redis: longer than a call.
pub const KEPT: Duration = Duration::from_secs(3_600);

/// A record: its conversation and its id.
pub type RecordKey = (ConversationId, String);

/// What Genesys showed of a record: enough to amend it without reading it first. Field names and
/// times only, never a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownRecord {
    pub version: i64,
    pub divisions: Vec<String>,
    /// Each field's time of writing, as Genesys gave it.
    pub timestamps: BTreeMap<String, String>,
}

/// Where what is known of records is kept.
#[async_trait::async_trait]
pub trait Records: Send + Sync {
    /// What Genesys last showed of the record, if anything is known.
    async fn get(&self, key: &RecordKey) -> Option<KnownRecord>;

    /// Remembers what Genesys showed of the record; an older version than the one kept is ignored.
    async fn insert(&self, key: &RecordKey, known: &KnownRecord);

    /// Forgets the record: what was known is stale, and its next write reads it first.
    async fn forget(&self, key: &RecordKey);

    /// Claims, for `hold`, the right to find out whether an unknown record exists and to create it
    /// (`token` names this claim): `false` while another replica holds it. Two replicas that both
    /// read a record absent would both create it, and the later `PUT` would replace the earlier's
    /// fields.
    async fn claim_create(&self, key: &RecordKey, token: &str, hold: Duration) -> bool;

    /// Ends the claim `token` names, if it still holds.
    async fn end_claim(&self, key: &RecordKey, token: &str);
}
