//! The journal of this process: a ring of the newest entries.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::JournalStore;
use crate::journal::entry::Entry;

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
