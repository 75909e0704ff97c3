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

/// A record to send, borrowed from the caller: what [`crate::Producer::send_with_callback_ref`]
/// takes. The SDK copies it only when it must keep it (a send held during a route switch, or a
/// failed record handed back); otherwise the Kafka client's own copy is the only one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Logical topic.
    pub topic: &'a str,
    /// Key; records with equal keys keep their order (same partition count and partitioner).
    pub key: Option<&'a [u8]>,
    /// Value.
    pub payload: Option<&'a [u8]>,
    /// Headers (name, value), in order.
    pub headers: &'a [(&'a str, &'a [u8])],
}

impl<'a> RecordRef<'a> {
    /// A record for `topic` without key, payload or headers.
    pub fn new(topic: &'a str) -> Self {
        Self {
            topic,
            key: None,
            payload: None,
            headers: &[],
        }
    }

    /// An owned copy.
    pub fn to_record(&self) -> Record {
        Record {
            topic: self.topic.to_owned(),
            key: self.key.map(Bytes::copy_from_slice),
            payload: self.payload.map(Bytes::copy_from_slice),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Bytes::copy_from_slice(v)))
                .collect(),
        }
    }
}

/// Where a record was written, borrowed from the producer for the duration of a
/// [`crate::Producer::send_with_callback_ref`] callback (no copy of the names per record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryRef<'a> {
    /// Logical topic.
    pub topic: &'a str,
    /// Cluster it went to.
    pub cluster: &'a str,
    /// Physical topic on that cluster.
    pub physical_topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Configuration version that routed it.
    pub version: u64,
}

impl DeliveryRef<'_> {
    /// An owned copy.
    pub fn to_delivery(&self) -> Delivery {
        Delivery {
            topic: self.topic.to_owned(),
            cluster: self.cluster.to_owned(),
            physical_topic: self.physical_topic.to_owned(),
            partition: self.partition,
            offset: self.offset,
            version: self.version,
        }
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

impl Delivery {
    /// A borrowed view of it.
    pub fn view(&self) -> DeliveryRef<'_> {
        DeliveryRef {
            topic: &self.topic,
            cluster: &self.cluster,
            physical_topic: &self.physical_topic,
            partition: self.partition,
            offset: self.offset,
            version: self.version,
        }
    }
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
