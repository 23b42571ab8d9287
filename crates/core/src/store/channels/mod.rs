//! The deployment's notification channels, counted: Genesys allows 20 per OAuth client and, past
//! that, removes the least recently used (unconnected ones first). So a replica holds a channel only
//! while it holds one of `mirror.max_channels` slots, and the connected channels of the whole
//! deployment never pass the limit: creating one evicts, at worst, a channel nobody is connected to.
//! The slots are this process's ([`local`]) or every replica's ([`redis`]).

pub mod local;
pub mod redis;

use std::time::Duration;

/// How long a slot outlives its last renewal; its holder renews it three times as often.
pub const SLOT_TTL: Duration = Duration::from_secs(30);

/// One slot held: the right to keep one channel connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot(pub u32);

/// The deployment's channel slots: a replica holds a channel only while it holds a slot, so the
/// deployment never connects more channels than Genesys allows.
#[async_trait::async_trait]
pub trait ChannelSlots: Send + Sync {
    /// A free slot, if the deployment has one.
    async fn acquire(&self) -> Option<Slot>;
    /// Keeps `slot`; `false` when it is no longer this replica's.
    async fn renew(&self, slot: &Slot) -> bool;
    async fn release(&self, slot: Slot);
}
