//! The routed producer.
//!
//! Each logical topic has a *lane* holding its current target (cluster client + physical
//! topic). A send holds the lane's read side from enqueue until its delivery report; a route or
//! property change takes the write side, which (a) holds new sends to that topic, (b) waits for
//! every in-flight send to be delivered or failed back to its caller — the flush — and then
//! (c) swaps the target and hands the held sends to the new one itself, in the order they
//! arrived, before it lets new sends in. So records of one topic are never in flight to two
//! clusters at once, and the order of sends (the order in which their futures were first
//! polled) is kept across the switch, also for sends issued without awaiting each other.
//! A send that fails is returned to its caller with the record, never re-sent elsewhere.
//!
//! Two send paths share all of this: [`Producer::send`] (a future per record) and
//! [`Producer::send_with_callback`] (no future: the calling thread enqueues the record itself
//! and the callback runs where the delivery report is served: on the application's thread in
//! [`Producer::poll`], else on the client's report thread — see [`crate::reports`]). Each
//! cluster client is one rdkafka `BaseProducer` whose delivery handler completes either kind; a
//! callback send counts in its lane's gate from enqueue until its report, exactly like an
//! awaited send, so a switch waits for both, and sends of either kind that arrive while a lane
//! is closed wait in the same hold queue, in arrival order.
//!
//! Quotas (see [`crate::throttle`]) are checked before a send enters its lane: a blocked send
//! waits outside the lane, so it never holds up a route switch.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use parking_lot::Mutex;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{
    BaseProducer, DeliveryResult, Producer as _, ProducerContext, PurgeConfig,
};
use rustc_hash::FxHashMap;
use switchyard_proto::v1::ClientEndpoint;
use tokio::sync::oneshot;

use crate::enqueue::{Dr, Outgoing, TopicHandle, try_enqueue};
use crate::error::{Error, SendError};
use crate::gate::Gate;
use crate::metadata::{Metadata, Route};
use crate::metrics::{Direction, SendHandles};
use crate::record::{Delivery, DeliveryRef, Record, RecordRef};
use crate::reports::{ReportDuty, Served, WantReports};
use crate::status::{Counted, StatusSource};
use crate::throttle::{self, ThrottleCounters, ThrottleStats, WaitQueue};
use crate::watch::Shared;

/// Longest single wait of [`Producer::poll`] before it looks again (the first report is taken
/// within about this long).
const POLL_SLICE: Duration = Duration::from_millis(1);

/// Properties every SDK producer starts from (the service and the app can override them).
const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    // No duplicates from internal retries, and retries never reorder a partition.
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("linger.ms", "5"),
];

/// Default for [`ProducerOptions::idle_client_close`].
const CLIENT_IDLE_CLOSE: Duration = Duration::from_secs(30);

/// How long a send waits for room in a full local queue before failing.
const QUEUE_FULL_WAIT: Duration = Duration::from_secs(30);

/// How long [`Producer::send_with_callback`] blocks its thread for quota capacity (BLOCK)
/// before failing with [`crate::ErrorKind::Timeout`].
pub const QUOTA_BLOCK_WAIT: Duration = Duration::from_secs(30);

/// How long dropping a cluster client serves the reports of callback sends it purges.
const DROP_REPORT_WAIT: Duration = Duration::from_secs(5);

/// The completion of a [`Producer::send_with_callback`], boxed.
pub type SendCallback = Box<dyn FnOnce(Result<Delivery, SendError>) + Send + 'static>;

/// The completion of a [`Producer::send_with_callback_ref`], boxed: it gets the delivery
/// borrowed for the duration of the call.
pub type SendRefCallback =
    Box<dyn for<'a> FnOnce(Result<DeliveryRef<'a>, SendError>) + Send + 'static>;

/// Receives the outcomes of sends made with [`Producer::send_with_handler`] or
/// [`TopicProducer::send_with_handler`]: one shared object for many sends instead of a boxed
/// callback per send (a send then costs one allocation less), told apart by the `token` each
/// send passes — two words, e.g. a function pointer and its argument.
pub trait DeliveryHandler: Send + Sync {
    /// Called exactly once for every send the handler was given and that was accepted, with
    /// that send's `token`: where and when [`Producer::send_with_callback_ref`] would run its
    /// callback, with the same result.
    fn delivered(&self, token: [usize; 2], result: Result<DeliveryRef<'_>, SendError>);
}

/// Whom a callback send completes.
pub(crate) enum Notify {
    Callback(SendRefCallback),
    Handler(HandlerCall),
}

impl Notify {
    fn handler<H: DeliveryHandler + 'static>(h: &Arc<H>, token: [usize; 2]) -> Self {
        Self::Handler(HandlerCall {
            handler: Some(h.clone()),
            token,
        })
    }

    fn call(self, result: Result<DeliveryRef<'_>, SendError>) {
        match self {
            Self::Callback(cb) => cb(result),
            Self::Handler(mut h) => {
                if let Some(handler) = h.handler.take() {
                    handler.delivered(h.token, result);
                }
            }
        }
    }

    /// The completion as a callback, to hand back to the caller of a send that failed at once.
    fn into_callback(self) -> SendRefCallback {
        match self {
            Self::Callback(cb) => cb,
            Self::Handler(h) => Box::new(move |r| Self::Handler(h).call(r)),
        }
    }

    /// Drops it without calling it (a handler send that failed at once: the caller is told by
    /// the error it gets back).
    fn defuse(self) {
        if let Self::Handler(mut h) = self {
            h.handler = None;
        }
    }
}

/// A handler with the token of one send; called once — if dropped uncalled, with
/// [`Error::Closed`], so a handler never loses a send.
pub(crate) struct HandlerCall {
    handler: Option<Arc<dyn DeliveryHandler>>,
    token: [usize; 2],
}

impl Drop for HandlerCall {
    fn drop(&mut self) {
        if let Some(h) = self.handler.take() {
            h.delivered(
                self.token,
                Err(SendError {
                    error: Error::Closed,
                    record: Record::new(String::new()),
                }),
            );
        }
    }
}

thread_local! {
    /// Set while a thread runs a send's callback from a delivery report: a callback send made
    /// there does not wait for room in a full queue (the queue empties only as reports are
    /// served), and a cluster client dropped there is closed on another thread (closing joins
    /// the client's report thread).
    static ON_REPORT_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// One logical topic of a [`Producer`], named once: see [`Producer::topic`]. Cheap to clone.
#[derive(Clone)]
pub struct TopicProducer {
    producer: Producer,
    lane: Arc<Lane>,
}

impl std::fmt::Debug for TopicProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicProducer")
            .field("topic", &self.lane.logical)
            .finish()
    }
}

impl TopicProducer {
    /// The logical topic.
    pub fn topic(&self) -> &str {
        &self.lane.logical
    }

    /// The producer it belongs to.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// A record to this topic.
    fn record<'r>(
        &'r self,
        key: Option<&'r [u8]>,
        payload: Option<&'r [u8]>,
        headers: &'r [(&'r str, &'r [u8])],
    ) -> RecordRef<'r> {
        RecordRef {
            topic: &self.lane.logical,
            key,
            payload,
            headers,
        }
    }

    /// [`Producer::send_with_callback_ref`] of a record to this topic (key, payload and
    /// headers borrowed), without the topic lookup. Same guarantees, errors and blocking.
    #[allow(clippy::result_large_err)]
    pub fn send_with_callback_ref<F>(
        &self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: &[(&str, &[u8])],
        callback: F,
    ) -> Result<(), (SendError, SendRefCallback)>
    where
        F: for<'a> FnOnce(Result<DeliveryRef<'a>, SendError>) + Send + 'static,
    {
        self.producer
            .send_ref_on(
                &self.lane,
                self.record(key, payload, headers),
                Notify::Callback(Box::new(callback)),
            )
            .map_err(|(e, n)| (e, n.into_callback()))
    }

    /// [`Producer::send_with_handler`] of a record to this topic, without the topic lookup.
    #[allow(clippy::result_large_err)]
    pub fn send_with_handler<H: DeliveryHandler + 'static>(
        &self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: &[(&str, &[u8])],
        handler: &Arc<H>,
        token: [usize; 2],
    ) -> Result<(), SendError> {
        self.producer
            .send_ref_on(
                &self.lane,
                self.record(key, payload, headers),
                Notify::handler(handler, token),
            )
            .map_err(|(e, n)| {
                n.defuse();
                e
            })
    }
}

/// Settings for a [`Producer`].
#[derive(Debug, Clone)]
pub struct ProducerOptions {
    /// Extra producer properties from the application's code (below enforced ones).
    pub properties: BTreeMap<String, String>,
    /// How long a cluster client no route uses is kept before it is flushed and closed (a
    /// route that flips back soon reuses it instead of paying a new connection and producer
    /// id). Default 30 s.
    pub idle_client_close: Duration,
    /// Longest a topic's sends are held while an aborted migration's records are copied back
    /// to the source (the coordinator normally releases them within a second or two). Past it
    /// the held sends go out anyway — availability before order — with a warning. Default 30 s.
    pub max_abort_hold: Duration,
    /// Longest a route switch waits for the sends in flight to the old location (the flush)
    /// before it switches anyway. A degraded old cluster would otherwise hold every send to the
    /// topic — and a migration's abort — for librdkafka's `message.timeout.ms` (300 s by
    /// default). Past it, new sends go to the new location while the old ones still complete
    /// (delivered or failed back to their callers, never re-sent); one still delivered to a
    /// migration's source after that is a late write, copied by the coordinator, so per-key
    /// order for those records is no longer guaranteed. Default 15 s.
    pub max_switch_flush: Duration,
    /// Longest a send waits while this client is cut off from the config service and its topic
    /// is in the middle of a move (switched to the destination, not sealed yet). The
    /// coordinator forgets a silent client when its lease ends and may then abort the move
    /// without it; a record written to the abandoned destination after the copy-back would
    /// reach no group. So once the service has not acknowledged this client for half its lease,
    /// such sends are held; they go on to wherever the topic is once the client has reached
    /// the service and applied its newest version, or fail with [`Error::CutOff`] (written
    /// nowhere) after this long. Sends to topics not being moved are never held. Default 30 s.
    pub max_cut_off_hold: Duration,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        Self {
            properties: BTreeMap::new(),
            idle_client_close: CLIENT_IDLE_CLOSE,
            max_abort_hold: Duration::from_secs(30),
            max_switch_flush: Duration::from_secs(15),
            max_cut_off_hold: Duration::from_secs(30),
        }
    }
}

/// Sends records to logical topics; cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<ProducerInner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("lanes", &self.inner.lanes.load().len())
            .finish()
    }
}

pub(crate) struct ProducerInner {
    shared: Arc<Shared>,
    props: BTreeMap<String, String>,
    idle_close: Duration,
    max_abort_hold: Duration,
    max_switch_flush: Duration,
    max_cut_off_hold: Duration,
    lanes: ArcSwap<FxHashMap<String, Arc<Lane>>>,
    /// Serialises lane creation (never held across an await, so a send that creates a lane
    /// is not overtaken by a later one).
    create_mu: Mutex<()>,
    /// Asks the router for another pass: a lane was created from a version older than the
    /// newest one, which the router's pass may not have seen it for.
    rerun: Arc<tokio::sync::Notify>,
    clients: Mutex<HashMap<(String, u64), Arc<ClusterProducer>>>,
    /// The same clients, for [`Producer::poll`] (replaced whenever `clients` changes).
    client_list: ArcSwap<Vec<Arc<ClusterProducer>>>,
    /// Whether the application serves the reports ([`Producer::poll`]).
    duty: Arc<ReportDuty>,
    /// Clients no lane uses, and since when.
    idle: Mutex<HashMap<(String, u64), Instant>>,
    route_changes: AtomicU64,
    throttle: ThrottleCounters,
    /// The runtime the producer was made in: callback sends that must wait for quota capacity
    /// block on it.
    rt: tokio::runtime::Handle,
}

pub(crate) struct ClusterProducer {
    pub(crate) cluster: String,
    fingerprint: u64,
    /// Its last failure to connect that retrying does not fix by itself (see [`Reports`]).
    pub(crate) failure: Arc<ConnectFailure>,
    /// For an idempotent client: whether it has its producer id (see [`Reports`]).
    pid_assigned: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Always `Some` until dropped (taken by `Drop`).
    producer: Option<Served>,
}

impl ClusterProducer {
    pub(crate) fn kafka(&self) -> &BaseProducer<Reports> {
        &self
            .producer
            .as_ref()
            .expect("the client is only taken when dropped")
            .producer
    }
}

impl Drop for ClusterProducer {
    /// Purges what is still queued and serves the purged records' reports, so every callback
    /// send gets its callback ([`Error::Closed`]). Awaited sends keep their client alive (their
    /// future holds it), so only callback sends can be in flight here.
    fn drop(&mut self) {
        let Some(mut served) = self.producer.take() else {
            return;
        };
        let close = move || {
            served.stop();
            let p = &served.producer;
            if p.in_flight_count() > 0 {
                p.purge(PurgeConfig::default().queue().inflight());
                let deadline = Instant::now() + DROP_REPORT_WAIT;
                while p.in_flight_count() > 0 && Instant::now() < deadline {
                    p.poll(Duration::from_millis(10));
                }
            }
            drop(served);
        };
        if ON_REPORT_THREAD.get() {
            // Dropping a client joins its report thread, which may be this one.
            let _ = std::thread::Builder::new()
                .name("switchyard-close".into())
                .spawn(close);
        } else {
            close();
        }
    }
}

/// The cluster clients' context: hands each delivery report to the send waiting for it,
/// watches the idempotent producer's state in the client's statistics, and records failures to
/// connect that retrying does not fix by itself (wrong credentials, an untrusted or refused
/// certificate).
pub(crate) struct Reports {
    /// Whether the idempotent producer has its producer id (librdkafka's `eos.idemp_state` is
    /// `Assigned`): until then its first records wait in the queue. Updated on every
    /// statistics report ([`PID_STATS_INTERVAL_MS`]).
    pid_assigned: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) failure: Arc<ConnectFailure>,
    cluster: String,
}

/// How long after a failure to authenticate (or to agree on TLS) new sends to the cluster fail
/// at once instead of waiting in the client's queue. librdkafka keeps reconnecting meanwhile;
/// a send after this window waits for the next attempt, which fails it again or succeeds.
const FAIL_FAST: Duration = Duration::from_secs(10);

/// A cluster client's last failure to connect that retrying does not fix by itself.
///
/// librdkafka reports such a failure as an error event and keeps the records in its queue,
/// retrying until `message.timeout.ms` (300 s by default) ends: a send with a wrong password
/// would hang for five minutes and then fail without saying why. So the failure is recorded,
/// the client's queue is purged (the report thread does it after the event), and every record
/// purged, and every send within [`FAIL_FAST`] after it, fails with [`Error::Connect`] naming
/// the cluster and librdkafka's reason. A delivered record clears it.
#[derive(Default)]
pub(crate) struct ConnectFailure {
    last: Mutex<Option<(Instant, String)>>,
    /// Set with `last`: the report thread purges the client's queue.
    purge: AtomicBool,
    /// Whether `last` is set (read on every delivered batch).
    set: AtomicBool,
}

impl ConnectFailure {
    fn record(&self, reason: String) {
        *self.last.lock() = Some((Instant::now(), reason));
        self.set.store(true, Ordering::Release);
        self.purge.store(true, Ordering::Release);
    }

    /// The reason of a failure recorded within [`FAIL_FAST`].
    pub(crate) fn recent(&self) -> Option<String> {
        if !self.set.load(Ordering::Acquire) {
            return None;
        }
        self.last
            .lock()
            .as_ref()
            .filter(|(at, _)| at.elapsed() < FAIL_FAST)
            .map(|(_, r)| r.clone())
    }

    /// The reason of the last failure, however old (for records purged because of it).
    fn reason(&self) -> Option<String> {
        if !self.set.load(Ordering::Acquire) {
            return None;
        }
        self.last.lock().as_ref().map(|(_, r)| r.clone())
    }

    fn clear(&self) {
        if self.set.swap(false, Ordering::AcqRel) {
            *self.last.lock() = None;
        }
    }

    /// Whether the client's queue must be purged now (once per recorded failure).
    pub(crate) fn take_purge(&self) -> bool {
        self.purge.swap(false, Ordering::AcqRel)
    }
}

/// Whether an error event of a client is a failure to connect that retrying does not fix by
/// itself: an authentication failure, a TLS failure on this side (an untrusted server
/// certificate), or a TLS alert from the broker (it refused this client's certificate), which
/// librdkafka reports as a transport failure with the alert in its reason.
pub(crate) fn is_connect_failure(e: &KafkaError, reason: &str) -> bool {
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::SSL,
        ) => true,
        Some(RDKafkaErrorCode::BrokerTransportFailure) => reason.contains("SSL alert number"),
        _ => false,
    }
}

/// How often an idempotent cluster client reports its statistics (read only for its
/// producer-id state; a few hundred bytes for one topic).
const PID_STATS_INTERVAL_MS: &str = "100";

impl ClientContext for Reports {
    fn error(&self, error: KafkaError, reason: &str) {
        if is_connect_failure(&error, reason) {
            tracing::error!(cluster = %self.cluster, %reason, "cannot connect to the cluster; failing its queued sends");
            self.failure.record(reason.to_string());
        } else if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            // Follows every failed connection attempt; the attempt's own error says why.
            tracing::debug!(cluster = %self.cluster, %reason, "all brokers down");
        } else {
            tracing::warn!(cluster = %self.cluster, %error, %reason, "librdkafka error");
        }
    }

    fn stats_raw(&self, statistics: &[u8]) {
        if let Some(state) = idemp_state(statistics) {
            self.pid_assigned
                .store(state == b"Assigned", Ordering::Release);
        }
    }
}

/// The value of `"idemp_state": "…"` in librdkafka's statistics JSON.
fn idemp_state(json: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"idemp_state\"";
    let at = json.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &json[at..];
    let open = rest.iter().position(|b| *b == b'"')? + 1;
    let len = rest[open..].iter().position(|b| *b == b'"')?;
    Some(&rest[open..open + len])
}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<Report>;

    /// A report served by rdkafka's own poll (its flush, or a client closing): completed
    /// right away. The application's polls and the report threads serve reports a batch at a
    /// time instead ([`Reports::serve_batch`]).
    fn delivery(&self, result: &DeliveryResult<'_>, report: Box<Report>) {
        let r = Borrowed(result);
        match *report {
            Report::Future(tx) => {
                let _ = tx.send(r.outcome());
            }
            Report::Callback(mut send) => {
                send.settle(&r.facts(), None);
                let prev = ON_REPORT_THREAD.replace(true);
                send.finish(&r);
                ON_REPORT_THREAD.set(prev);
            }
        }
    }
}

impl Reports {
    /// Serves one batch of delivery reports (one librdkafka event): every record is settled
    /// first — it leaves its lane's gate and is counted, into one tally per send context, so
    /// the shared counters and metrics are updated once per batch — then the sends complete,
    /// callbacks in report order. So a callback never sees counters without its record, and
    /// it runs once its batch has left librdkafka's queue.
    pub(crate) fn serve_batch(&self, drs: &mut [Dr<'_>]) {
        if self.failure.set.load(Ordering::Acquire) && drs.iter().any(|d| d.error().is_none()) {
            self.failure.clear();
        }
        let mut tally = Tally::default();
        for dr in drs.iter_mut() {
            if !matches!(dr.report(), Some(Report::Callback(_))) {
                continue;
            }
            let facts = dr.facts();
            if let Some(Report::Callback(send)) = dr.report() {
                send.settle(&facts, Some(&mut tally));
            }
        }
        tally.flush();
        let prev = ON_REPORT_THREAD.replace(true);
        for dr in drs.iter_mut() {
            let Some(report) = dr.take_report() else {
                continue;
            };
            match *report {
                Report::Future(tx) => {
                    let _ = tx.send(dr.outcome());
                }
                Report::Callback(send) => send.finish(&*dr),
            }
        }
        ON_REPORT_THREAD.set(prev);
    }
}

/// A delivery report as the SDK reads it: from a batch it serves ([`Dr`]) or from rdkafka's
/// own poll ([`Borrowed`]).
pub(crate) trait Reported {
    fn partition(&self) -> i32;
    fn offset(&self) -> i64;
    /// Why the record failed, if it did.
    fn error(&self) -> Option<KafkaError>;
    /// The record as librdkafka copied it (for a failed record, handed back).
    fn key(&self) -> Option<&[u8]>;
    fn payload(&self) -> Option<&[u8]>;
    fn headers(&self) -> Vec<(String, Bytes)>;
    /// How long ago librdkafka accepted the record (its own enqueue timestamp).
    fn latency(&self) -> Option<Duration>;

    /// What counting the record needs.
    fn facts(&self) -> Facts {
        let error = self.error();
        Facts {
            bytes: if error.is_none() {
                self.payload().map_or(0, <[u8]>::len) as u64
            } else {
                0
            },
            latency: if error.is_none() {
                self.latency()
            } else {
                None
            },
            error,
        }
    }

    /// The outcome an awaited send gets.
    fn outcome(&self) -> Result<(i32, i64), KafkaError> {
        match self.error() {
            None => Ok((self.partition(), self.offset())),
            Some(e) => Err(e),
        }
    }
}

/// A report from rdkafka's own poll.
struct Borrowed<'a, 'b>(&'a DeliveryResult<'b>);

impl Borrowed<'_, '_> {
    fn message(&self) -> &rdkafka::message::BorrowedMessage<'_> {
        match self.0 {
            Ok(m) | Err((_, m)) => m,
        }
    }
}

impl Reported for Borrowed<'_, '_> {
    fn partition(&self) -> i32 {
        self.message().partition()
    }
    fn offset(&self) -> i64 {
        self.message().offset()
    }
    fn error(&self) -> Option<KafkaError> {
        self.0.as_ref().err().map(|(e, _)| e.clone())
    }
    fn key(&self) -> Option<&[u8]> {
        self.message().key()
    }
    fn payload(&self) -> Option<&[u8]> {
        self.message().payload()
    }
    fn headers(&self) -> Vec<(String, Bytes)> {
        self.message().headers().map_or_else(Vec::new, |h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_string(),
                        h.value.map(Bytes::copy_from_slice).unwrap_or_default(),
                    )
                })
                .collect()
        })
    }
    fn latency(&self) -> Option<Duration> {
        crate::enqueue::latency(self.message())
    }
}

/// What counting one report needs.
pub(crate) struct Facts {
    error: Option<KafkaError>,
    /// Payload bytes delivered (0 for a failed record).
    bytes: u64,
    latency: Option<Duration>,
}

/// Whom a delivery report goes to.
pub(crate) enum Report {
    /// An awaited send ([`Producer::send`]).
    Future(oneshot::Sender<Result<(i32, i64), KafkaError>>),
    /// A callback send ([`Producer::send_with_callback`]).
    Callback(CallbackSend),
}

/// A callback send in flight: one count in its lane's gate, released when the report comes
/// (or when dropped unreported, with [`Error::Closed`]). Holds no cluster client, so the
/// report thread never drops one.
pub(crate) struct CallbackSend {
    /// The target it was enqueued on (one reference count per send).
    ctx: Arc<SendContext>,
    /// The record's key and payload were `Some` (librdkafka reports an empty one as absent).
    key_some: bool,
    payload_some: bool,
    /// Its report came: the gate was left and the outcome counted; only the callback is left.
    settled: bool,
    /// Taken when run. (In a mutex only to make the report `Sync`, as rdkafka requires; it is
    /// only ever reached through `&mut`, which never locks.)
    callback: Mutex<Option<Notify>>,
}

impl CallbackSend {
    /// Settles the send with its report: leaves the gate (first, as `send` does, so a switch
    /// never waits for a callback) and counts the outcome, into `tally` when serving a batch.
    fn settle(&mut self, facts: &Facts, tally: Option<&mut Tally>) {
        if self.settled {
            return;
        }
        self.settled = true;
        self.ctx.flight.gate.leave();
        match &facts.error {
            None => match tally {
                Some(t) => t.add(&self.ctx, facts.bytes, facts.latency),
                None => self.ctx.count_sent(1, facts.bytes, facts.latency),
            },
            Some(e) => {
                self.ctx.flight.failed.fetch_add(1, Ordering::Relaxed);
                self.ctx.registry.send_error(
                    &self.ctx.route.logical,
                    &self.ctx.route.cluster.name,
                    &self.error_of(e),
                );
            }
        }
    }

    /// What a send that failed in librdkafka failed with.
    fn error_of(&self, e: &KafkaError) -> Error {
        match e {
            KafkaError::MessageProduction(
                RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight,
            ) => match self.ctx.failure.as_ref().and_then(|f| f.reason()) {
                Some(reason) => Error::Connect {
                    cluster: self.ctx.route.cluster.name.clone(),
                    reason,
                },
                None => Error::Closed,
            },
            e => Error::Kafka {
                cluster: self.ctx.route.cluster.name.clone(),
                source: e.clone(),
            },
        }
    }

    /// Completes a settled send: runs its callback with the delivery (names borrowed from the
    /// route, which the send's context keeps alive) or with the failed record, rebuilt from
    /// librdkafka's copy (byte for byte what was sent).
    fn finish(mut self, r: &impl Reported) {
        let Some(callback) = self.callback.get_mut().take() else {
            return;
        };
        let ctx = &self.ctx;
        let out = match r.error() {
            None => Ok(DeliveryRef {
                topic: &ctx.route.logical,
                cluster: &ctx.route.cluster.name,
                physical_topic: &ctx.route.physical,
                partition: r.partition(),
                offset: r.offset(),
                version: ctx.version,
            }),
            Some(e) => Err(SendError {
                error: self.error_of(&e),
                record: Record {
                    topic: ctx.route.logical.clone(),
                    key: r
                        .key()
                        .map(Bytes::copy_from_slice)
                        .or_else(|| self.key_some.then(Bytes::new)),
                    payload: r
                        .payload()
                        .map(Bytes::copy_from_slice)
                        .or_else(|| self.payload_some.then(Bytes::new)),
                    headers: r.headers(),
                },
            }),
        };
        callback.call(out);
    }
}

impl Drop for CallbackSend {
    fn drop(&mut self) {
        if !self.settled {
            self.ctx.flight.gate.leave();
        }
        if let Some(callback) = self.callback.get_mut().take() {
            callback.call(Err(SendError {
                error: Error::Closed,
                record: Record::new(self.ctx.route.logical.clone()),
            }));
        }
    }
}

/// Delivered records counted for one send context while serving a batch of reports, added to
/// the shared counters and metrics once per batch instead of once per record.
#[derive(Default)]
pub(crate) struct Tally {
    ctx: Option<Arc<SendContext>>,
    sent: u64,
    bytes: u64,
    latency: Option<prometheus::local::LocalHistogram>,
}

impl Tally {
    fn add(&mut self, ctx: &Arc<SendContext>, bytes: u64, latency: Option<Duration>) {
        if !self.ctx.as_ref().is_some_and(|c| Arc::ptr_eq(c, ctx)) {
            self.flush();
            self.latency = ctx.metrics.as_ref().map(|h| h.latency.local());
            self.ctx = Some(ctx.clone());
        }
        self.sent += 1;
        self.bytes += bytes;
        if let (Some(h), Some(l)) = (&self.latency, latency) {
            h.observe(l.as_secs_f64());
        }
    }

    /// Adds what was counted to the shared counters and metrics.
    fn flush(&mut self) {
        let Some(ctx) = self.ctx.take() else {
            return;
        };
        ctx.count_sent(
            std::mem::take(&mut self.sent),
            std::mem::take(&mut self.bytes),
            None,
        );
        if let Some(h) = self.latency.take() {
            h.flush();
        }
    }
}

/// A lane's in-flight count and counters, shared with callback sends in flight (it holds no
/// cluster client).
#[derive(Default)]
struct Flight {
    /// Sends in flight to the lane's target; closed while the target is swapped.
    gate: Gate,
    sent: AtomicU64,
    bytes: AtomicU64,
    failed: AtomicU64,
}

impl Flight {
    /// Counts a send's outcome.
    #[allow(clippy::result_large_err)]
    fn count<T>(&self, out: Result<T, SendError>, bytes: usize) -> Result<T, SendError> {
        match &out {
            Ok(_) => {
                self.sent.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        out
    }

    /// Counts a send's outcome and makes its result (the same `Result` as `send` returns).
    #[allow(clippy::result_large_err)]
    fn finish(
        &self,
        route: &Route,
        version: u64,
        out: Result<(i32, i64), SendError>,
        bytes: usize,
    ) -> Result<Delivery, SendError> {
        self.count(out, bytes).map(|(partition, offset)| Delivery {
            topic: route.logical.clone(),
            cluster: route.cluster.name.clone(),
            physical_topic: route.physical.clone(),
            partition,
            offset,
            version,
        })
    }
}

struct Lane {
    logical: String,
    /// In-flight count (the gate) and counters.
    flight: Arc<Flight>,
    target: ArcSwap<Target>,
    /// Sends waiting for quota capacity, in order.
    quota_wait: WaitQueue,
    /// Sends that arrived while the gate was closed, in arrival order; the switcher starts
    /// them on the new target before it opens the gate.
    held: Mutex<VecDeque<Held>>,
    /// An aborted migration's hold (see `MigratingFrom.hold_sends`). Only the router touches it.
    hold: Mutex<Hold>,
}

/// Whether a lane holds its sends, for an aborted migration or while cut off from the
/// service.
#[derive(Default)]
struct Hold {
    /// Holding (the gate stays closed after the switch) since then.
    since: Option<Instant>,
    /// Why: `Some(migration)` while cut off from the service during that migration (held sends
    /// fail after `max_cut_off_hold`); `None` for an aborted migration's copy-back.
    cut_off: Option<String>,
    /// The migration whose hold this lane gave up after the longest hold.
    gave_up: Option<String>,
}

/// One in-flight send counted by a lane's gate; leaves the gate when dropped.
struct InFlight<'a>(&'a Gate);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// What the switcher answers a held awaited send: its record enqueued on the new target (the
/// send now owns one count in the gate), or the error with the record.
type Handoff = Result<(ReportRx, Arc<Target>, Record), SendError>;

/// The delivery report of an awaited send.
type ReportRx = oneshot::Receiver<Result<(i32, i64), KafkaError>>;

/// Who waits for a held send.
enum Waiter {
    /// An awaited send, answered by the switcher.
    Future(oneshot::Sender<Handoff>),
    /// A callback send: the switcher enqueues it itself (or runs the callback with the error).
    Callback(Notify),
}

/// A send waiting in a closed lane.
struct Held {
    record: Record,
    waiter: Option<Waiter>,
    /// When it was held.
    at: Instant,
}

impl Held {
    fn take(&mut self) -> (Record, Option<Waiter>) {
        let empty = Record {
            topic: String::new(),
            key: None,
            payload: None,
            headers: Vec::new(),
        };
        (
            std::mem::replace(&mut self.record, empty),
            self.waiter.take(),
        )
    }

    /// Answers the send with `error` (its record handed back).
    fn fail(mut self, error: Error) {
        let (record, waiter) = self.take();
        let e = SendError { error, record };
        match waiter {
            Some(Waiter::Future(reply)) => {
                let _ = reply.send(Err(e));
            }
            Some(Waiter::Callback(cb)) => cb.call(Err(e)),
            None => {}
        }
    }
}

impl Drop for Held {
    /// A held send is always answered, also when the switch is abandoned (runtime shutdown).
    fn drop(&mut self) {
        let (record, waiter) = self.take();
        let e = SendError {
            error: Error::Closed,
            record,
        };
        match waiter {
            Some(Waiter::Future(reply)) => {
                let _ = reply.send(Err(e));
            }
            Some(Waiter::Callback(cb)) => cb.call(Err(e)),
            None => {}
        }
    }
}

#[derive(Clone, Default)]
struct Target {
    version: u64,
    route: Option<Arc<Route>>,
    client: Option<Arc<ClusterProducer>>,
    /// The route's physical topic on `client` (set exactly when both are).
    topic: Option<Arc<TopicHandle>>,
    /// Metric handles of (logical topic, this target's cluster).
    metrics: Option<SendHandles>,
    /// What callback sends enqueued on this target report with (set exactly when `route` is).
    ctx: Option<Arc<SendContext>>,
}

impl Target {
    fn new(
        version: u64,
        route: Option<Arc<Route>>,
        client: Option<(Arc<ClusterProducer>, Arc<TopicHandle>)>,
        metrics: Option<SendHandles>,
        flight: &Arc<Flight>,
        registry: &crate::metrics::Metrics,
    ) -> Self {
        let failure = client.as_ref().map(|(c, _)| c.failure.clone());
        let ctx = route.as_ref().map(|r| {
            Arc::new(SendContext {
                flight: flight.clone(),
                route: r.clone(),
                failure: failure.clone(),
                version,
                metrics: metrics.clone(),
                registry: registry.clone(),
            })
        });
        let (client, topic) = client.unzip();
        Self {
            version,
            route,
            client,
            topic,
            metrics,
            ctx,
        }
    }
}

/// What a callback send's delivery report needs from the target it was enqueued on: built once
/// per target and shared by its sends, so a send costs one reference count, not one per part.
/// Holds no cluster client (see [`CallbackSend`]).
pub(crate) struct SendContext {
    flight: Arc<Flight>,
    route: Arc<Route>,
    /// The client's connection failure (see [`ConnectFailure`]).
    failure: Option<Arc<ConnectFailure>>,
    version: u64,
    /// Metric handles of (logical topic, cluster), and the registry (for errors).
    metrics: Option<SendHandles>,
    registry: crate::metrics::Metrics,
}

impl SendContext {
    /// Counts `n` delivered records of `bytes` payload bytes in all (and one latency).
    fn count_sent(&self, n: u64, bytes: u64, latency: Option<Duration>) {
        self.flight.sent.fetch_add(n, Ordering::Relaxed);
        self.flight.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(h) = &self.metrics {
            h.sent.inc_by(n);
            h.bytes.inc_by(bytes);
            if let Some(l) = latency {
                h.latency.observe(l.as_secs_f64());
            }
        }
    }
}

fn same_target(a: Option<&Arc<Route>>, b: Option<&Arc<Route>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.cluster.fingerprint == b.cluster.fingerprint && a.physical == b.physical
        }
        _ => false,
    }
}

impl Producer {
    pub(crate) fn new(shared: Arc<Shared>, opts: ProducerOptions) -> Self {
        let inner = Arc::new(ProducerInner {
            shared: shared.clone(),
            props: opts.properties,
            idle_close: opts.idle_client_close,
            max_abort_hold: opts.max_abort_hold,
            max_switch_flush: opts.max_switch_flush,
            max_cut_off_hold: opts.max_cut_off_hold,
            lanes: ArcSwap::from_pointee(FxHashMap::default()),
            create_mu: Mutex::new(()),
            rerun: Arc::new(tokio::sync::Notify::new()),
            clients: Mutex::new(HashMap::new()),
            client_list: ArcSwap::from_pointee(Vec::new()),
            duty: Arc::new(ReportDuty::default()),
            idle: Mutex::new(HashMap::new()),
            route_changes: AtomicU64::new(0),
            throttle: ThrottleCounters::with_metrics(shared.metrics.clone(), Direction::Produce),
            rt: tokio::runtime::Handle::current(),
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(router(
            weak,
            shared.subscribe(),
            shared.cut_off(),
            inner.rerun.clone(),
        ));
        let src: Weak<dyn StatusSource> = Arc::downgrade(&inner) as Weak<dyn StatusSource>;
        shared.register(src);
        Self { inner }
    }

    /// Sends `record` to its logical topic and waits for the broker's acknowledgement.
    ///
    /// On failure the record is returned unchanged inside the error; it has not been (and will
    /// not be) sent anywhere else by the SDK.
    ///
    /// Under a quota the send first waits for capacity (policy BLOCK; sends to one topic
    /// waiting for capacity keep their order) or fails at once with
    /// [`crate::ErrorKind::QuotaExceeded`] (policy REJECT).
    pub async fn send(&self, record: Record) -> Result<Delivery, SendError> {
        let lane = match self.inner.lane(&record.topic) {
            Ok(l) => l,
            Err(error) => return self.inner.failed(error, record),
        };
        if let Err(error) = throttle::admit_produce(
            &*self.inner.shared,
            &lane.quota_wait,
            &record.topic,
            quota_bytes(&record),
            &self.inner.throttle,
        )
        .await
        {
            return self.inner.failed(error, record);
        }
        let started = Instant::now();
        let (in_flight, target, fut, record) = loop {
            if lane.flight.gate.try_enter() {
                let in_flight = InFlight(&lane.flight.gate);
                let target = lane.target.load_full();
                let Some(topic) = target.topic.as_ref() else {
                    let error = Error::UnknownTopic {
                        topic: record.topic.clone(),
                        version: target.version,
                    };
                    return self.inner.failed(error, record);
                };
                match enqueue(topic, &record).await {
                    Ok(fut) => break (in_flight, target, fut, record),
                    Err(error) => return self.inner.failed(error, record),
                }
            }
            // Closed for a switch: queue behind the sends already held, unless it has
            // reopened meanwhile (the switcher opens only with this lock held and the queue
            // empty).
            let topic = record.topic.clone();
            let rx = {
                let mut held = lane.held.lock();
                if !lane.flight.gate.is_closed() {
                    continue;
                }
                let (tx, rx) = oneshot::channel();
                held.push_back(Held {
                    record,
                    waiter: Some(Waiter::Future(tx)),
                    at: Instant::now(),
                });
                rx
            };
            match rx.await {
                Ok(Ok((fut, target, record))) => {
                    break (InFlight(&lane.flight.gate), target, fut, record);
                }
                Ok(Err(e)) => return self.inner.failed(e.error, e.record),
                // `Held` always answers when dropped; kept total for the type checker.
                Err(_) => return self.inner.failed(Error::Closed, Record::new(topic)),
            }
        };
        let res = delivered(&target, fut).await;
        drop(in_flight);
        let route = target
            .route
            .as_ref()
            .expect("a send is only enqueued on a routed target");
        let bytes = record.payload.as_ref().map_or(0, |p| p.len());
        match lane.flight.finish(
            route,
            target.version,
            res.map_err(|error| SendError { error, record }),
            bytes,
        ) {
            Ok(d) => {
                if let Some(m) = &target.metrics {
                    m.sent.inc();
                    m.bytes.inc_by(bytes as u64);
                    m.latency.observe(started.elapsed().as_secs_f64());
                }
                Ok(d)
            }
            Err(e) => self.inner.failed(e.error, e.record),
        }
    }

    /// Sends `record` to its logical topic without a future: the calling thread does the
    /// routing, the quota check and the enqueue on the cluster client itself, and `callback`
    /// gets the outcome later, exactly once. Same guarantees as [`Producer::send`]: records of
    /// one topic are never in flight to two clusters, a route switch waits for callback sends
    /// in flight and keeps the order of sends (one thread's sends, and sends of both kinds, in
    /// the order they were made), and a failed record is handed back, never re-sent elsewhere.
    ///
    /// Returns `Err` when the send fails at once (unknown topic, quota REJECT, a full queue,
    /// Kafka refusing the record): the error with the record, and `callback`, boxed and not
    /// called — run it (`cb(Err(e))`) wherever suits the caller, or drop it. Once this returned
    /// `Ok`, `callback` runs exactly once:
    ///
    /// - normally on the cluster client's delivery-report thread (one per cluster client; it
    ///   serves every report of that client, so keep callbacks short and never block in them);
    /// - for a send held during a route switch that fails to start on the new route, or when
    ///   the producer shuts down, on a runtime thread of the producer or the thread dropping it.
    ///
    /// A failed record given to `callback` is rebuilt from the client's copy (same topic, key,
    /// payload and headers). A send still in flight when the producer is dropped completes
    /// with [`crate::ErrorKind::Closed`] (it may or may not have been written).
    ///
    /// Blocking: this call may block the calling thread, bounded — under a BLOCK quota for
    /// capacity (at most [`QUOTA_BLOCK_WAIT`], then [`crate::ErrorKind::Timeout`]; a send that
    /// must wait fails with [`crate::ErrorKind::InvalidArgument`] on a Tokio runtime thread,
    /// where blocking could stall the runtime: use [`Producer::send`] in async code), and while
    /// the client's local queue is full (at most 30 s; from a delivery-report thread, which
    /// would have to serve reports for the queue to drain, it fails at once instead).
    #[allow(clippy::result_large_err)]
    pub fn send_with_callback<F>(
        &self,
        record: Record,
        callback: F,
    ) -> Result<(), (SendError, SendCallback)>
    where
        F: FnOnce(Result<Delivery, SendError>) + Send + 'static,
    {
        let headers: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), &v[..]))
            .collect();
        let view = RecordRef {
            topic: &record.topic,
            key: record.key.as_deref(),
            payload: record.payload.as_deref(),
            headers: &headers,
        };
        match self.send_with_callback_ref(view, move |r| callback(r.map(|d| d.to_delivery()))) {
            Ok(()) => Ok(()),
            Err((e, cb)) => {
                drop(headers);
                // The caller's own record comes back, not the copy made of it.
                let e = SendError {
                    error: e.error,
                    record,
                };
                let cb: SendCallback = Box::new(move |r| match r {
                    Ok(d) => cb(Ok(d.view())),
                    Err(e) => cb(Err(e)),
                });
                Err((e, cb))
            }
        }
    }

    /// [`Producer::send_with_callback`] for a borrowed record, with a borrowed delivery: the
    /// SDK copies the record only if it must keep it (held during a route switch, or handed
    /// back failed), and `callback` sees the delivery's names borrowed from the producer for
    /// the duration of the call ([`DeliveryRef::to_delivery`] makes an owned copy). Same
    /// guarantees, errors and blocking as [`Producer::send_with_callback`]; a record handed
    /// back in an error is an owned copy of `record`.
    #[allow(clippy::result_large_err)]
    pub fn send_with_callback_ref<F>(
        &self,
        record: RecordRef<'_>,
        callback: F,
    ) -> Result<(), (SendError, SendRefCallback)>
    where
        F: for<'a> FnOnce(Result<DeliveryRef<'a>, SendError>) + Send + 'static,
    {
        self.send_ref(record, Notify::Callback(Box::new(callback)))
            .map_err(|(e, n)| (e, n.into_callback()))
    }

    /// [`Producer::send_with_callback_ref`] with a [`DeliveryHandler`] instead of a callback:
    /// `handler.delivered(token, result)` runs exactly once for an accepted send, where the
    /// callback would. On `Err` (the send failed at once, as there) the handler is not called.
    #[allow(clippy::result_large_err)]
    pub fn send_with_handler<H: DeliveryHandler + 'static>(
        &self,
        record: RecordRef<'_>,
        handler: &Arc<H>,
        token: [usize; 2],
    ) -> Result<(), SendError> {
        self.send_ref(record, Notify::handler(handler, token))
            .map_err(|(e, n)| {
                n.defuse();
                e
            })
    }

    /// A borrowed callback send, by topic name.
    #[allow(clippy::result_large_err)]
    fn send_ref(&self, record: RecordRef<'_>, notify: Notify) -> Result<(), (SendError, Notify)> {
        // The lane is borrowed from the current map (no reference count per send); lanes are
        // never removed, so a map replaced meanwhile holds the same lane.
        let lanes = self.inner.lanes.load();
        if let Some(lane) = lanes.get(record.topic) {
            return self.send_ref_on(lane, record, notify);
        }
        drop(lanes);
        match self.inner.lane(record.topic) {
            Ok(lane) => self.send_ref_on(&lane, record, notify),
            Err(error) => Err((
                SendError {
                    error,
                    record: record.to_record(),
                },
                notify,
            )),
        }
    }

    /// A handle to the logical topic `topic` for sends that name their topic once, as a
    /// librdkafka topic handle does: [`TopicProducer::send_with_callback_ref`] skips the
    /// topic lookup of every [`Producer::send_with_callback_ref`]. It follows the topic
    /// through route changes and migrations exactly like sends by name (it is the same lane),
    /// and keeps the producer's clients open while it lives.
    ///
    /// Fails with [`crate::ErrorKind::UnknownTopic`] when the topic has no route now, or
    /// [`crate::ErrorKind::InvalidArgument`] for an empty name.
    pub fn topic(&self, topic: &str) -> Result<TopicProducer, Error> {
        Ok(TopicProducer {
            lane: self.inner.lane(topic)?,
            producer: self.clone(),
        })
    }

    /// [`Producer::send_with_callback_ref`] on a lane found.
    #[allow(clippy::result_large_err)]
    fn send_ref_on(
        &self,
        lane: &Lane,
        record: RecordRef<'_>,
        callback: Notify,
    ) -> Result<(), (SendError, Notify)> {
        let fail = |error: Error, callback: Notify| -> Result<(), (SendError, Notify)> {
            Err((
                SendError {
                    error,
                    record: record.to_record(),
                },
                callback,
            ))
        };
        if let Err(error) = self.admit_blocking(lane, record.topic, quota_bytes(&record)) {
            return fail(error, callback);
        }
        loop {
            if lane.flight.gate.try_enter() {
                let target = lane.target.load();
                let (Some(ctx), Some(topic)) = (target.ctx.as_ref(), target.topic.as_ref()) else {
                    lane.flight.gate.leave();
                    let error = Error::UnknownTopic {
                        topic: record.topic.to_owned(),
                        version: target.version,
                    };
                    return fail(error, callback);
                };
                let report = Box::new(Report::Callback(CallbackSend {
                    ctx: ctx.clone(),
                    key_some: record.key.is_some(),
                    payload_some: record.payload.is_some(),
                    settled: false,
                    callback: Mutex::new(Some(callback)),
                }));
                // On failure the report comes back: its callback goes back to the caller, and
                // dropping it leaves the gate.
                return match enqueue_blocking(topic, &record, report) {
                    Ok(()) => Ok(()),
                    Err((error, report)) => {
                        let cb = disarm(*report);
                        Err((
                            SendError {
                                error,
                                record: record.to_record(),
                            },
                            cb,
                        ))
                    }
                };
            }
            // Closed for a switch: queue behind the sends already held (see `send`).
            let mut held = lane.held.lock();
            if !lane.flight.gate.is_closed() {
                continue;
            }
            held.push_back(Held {
                record: record.to_record(),
                waiter: Some(Waiter::Callback(callback)),
                at: Instant::now(),
            });
            return Ok(());
        }
    }

    /// The quota admission of a callback send, blocking the thread when it must wait.
    fn admit_blocking(&self, lane: &Lane, topic: &str, bytes: u64) -> Result<(), Error> {
        let inner = &*self.inner;
        let msg_taken = match throttle::admit_produce_now(
            &*inner.shared,
            &lane.quota_wait,
            topic,
            bytes,
            &inner.throttle,
        ) {
            throttle::Admit::Done(r) => return r,
            throttle::Admit::Wait { msg_taken } => msg_taken,
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::InvalidArgument(format!(
                "a send to {topic:?} must wait for quota capacity, and send_with_callback cannot block a Tokio runtime thread; use Producer::send in async code"
            )));
        }
        inner.rt.block_on(async {
            tokio::time::timeout(
                QUOTA_BLOCK_WAIT,
                throttle::admit_produce_waiting(
                    &*inner.shared,
                    &lane.quota_wait,
                    topic,
                    bytes,
                    &inner.throttle,
                    msg_taken,
                ),
            )
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout(format!(
                    "no quota capacity for a send to {topic:?} within {QUOTA_BLOCK_WAIT:?}"
                )))
            })
        })
    }

    /// Serves the delivery reports that have arrived, on the calling thread: runs the
    /// callbacks of [`Producer::send_with_callback`] / [`Producer::send_with_callback_ref`]
    /// sends (and completes awaited sends) right here, as `rd_kafka_poll` does for a
    /// librdkafka program. Waits up to `timeout` for a first report when none has arrived.
    /// Returns how many reports were served.
    ///
    /// Optional: without it every cluster client's report thread serves its reports. An
    /// application that sends from one thread and polls there (e.g. after each send, or every
    /// few hundred) saves that thread hand-off per record; while it keeps polling the report
    /// threads stay idle, and within about 10 ms of its last poll they take over again.
    /// Reports of one client are served by one thread at a time, in order.
    ///
    /// Do not call it from a callback it runs (that poll serves nothing).
    pub fn poll(&self, timeout: Duration) -> usize {
        let inner = &*self.inner;
        let served = self.poll_clients(Duration::ZERO);
        if served > 0 || timeout.is_zero() {
            return served;
        }
        // Wait in short slices (an rdkafka poll with a timeout runs to its end even once it
        // has served something), so the first report is taken within about a slice.
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return 0;
            }
            let slice = (deadline - now).min(POLL_SLICE);
            if inner.client_list.load().is_empty() {
                inner.duty.polled();
                std::thread::sleep(slice);
                continue;
            }
            let served = self.poll_clients(slice);
            if served > 0 {
                return served;
            }
        }
    }

    /// One application poll of every cluster client, `slice` shared between them.
    fn poll_clients(&self, slice: Duration) -> usize {
        let inner = &*self.inner;
        inner.duty.polled();
        let clients = inner.client_list.load();
        let each = if slice.is_zero() || clients.is_empty() {
            slice
        } else {
            (slice / clients.len() as u32).max(Duration::from_micros(100))
        };
        let mut served = 0;
        for c in clients.iter() {
            if let Some(p) = &c.producer {
                served += p.poll_now(each);
            }
        }
        served
    }

    /// Makes the cluster clients' report threads serve reports now even though the
    /// application polls ([`Producer::poll`]), until the guard is dropped: for a thread that
    /// waits for reports and does not poll meanwhile (a flush, a send waiting for room).
    pub fn want_reports(&self) -> WantReports {
        self.inner.duty.want()
    }

    /// Waits until every record handed to any cluster client has been delivered or failed.
    pub async fn flush(&self, timeout: Duration) -> Result<(), Error> {
        let clients: Vec<Arc<ClusterProducer>> =
            self.inner.clients.lock().values().cloned().collect();
        let deadline = Instant::now() + timeout;
        for c in clients {
            let left = deadline.saturating_duration_since(Instant::now());
            let name = c.cluster.clone();
            tokio::task::spawn_blocking(move || c.kafka().flush(left))
                .await
                .map_err(|_| Error::Closed)?
                .map_err(|source| Error::Kafka {
                    cluster: name,
                    source,
                })?;
        }
        Ok(())
    }

    /// The send path without Kafka: lane lookup, taking and releasing the lane's read side and
    /// the counters. Returns whether `topic` is routed. For benchmarks.
    #[doc(hidden)]
    pub async fn route_bookkeeping(&self, topic: &str) -> bool {
        let Ok(lane) = self.inner.lane(topic) else {
            return false;
        };
        if !lane.flight.gate.try_enter() {
            return false;
        }
        let _in_flight = InFlight(&lane.flight.gate);
        let target = lane.target.load();
        let routed = target.route.is_some() && target.client.is_some();
        lane.flight.sent.fetch_add(1, Ordering::Relaxed);
        lane.flight.bytes.fetch_add(100, Ordering::Relaxed);
        if let Some(m) = &target.metrics {
            m.sent.inc();
            m.bytes.inc_by(100);
        }
        routed
    }

    /// The quota admission of a send without Kafka: lane lookup, quota lookup and limiter
    /// check (waiting under BLOCK). For benchmarks.
    #[doc(hidden)]
    pub async fn quota_admission(&self, topic: &str, bytes: u64) -> Result<(), Error> {
        let lane = self.inner.lane(topic)?;
        throttle::admit_produce(
            &*self.inner.shared,
            &lane.quota_wait,
            topic,
            bytes,
            &self.inner.throttle,
        )
        .await
    }

    /// Sends this producer's quotas delayed (BLOCK) or refused (REJECT) so far.
    pub fn throttled(&self) -> ThrottleStats {
        self.inner.throttle.stats()
    }

    /// Route changes applied by this producer so far.
    pub fn route_changes(&self) -> u64 {
        self.inner.route_changes.load(Ordering::Relaxed)
    }

    /// Number of Kafka clients currently open: one per cluster and property set in use, plus
    /// ones unused for less than 30 s.
    pub fn open_clients(&self) -> usize {
        self.inner.clients.lock().len()
    }

    /// The cluster and physical topic sends to `topic` currently go to.
    pub async fn current_route(&self, topic: &str) -> Option<(String, String)> {
        let lane = self.inner.lanes.load().get(topic).cloned()?;
        let t = lane.target.load();
        t.route
            .as_ref()
            .map(|r| (r.cluster.name.clone(), r.physical.clone()))
    }
}

/// What a record weighs against a `produce_bytes_per_sec` quota: key, payload, header names and
/// values.
fn quota_bytes(r: &impl Outgoing) -> u64 {
    let h: usize = (0..r.header_count())
        .map(|i| {
            let (k, v) = r.header(i);
            k.len() + v.len()
        })
        .sum();
    (r.key().map_or(0, <[u8]>::len) + r.payload().map_or(0, <[u8]>::len) + h) as u64
}

fn is_queue_full(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
    )
}

fn kafka_error(client: &ClusterProducer, source: KafkaError) -> Error {
    if let KafkaError::MessageProduction(RDKafkaErrorCode::Authentication) = source
        && let Some(reason) = client.failure.reason()
    {
        return Error::Connect {
            cluster: client.cluster.clone(),
            reason,
        };
    }
    Error::Kafka {
        cluster: client.cluster.clone(),
        source,
    }
}

fn queue_full_timeout(client: &ClusterProducer) -> Error {
    Error::Timeout(format!(
        "the local queue for cluster {} stayed full for {QUEUE_FULL_WAIT:?}",
        client.cluster
    ))
}

/// Hands `record` to the client's queue for an awaited send (waiting while the local queue is
/// full); returns its report's receiver.
async fn enqueue(topic: &TopicHandle, record: &Record) -> Result<ReportRx, Error> {
    let (tx, rx) = oneshot::channel();
    match try_enqueue(topic, record, Box::new(Report::Future(tx))) {
        Ok(()) => Ok(rx),
        // The waiting path lives in its own (boxed) future so every send's future stays small.
        Err((e, report)) if is_queue_full(&e) => {
            Box::pin(enqueue_when_full(topic, record, report)).await?;
            Ok(rx)
        }
        Err((source, _)) => Err(kafka_error(&topic.client, source)),
    }
}

/// Retries an awaited send's enqueue while the client's local queue is full, up to
/// [`QUEUE_FULL_WAIT`]. On failure the report is dropped (its receiver sees it closed).
async fn enqueue_when_full(
    topic: &TopicHandle,
    record: &Record,
    mut report: Box<Report>,
) -> Result<(), Error> {
    let client = &*topic.client;
    // Room comes as reports are served; this thread waits instead of polling.
    let _want = client.producer.as_ref().map(Served::want);
    let started = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
        match try_enqueue(topic, record, report) {
            Ok(()) => return Ok(()),
            Err((e, back)) if is_queue_full(&e) => {
                if started.elapsed() > QUEUE_FULL_WAIT {
                    return Err(queue_full_timeout(client));
                }
                report = back;
            }
            Err((source, _)) => return Err(kafka_error(client, source)),
        }
    }
}

/// A report that will not be enqueued: takes a callback send's callback out, unrun (its caller
/// gets the error instead), and drops the rest, leaving the gate.
fn disarm(report: Report) -> Notify {
    match report {
        Report::Callback(mut s) => s.callback.get_mut().take(),
        Report::Future(_) => None,
    }
    .unwrap_or_else(|| Notify::Callback(Box::new(|_| {})))
}

/// [`enqueue_when_full`] for a callback send on its caller's thread: sleeps between attempts;
/// on a delivery-report thread fails at once. On failure the report comes back.
#[allow(clippy::result_large_err)]
fn enqueue_blocking(
    topic: &TopicHandle,
    record: &RecordRef<'_>,
    report: Box<Report>,
) -> Result<(), (Error, Box<Report>)> {
    let client = &*topic.client;
    let mut report = match try_enqueue(topic, record, report) {
        Ok(()) => return Ok(()),
        Err((e, back)) if is_queue_full(&e) && !ON_REPORT_THREAD.get() => back,
        Err((source, back)) => return Err((kafka_error(client, source), back)),
    };
    // Room comes as reports are served; this thread waits instead of polling.
    let _want = client.producer.as_ref().map(Served::want);
    let started = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
        match try_enqueue(topic, record, report) {
            Ok(()) => return Ok(()),
            Err((e, back)) if is_queue_full(&e) => {
                if started.elapsed() > QUEUE_FULL_WAIT {
                    return Err((queue_full_timeout(client), back));
                }
                report = back;
            }
            Err((source, back)) => return Err((kafka_error(client, source), back)),
        }
    }
}

/// Waits for the delivery report of a record enqueued on `target`.
async fn delivered(target: &Target, rx: ReportRx) -> Result<(i32, i64), Error> {
    match rx.await {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(KafkaError::MessageProduction(RDKafkaErrorCode::PurgeQueue)))
            if let Some(c) = &target.client
                && let Some(reason) = c.failure.reason() =>
        {
            Err(Error::Connect {
                cluster: c.cluster.clone(),
                reason,
            })
        }
        Ok(Err(source)) => Err(Error::Kafka {
            cluster: target
                .client
                .as_ref()
                .map_or_else(String::new, |c| c.cluster.clone()),
            source,
        }),
        Err(_) => Err(Error::Closed),
    }
}

/// Makes a new client ready to send without the idempotent producer's first-send pause:
/// fetches the topic's metadata twice, then waits (at most [`PID_WAIT`]) until the client
/// has its producer id. The idempotent producer requests it when a metadata response arrives
/// and a usable broker connection is up, otherwise only on a 500 ms retry timer. Measured on
/// Kafka 4.1 (`sdk/examples/pidprobe.rs`): a new client's first send takes ~505 ms without the
/// metadata fetches, 6–7 ms after them (the warm-up itself ~55 ms); under CPU contention the
/// id still arrived late now and then (one 0.5 s cutover pause in the migration benchmark),
/// hence the wait: a route switch closes its lane only after the warm-up.
async fn warm_up(client: Arc<ClusterProducer>, physical: String) {
    let _ = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        for _ in 0..2 {
            let _ = client
                .kafka()
                .client()
                .fetch_metadata(Some(&physical), Duration::from_secs(5));
        }
        if let Some(assigned) = &client.pid_assigned {
            while !assigned.load(Ordering::Acquire) && started.elapsed() < PID_WAIT {
                std::thread::sleep(Duration::from_millis(2));
            }
            tracing::debug!(cluster = %client.cluster, ready = assigned.load(Ordering::Acquire), elapsed = ?started.elapsed(), "producer client warmed up");
        }
    })
    .await;
}

/// Longest a route switch waits for a new idempotent client's producer id before it closes
/// the lane anyway (the first records then wait in the client's queue).
const PID_WAIT: Duration = Duration::from_secs(3);

/// Starts the sends held while `lane` was closed on its (new) target, in arrival order, then
/// opens the gate. New sends queue behind the held ones until the queue is empty.
async fn release_held(lane: &Lane) {
    let target = lane.target.load_full();
    loop {
        let batch = {
            let mut held = lane.held.lock();
            if held.is_empty() {
                lane.flight.gate.open();
                return;
            }
            std::mem::take(&mut *held)
        };
        for mut h in batch {
            let (record, waiter) = h.take();
            match waiter {
                Some(Waiter::Future(reply)) => {
                    start_held_future(lane, &target, record, reply).await
                }
                Some(Waiter::Callback(cb)) => start_held_callback(lane, &target, record, cb).await,
                None => {}
            }
        }
    }
}

/// Starts a held awaited send on `target` and hands it back to its caller.
async fn start_held_future(
    lane: &Lane,
    target: &Arc<Target>,
    record: Record,
    reply: oneshot::Sender<Handoff>,
) {
    if reply.is_closed() {
        // The caller gave up on this send before it was started.
        return;
    }
    let out = match target.topic.as_ref() {
        Some(topic) => {
            lane.flight.gate.enter_closed();
            match enqueue(topic, &record).await {
                Ok(rx) => Ok((rx, target.clone(), record)),
                Err(error) => {
                    lane.flight.gate.leave();
                    Err(SendError { error, record })
                }
            }
        }
        None => Err(SendError {
            error: Error::UnknownTopic {
                topic: lane.logical.clone(),
                version: target.version,
            },
            record,
        }),
    };
    let counted = out.is_ok();
    if reply.send(out).is_err() && counted {
        // Enqueued, but nobody waits for its report: stop counting it.
        lane.flight.gate.leave();
    }
}

/// Starts a held callback send on `target`; if it cannot start, runs its callback with the
/// error.
async fn start_held_callback(lane: &Lane, target: &Target, record: Record, cb: Notify) {
    let (Some(ctx), Some(topic)) = (target.ctx.as_ref(), target.topic.as_ref()) else {
        let error = Error::UnknownTopic {
            topic: lane.logical.clone(),
            version: target.version,
        };
        cb.call(Err(SendError { error, record }));
        return;
    };
    lane.flight.gate.enter_closed();
    let mut report = Box::new(Report::Callback(CallbackSend {
        ctx: ctx.clone(),
        key_some: record.key.is_some(),
        payload_some: record.payload.is_some(),
        settled: false,
        callback: Mutex::new(Some(cb)),
    }));
    // Room comes as reports are served; this thread waits instead of polling.
    let _want = topic.client.producer.as_ref().map(Served::want);
    let started = Instant::now();
    let mut pause = Duration::from_micros(200);
    let error = loop {
        match try_enqueue(topic, &record, report) {
            Ok(()) => return,
            Err((e, back)) if is_queue_full(&e) && started.elapsed() <= QUEUE_FULL_WAIT => {
                report = back;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err((e, back)) => {
                report = back;
                break if is_queue_full(&e) {
                    queue_full_timeout(&topic.client)
                } else {
                    kafka_error(&topic.client, e)
                };
            }
        }
    };
    // Take the callback out, so dropping the report leaves the gate without running it.
    let cb = match &mut *report {
        Report::Callback(s) => s.callback.get_mut().take(),
        Report::Future(_) => None,
    };
    drop(report);
    if let Some(cb) = cb {
        cb.call(Err(SendError { error, record }));
    }
}

impl ProducerInner {
    /// A failed send, counted in the metrics under the cluster it failed on: the one a Kafka
    /// error names, the topic's current cluster for a timeout (its local queue stayed full), and
    /// none for failures before a cluster was involved.
    #[allow(clippy::result_large_err)] // the very result `send` returns
    fn failed(&self, error: Error, record: Record) -> Result<Delivery, SendError> {
        let topic = &record.topic;
        let current;
        let cluster = match &error {
            Error::Kafka { cluster, .. } => cluster.as_str(),
            Error::Timeout(_) => {
                current = self.lanes.load().get(topic).and_then(|l| {
                    l.target
                        .load()
                        .route
                        .as_ref()
                        .map(|r| r.cluster.name.clone())
                });
                current.as_deref().unwrap_or("")
            }
            _ => "",
        };
        self.shared.metrics.send_error(topic, cluster, &error);
        Err(SendError { error, record })
    }

    fn lane(&self, topic: &str) -> Result<Arc<Lane>, Error> {
        if let Some(l) = self.lanes.load().get(topic) {
            return Ok(l.clone());
        }
        if topic.is_empty() {
            return Err(Error::InvalidArgument("record.topic is empty".into()));
        }
        let _g = self.create_mu.lock();
        if let Some(l) = self.lanes.load().get(topic) {
            return Ok(l.clone());
        }
        let md = self.shared.load_full();
        let Some(route) = md.route(topic).cloned() else {
            return Err(Error::UnknownTopic {
                topic: topic.to_string(),
                version: md.version,
            });
        };
        let (client, created) = self.client_for(&route)?;
        let handle = Arc::new(TopicHandle::new(client.clone(), &route.physical)?);
        if created {
            // In the background: the first sends wait in the client's queue (in order) for
            // the producer id, which the warm-up makes arrive sooner.
            // (On the producer's runtime: a callback send may create the lane off it.)
            self.rt
                .spawn(warm_up(client.clone(), route.physical.clone()));
        }
        let flight = Arc::new(Flight::default());
        let lane = Arc::new(Lane {
            logical: topic.to_string(),
            flight: flight.clone(),
            target: ArcSwap::from_pointee(Target::new(
                md.version,
                Some(route.clone()),
                Some((client, handle)),
                Some(self.shared.metrics.send_handles(topic, &route.cluster.name)),
                &flight,
                &self.shared.metrics,
            )),
            quota_wait: WaitQueue::default(),
            held: Mutex::new(VecDeque::new()),
            hold: Mutex::new(Hold::default()),
        });
        // A topic whose sends are held right now starts held (the router releases it).
        let held = self.wants_hold(&md, &lane, self.shared.is_cut_off());
        if let Some(why) = held.clone() {
            lane.flight.gate.close_unused();
            let mut h = lane.hold.lock();
            h.since = Some(Instant::now());
            h.cut_off = why;
        }
        let mut map = (**self.lanes.load()).clone();
        map.insert(topic.to_string(), lane.clone());
        self.lanes.store(Arc::new(map));
        if held.is_some() || self.shared.load().version != md.version {
            self.rerun.notify_one();
        }
        Ok(lane)
    }

    /// The client for `route`'s cluster and the route's topic handle on it.
    fn target_client(
        &self,
        route: &Route,
    ) -> Result<(Arc<ClusterProducer>, Arc<TopicHandle>), Error> {
        let (c, _) = self.client_for(route)?;
        let t = TopicHandle::new(c.clone(), &route.physical)?;
        Ok((c, Arc::new(t)))
    }

    /// The client for `route`'s cluster, and whether it was created by this call.
    fn client_for(&self, route: &Route) -> Result<(Arc<ClusterProducer>, bool), Error> {
        let key = (route.cluster.name.clone(), route.cluster.fingerprint);
        let mut clients = self.clients.lock();
        if let Some(c) = clients.get(&key) {
            return Ok((c.clone(), false));
        }
        let mut cfg = ClientConfig::new();
        for (k, v) in PRODUCER_DEFAULTS {
            cfg.set(*k, *v);
        }
        cfg.set("client.id", format!("{}-producer", self.shared.client_id));
        for (k, v) in &route.cluster.properties {
            cfg.set(k, v);
        }
        // Producer-specific app properties sit below enforced ones: re-apply enforced after.
        let md = self.shared.load();
        let enforced = md
            .state
            .profiles
            .get(&self.shared.app)
            .map(|p| p.enforced.clone());
        drop(md);
        for (k, v) in &self.props {
            if k != "bootstrap.servers" {
                cfg.set(k, v);
            }
        }
        if let Some(enforced) = enforced {
            for (k, v) in enforced {
                cfg.set(k, v);
            }
        }
        // An idempotent client reports statistics, so a switch can wait for its producer id.
        let idempotent = cfg.get("enable.idempotence") == Some("true");
        if idempotent {
            cfg.set("statistics.interval.ms", PID_STATS_INTERVAL_MS);
        }
        let pid_assigned = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let failure = Arc::new(ConnectFailure::default());
        let producer: BaseProducer<Reports> = cfg
            .create_with_context(Reports {
                pid_assigned: pid_assigned.clone(),
                failure: failure.clone(),
                cluster: route.cluster.name.clone(),
            })
            .map_err(|source| Error::Kafka {
                cluster: route.cluster.name.clone(),
                source,
            })?;
        let producer =
            Served::start(producer, self.duty.clone(), &route.cluster.name).map_err(|e| {
                Error::Kafka {
                    cluster: route.cluster.name.clone(),
                    source: KafkaError::ClientCreation(format!(
                        "cannot start a report thread: {e}"
                    )),
                }
            })?;
        tracing::info!(cluster = %route.cluster.name, "created producer client");
        let c = Arc::new(ClusterProducer {
            cluster: route.cluster.name.clone(),
            fingerprint: route.cluster.fingerprint,
            failure,
            pid_assigned: idempotent.then_some(pid_assigned),
            producer: Some(producer),
        });
        clients.insert(key, c.clone());
        self.client_list
            .store(Arc::new(clients.values().cloned().collect()));
        Ok((c, true))
    }
}

/// Applies every new configuration version (and every change of contact with the service) to
/// the lanes; ends with the producer.
async fn router(
    weak: Weak<ProducerInner>,
    mut versions: tokio::sync::watch::Receiver<(u64, bool)>,
    mut cut_off: tokio::sync::watch::Receiver<bool>,
    rerun: Arc<tokio::sync::Notify>,
) {
    let idle_check = match weak.upgrade() {
        Some(i) => (i.idle_close / 4).max(Duration::from_millis(50)),
        None => return,
    };
    let mut cut_off_holds = false;
    loop {
        // While sends are held for a cut-off, look often for those held too long.
        let tick = if cut_off_holds {
            idle_check.min(CUT_OFF_CHECK)
        } else {
            idle_check
        };
        let changed = tokio::select! {
            r = versions.changed() => {
                if r.is_err() {
                    return;
                }
                true
            }
            r = cut_off.changed() => {
                if r.is_err() {
                    return;
                }
                true
            }
            _ = rerun.notified() => true,
            _ = tokio::time::sleep(tick) => false,
        };
        let Some(inner) = weak.upgrade() else {
            return;
        };
        if changed || inner.hold_expired() {
            let cut = *cut_off.borrow_and_update();
            inner.reroute(cut).await;
        } else {
            inner.collect_unused();
        }
        cut_off_holds = inner.fail_cut_off_held();
    }
}

/// How often sends held for a cut-off are checked for their time limit.
const CUT_OFF_CHECK: Duration = Duration::from_millis(100);

impl ProducerInner {
    /// Whether a lane has held its sends for longer than allowed.
    fn hold_expired(&self) -> bool {
        self.lanes.load().values().any(|l| {
            let hold = l.hold.lock();
            hold.cut_off.is_none()
                && hold
                    .since
                    .is_some_and(|t| t.elapsed() >= self.max_abort_hold)
        })
    }

    /// Fails the sends held for a cut-off longer than `max_cut_off_hold` (written nowhere).
    /// Returns whether any lane still holds for a cut-off.
    fn fail_cut_off_held(&self) -> bool {
        let mut any = false;
        for lane in self.lanes.load().values() {
            let Some(migration) = lane.hold.lock().cut_off.clone() else {
                continue;
            };
            any = true;
            let expired: Vec<Held> = {
                let mut held = lane.held.lock();
                let n = held
                    .iter()
                    .take_while(|h| h.at.elapsed() >= self.max_cut_off_hold)
                    .count();
                held.drain(..n).collect()
            };
            if expired.is_empty() {
                continue;
            }
            let silent_for = self.shared.silent_for();
            tracing::warn!(topic = %lane.logical, migration = %migration, sends = expired.len(), ?silent_for, "failing sends held while cut off from the config service during a move");
            for h in expired {
                let held_for = h.at.elapsed();
                h.fail(Error::CutOff {
                    topic: lane.logical.clone(),
                    migration: migration.clone(),
                    silent_for,
                    held_for,
                });
            }
        }
        any
    }

    /// Whether `lane` must hold its sends under `md`, and why:
    /// - the topic's migration was aborted and the coordinator still copies the abandoned
    ///   destination's records back (and this lane has not given up waiting for that):
    ///   `Some(None)`;
    /// - this client is `cut_off` from the service while the topic is switched to its
    ///   destination and not sealed (the move may be aborted without this client):
    ///   `Some(Some(migration))`.
    fn wants_hold(&self, md: &Metadata, lane: &Lane, cut_off: bool) -> Option<Option<String>> {
        let f = md
            .state
            .topics
            .get(&lane.logical)
            .and_then(|t| t.migrating_from.as_ref())?;
        if cut_off && !f.aborted && f.sealed_offsets.is_empty() {
            return Some(Some(f.migration_id.clone()));
        }
        if !(f.aborted && f.hold_sends) {
            return None;
        }
        let mut hold = lane.hold.lock();
        if hold.gave_up.as_deref() == Some(&f.migration_id) {
            return None;
        }
        if hold.cut_off.is_none()
            && hold
                .since
                .is_some_and(|t| t.elapsed() >= self.max_abort_hold)
        {
            tracing::warn!(topic = %lane.logical, migration = %f.migration_id, held_for = ?self.max_abort_hold, "an aborted migration's copy-back takes too long; releasing the held sends (per-key order with the copied records is no longer guaranteed)");
            hold.gave_up = Some(f.migration_id.clone());
            return None;
        }
        Some(None)
    }

    async fn reroute(&self, cut_off: bool) {
        let md = self.shared.load_full();
        let lanes: Vec<Arc<Lane>> = self.lanes.load().values().cloned().collect();
        let mut switches = Vec::new();
        for lane in lanes {
            let desired = md.route(&lane.logical).cloned();
            let cur = lane.target.load_full();
            let why = self.wants_hold(&md, &lane, cut_off);
            let hold = why.is_some();
            let holding = lane.hold.lock().since.is_some();
            let moved = !same_target(cur.route.as_ref(), desired.as_ref());
            if !moved && hold == holding {
                if let Some(why) = why {
                    lane.hold.lock().cut_off = why;
                }
                // Same destination: record the version for deliveries without holding sends.
                lane.target.store(Arc::new(Target::new(
                    md.version,
                    cur.route.clone(),
                    cur.client.clone().zip(cur.topic.clone()),
                    cur.metrics.clone(),
                    &lane.flight,
                    &self.shared.metrics,
                )));
                continue;
            }
            // A route switch, and/or an aborted migration's hold starting or ending.
            let client = match desired.as_ref().map(|r| self.target_client(r)).transpose() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(topic = %lane.logical, error = %e, "cannot create the client for the new route; keeping the old one");
                    continue;
                }
            };
            let version = md.version;
            let metrics = desired.as_ref().map(|r| {
                self.shared
                    .metrics
                    .send_handles(&lane.logical, &r.cluster.name)
            });
            let registry = self.shared.metrics.clone();
            let max_flush = self.max_switch_flush;
            switches.push(async move {
                // A held lane is closed with nothing in flight already.
                if !holding {
                    if !hold && let (Some((c, _)), Some(r)) = (client.as_ref(), desired.as_ref()) {
                        // Warm the new client (connection, metadata, producer id) while sends
                        // still flow to the old one, so the cutover pause is short.
                        warm_up(c.clone(), r.physical.clone()).await;
                    }
                    // Holds new sends and waits for in-flight ones: the flush (bounded).
                    if tokio::time::timeout(max_flush, lane.flight.gate.close_and_drain())
                        .await
                        .is_err()
                    {
                        tracing::warn!(topic = %lane.logical, waited = ?max_flush, "sends to the old location did not complete in time; switching anyway (they still complete there; per-key order across the switch is not guaranteed for them)");
                    }
                }
                let from = lane
                    .target
                    .load()
                    .route
                    .as_ref()
                    .map(|r| format!("{}/{}", r.cluster.name, r.physical));
                lane.target.store(Arc::new(Target::new(
                    version,
                    desired.clone(),
                    client,
                    metrics,
                    &lane.flight,
                    &registry,
                )));
                if let Some(why) = why {
                    let mut h = lane.hold.lock();
                    if !holding {
                        h.since = Some(Instant::now());
                        match &why {
                            Some(m) => tracing::warn!(topic = %lane.logical, migration = %m, version, "holding sends: the topic is being moved and the config service has not acknowledged this client for half its lease (the move may be aborted without it)"),
                            None => tracing::info!(topic = %lane.logical, version, "holding sends while an aborted migration's records are copied back"),
                        }
                    }
                    h.cut_off = why;
                } else {
                    {
                        let mut h = lane.hold.lock();
                        h.since = None;
                        h.cut_off = None;
                    }
                    release_held(&lane).await;
                    if holding {
                        tracing::info!(topic = %lane.logical, version, "released held sends");
                    }
                }
                if moved {
                    tracing::info!(
                        topic = %lane.logical,
                        from = from.as_deref().unwrap_or("-"),
                        to = desired.as_ref().map(|r| format!("{}/{}", r.cluster.name, r.physical)).as_deref().unwrap_or("-"),
                        version,
                        "switched route"
                    );
                }
            });
        }
        let n = switches.len() as u64;
        futures::future::join_all(switches).await;
        self.route_changes.fetch_add(n, Ordering::Relaxed);
        if n > 0 {
            // Acknowledge the switch to the migration coordinator without waiting a report
            // interval.
            self.shared.report_soon();
        }
        self.collect_unused();
    }

    /// Closes clients no lane has used for the idle period (after flushing them).
    fn collect_unused(&self) {
        let mut used = HashSet::new();
        for lane in self.lanes.load().values() {
            if let Some(c) = &lane.target.load().client {
                used.insert((c.cluster.clone(), c.fingerprint));
            }
        }
        let mut clients = self.clients.lock();
        let mut idle = self.idle.lock();
        idle.retain(|k, _| !used.contains(k) && clients.contains_key(k));
        let now = Instant::now();
        for k in clients.keys().filter(|k| !used.contains(*k)) {
            idle.entry(k.clone()).or_insert(now);
        }
        let unused: Vec<_> = idle
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= self.idle_close)
            .map(|(k, _)| k.clone())
            .collect();
        for k in unused {
            idle.remove(&k);
            if let Some(c) = clients.remove(&k) {
                self.client_list
                    .store(Arc::new(clients.values().cloned().collect()));
                tracing::info!(cluster = %c.cluster, "closing unused producer client");
                tokio::task::spawn_blocking(move || {
                    let _ = c.kafka().flush(Duration::from_secs(30));
                });
            }
        }
    }
}

impl StatusSource for ProducerInner {
    fn endpoints(&self) -> (Vec<Counted>, Vec<Counted>) {
        let mut out = Vec::new();
        for lane in self.lanes.load().values() {
            let t = lane.target.load();
            let Some(r) = &t.route else { continue };
            out.push((
                ClientEndpoint {
                    logical_topic: lane.logical.clone(),
                    cluster: r.cluster.name.clone(),
                    physical_topic: r.physical.clone(),
                    ..Default::default()
                },
                lane.flight.sent.load(Ordering::Relaxed),
                lane.flight.bytes.load(Ordering::Relaxed),
            ));
        }
        (out, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::idemp_state;

    #[test]
    fn the_producer_id_state_is_read_from_librdkafka_statistics() {
        // As librdkafka 2.x prints it (rdkafka.c, rd_kafka_stats_emit_all).
        let json = br#"{"name":"p#producer-1","type":"producer","eos": { "idemp_state": "Assigned", "idemp_stateage": 12, "txn_state": "Init"}}"#;
        assert_eq!(idemp_state(json), Some(&b"Assigned"[..]));
        let json = br#"{"eos": {"idemp_state":"WaitPID","idemp_stateage":3}}"#;
        assert_eq!(idemp_state(json), Some(&b"WaitPID"[..]));
        assert_eq!(idemp_state(br#"{"name":"c","type":"consumer"}"#), None);
        assert_eq!(idemp_state(br#"{"eos": {"idemp_state": "#), None);
    }
}
