//! Records sent and received through the SDK.

use bytes::Bytes;

/// A record to send to a logical topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Logical topic.
    pub topic: String,
    /// Key; records with equal keys keep their order (same partition count and partitioner).
    pub key: Option<Bytes>,
    /// Value.
    pub payload: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(String, Bytes)>,
}

impl Record {
    /// A record for `topic`.
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            ..Default::default()
        }
    }
    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }
    /// Sets the payload.
    pub fn payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.payload = Some(payload.into());
        self
    }
    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Where a record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Logical topic.
    pub topic: String,
    /// Cluster it went to.
    pub cluster: String,
    /// Physical topic on that cluster.
    pub physical_topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Configuration version that routed it.
    pub version: u64,
}

/// A record read from a logical topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Logical topic.
    pub topic: String,
    /// Cluster it came from.
    pub cluster: String,
    /// Physical topic.
    pub physical_topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub payload: Option<Bytes>,
    /// Headers.
    pub headers: Vec<(String, Bytes)>,
    /// Kafka timestamp, ms since the epoch, if any.
    pub timestamp_ms: Option<i64>,
    /// Which member consumer read it (for commits).
    pub(crate) member: u64,
}
