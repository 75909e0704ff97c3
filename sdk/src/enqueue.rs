//! Hands records to a cluster client's librdkafka producer through a topic handle made once per
//! route target: no per-record C string of the topic name (which rust-rdkafka's
//! `BaseProducer::send` builds for every record) and no topic lookup by name in librdkafka.
//!
//! The only `unsafe` code of the SDK lives here. It mirrors what rust-rdkafka's
//! `BaseProducer::send` does (same `rd_kafka_producev` arguments and ownership rules for the
//! delivery opaque and the headers), with `RD_KAFKA_VTYPE_RKT` instead of
//! `RD_KAFKA_VTYPE_TOPIC`; and what its `BaseProducer::poll` does with the events of a client's
//! main queue ([`MainQueue::serve_one`]), handing a delivery-report event's reports over as
//! one batch instead of one call per record.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::bindings as rdsys;
use rdkafka::client::ClientContext as _;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::Producer as _;
use rdkafka::types::RDKafkaTopic;
use rdkafka::util::IntoOpaque;

use crate::error::Error;
use crate::producer::{ClusterProducer, Report, Reported, Reports};
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
    // SAFETY: `m` wraps a live message for the duration of the borrow.
    unsafe { message_latency(m.ptr()) }
}

/// [`latency`] of a message pointer.
///
/// # Safety
///
/// `m` points to a live message; the call only reads it.
unsafe fn message_latency(m: *const rdsys::rd_kafka_message_t) -> Option<Duration> {
    // SAFETY: the caller's contract.
    let us = unsafe { rdsys::rd_kafka_message_latency(m) };
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
    if topic.client.failure.recent().is_some() {
        // The cluster refused this client's credentials moments ago: fail now (the caller
        // names the reason) instead of waiting in the queue.
        return Err((
            KafkaError::MessageProduction(RDKafkaErrorCode::Authentication),
            report,
        ));
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

    /// Takes one event from the queue, waiting up to `timeout` for one, and serves it as
    /// rust-rdkafka's `BaseProducer::poll` would: the reports of a delivery-report event go to
    /// `on_reports`, all of them at once and in report order; statistics, errors and log lines
    /// go to `context`. Returns how many delivery reports it served.
    pub(crate) fn serve_one(
        &self,
        timeout: Duration,
        context: &Reports,
        on_reports: impl FnOnce(&mut [Dr<'_>]),
    ) -> usize {
        let ms = if timeout.is_zero() {
            0
        } else {
            c_int::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(c_int::MAX)
        };
        // SAFETY: a live queue reference; the event returned (or NULL) is ours to destroy,
        // which `Event`'s drop does once.
        let Some(ev) = NonNull::new(unsafe { rdsys::rd_kafka_queue_poll(self.rkqu.as_ptr(), ms) })
        else {
            return 0;
        };
        let ev = Event(ev);
        let ptr = ev.0.as_ptr();
        // SAFETY: a live event (destroyed only when `ev` drops, at the end of this function).
        match unsafe { rdsys::rd_kafka_event_type(ptr) } {
            rdsys::RD_KAFKA_EVENT_DR => {
                // SAFETY: as above; the messages belong to the event and stay valid until it is
                // destroyed, after every `Dr` (which borrows `ev`) is gone.
                let n = unsafe { rdsys::rd_kafka_event_message_count(ptr) };
                let mut drs = Vec::with_capacity(n);
                while let Some(m) =
                    // SAFETY: as above.
                    NonNull::new(
                        unsafe { rdsys::rd_kafka_event_message_next(ptr) }.cast_mut(),
                    )
                {
                    drs.push(Dr {
                        m,
                        taken: false,
                        _event: PhantomData,
                    });
                }
                let served = drs.len();
                on_reports(&mut drs);
                served
            }
            rdsys::RD_KAFKA_EVENT_STATS => {
                // SAFETY: a statistics event's JSON is a NUL-terminated string it owns.
                let json = unsafe { CStr::from_ptr(rdsys::rd_kafka_event_stats(ptr)) };
                context.stats_raw(json.to_bytes());
                0
            }
            rdsys::RD_KAFKA_EVENT_ERROR => {
                // SAFETY: an error event's code and NUL-terminated reason, owned by the event.
                let (code, reason) = unsafe {
                    (
                        rdsys::rd_kafka_event_error(ptr),
                        cstr(rdsys::rd_kafka_event_error_string(ptr)),
                    )
                };
                context.error(KafkaError::Global(code.into()), reason.trim());
                0
            }
            rdsys::RD_KAFKA_EVENT_LOG => {
                let (mut fac, mut text, mut level) = (std::ptr::null(), std::ptr::null(), 0);
                // SAFETY: out-pointers to locals; the strings belong to the event.
                if unsafe { rdsys::rd_kafka_event_log(ptr, &mut fac, &mut text, &mut level) } == 0 {
                    // SAFETY: NUL-terminated strings of the event (or NULL).
                    let (fac, text) = unsafe { (cstr(fac), cstr(text)) };
                    context.log(log_level(level), fac.trim(), text.trim());
                }
                0
            }
            // An OAuth token refresh (not enabled for these clients) or an event type rdkafka's
            // producer poll ignores as well.
            _ => 0,
        }
    }
}

/// A NUL-terminated C string of an event, lossily as UTF-8 ("" for NULL).
///
/// # Safety
///
/// `p` is NULL or NUL-terminated and valid while the result is used.
unsafe fn cstr<'a>(p: *const c_char) -> std::borrow::Cow<'a, str> {
    if p.is_null() {
        return "".into();
    }
    // SAFETY: the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy()
}

/// librdkafka's syslog-style log level as rdkafka's enum.
fn log_level(level: c_int) -> RDKafkaLogLevel {
    match level {
        0 => RDKafkaLogLevel::Emerg,
        1 => RDKafkaLogLevel::Alert,
        2 => RDKafkaLogLevel::Critical,
        3 => RDKafkaLogLevel::Error,
        4 => RDKafkaLogLevel::Warning,
        5 => RDKafkaLogLevel::Notice,
        6 => RDKafkaLogLevel::Info,
        _ => RDKafkaLogLevel::Debug,
    }
}

/// An event taken from a queue, destroyed when dropped.
struct Event(NonNull<rdsys::rd_kafka_event_t>);

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: returned by `rd_kafka_queue_poll`, destroyed once, here; its messages are no
        // longer borrowed (every `Dr` borrows the event's scope and is gone).
        unsafe { rdsys::rd_kafka_event_destroy(self.0.as_ptr()) };
    }
}

/// One delivery report of a delivery-report event being served: a record librdkafka wrote or
/// gave up on, with the report ([`Opaque`]) its send attached. Valid only while the event is
/// served. A report not taken ([`Dr::take_report`]) is taken and dropped with the `Dr`, so a
/// send is never left without its outcome (a dropped report completes with
/// [`crate::ErrorKind::Closed`]).
pub(crate) struct Dr<'e> {
    m: NonNull<rdsys::rd_kafka_message_t>,
    taken: bool,
    _event: PhantomData<&'e mut ()>,
}

impl Dr<'_> {
    fn msg(&self) -> &rdsys::rd_kafka_message_t {
        // SAFETY: the message belongs to the event being served, alive for `'e`.
        unsafe { self.m.as_ref() }
    }

    /// The report its send attached, still attached (`None` once taken).
    pub(crate) fn report(&mut self) -> Option<&mut Report> {
        let p = self.msg()._private;
        if self.taken || p.is_null() {
            return None;
        }
        // SAFETY: `_private` is the opaque `try_enqueue` attached: a `Box<Report>` turned into
        // a pointer by `IntoOpaque::into_ptr`, not taken yet (`taken`), and only reached
        // through this `Dr`, borrowed mutably here.
        Some(unsafe { &mut *p.cast::<Report>() })
    }

    /// Takes the report its send attached (once; `None` after).
    pub(crate) fn take_report(&mut self) -> Option<Opaque> {
        let p = self.msg()._private;
        if self.taken || p.is_null() {
            return None;
        }
        self.taken = true;
        // SAFETY: as in `report`; ownership comes back exactly once (`taken`).
        Some(unsafe { Opaque::from_ptr(p) })
    }
}

impl Reported for Dr<'_> {
    fn partition(&self) -> i32 {
        self.msg().partition
    }

    fn offset(&self) -> i64 {
        self.msg().offset
    }

    /// Why the record failed, if it did.
    fn error(&self) -> Option<KafkaError> {
        let e = self.msg().err;
        (e != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
            .then(|| KafkaError::MessageProduction(e.into()))
    }

    fn payload(&self) -> Option<&[u8]> {
        let m = self.msg();
        // SAFETY: librdkafka's copy of the payload, `len` bytes, owned by the message.
        (!m.payload.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(m.payload.cast::<u8>(), m.len) })
    }

    fn key(&self) -> Option<&[u8]> {
        let m = self.msg();
        // SAFETY: librdkafka's copy of the key, `key_len` bytes, owned by the message.
        (!m.key.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(m.key.cast::<u8>(), m.key_len) })
    }

    /// The record's headers, copied (name, value; an absent value as empty).
    fn headers(&self) -> Vec<(String, Bytes)> {
        let mut h = std::ptr::null_mut();
        // SAFETY: a live message; `h` receives the message's own header list (not ours to
        // free), or NULL.
        let err = unsafe { rdsys::rd_kafka_message_headers(self.m.as_ptr(), &mut h) };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || h.is_null() {
            return Vec::new();
        }
        // SAFETY: a live header list of the message.
        let n = unsafe { rdsys::rd_kafka_header_cnt(h) };
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0);
            // SAFETY: index below the count; out-pointers to locals; name and value belong
            // to the list.
            let err =
                unsafe { rdsys::rd_kafka_header_get_all(h, i, &mut name, &mut value, &mut size) };
            if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                continue;
            }
            // SAFETY: NUL-terminated name; `size` bytes of value (or NULL), owned by the list.
            let (name, value) = unsafe {
                (
                    cstr(name).into_owned(),
                    if value.is_null() {
                        Bytes::new()
                    } else {
                        Bytes::copy_from_slice(std::slice::from_raw_parts(value.cast::<u8>(), size))
                    },
                )
            };
            out.push((name, value));
        }
        out
    }

    /// How long ago librdkafka accepted the record (its own enqueue timestamp), if it knows.
    fn latency(&self) -> Option<Duration> {
        // SAFETY: a message of the event being served, alive for `'e`.
        unsafe { message_latency(self.m.as_ptr()) }
    }
}

impl Drop for Dr<'_> {
    fn drop(&mut self) {
        drop(self.take_report());
    }
}

impl Drop for MainQueue {
    fn drop(&mut self) {
        // SAFETY: the reference taken in `new`, released once, before the client (held).
        unsafe { rdsys::rd_kafka_queue_destroy(self.rkqu.as_ptr()) };
    }
}
