//! Hands records to a cluster client's librdkafka producer through a topic handle made once per
//! route target: no per-record C string of the topic name (which rust-rdkafka's
//! `BaseProducer::send` builds for every record) and no topic lookup by name in librdkafka.
//!
//! The only `unsafe` code of the SDK lives here. It mirrors what rust-rdkafka's
//! `BaseProducer::send` does (same `rd_kafka_producev` arguments and ownership rules for the
//! delivery opaque and the headers), with `RD_KAFKA_VTYPE_RKT` instead of
//! `RD_KAFKA_VTYPE_TOPIC`.
#![allow(unsafe_code)]

use std::ffi::{CString, c_int, c_void};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::Producer as _;
use rdkafka::types::RDKafkaTopic;
use rdkafka::util::IntoOpaque;

use crate::error::Error;
use crate::producer::{ClusterProducer, Reports};
use crate::record::{Record, RecordRef};

/// What the cluster clients' delivery callback gets back for each record.
type Opaque = <Reports as rdkafka::producer::ProducerContext>::DeliveryOpaque;

/// librdkafka's "unassigned partition": the partitioner picks one (`RD_KAFKA_PARTITION_UA`).
const PARTITION_UA: i32 = -1;

/// A record on its way to the Kafka client: owned ([`Record`], awaited sends) or borrowed
/// ([`RecordRef`], callback sends).
pub(crate) trait Outgoing {
    fn key(&self) -> Option<&[u8]>;
    fn payload(&self) -> Option<&[u8]>;
    fn header_count(&self) -> usize;
    fn header(&self, i: usize) -> (&str, &[u8]);
}

impl Outgoing for Record {
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    fn payload(&self) -> Option<&[u8]> {
        self.payload.as_deref()
    }
    fn header_count(&self) -> usize {
        self.headers.len()
    }
    fn header(&self, i: usize) -> (&str, &[u8]) {
        let (k, v) = &self.headers[i];
        (k, v)
    }
}

impl Outgoing for RecordRef<'_> {
    fn key(&self) -> Option<&[u8]> {
        self.key
    }
    fn payload(&self) -> Option<&[u8]> {
        self.payload
    }
    fn header_count(&self) -> usize {
        self.headers.len()
    }
    fn header(&self, i: usize) -> (&str, &[u8]) {
        self.headers[i]
    }
}

/// How long ago librdkafka accepted the record of a delivery report (its own enqueue
/// timestamp), if it knows.
pub(crate) fn latency(m: &BorrowedMessage<'_>) -> Option<Duration> {
    // SAFETY: `m` wraps a live message for the duration of the borrow; the call only reads it.
    let us = unsafe { rdsys::rd_kafka_message_latency(m.ptr()) };
    u64::try_from(us).ok().map(Duration::from_micros)
}

/// A librdkafka topic handle for one physical topic on one cluster client, made once per
/// route target, so a send names its topic without a per-record C string and topic lookup.
/// Holds the client, so the handle is always destroyed before the client it belongs to.
pub(crate) struct TopicHandle {
    rkt: NonNull<RDKafkaTopic>,
    /// The client the handle belongs to.
    pub(crate) client: Arc<ClusterProducer>,
}

// SAFETY: librdkafka topic handles may be used and destroyed from any thread; the handle is
// only passed to librdkafka.
unsafe impl Send for TopicHandle {}
// SAFETY: as above (`rd_kafka_producev` is thread-safe).
unsafe impl Sync for TopicHandle {}

impl TopicHandle {
    pub(crate) fn new(client: Arc<ClusterProducer>, physical: &str) -> Result<Self, Error> {
        let name = CString::new(physical).map_err(|_| {
            Error::InvalidArgument(format!("physical topic {physical:?} contains a NUL byte"))
        })?;
        // SAFETY: the client pointer is live (we hold the client); `name` is NUL-terminated
        // and only read during the call; NULL conf means the client's default topic
        // configuration, as for a send that names its topic.
        let rkt = unsafe {
            rdsys::rd_kafka_topic_new(
                client.kafka().client().native_ptr(),
                name.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        let Some(rkt) = NonNull::new(rkt) else {
            // SAFETY: reads this thread's last librdkafka error; no pointers involved.
            let code = unsafe { rdsys::rd_kafka_last_error() };
            return Err(Error::Kafka {
                cluster: client.cluster.clone(),
                source: KafkaError::MessageProduction(code.into()),
            });
        };
        Ok(Self { rkt, client })
    }
}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: made by `rd_kafka_topic_new` on `self.client`, which is still alive (we hold
        // it), and destroyed once. Records already queued keep librdkafka's own reference.
        unsafe { rdsys::rd_kafka_topic_destroy(self.rkt.as_ptr()) };
    }
}

/// One attempt to hand `record` to the client's queue (librdkafka copies key, payload and
/// headers); on failure the report comes back.
#[allow(clippy::result_large_err)]
pub(crate) fn try_enqueue(
    topic: &TopicHandle,
    record: &impl Outgoing,
    report: Opaque,
) -> Result<(), (KafkaError, Opaque)> {
    fn bytes(b: Option<&[u8]>) -> (*mut c_void, usize) {
        b.map_or((std::ptr::null_mut(), 0), |b| {
            (b.as_ptr().cast_mut().cast(), b.len())
        })
    }
    let (key, key_len) = bytes(record.key());
    let (payload, payload_len) = bytes(record.payload());
    let n = record.header_count();
    let headers = if n == 0 {
        std::ptr::null_mut()
    } else {
        // SAFETY: a new, owned header list; each name and value is copied by
        // `rd_kafka_header_add` (lengths given explicitly, no NUL needed).
        unsafe {
            let h = rdsys::rd_kafka_headers_new(n);
            for i in 0..n {
                let (k, v) = record.header(i);
                rdsys::rd_kafka_header_add(
                    h,
                    k.as_ptr().cast(),
                    k.len() as isize,
                    v.as_ptr().cast(),
                    v.len() as isize,
                );
            }
            h
        }
    };
    let opaque = report.into_ptr();
    // SAFETY: the client and the topic handle are live (`topic` holds both); key, payload and
    // headers are valid for the call and copied (`RD_KAFKA_MSG_F_COPY`); the variadic
    // arguments are (type tag, value) pairs with the C types librdkafka reads for each tag,
    // exactly as rust-rdkafka's `BaseProducer::send` passes them; `opaque` is the
    // client's `ProducerContext::DeliveryOpaque` (by the type of `report`), which the client's
    // delivery callback (rust-rdkafka's) turns back into that type with
    // `IntoOpaque::from_ptr`, exactly once.
    let err = unsafe {
        rdsys::rd_kafka_producev(
            topic.client.kafka().client().native_ptr(),
            rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_RKT,
            topic.rkt.as_ptr(),
            rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_PARTITION,
            PARTITION_UA,
            rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_MSGFLAGS,
            rdsys::RD_KAFKA_MSG_F_COPY as c_int,
            rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_VALUE,
            payload,
            payload_len,
            rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_KEY,
            key,
            key_len,
            rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_OPAQUE,
            opaque,
            rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_HEADERS,
            headers,
            rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_END,
        )
    };
    if err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // The record, its headers and `opaque` now belong to the client.
        return Ok(());
    }
    // SAFETY: not enqueued, so the headers and the opaque are still ours: freed / taken back
    // once, here.
    let report = unsafe {
        if !headers.is_null() {
            rdsys::rd_kafka_headers_destroy(headers);
        }
        Opaque::from_ptr(opaque)
    };
    Err((KafkaError::MessageProduction(err.into()), report))
}

/// A cluster client's main event queue (delivery reports, statistics), to ask whether it
/// holds anything before polling: an application that polls after every send then pays one
/// queue-length read per poll instead of rdkafka's deadline bookkeeping (three clock reads).
/// Holds the client, so the queue reference is always released before the client.
pub(crate) struct MainQueue {
    rkqu: NonNull<rdsys::rd_kafka_queue_t>,
    _client: Arc<rdkafka::producer::BaseProducer<crate::producer::Reports>>,
}

// SAFETY: librdkafka queue handles may be used and destroyed from any thread; the handle is
// only passed to librdkafka.
unsafe impl Send for MainQueue {}
// SAFETY: as above (`rd_kafka_queue_length` locks the queue).
unsafe impl Sync for MainQueue {}

impl MainQueue {
    pub(crate) fn new(
        client: Arc<rdkafka::producer::BaseProducer<crate::producer::Reports>>,
    ) -> Option<Self> {
        // SAFETY: the client pointer is live (we hold the client); the call returns a new
        // reference to its main queue, released in `Drop`.
        let rkqu = unsafe { rdsys::rd_kafka_queue_get_main(client.client().native_ptr()) };
        NonNull::new(rkqu).map(|rkqu| Self {
            rkqu,
            _client: client,
        })
    }

    /// Whether the queue holds an event (a delivery report, statistics, an error) to serve.
    pub(crate) fn is_empty(&self) -> bool {
        // SAFETY: a live queue reference (released only in `Drop`); the call only reads it.
        unsafe { rdsys::rd_kafka_queue_length(self.rkqu.as_ptr()) == 0 }
    }
}

impl Drop for MainQueue {
    fn drop(&mut self) {
        // SAFETY: the reference taken in `new`, released once, before the client (held).
        unsafe { rdsys::rd_kafka_queue_destroy(self.rkqu.as_ptr()) };
    }
}
