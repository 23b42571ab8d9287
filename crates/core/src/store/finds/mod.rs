//! What lookups found, remembered for a short while: by this replica ([`local`]), and on Redis by
//! every replica ([`redis`]), so a CRM's burst for one record costs one analytics query however the
//! load balancer spreads it.
//!
//! A find only saves queries; it is never trusted. Every use is confirmed by a read, and a call
//! that ended is forgotten everywhere. So Redis being slow or down costs queries, never correctness.

pub mod local;
pub mod redis;

use crate::domain::lookup::Lookup;
use crate::domain::ConversationId;

/// Where finds are kept.
#[async_trait::async_trait]
pub trait Finds: Send + Sync {
    /// What was found for `lookup` within the store's time to live, if anything.
    async fn get(&self, lookup: &Lookup) -> Option<ConversationId>;

    /// Remembers that `lookup` found `cid`.
    async fn insert(&self, lookup: &Lookup, cid: ConversationId);

    /// Forgets that `lookup` found `stale`: the call ended or no longer matches. A newer find
    /// (another replica's, after the caller called again) is kept.
    async fn forget(&self, lookup: &Lookup, stale: ConversationId);
}
