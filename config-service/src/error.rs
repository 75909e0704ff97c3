//! Service errors and their one mapping to gRPC status codes.

use switchyard_proto::validate::ValidationError;
use tonic::Status;

use crate::store::StoreError;

/// Why a service operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The request is malformed or would make the configuration inconsistent.
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    /// Compare-and-set lost.
    #[error(
        "expected version {expected}, but the current version is {current}; re-read the configuration and retry"
    )]
    Conflict {
        /// What the caller expected.
        expected: u64,
        /// What the store has.
        current: u64,
    },
    /// A version that is not retained.
    #[error("{0}")]
    NotFound(String),
    /// The request is well formed but the system is not in a state that allows it (a
    /// migration in the wrong phase, a destination topic that does not fit).
    #[error("{0}")]
    Precondition(String),
    /// A dependency (a Kafka cluster) could not be reached or refused; worth retrying.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else; logged, never shown to the caller.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { expected, current } => Self::Conflict { expected, current },
            e @ StoreError::NotRetained { .. } => Self::NotFound(e.to_string()),
            StoreError::Unavailable(m) => Self::Unavailable(m),
            e => Self::Internal(e.to_string()),
        }
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(v) => Status::invalid_argument(v.to_string()),
            e @ ServiceError::Conflict { .. } => Status::failed_precondition(e.to_string()),
            ServiceError::NotFound(m) => Status::not_found(m),
            ServiceError::Precondition(m) => Status::failed_precondition(m),
            ServiceError::Unavailable(m) => Status::unavailable(m),
            ServiceError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Status::internal("internal error; see the config service logs")
            }
        }
    }
}

/// A blocking task that panicked or was cancelled.
impl From<tokio::task::JoinError> for ServiceError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Internal(format!("blocking task failed: {e}"))
    }
}
