//! `switchyard_producer`: asynchronous sends with a delivery callback, synchronous sends, and
//! flush.
//!
//! Every send goes through the SDK's synchronous callback path
//! (`switchyard::Producer::send_with_callback`) on the thread that calls
//! `switchyard_producer_send`: routing, quota check and the enqueue on the cluster's Kafka
//! client happen there, with no task or channel per record, and the delivery callback runs
//! inside `switchyard_producer_poll` on the application's thread when it polls (as with
//! `rd_kafka_poll`), else on that Kafka client's delivery-report thread. Records sent from one
//! thread keep their order (per key/partition), also across a route change, exactly as the SDK
//! keeps it.

use std::cell::RefCell;
use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard::{
    Delivery, DeliveryHandler, DeliveryRef, Producer, ProducerOptions, RecordRef, SendError,
    SendRefCallback, TopicProducer,
};
use tokio::sync::oneshot;

use crate::boundary::{
    arg_bytes, arg_out, arg_ref, arg_str, check_may_block, from_handle, guard, guard_value,
    in_callback, in_callback_now, into_handle, on_runtime_thread,
};
use crate::client::{ClientInner, drop_in_runtime, switchyard_client};
use crate::conf::{arg_conf, switchyard_conf};
use crate::error::{Failure, set_last_error, switchyard_result};
use crate::inflight::InFlight;

/// Size of the name buffers in `switchyard_delivery`, NUL included. Topic and cluster names
/// are at most 249 bytes, so they always fit.
pub const SWITCHYARD_NAME_MAX: usize = 256;

/// Sends one producer keeps in flight at most, unless its conf's `switchyard.max.in.flight`
/// says otherwise. `switchyard_producer_send` called while this many sends await delivery
/// blocks until an eighth of them have completed (for at most 30 s,
/// then `SWITCHYARD_TIMEOUT`); inside a delivery callback it never blocks.
pub const SWITCHYARD_MAX_IN_FLIGHT: usize = 65_536;

/// How long a send waits for room under [`SWITCHYARD_MAX_IN_FLIGHT`].
const ROOM_WAIT: Duration = Duration::from_secs(30);

/// How long `switchyard_producer_free` waits for sends in flight.
const FREE_FLUSH: Duration = Duration::from_secs(10);

/// Where a record was written, or which record failed.
///
/// In a delivery callback it is valid only during the call: copy what you need.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct switchyard_delivery {
    /// Logical topic, NUL-terminated.
    pub topic: [c_char; SWITCHYARD_NAME_MAX],
    /// Cluster the record was written to, NUL-terminated; empty on failure.
    pub cluster: [c_char; SWITCHYARD_NAME_MAX],
    /// Physical topic on that cluster, NUL-terminated; empty on failure.
    pub physical_topic: [c_char; SWITCHYARD_NAME_MAX],
    /// Partition, or -1 on failure.
    pub partition: i32,
    /// Offset, or -1 on failure.
    pub offset: i64,
    /// Configuration version that routed the record, or 0 on failure.
    pub config_version: u64,
    /// On failure in a delivery callback: the record's key as the SDK handed it back (it was
    /// not, and will not be, sent anywhere else), or NULL. NULL on success and in
    /// `switchyard_producer_send_sync`.
    pub key: *const u8,
    /// Length of `key`.
    pub key_len: usize,
    /// On failure in a delivery callback: the record's payload, or NULL (see `key`).
    pub payload: *const u8,
    /// Length of `payload`.
    pub payload_len: usize,
}

impl switchyard_delivery {
    fn empty() -> Self {
        Self {
            topic: [0; SWITCHYARD_NAME_MAX],
            cluster: [0; SWITCHYARD_NAME_MAX],
            physical_topic: [0; SWITCHYARD_NAME_MAX],
            partition: -1,
            offset: -1,
            config_version: 0,
            key: std::ptr::null(),
            key_len: 0,
            payload: std::ptr::null(),
            payload_len: 0,
        }
    }

    fn delivered(d: &DeliveryRef<'_>) -> Self {
        let mut out = Self::empty();
        out.set_delivered(d);
        out
    }

    /// Makes this the delivery `d`; the names are copied only when they differ.
    fn set_delivered(&mut self, d: &DeliveryRef<'_>) {
        if !(holds(&self.topic, d.topic)
            && holds(&self.cluster, d.cluster)
            && holds(&self.physical_topic, d.physical_topic))
        {
            copy_name(&mut self.topic, d.topic);
            copy_name(&mut self.cluster, d.cluster);
            copy_name(&mut self.physical_topic, d.physical_topic);
        }
        self.partition = d.partition;
        self.offset = d.offset;
        self.config_version = d.version;
    }

    fn failed(topic: &str) -> Self {
        let mut out = Self::empty();
        copy_name(&mut out.topic, topic);
        out
    }
}

thread_local! {
    /// The last successful delivery handed to a callback on this thread. The next one to the
    /// same route only rewrites its partition, offset and version instead of building the
    /// 824-byte struct again.
    static LAST_DELIVERY: RefCell<Option<Box<switchyard_delivery>>> =
        const { RefCell::new(None) };
}

/// Runs `f` with `d` as a `switchyard_delivery` (this thread's reused one, see
/// [`LAST_DELIVERY`]; a fresh one if a callback on this thread is already using it).
fn with_delivered<R>(d: &DeliveryRef<'_>, f: impl FnOnce(&switchyard_delivery) -> R) -> R {
    LAST_DELIVERY.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return f(&switchyard_delivery::delivered(d));
        };
        let out = slot.get_or_insert_with(|| Box::new(switchyard_delivery::empty()));
        out.set_delivered(d);
        f(out)
    })
}

/// Whether the NUL-terminated name in `buf` is `s`.
fn holds(buf: &[c_char; SWITCHYARD_NAME_MAX], s: &str) -> bool {
    let b = s.as_bytes();
    b.len() < SWITCHYARD_NAME_MAX
        && buf[b.len()] == 0
        && buf.iter().zip(b).all(|(x, y)| *x as u8 == *y)
}

/// Copies `s` into a fixed C buffer, NUL-terminated, cut on a UTF-8 boundary if too long.
fn copy_name(dst: &mut [c_char; SWITCHYARD_NAME_MAX], s: &str) {
    let mut n = s.len().min(SWITCHYARD_NAME_MAX - 1);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    for (d, b) in dst.iter_mut().zip(&s.as_bytes()[..n]) {
        *d = *b as c_char;
    }
    dst[n] = 0;
}

/// Called once for every send that `switchyard_producer_send` accepted, when the record is
/// written (`rc` = `SWITCHYARD_OK`) or has failed. `delivery` is never NULL and is valid only
/// during the call. On failure, `switchyard_last_error_message` called inside the callback
/// gives the reason.
///
/// The callback never runs inside `switchyard_producer_send`. It runs inside
/// `switchyard_producer_poll` on the thread that calls it, or otherwise on the delivery-report
/// thread of the Kafka client of the record's cluster (one such thread per cluster the
/// producer writes to). Callbacks of records to one cluster run one at a time, in report order,
/// whichever thread runs them; callbacks of records to different clusters may run at the same
/// time. For a send that failed before
/// reaching Kafka (e.g. `SWITCHYARD_UNKNOWN_TOPIC`, a REJECT quota) or was cut off by
/// `switchyard_producer_free`, on one of the client's runtime threads or the freeing thread.
/// It must be thread-safe, should return quickly (the reports of its cluster wait for it), and
/// must not call `switchyard_producer_free` for the same producer or any blocking function
/// (`switchyard_producer_flush`, `switchyard_producer_send_sync`, `switchyard_consumer_poll`,
/// `switchyard_client_connect`), which fail with `SWITCHYARD_INVALID_ARGUMENT` there. It may
/// call `switchyard_producer_send` (which then never waits for room under
/// `SWITCHYARD_MAX_IN_FLIGHT`, and fails at once on a full Kafka queue; under a BLOCK quota it
/// may wait for capacity, holding up its cluster's reports meanwhile).
pub type switchyard_delivery_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        rc: switchyard_result,
        delivery: *const switchyard_delivery,
    ),
>;

/// A record header for `switchyard_producer_send_with_headers`: a UTF-8 name (NUL-terminated)
/// and a value of `value_len` bytes (NULL with 0 for an empty value). Copied during the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct switchyard_header {
    /// Header name, NUL-terminated UTF-8.
    pub name: *const c_char,
    /// Header value.
    pub value: *const u8,
    /// Length of `value`.
    pub value_len: usize,
}

/// Sends records to logical topics. Create it with `switchyard_producer_new`; release it with
/// `switchyard_producer_free`.
#[derive(Debug)]
pub struct switchyard_producer {
    client: Arc<ClientInner>,
    producer: Producer,
    inflight: Arc<InFlight>,
    /// Completes its sends with a C callback.
    handler: Arc<CSends>,
}

/// The user's pointer, handed back to the callback on another thread.
#[derive(Clone, Copy)]
struct UserData(*mut c_void);

// SAFETY: the pointer is only passed back to the C callback, which the API contract requires
// to be thread-safe; Rust never dereferences it.
unsafe impl Send for UserData {}

impl Notify {
    /// Whom a send with `callback` (or none) tells.
    fn of(callback: switchyard_delivery_callback, user_data: *mut c_void) -> Self {
        match callback {
            Some(cb) => Self::Callback(cb, UserData(user_data)),
            None => Self::Nobody,
        }
    }
}

/// Whom to tell when a send completes.
enum Notify {
    /// Nobody (a NULL callback): the send is still counted for flush.
    Nobody,
    Callback(CCallback, UserData),
    /// A thread blocked in `switchyard_producer_send_sync`.
    Waiter(oneshot::Sender<Result<Delivery, SendError>>),
}

/// The send of a thread blocked in `switchyard_producer_send_sync`: answered once, or — if
/// dropped unanswered (the producer was freed with the send still in flight) — the waiter sees
/// its channel closed. Either way the send stops counting as in flight.
struct Waiting {
    tx: Option<oneshot::Sender<Result<Delivery, SendError>>>,
    inflight: Arc<InFlight>,
}

impl Waiting {
    fn complete(mut self, r: Result<DeliveryRef<'_>, SendError>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(r.map(|d| d.to_delivery()));
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.inflight.finish();
    }
}

/// A C delivery callback.
type CCallback = unsafe extern "C" fn(*mut c_void, switchyard_result, *const switchyard_delivery);

/// Runs a send's C callback with its outcome.
fn deliver_to_c(cb: CCallback, ud: UserData, r: Result<DeliveryRef<'_>, SendError>) {
    let e = match r {
        Ok(d) => {
            // SAFETY: `cb` is a function pointer the caller gave to `switchyard_producer_send`
            // with the contract that it is callable from any thread; the delivery `d` outlives
            // the call.
            with_delivered(&d, |d| {
                in_callback(|| unsafe { cb(ud.0, switchyard_result::SWITCHYARD_OK, d) })
            });
            return;
        }
        Err(e) => e,
    };
    let f = Failure::from(&e);
    let rc = f.code;
    set_last_error(f);
    let mut d = switchyard_delivery::failed(&e.record.topic);
    if let Some(k) = &e.record.key {
        d.key = k.as_ptr();
        d.key_len = k.len();
    }
    if let Some(p) = &e.record.payload {
        d.payload = p.as_ptr();
        d.payload_len = p.len();
    }
    // SAFETY: `cb` is a function pointer the caller gave to `switchyard_producer_send` with the
    // contract that it is callable from any thread; `d` (and the record buffers it points into,
    // owned by `e`) outlive the call.
    in_callback(|| unsafe { cb(ud.0, rc, &d) });
}

/// A producer's delivery handler for sends with a C callback (or none): the SDK calls it once
/// per send with the send's token — the callback's address (0 for none) and its user data — so
/// a send carries no allocation or reference count of its own for its completion.
#[derive(Debug)]
struct CSends {
    inflight: Arc<InFlight>,
}

impl CSends {
    /// The token of a send with a C callback (or none).
    fn token(notify: &Notify) -> [usize; 2] {
        match notify {
            Notify::Callback(cb, ud) => [*cb as usize, ud.0 as usize],
            Notify::Nobody | Notify::Waiter(_) => [0, 0],
        }
    }
}

impl DeliveryHandler for CSends {
    fn delivered(&self, token: [usize; 2], r: Result<DeliveryRef<'_>, SendError>) {
        if token[0] != 0 {
            // SAFETY: a non-zero `token[0]` was made by `CSends::token` from a `CCallback`
            // (`cb as usize`), so it is that function pointer's address.
            let cb = unsafe { std::mem::transmute::<usize, CCallback>(token[0]) };
            deliver_to_c(cb, UserData(token[1] as *mut c_void), r);
        }
        self.inflight.finish();
    }
}

/// A producer for `client`'s logical topics. `out` receives it; set to NULL on failure.
///
/// Thread safety: may be called from any thread. The producer may then be used from any number
/// of threads at once.
///
/// # Safety
///
/// `client` must be NULL or a live client; `out` must be NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_producer_new(
    client: *const switchyard_client,
    out: *mut *mut switchyard_producer,
) -> switchyard_result {
    // SAFETY: the caller's contract is the one `switchyard_producer_new_conf` needs; a NULL
    // conf means the defaults.
    unsafe { switchyard_producer_new_conf(client, std::ptr::null(), out) }
}

/// `switchyard_producer_new` with the producer settings and Kafka producer properties of
/// `conf` (see `switchyard_conf_set`), or the defaults when `conf` is NULL. The properties
/// apply to this producer only, above the client's (the config service's enforced settings
/// still win). A conf holding a client or consumer setting fails with
/// `SWITCHYARD_INVALID_ARGUMENT` naming it. `conf` is only read: free it when convenient.
///
/// Thread safety: as for `switchyard_producer_new`; no other thread may set `conf` during
/// the call.
///
/// # Safety
///
/// `client` must be NULL or a live client; `conf` NULL or a live conf; `out` NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_producer_new_conf(
    client: *const switchyard_client,
    conf: *const switchyard_conf,
    out: *mut *mut switchyard_producer,
) -> switchyard_result {
    guard(|| {
        // SAFETY: checked for NULL; the rest is the caller's contract above.
        let out = unsafe { arg_out(out, "out") }?;
        // SAFETY: as above.
        let client = unsafe { arg_ref(client, "client") }?;
        // SAFETY: NULL or live (the caller's contract above).
        let (opts, max_in_flight) = match unsafe { arg_conf(conf) } {
            Some(c) => c.producer_settings()?,
            None => (ProducerOptions::default(), SWITCHYARD_MAX_IN_FLIGHT),
        };
        let inner = client.inner.clone();
        let rt = inner.rt();
        let producer = {
            let _ctx = rt.enter();
            inner.sy().producer_with(opts)
        };
        let inflight = Arc::new(InFlight::new(max_in_flight));
        *out = into_handle(switchyard_producer {
            client: inner.clone(),
            producer,
            handler: Arc::new(CSends {
                inflight: inflight.clone(),
            }),
            inflight,
        });
        Ok(())
    })
}

/// Borrows `n` headers from C (valid during the call).
///
/// # Safety
///
/// `headers` is NULL or points to `n` readable `switchyard_header`s whose pointers satisfy
/// their documented contract, for `'a`.
unsafe fn arg_headers<'a>(
    headers: *const switchyard_header,
    n: usize,
) -> Result<Vec<(&'a str, &'a [u8])>, Failure> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if headers.is_null() {
        return Err(Failure::null(&format!("headers (with n_headers {n})")));
    }
    if n > isize::MAX as usize / std::mem::size_of::<switchyard_header>() {
        return Err(Failure::invalid(format!("n_headers {n} is too large")));
    }
    // SAFETY: not NULL, size checked, `n` readable entries by the caller's contract.
    let hs = unsafe { std::slice::from_raw_parts(headers, n) };
    let mut out = Vec::with_capacity(n);
    for (i, h) in hs.iter().enumerate() {
        // SAFETY: the entry's pointers follow the caller's contract.
        let name = unsafe { arg_str(h.name, &format!("headers[{i}].name")) }?;
        // SAFETY: as above.
        let value = unsafe { arg_bytes(h.value, h.value_len, &format!("headers[{i}].value")) }?;
        out.push((name, value.unwrap_or_default()));
    }
    Ok(out)
}

/// A record as C gave it: raw pointers, checked by `start_send`.
struct CRecord {
    /// Unused (NULL) for a send through a `switchyard_topic`.
    topic: *const c_char,
    key: *const u8,
    key_len: usize,
    payload: *const u8,
    payload_len: usize,
    headers: *const switchyard_header,
    n_headers: usize,
}

impl CRecord {
    /// A record without headers.
    fn new(
        topic: *const c_char,
        key: *const u8,
        key_len: usize,
        payload: *const u8,
        payload_len: usize,
    ) -> Self {
        Self {
            topic,
            key,
            key_len,
            payload,
            payload_len,
            headers: std::ptr::null(),
            n_headers: 0,
        }
    }
}

/// Where a send goes: a topic named in the call, or a topic handle.
#[derive(Clone, Copy)]
enum Dest<'a> {
    Named(*const switchyard_producer),
    Handle(&'a switchyard_topic),
}

/// A [`Dest`] with its pointers checked.
#[derive(Clone, Copy)]
enum Checked<'a> {
    Named(&'a switchyard_producer, &'a str),
    Handle(&'a switchyard_topic),
}

/// The SDK side of a send: the producer and the topic's name, or the topic's handle.
#[derive(Clone, Copy)]
enum Via<'a> {
    Name(&'a Producer, &'a str),
    Topic(&'a TopicProducer),
}

impl<'a> Via<'a> {
    /// The SDK producer the send goes through.
    fn producer(self) -> &'a Producer {
        match self {
            Via::Name(p, _) => p,
            Via::Topic(t) => t.producer(),
        }
    }

    #[allow(clippy::result_large_err)]
    fn send_with_handler(
        self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: &[(&str, &[u8])],
        handler: &Arc<CSends>,
        token: [usize; 2],
    ) -> Result<(), SendError> {
        match self {
            Via::Topic(t) => t.send_with_handler(key, payload, headers, handler, token),
            Via::Name(p, topic) => p.send_with_handler(
                RecordRef {
                    topic,
                    key,
                    payload,
                    headers,
                },
                handler,
                token,
            ),
        }
    }

    #[allow(clippy::result_large_err)]
    fn send_with_callback_ref(
        self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: &[(&str, &[u8])],
        callback: impl for<'r> FnOnce(Result<DeliveryRef<'r>, SendError>) + Send + 'static,
    ) -> Result<(), (SendError, SendRefCallback)> {
        match self {
            Via::Topic(t) => t.send_with_callback_ref(key, payload, headers, callback),
            Via::Name(p, topic) => p.send_with_callback_ref(
                RecordRef {
                    topic,
                    key,
                    payload,
                    headers,
                },
                callback,
            ),
        }
    }
}

/// Builds the record, counts it in flight and hands it to the SDK on this thread. A send the
/// SDK refuses at once completes with the error: for `switchyard_producer_send_sync` (a
/// `Notify::Waiter`) right here, otherwise in its callback, on a runtime thread.
///
/// # Safety
///
/// As for `switchyard_producer_send_with_headers` (for `Dest::Named`) or
/// `switchyard_topic_send` (for `Dest::Handle`).
unsafe fn start_send(dest: Dest<'_>, rec: CRecord, notify: Notify) -> Result<(), Failure> {
    let dest = match dest {
        Dest::Named(producer) => {
            // SAFETY: each pointer is checked for NULL; the rest is the caller's contract.
            let p = unsafe { arg_ref(producer, "producer") }?;
            // SAFETY: as above.
            let topic = unsafe { arg_str(rec.topic, "topic") }?;
            Checked::Named(p, topic)
        }
        Dest::Handle(t) => Checked::Handle(t),
    };
    let (client, inflight, handler) = match dest {
        Checked::Named(p, _) => (&p.client, &p.inflight, &p.handler),
        Checked::Handle(t) => (&t.client, &t.inflight, &t.handler),
    };
    // SAFETY: as above.
    let key = unsafe { arg_bytes(rec.key, rec.key_len, "key") }?;
    // SAFETY: as above.
    let payload = unsafe { arg_bytes(rec.payload, rec.payload_len, "payload") }?;
    if matches!(dest, Checked::Named(_, topic) if topic.is_empty()) {
        return Err(Failure::invalid("topic is empty"));
    }
    // SAFETY: as above.
    let headers = unsafe { arg_headers(rec.headers, rec.n_headers) }?;
    let via = match dest {
        Checked::Named(p, topic) => Via::Name(&p.producer, topic),
        Checked::Handle(t) => Via::Topic(&t.topic),
    };
    if inflight.full()
        && !on_runtime_thread()
        && !{
            // This thread waits instead of polling: the report threads serve meanwhile.
            let _want = via.producer().want_reports();
            inflight.wait_room(Some(Instant::now() + ROOM_WAIT))
        }
    {
        return Err(Failure::new(
            switchyard_result::SWITCHYARD_TIMEOUT,
            format!(
                "{} sends stayed in flight for {ROOM_WAIT:?}; the cluster does not keep up",
                inflight.cap()
            ),
        ));
    }
    inflight.start();
    // Borrowed: the Kafka client copies key, payload and headers; the SDK copies the record
    // only if it must keep it (held during a route switch) or hands it back failed.
    let tx = match notify {
        Notify::Waiter(tx) => tx,
        notify => {
            // A C callback (or none): completed by the producer's shared handler.
            let token = CSends::token(&notify);
            if let Err(e) = via.send_with_handler(key, payload, &headers, handler, token) {
                // Never on the sending thread, which may hold locks the callback takes.
                let handler = handler.clone();
                client
                    .rt()
                    .spawn(async move { handler.delivered(token, Err(e)) });
            }
            return Ok(());
        }
    };
    let done = Waiting {
        tx: Some(tx),
        inflight: inflight.clone(),
    };
    let callback = move |r: Result<DeliveryRef<'_>, SendError>| done.complete(r);
    if let Err((e, callback)) = via.send_with_callback_ref(key, payload, &headers, callback) {
        // The waiter is this thread: answered right here.
        callback(Err(e));
    }
    Ok(())
}

/// Sends a record to logical topic `topic` without waiting: returns once the record is queued,
/// and `callback(user_data, rc, delivery)` is called later, exactly once, when it is written or
/// has failed. A send that returns an error here is not queued and gets no callback.
///
/// - `key`/`payload`: copied before the call returns. NULL with length 0 means "no key" / "no
///   payload"; a non-NULL pointer with length 0 is an empty key / payload.
/// - `callback` may be NULL (the send is still waited for by `switchyard_producer_flush`).
///   See `switchyard_delivery_callback` for what a callback may do.
///
/// Records sent from one thread to one topic are written in the order they were sent (per
/// partition), also across a route change: the SDK holds sends to a topic being moved, lets
/// those in flight finish, then releases the held ones to the new cluster. A failed record is
/// handed back in the callback, never re-sent elsewhere.
///
/// The record is routed and handed to the cluster's Kafka client on the calling thread. When
/// `SWITCHYARD_MAX_IN_FLIGHT` (or `switchyard.max.in.flight`) sends are in flight this call blocks until some complete (at
/// most 30 s, then `SWITCHYARD_TIMEOUT`); inside a delivery callback it never blocks for
/// that. Under a quota with policy BLOCK it blocks until there is capacity (at most 30 s; then
/// the callback gets `SWITCHYARD_TIMEOUT`), and while the Kafka client's local queue is full
/// (at most 30 s).
///
/// Errors here: `SWITCHYARD_NULL_POINTER`, `SWITCHYARD_INVALID_ARGUMENT` (e.g. topic not UTF-8),
/// `SWITCHYARD_TIMEOUT`, `SWITCHYARD_CLOSED`. Routing and Kafka errors (e.g.
/// `SWITCHYARD_UNKNOWN_TOPIC`) arrive in the callback.
///
/// Thread safety: may be called from any number of threads at once, and from delivery
/// callbacks.
///
/// # Safety
///
/// `producer` must be NULL or a live producer; `topic` NULL or NUL-terminated; `key` and
/// `payload` NULL or readable for their lengths during the call; `callback` NULL or a function
/// that is safe to call from another thread with `user_data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_producer_send(
    producer: *const switchyard_producer,
    topic: *const c_char,
    key: *const u8,
    key_len: usize,
    payload: *const u8,
    payload_len: usize,
    callback: switchyard_delivery_callback,
    user_data: *mut c_void,
) -> switchyard_result {
    guard(|| {
        let notify = Notify::of(callback, user_data);
        // SAFETY: the caller's contract is the one `start_send` needs.
        unsafe {
            start_send(
                Dest::Named(producer),
                CRecord::new(topic, key, key_len, payload, payload_len),
                notify,
            )
        }
    })
}

/// `switchyard_producer_send` with record headers: `n_headers` entries at `headers` (NULL when
/// `n_headers` is 0), copied before the call returns, kept in order. A header with a NULL or
/// non-UTF-8 name fails the call (`SWITCHYARD_NULL_POINTER` / `SWITCHYARD_INVALID_ARGUMENT`).
///
/// Thread safety: as for `switchyard_producer_send`.
///
/// # Safety
///
/// As for `switchyard_producer_send`; `headers` must be NULL or point to `n_headers` readable
/// entries, each with a NUL-terminated `name` (or NULL) and `value` NULL or readable for
/// `value_len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_producer_send_with_headers(
    producer: *const switchyard_producer,
    topic: *const c_char,
    key: *const u8,
    key_len: usize,
    payload: *const u8,
    payload_len: usize,
    headers: *const switchyard_header,
    n_headers: usize,
    callback: switchyard_delivery_callback,
    user_data: *mut c_void,
) -> switchyard_result {
    guard(|| {
        let notify = Notify::of(callback, user_data);
        // SAFETY: the caller's contract is the one `start_send` needs.
        unsafe {
            start_send(
                Dest::Named(producer),
                CRecord {
                    headers,
                    n_headers,
                    ..CRecord::new(topic, key, key_len, payload, payload_len)
                },
                notify,
            )
        }
    })
}

/// One logical topic of a producer, named once, like a librdkafka topic handle: sends through
/// it (`switchyard_topic_send`) skip the check and lookup of the topic's name that every
/// `switchyard_producer_send` does. It follows the topic through route changes and migrations
/// exactly like sends by name. Create it with `switchyard_topic_new`; release it with
/// `switchyard_topic_free`, before the producer it was made from.
#[derive(Debug)]
pub struct switchyard_topic {
    client: Arc<ClientInner>,
    topic: TopicProducer,
    /// The producer's: sends through the handle count there (flush, in-flight cap).
    inflight: Arc<InFlight>,
    /// The producer's.
    handler: Arc<CSends>,
}

/// A handle to logical topic `topic` of `producer`. `out` receives it; set to NULL on failure.
///
/// Errors: `SWITCHYARD_NULL_POINTER`, `SWITCHYARD_INVALID_ARGUMENT` (empty or not UTF-8),
/// `SWITCHYARD_UNKNOWN_TOPIC` (no route for the topic now), `SWITCHYARD_CLOSED`.
///
/// Sends through the handle are sends of `producer`: `switchyard_producer_flush`,
/// `switchyard_producer_poll`, `switchyard_producer_in_flight` and the in-flight cap cover
/// them. The handle holds the producer's Kafka clients open: free every handle before the
/// producer (as librdkafka wants topic handles destroyed before their client).
///
/// Thread safety: may be called from any thread. The handle may then be used from any number of
/// threads at once.
///
/// # Safety
///
/// `producer` must be NULL or a live producer; `topic` NULL or NUL-terminated; `out` NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_topic_new(
    producer: *const switchyard_producer,
    topic: *const c_char,
    out: *mut *mut switchyard_topic,
) -> switchyard_result {
    guard(|| {
        // SAFETY: checked for NULL; the rest is the caller's contract above.
        let out = unsafe { arg_out(out, "out") }?;
        // SAFETY: as above.
        let p = unsafe { arg_ref(producer, "producer") }?;
        // SAFETY: as above.
        let topic = unsafe { arg_str(topic, "topic") }?;
        if topic.is_empty() {
            return Err(Failure::invalid("topic is empty"));
        }
        let sdk = &p.producer;
        let handle = {
            let _ctx = p.client.rt().enter();
            sdk.topic(topic)?
        };
        *out = into_handle(switchyard_topic {
            client: p.client.clone(),
            topic: handle,
            inflight: p.inflight.clone(),
            handler: p.handler.clone(),
        });
        Ok(())
    })
}

/// `switchyard_producer_send` to the handle's topic: the same contract, guarantees, blocking
/// and errors, without the topic argument. Records sent through a handle and by name from one
/// thread keep their order.
///
/// Thread safety: may be called from any number of threads at once, and from delivery
/// callbacks.
///
/// # Safety
///
/// `topic` must be NULL or a live topic handle; `key` and `payload` NULL or readable for their
/// lengths during the call; `callback` NULL or a function that is safe to call from another
/// thread with `user_data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_topic_send(
    topic: *const switchyard_topic,
    key: *const u8,
    key_len: usize,
    payload: *const u8,
    payload_len: usize,
    callback: switchyard_delivery_callback,
    user_data: *mut c_void,
) -> switchyard_result {
    guard(|| {
        // SAFETY: checked for NULL; liveness is the caller's contract.
        let t = unsafe { arg_ref(topic, "topic") }?;
        let notify = Notify::of(callback, user_data);
        // SAFETY: the caller's contract is the one `start_send` needs.
        unsafe {
            start_send(
                Dest::Handle(t),
                CRecord::new(std::ptr::null(), key, key_len, payload, payload_len),
                notify,
            )
        }
    })
}

/// Releases a topic handle. Sends made through it are not affected (they complete as sends of
/// its producer). NULL is a no-op.
///
/// Thread safety: call it once, when no other thread uses this handle.
///
/// # Safety
///
/// `topic` must be NULL or a handle not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_topic_free(topic: *mut switchyard_topic) {
    guard_value((), || {
        // SAFETY: NULL or a handle from `into_handle`, freed once (the caller's contract).
        let Some(t) = (unsafe { from_handle(topic) }) else {
            return Ok(());
        };
        // May hold the SDK producer's last reference (its producer freed first): dropping it
        // then closes the Kafka clients.
        drop_in_runtime(t.client.clone(), t);
        Ok(())
    })
}

/// Sends a record and waits until it is written or has failed. On success `*delivery` (when
/// not NULL) says where it went; on failure it names the topic and the return value says why.
/// Ordered with `switchyard_producer_send` calls made earlier on the same thread.
///
/// Thread safety: may be called from any number of threads at once, but not from a delivery
/// callback (it blocks: `SWITCHYARD_INVALID_ARGUMENT` there).
///
/// # Safety
///
/// As for `switchyard_producer_send`; `delivery` must be NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_producer_send_sync(
    producer: *const switchyard_producer,
    topic: *const c_char,
    key: *const u8,
    key_len: usize,
    payload: *const u8,
    payload_len: usize,
    delivery: *mut switchyard_delivery,
) -> switchyard_result {
    guard(|| {
        check_may_block("switchyard_producer_send_sync")?;
        let (tx, rx) = oneshot::channel();
        // SAFETY: the caller's contract is the one `start_send` needs.
        unsafe {
            start_send(
                Dest::Named(producer),
                CRecord::new(topic, key, key_len, payload, payload_len),
                Notify::Waiter(tx),
            )
        }?;
        // SAFETY: checked for NULL by `start_send` above; liveness is the caller's contract.
        let _want = unsafe { producer.as_ref() }.map(|p| p.producer.want_reports());
        let r = rx.blocking_recv().map_err(|_| {
            Failure::new(
                switchyard_result::SWITCHYARD_CLOSED,
                "the producer was freed before this send completed; it may or may not have \
                 been written",
            )
        })?;
        let (d, res) = match &r {
            Ok(d) => (switchyard_delivery::delivered(&d.view()), Ok(())),
            Err(e) => (
                switchyard_delivery::failed(&e.record.topic),
                Err(Failure::from(e)),
            ),
        };
        if !delivery.is_null() {
            // SAFETY: not NULL and writable (the caller's contract).
            unsafe { delivery.write(d) };
        }
        res
    })
}

/// Waits until every send started through this producer has completed and its callback has
/// returned. `timeout_ms` < 0 waits without limit; otherwise `SWITCHYARD_TIMEOUT` when sends
/// are still in flight after `timeout_ms` milliseconds (they continue).
///
/// Thread safety: may be called from any number of threads at once, while other threads keep
/// sending (it then also waits for their sends); not from a delivery callback
/// (`SWITCHYARD_INVALID_ARGUMENT`: it would wait for itself).
///
/// # Safety
///
/// `producer` must be NULL or a live producer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_producer_flush(
    producer: *const switchyard_producer,
    timeout_ms: i32,
) -> switchyard_result {
    guard(|| {
        // SAFETY: checked for NULL; liveness is the caller's contract.
        let p = unsafe { arg_ref(producer, "producer") }?;
        check_may_block("switchyard_producer_flush")?;
        let deadline = u64::try_from(timeout_ms)
            .ok()
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        let _want = p.producer.want_reports();
        if p.inflight.wait_idle(deadline) {
            return Ok(());
        }
        Err(Failure::new(
            switchyard_result::SWITCHYARD_TIMEOUT,
            format!(
                "{} sends still in flight after {timeout_ms} ms",
                p.inflight.current()
            ),
        ))
    })
}

/// Serves the delivery reports that have arrived, on the calling thread: runs their callbacks
/// right here, as `rd_kafka_poll` does for librdkafka. Waits up to `timeout_ms` milliseconds
/// for a first one when none has arrived (0: do not wait; < 0: wait without limit, until one
/// has). `served` (may be NULL) receives how many reports it served: callbacks run, and
/// `switchyard_producer_send_sync` calls (on other threads) completed.
///
/// Optional. Without it a switchyard thread runs the callbacks. A program that sends from one
/// thread and calls this there (after each send, or every few hundred sends) saves the hand-off
/// of every report to another thread, like a librdkafka program that calls `rd_kafka_poll`:
/// while it keeps polling the switchyard threads leave the reports to it, and within about
/// 10 ms after its last poll they take over again, so a program that stops polling loses no
/// callback. Callbacks keep their order per cluster whoever runs them.
///
/// Thread safety: may be called from any number of threads at once (each report is served
/// once); inside a delivery callback it runs nothing and returns at once (with `timeout_ms` 0)
/// or fails with `SWITCHYARD_INVALID_ARGUMENT` (it would wait for itself).
///
/// # Safety
///
/// `producer` must be NULL or a live producer; `served` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_producer_poll(
    producer: *const switchyard_producer,
    timeout_ms: i32,
    served: *mut usize,
) -> switchyard_result {
    guard(|| {
        // SAFETY: checked for NULL; liveness is the caller's contract.
        let p = unsafe { arg_ref(producer, "producer") }?;
        if timeout_ms != 0 {
            check_may_block("switchyard_producer_poll")?;
        }
        let sdk = &p.producer;
        let n = if in_callback_now() {
            0
        } else if timeout_ms < 0 {
            loop {
                let n = sdk.poll(Duration::from_millis(100));
                if n > 0 {
                    break n;
                }
            }
        } else {
            sdk.poll(Duration::from_millis(timeout_ms.unsigned_abs().into()))
        };
        if !served.is_null() {
            // SAFETY: not NULL and writable (the caller's contract).
            unsafe { served.write(n) };
        }
        Ok(())
    })
}

/// Sends started through this producer whose callback has not returned yet (0 when `producer`
/// is NULL).
///
/// Thread safety: may be called from any thread.
///
/// # Safety
///
/// `producer` must be NULL or a live producer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_producer_in_flight(
    producer: *const switchyard_producer,
) -> usize {
    guard_value(0, || {
        // SAFETY: checked for NULL; liveness is the caller's contract.
        let p = unsafe { arg_ref(producer, "producer") }?;
        Ok(p.inflight.current())
    })
}

/// Releases the producer. It first waits up to 10 s for sends in flight (like
/// `switchyard_producer_flush`); sends still in flight then get their callback with
/// `SWITCHYARD_CLOSED` (outcome unknown) before this returns. Every accepted send gets exactly
/// one callback. NULL is a no-op.
///
/// Thread safety: call it once, when no other thread uses this producer; never from one of
/// this producer's own callbacks. (From another producer's callback it does not wait.)
///
/// # Safety
///
/// `producer` must be NULL or a producer not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_producer_free(producer: *mut switchyard_producer) {
    guard_value((), || {
        // SAFETY: NULL or a handle from `into_handle`, freed once (the caller's contract).
        let Some(p) = (unsafe { from_handle(producer) }) else {
            return Ok(());
        };
        let may_block = !on_runtime_thread();
        if may_block {
            let _want = p.producer.want_reports();
            p.inflight.wait_idle(Some(Instant::now() + FREE_FLUSH));
        }
        // Dropping the SDK producer closes its Kafka clients: the sends still in flight are
        // purged and complete with SWITCHYARD_CLOSED here.
        drop_in_runtime(p.client.clone(), p);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_copied_nul_terminated_and_cut_on_char_boundaries() {
        let mut buf = [1 as c_char; SWITCHYARD_NAME_MAX];
        copy_name(&mut buf, "east");
        assert_eq!(
            &buf[..5],
            &[
                b'e' as c_char,
                b'a' as c_char,
                b's' as c_char,
                b't' as c_char,
                0
            ]
        );
        let long = "é".repeat(200); // 400 bytes
        copy_name(&mut buf, &long);
        let n = buf.iter().position(|c| *c == 0).unwrap();
        assert_eq!(n, 254);
    }
}
