//! A non-durable store for tests and benchmarks.

use std::sync::Arc;

use parking_lot::Mutex;
use switchyard_proto::state::State;
use switchyard_proto::v1::Delta;

use super::{History, HistoryItem, Store, StoreError};

/// Keeps every version in memory (up to `retain` deltas); nothing survives the process.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<History>,
    retain: usize,
}

impl MemoryStore {
    /// An empty store at version 0 that retains `retain` versions of history.
    pub fn new(retain: usize) -> Self {
        Self {
            inner: Mutex::new(History::new(State::default())),
            retain: retain.max(1),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(1000)
    }
}

impl Store for MemoryStore {
    fn latest(&self) -> Arc<State> {
        self.inner.lock().latest().clone()
    }

    fn commit(&self, expected: u64, next: State, delta: Delta) -> Result<Arc<State>, StoreError> {
        let mut h = self.inner.lock();
        let current = h.latest().version;
        if current != expected {
            return Err(StoreError::Conflict { expected, current });
        }
        let next = Arc::new(next);
        h.push(Arc::new(delta), next.clone());
        h.compact(self.retain)?;
        Ok(next)
    }

    fn get(&self, version: u64) -> Result<Arc<State>, StoreError> {
        self.inner.lock().get(version)
    }

    fn history(&self, before: u64, limit: usize) -> Vec<HistoryItem> {
        self.inner.lock().history(before, limit)
    }

    fn deltas_since(&self, known: u64) -> Option<Vec<Arc<Delta>>> {
        self.inner.lock().since(known)
    }

    fn oldest(&self) -> u64 {
        self.inner.lock().base().version
    }
}
