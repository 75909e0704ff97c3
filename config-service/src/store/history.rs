//! In-memory index of retained versions shared by the store implementations.

use std::collections::VecDeque;
use std::sync::Arc;

use switchyard_proto::state::State;
use switchyard_proto::v1::Delta;

use super::{HistoryItem, StoreError};

/// The state at the oldest retained version, the deltas after it, and the latest state.
#[derive(Debug, Clone)]
pub struct History {
    base: Arc<State>,
    deltas: VecDeque<Arc<Delta>>,
    latest: Arc<State>,
}

impl History {
    /// History that starts at `base`.
    pub fn new(base: State) -> Self {
        let base = Arc::new(base);
        Self {
            latest: base.clone(),
            base,
            deltas: VecDeque::new(),
        }
    }

    /// The latest state.
    pub fn latest(&self) -> &Arc<State> {
        &self.latest
    }

    /// The oldest retained state.
    pub fn base(&self) -> &Arc<State> {
        &self.base
    }

    /// Retained deltas, oldest first.
    pub fn deltas(&self) -> impl Iterator<Item = &Arc<Delta>> {
        self.deltas.iter()
    }

    /// Number of retained deltas.
    pub fn len(&self) -> usize {
        self.deltas.len()
    }

    /// True when only the base is retained.
    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty()
    }

    /// Appends a delta whose result is `next`.
    pub fn push(&mut self, delta: Arc<Delta>, next: Arc<State>) {
        self.deltas.push_back(delta);
        self.latest = next;
    }

    /// Replays a delta read from disk; fails if it does not follow.
    pub fn replay(&mut self, delta: Delta) -> Result<(), StoreError> {
        let next = self
            .latest
            .apply_delta(&delta)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.push(Arc::new(delta), Arc::new(next));
        Ok(())
    }

    /// The state at `version`.
    pub fn get(&self, version: u64) -> Result<Arc<State>, StoreError> {
        if version == self.latest.version {
            return Ok(self.latest.clone());
        }
        if version < self.base.version || version > self.latest.version {
            return Err(StoreError::NotRetained {
                version,
                oldest: self.base.version,
                newest: self.latest.version,
            });
        }
        let mut s = (*self.base).clone();
        for d in self.deltas.iter().take_while(|d| d.to_version <= version) {
            s = s
                .apply_delta(d)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        }
        Ok(Arc::new(s))
    }

    /// Newest-first history strictly before `before` (0 = from the latest).
    pub fn history(&self, before: u64, limit: usize) -> Vec<HistoryItem> {
        let before = if before == 0 { u64::MAX } else { before };
        self.deltas
            .iter()
            .rev()
            .filter(|d| d.to_version < before)
            .take(limit)
            .map(|d| HistoryItem {
                version: d.to_version,
                delta: d.clone(),
            })
            .collect()
    }

    /// Deltas after `known`, if retained.
    pub fn since(&self, known: u64) -> Option<Vec<Arc<Delta>>> {
        if known < self.base.version || known > self.latest.version {
            return None;
        }
        Some(
            self.deltas
                .iter()
                .filter(|d| d.from_version >= known)
                .cloned()
                .collect(),
        )
    }

    /// Drops the oldest deltas so that at most `keep` remain, moving the base forward.
    pub fn compact(&mut self, keep: usize) -> Result<(), StoreError> {
        if self.deltas.len() <= keep {
            return Ok(());
        }
        let mut base = (*self.base).clone();
        while self.deltas.len() > keep {
            let d = self.deltas.pop_front().expect("len checked");
            base = base
                .apply_delta(&d)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        }
        self.base = Arc::new(base);
        Ok(())
    }
}
