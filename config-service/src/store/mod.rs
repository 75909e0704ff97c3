//! Where versions live. The service is stateless above a [`Store`].
//!
//! A store keeps the latest version in memory, the deltas of the retained history, and the
//! state at the oldest retained version; any retained version is rebuilt from those.

mod file;
mod history;
mod kafka;
mod memory;

use std::sync::Arc;

use switchyard_proto::state::State;
use switchyard_proto::v1::Delta;

pub use file::FileStore;
pub use history::History;
pub use kafka::{KafkaConfig, KafkaOpen, KafkaStore, KeyedRecords};
pub use memory::MemoryStore;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Compare-and-set lost: the store is at `current`, not `expected`.
    #[error("expected version {expected}, but the current version is {current}")]
    Conflict {
        /// What the writer expected.
        expected: u64,
        /// What the store has.
        current: u64,
    },
    /// The version was compacted away or never existed.
    #[error("version {version} is not retained (oldest retained is {oldest}, newest is {newest})")]
    NotRetained {
        /// The version asked for.
        version: u64,
        /// Oldest version still retained.
        oldest: u64,
        /// Newest version.
        newest: u64,
    },
    /// Disk or encoding failure; nothing was acknowledged.
    #[error("store I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The store's backing service (the Kafka home cluster) could not be reached in time; the
    /// message says whether the change may still take effect.
    #[error("{0}")]
    Unavailable(String),
    /// The data on disk is unusable beyond torn-tail recovery.
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
}

/// One committed version's metadata and what it changed.
#[derive(Debug, Clone)]
pub struct HistoryItem {
    /// The version.
    pub version: u64,
    /// The delta from the previous version (carries time, author, comment).
    pub delta: Arc<Delta>,
}

/// Durable, versioned configuration storage with compare-and-set.
///
/// Implementations are synchronous; async callers run them on a blocking thread.
pub trait Store: Send + Sync + 'static {
    /// The latest committed version.
    fn latest(&self) -> Arc<State>;

    /// Stores `next` as version `expected + 1` if the latest version is `expected`; `delta` is
    /// `latest.delta_to(&next)`. Returns only after the version is durable.
    fn commit(&self, expected: u64, next: State, delta: Delta) -> Result<Arc<State>, StoreError>;

    /// The state at `version`, if retained.
    fn get(&self, version: u64) -> Result<Arc<State>, StoreError>;

    /// Up to `limit` versions, newest first, strictly older than `before` (0 = from the latest).
    fn history(&self, before: u64, limit: usize) -> Vec<HistoryItem>;

    /// The deltas after `known` up to the latest, if all are retained.
    fn deltas_since(&self, known: u64) -> Option<Vec<Arc<Delta>>>;

    /// The oldest retained version.
    fn oldest(&self) -> u64;

    /// For a store that other processes write to (replicas of a shared log): the latest
    /// version it has applied, updated as versions arrive from anywhere, including this
    /// process's own commits. The service then publishes every version to its watchers from
    /// here instead of after its own commits. `None` (the default): only this process commits.
    fn applied_versions(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}
