//! The channel slots of this process alone: a set of held slot numbers.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::{ChannelSlots, Slot};

/// The slots of a single replica.
#[derive(Clone, Debug)]
pub struct LocalSlots {
    limit: u32,
    held: Arc<Mutex<HashSet<u32>>>,
}

impl LocalSlots {
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            held: Arc::default(),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<u32>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl ChannelSlots for LocalSlots {
    async fn acquire(&self) -> Option<Slot> {
        let mut held = self.held();
        let n = (0..self.limit).find(|n| !held.contains(n))?;
        held.insert(n);
        Some(Slot(n))
    }

    /// Nobody else can take this process's slot.
    async fn renew(&self, _slot: &Slot) -> bool {
        true
    }

    async fn release(&self, slot: Slot) {
        self.held().remove(&slot.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_process_holds_no_more_slots_than_the_limit_and_a_released_one_is_free_again() {
        let slots = LocalSlots::new(2);
        let a = slots.acquire().await.unwrap();
        let b = slots.acquire().await.unwrap();
        assert_ne!(a, b);
        assert!(slots.acquire().await.is_none());
        slots.release(a).await;
        assert!(slots.acquire().await.is_some());
        assert!(slots.renew(&b).await);
    }
}
