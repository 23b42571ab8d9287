//! Where the journal's entries are kept: this process's ring ([`ring`]), or a capped stream on
//! Redis ([`redis`]) that every replica writes and reads.

pub mod redis;
pub mod ring;

use crate::journal::entry::Entry;

/// Where entries are kept.
#[async_trait::async_trait]
pub trait JournalStore: Send + Sync {
    async fn push(&self, entry: &Entry) -> Result<(), String>;
    /// The newest entries first, at most `limit`.
    async fn recent(&self, limit: usize) -> Result<Vec<Entry>, String>;
}
