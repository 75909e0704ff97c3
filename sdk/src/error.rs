//! The SDK's one error type.

use crate::record::Record;

/// What kind of failure, for matching without depending on the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bad argument from the application.
    InvalidArgument,
    /// The logical topic is not in the configuration (or not allowed for this app).
    UnknownTopic,
    /// No configuration yet: the service is unreachable and there is no usable cache.
    NoConfig,
    /// The config service could not be reached or answered with an error.
    ConfigService,
    /// The last-known-good cache is unreadable or invalid.
    Cache,
    /// Kafka returned an error.
    Kafka,
    /// A send waited longer than allowed.
    Timeout,
    /// The client is shutting down.
    Closed,
    /// A quota with policy REJECT refused the send; retry later.
    QuotaExceeded,
}

/// A Switchyard SDK error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad argument from the application.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The logical topic is not routed.
    #[error("logical topic {topic:?} is not in configuration version {version}")]
    UnknownTopic {
        /// The topic.
        topic: String,
        /// The configuration version consulted.
        version: u64,
    },
    /// No configuration available.
    #[error("no configuration: {0}")]
    NoConfig(String),
    /// The config service failed.
    #[error("config service: {0}")]
    ConfigService(String),
    /// The cache could not be used.
    #[error("snapshot cache {path}: {reason}")]
    Cache {
        /// Cache file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Kafka failure.
    #[error("kafka ({cluster}): {source}")]
    Kafka {
        /// Cluster name.
        cluster: String,
        /// The rdkafka error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The topic is being moved (switched to its destination, not sealed yet) and the config
    /// service has not heard from this client for over half its lease, so the move may have
    /// been aborted without it: the send was held rather than written to a location the move
    /// may have abandoned, and failed after waiting [`crate::ProducerOptions::max_cut_off_hold`].
    /// The record was written nowhere; it can be sent again. Kind
    /// [`ErrorKind::ConfigService`].
    #[error(
        "logical topic {topic:?} is being moved (migration {migration}) and this client has not reached the config service for {silent_for:?} (over half its lease): the send was held for {held_for:?} and written nowhere; send it again once the service is reachable"
    )]
    CutOff {
        /// The logical topic.
        topic: String,
        /// The migration moving it.
        migration: String,
        /// Since the service last acknowledged this client's status report.
        silent_for: std::time::Duration,
        /// How long the send was held.
        held_for: std::time::Duration,
    },
    /// The cluster refused this client's connection in a way retrying does not fix by itself:
    /// wrong credentials, an untrusted server certificate, a refused client certificate. The
    /// record was not written. Kind [`ErrorKind::Kafka`]; retriable (the configuration may be
    /// corrected meanwhile).
    #[error("kafka ({cluster}): cannot connect: {reason}")]
    Connect {
        /// The cluster.
        cluster: String,
        /// librdkafka's reason.
        reason: String,
    },
    /// Timed out.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Shutting down.
    #[error("the client is closed")]
    Closed,
    /// A quota with policy REJECT refused the send (the record is returned in the
    /// [`SendError`]). Retriable: capacity comes back after `retry_after`.
    #[error(
        "quota exceeded on logical topic {topic:?}: {limit} = {rate} (quota for app {quota_app:?}, topic {quota_topic:?}, policy REJECT); capacity again in {retry_after:?}"
    )]
    QuotaExceeded {
        /// The logical topic.
        topic: String,
        /// The `app` of the quota entry that applies (an app name or `*`).
        quota_app: String,
        /// The `topic` of the quota entry that applies (a topic name or `*`).
        quota_topic: String,
        /// The limit that was reached (`produce_msgs_per_sec` or `produce_bytes_per_sec`).
        limit: &'static str,
        /// Its rate per second.
        rate: u64,
        /// When the record could pass (if nothing else takes the capacity first).
        retry_after: std::time::Duration,
    },
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::UnknownTopic { .. } => ErrorKind::UnknownTopic,
            Error::NoConfig(_) => ErrorKind::NoConfig,
            Error::ConfigService(_) | Error::CutOff { .. } => ErrorKind::ConfigService,
            Error::Cache { .. } => ErrorKind::Cache,
            Error::Kafka { .. } | Error::Connect { .. } => ErrorKind::Kafka,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Closed => ErrorKind::Closed,
            Error::QuotaExceeded { .. } => ErrorKind::QuotaExceeded,
        }
    }

    /// True when the same operation may succeed if tried again later.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Kafka { source, .. } => source
                .rdkafka_error_code()
                .map(is_retriable_code)
                .unwrap_or(false),
            Error::Timeout(_)
            | Error::ConfigService(_)
            | Error::NoConfig(_)
            | Error::QuotaExceeded { .. }
            | Error::CutOff { .. }
            | Error::Connect { .. } => true,
            _ => false,
        }
    }
}

fn is_retriable_code(code: rdkafka::types::RDKafkaErrorCode) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        code,
        C::QueueFull
            | C::MessageTimedOut
            | C::RequestTimedOut
            | C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::NotLeaderForPartition
            | C::LeaderNotAvailable
            | C::NetworkException
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::NotCoordinator
            | C::CoordinatorNotAvailable
            | C::CoordinatorLoadInProgress
            | C::UnknownTopicOrPartition
            | C::OperationTimedOut
    )
}

/// A failed send: the error, and the record given back to the caller (never silently re-sent
/// elsewhere).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct SendError {
    /// Why.
    #[source]
    pub error: Error,
    /// The record, unchanged.
    pub record: Record,
}

impl SendError {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }
    /// True when sending the record again may succeed.
    pub fn is_retriable(&self) -> bool {
        self.error.is_retriable()
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
