//! `switchyard.Producer`: blocking `send`, non-blocking `produce` with delivery callbacks run by
//! `poll`/`flush` on the caller's thread, and asyncio `send_async`.
//!
//! Every send goes through the SDK's producer, so routing, quotas and route switches behave
//! exactly as in Rust. `produce` and `send` use its synchronous callback path
//! (`Producer::send_with_callback`) on the calling thread (GIL released for the call): the
//! record is routed and handed to the cluster's Kafka client right there, so one thread's
//! records keep their order per partition. The delivery report is taken in by `poll` on the
//! caller's thread (which first serves the SDK's reports there, as `rd_kafka_poll` does), or,
//! while no thread polls, by the Kafka client's delivery-report thread; either only queues the
//! result (no Python there), `poll`/`flush` run the Python callbacks on the caller's thread,
//! and a blocked `send` is woken. `send_async`, which
//! must never block the event loop (the synchronous path may wait under a BLOCK quota), hands
//! its sends to one dispatcher task per producer that awaits the SDK's async `send` (queue
//! order = start order) and completes each asyncio future.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{RecvTimeoutError, SyncSender, sync_channel};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use switchyard::{DeliveryRef, ProducerOptions, Record, RecordRef, SendError};
use tokio::sync::mpsc;

use crate::asyncio::{self, Outcome};
use crate::types::{Delivery, Names};
use crate::{args, errors, runtime};

/// Default for `max_in_flight`.
pub(crate) const DEFAULT_MAX_IN_FLIGHT: i64 = 65_536;

/// How long `produce` and `send` wait for room before raising `TimeoutError`.
const ROOM_WAIT: Duration = Duration::from_secs(30);

/// Longest stretch a blocking call stays detached before it checks for signals (Ctrl-C).
const SLICE: Duration = Duration::from_millis(100);

/// Jobs the dispatcher takes from its queue at a time.
const BATCH: usize = 512;

/// Whom to tell when a send completes.
enum Notify {
    /// Nobody: only the counters.
    Nobody,
    /// A Python callable, called by `poll`/`flush` on the Python thread.
    Callback(Py<PyAny>),
    /// A thread blocked in `send`.
    Waiter(SyncSender<Result<Delivery, SendError>>),
    /// An asyncio future and its loop.
    Future(Py<PyAny>, Py<PyAny>),
}

struct Job {
    record: Record,
    notify: Notify,
}

/// A completed send whose callback has not run yet.
struct Done {
    callback: Py<PyAny>,
    result: Result<Delivery, SendError>,
}

/// Shared by the Python object and the dispatcher.
struct State {
    /// Sends accepted and not completed (a completion with a callback counts until queued).
    in_flight: AtomicUsize,
    /// Completions waiting for their callback.
    done: Mutex<VecDeque<Done>>,
    /// Threads waiting in `wait`; completions signal `cv` only when there are some.
    waiting: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
    delivered: AtomicU64,
    failed: AtomicU64,
    max_in_flight: usize,
    /// The names of the last delivery, shared with the next ones of the same route.
    names: Mutex<Option<Arc<Names>>>,
}

impl State {
    /// Completes a send of the synchronous path (`send_with_callback_ref`).
    fn complete_ref(&self, notify: Notify, r: Result<DeliveryRef<'_>, SendError>) {
        let r = r.map(|d| {
            let names = {
                let mut last = self.names.lock();
                match last.as_ref() {
                    Some(n) if n.of(&d) => n.clone(),
                    _ => {
                        let n = Arc::new(Names {
                            topic: d.topic.to_owned(),
                            cluster: d.cluster.to_owned(),
                            physical_topic: d.physical_topic.to_owned(),
                        });
                        *last = Some(n.clone());
                        n
                    }
                }
            };
            Delivery::from_ref(names, &d)
        });
        self.complete(notify, r);
    }

    fn complete(&self, notify: Notify, r: Result<Delivery, SendError>) {
        if r.is_ok() {
            self.delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        match notify {
            Notify::Nobody => {}
            Notify::Callback(callback) => self.done.lock().push_back(Done {
                callback,
                result: r,
            }),
            Notify::Waiter(tx) => {
                let _ = tx.send(r);
            }
            Notify::Future(ev, fut) => asyncio::complete(ev, fut, |py| match r {
                Ok(d) => match Py::new(py, d) {
                    Ok(d) => Outcome::Value(d.into_any()),
                    Err(e) => Outcome::Error(e),
                },
                Err(e) => Outcome::Error(errors::send_error(py, e)),
            }),
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let _g = self.lock.lock();
            self.cv.notify_all();
        }
    }

    /// Waits (call detached from the interpreter) at most `d` for `ready` to hold; it is
    /// re-checked after each completion.
    fn wait(&self, d: Duration, ready: impl Fn(&Self) -> bool) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + d;
        let mut g = self.lock.lock();
        while !ready(self) {
            if self.cv.wait_until(&mut g, deadline).timed_out() {
                break;
            }
        }
        drop(g);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }

    fn has_done(&self) -> bool {
        !self.done.lock().is_empty()
    }

    fn pending(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst) + self.done.lock().len()
    }
}

/// Starts every queued send in queue order and completes each when its result comes. Ends
/// when the queue is closed and nothing is in flight.
async fn dispatch(
    producer: switchyard::Producer,
    mut queue: mpsc::UnboundedReceiver<Job>,
    state: Arc<State>,
) {
    let mut pending = FuturesUnordered::new();
    let mut batch = Vec::with_capacity(BATCH);
    let mut open = true;
    futures::future::poll_fn(|cx| {
        // New sends first, so each starts (reaches the Kafka client's queue) in order.
        while open {
            match queue.poll_recv_many(cx, &mut batch, BATCH) {
                Poll::Ready(0) => open = false,
                Poll::Ready(_) => {
                    for Job { record, notify } in batch.drain(..) {
                        let p = producer.clone();
                        let state = state.clone();
                        pending.push(async move {
                            let r = p.send(record).await;
                            state.complete(notify, r.map(Delivery::from_sdk));
                        });
                    }
                }
                Poll::Pending => break,
            }
        }
        loop {
            match pending.poll_next_unpin(cx) {
                Poll::Ready(Some(())) => {}
                Poll::Ready(None) if !open => return Poll::Ready(()),
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
}

/// Sends records to logical topics, routed by the configuration.
///
/// Three ways to send:
///
/// - :meth:`produce` queues a record and returns at once; its ``on_delivery(err, delivery)``
///   callback runs later on the thread that calls :meth:`poll`, :meth:`flush` or
///   :meth:`close` (like confluent-kafka).
/// - :meth:`send` blocks (GIL released) until the broker acknowledged, returning a
///   :class:`Delivery`.
/// - :meth:`send_async` returns an asyncio future of the :class:`Delivery`.
///
/// A failed send raises (or passes to the callback) a :class:`SwitchyardError` whose
/// ``record`` is the record given back: the SDK never re-sends it elsewhere. Records sent with
/// :meth:`produce` and :meth:`send` from one thread keep their order per partition, also across
/// a route change (they are routed and handed to Kafka on the calling thread, GIL released;
/// this may wait for capacity under a BLOCK quota, at most 30 s). :meth:`send_async` calls keep
/// their order among themselves. Delivery results arrive on a Kafka client thread, which only
/// queues them: Python callbacks run only in :meth:`poll`, :meth:`flush` and :meth:`close`, on
/// the thread that calls them. Safe to share between threads. Use it as a context manager, or
/// call :meth:`close`.
#[pyclass(module = "switchyard", frozen)]
pub(crate) struct Producer {
    state: Arc<State>,
    queue: Mutex<Option<mpsc::UnboundedSender<Job>>>,
    sdk: Mutex<Option<switchyard::Producer>>,
}

impl Producer {
    pub(crate) fn create(
        py: Python<'_>,
        sy: &switchyard::Switchyard,
        properties: BTreeMap<String, String>,
        max_in_flight: usize,
    ) -> PyResult<Self> {
        let rt = runtime::get(py)?;
        let _ctx = rt.enter();
        let sdk = sy.producer_with(ProducerOptions {
            properties,
            ..ProducerOptions::default()
        });
        let state = Arc::new(State {
            in_flight: AtomicUsize::new(0),
            done: Mutex::new(VecDeque::new()),
            waiting: AtomicUsize::new(0),
            lock: Mutex::new(()),
            cv: Condvar::new(),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            max_in_flight,
            names: Mutex::new(None),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        rt.spawn(dispatch(sdk.clone(), rx, state.clone()));
        Ok(Self {
            state,
            queue: Mutex::new(Some(tx)),
            sdk: Mutex::new(Some(sdk)),
        })
    }

    /// Takes a slot under `max_in_flight`, waiting (GIL released, serving callbacks) for room.
    fn reserve(&self, py: Python<'_>) -> PyResult<()> {
        let s = &*self.state;
        if s.in_flight.fetch_add(1, Ordering::SeqCst) < s.max_in_flight {
            return Ok(());
        }
        s.in_flight.fetch_sub(1, Ordering::SeqCst);
        let deadline = Instant::now() + ROOM_WAIT;
        // Resume when an eighth of the window is free, not at every completion.
        let low = s.max_in_flight - s.max_in_flight / 8;
        loop {
            self.serve(py, usize::MAX)?;
            if s.in_flight.load(Ordering::SeqCst) < low.max(1) {
                s.in_flight.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(errors::timeout(
                    py,
                    &format!(
                        "{} sends stayed in flight for {ROOM_WAIT:?} (max_in_flight {})",
                        s.in_flight.load(Ordering::SeqCst),
                        s.max_in_flight
                    ),
                ));
            }
            let d = SLICE.min(deadline - now);
            let _want = self.want_reports();
            py.detach(|| {
                s.wait(d, |s| {
                    s.in_flight.load(Ordering::SeqCst) < low || s.has_done()
                })
            });
            py.check_signals()?;
        }
    }

    /// While alive, the SDK's report threads serve reports even though this producer's
    /// `poll` calls serve them too: for a thread that waits detached from the interpreter.
    fn want_reports(&self) -> Option<switchyard::WantReports> {
        self.sdk
            .lock()
            .as_ref()
            .map(switchyard::Producer::want_reports)
    }

    /// The SDK producer, or `ClosedError`.
    fn sdk(&self, py: Python<'_>) -> PyResult<switchyard::Producer> {
        self.sdk
            .lock()
            .clone()
            .ok_or_else(|| errors::closed(py, "producer"))
    }

    /// Starts a send whose slot is taken on the SDK's synchronous path, on this thread (GIL
    /// released: it may wait for quota capacity or queue room). A send refused at once
    /// completes right here, with its error.
    fn start(&self, py: Python<'_>, sdk: &switchyard::Producer, args: &Args<'_>, notify: Notify) {
        let state = self.state.clone();
        let headers: Vec<(&str, &[u8])> = args
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), &v[..]))
            .collect();
        let record = RecordRef {
            topic: args.topic,
            key: args.key.as_deref(),
            payload: args.value.as_deref(),
            headers: &headers,
        };
        // Borrowed while detached: `bytes` and `str` contents are immutable, and the caller's
        // arguments keep them alive; the Kafka client copies them.
        let refused = py.detach(|| {
            sdk.send_with_callback_ref(record, move |r| state.complete_ref(notify, r))
                .err()
        });
        if let Some((e, callback)) = refused {
            callback(Err(e));
        }
    }

    /// Queues a job whose slot is taken.
    fn submit(&self, py: Python<'_>, job: Job) -> PyResult<()> {
        let q = self.queue.lock();
        let sent = match q.as_ref() {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        };
        drop(q);
        if !sent {
            self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(errors::closed(py, "producer"));
        }
        Ok(())
    }

    fn check_open(&self, py: Python<'_>) -> PyResult<()> {
        if self.queue.lock().is_none() {
            return Err(errors::closed(py, "producer"));
        }
        Ok(())
    }

    /// Runs up to `max` queued delivery callbacks; returns how many ran. An exception raised
    /// by a callback propagates (the callbacks after it stay queued).
    fn serve(&self, py: Python<'_>, max: usize) -> PyResult<usize> {
        // First take in the delivery reports that have arrived, right here (they only queue
        // their results): while this thread keeps polling, the SDK's report threads leave the
        // reports to it, which saves handing each one to another thread.
        let sdk = self.sdk.lock().clone();
        if let Some(sdk) = sdk {
            sdk.poll(Duration::ZERO);
        }
        let mut n = 0;
        while n < max {
            let Some(Done { callback, result }) = self.state.done.lock().pop_front() else {
                break;
            };
            n += 1;
            let (err, delivery): (Py<PyAny>, Py<PyAny>) = match result {
                Ok(d) => (py.None(), Py::new(py, d)?.into_any()),
                Err(e) => (
                    errors::send_error(py, e).into_value(py).into_any(),
                    py.None(),
                ),
            };
            callback.call1(py, (err, delivery))?;
        }
        Ok(n)
    }

    /// Waits (GIL released, in slices with signal checks) until `until` holds or `timeout`
    /// passes, serving callbacks as they come. Returns whether `until` held.
    fn wait_serving(
        &self,
        py: Python<'_>,
        timeout: Option<Duration>,
        until: impl Fn(&State) -> bool + Copy + Send + Sync,
    ) -> PyResult<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            self.serve(py, usize::MAX)?;
            if until(&self.state) {
                return Ok(true);
            }
            let left = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(false);
                    }
                    (d - now).min(SLICE)
                }
                None => SLICE,
            };
            let s = &*self.state;
            let _want = self.want_reports();
            py.detach(|| s.wait(left, |s| s.has_done() || until(s)));
            py.check_signals()?;
        }
    }
}

/// A record's arguments, checked, borrowing what Python cannot change.
struct Args<'a> {
    topic: &'a str,
    key: Option<Cow<'a, [u8]>>,
    value: Option<Cow<'a, [u8]>>,
    headers: Vec<(String, Bytes)>,
}

impl<'a> Args<'a> {
    fn new(
        topic: &'a Bound<'_, PyAny>,
        value: Option<&'a Bound<'_, PyAny>>,
        key: Option<&'a Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        Ok(Self {
            topic: args::name_ref(topic, "topic")?,
            key: args::bytes_ref(key, "key")?,
            value: args::bytes_ref(value, "value")?,
            headers: args::headers(headers)?,
        })
    }

    /// The record, owned (for the asyncio path, which sends it later).
    fn into_record(self) -> Record {
        Record {
            topic: self.topic.to_owned(),
            key: self.key.map(args::owned),
            payload: self.value.map(args::owned),
            headers: self.headers,
        }
    }
}

#[pymethods]
impl Producer {
    /// Queues a record for logical ``topic`` and returns at once (the GIL is not released
    /// unless ``max_in_flight`` sends are already outstanding; then it waits for room, running
    /// due callbacks, and raises :class:`TimeoutError` after 30 s).
    ///
    /// ``value`` and ``key`` are bytes, bytearray, memoryview, str (UTF-8) or None;
    /// ``headers`` is a dict or a list of ``(name, value)`` pairs. ``on_delivery(err,
    /// delivery)`` is called once, from :meth:`poll`, :meth:`flush` or :meth:`close` on the
    /// calling thread: ``(None, Delivery)`` on success, ``(SwitchyardError, None)`` on failure
    /// (the error's ``record`` is the record given back).
    #[pyo3(signature = (topic, value=None, key=None, headers=None, on_delivery=None))]
    fn produce(
        &self,
        py: Python<'_>,
        topic: &Bound<'_, PyAny>,
        value: Option<&Bound<'_, PyAny>>,
        key: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
        on_delivery: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        errors::guard(py, || {
            let record = Args::new(topic, value, key, headers)?;
            let notify = match args::callback(on_delivery, "on_delivery")? {
                Some(cb) => Notify::Callback(cb),
                None => Notify::Nobody,
            };
            let sdk = self.sdk(py)?;
            self.reserve(py)?;
            self.start(py, &sdk, &record, notify);
            Ok(())
        })
    }

    /// Runs the delivery callbacks that are due, waiting up to ``timeout`` seconds (GIL
    /// released; None = until one is due) for the first one. Returns how many ran.
    #[pyo3(signature = (timeout=0.0))]
    fn poll(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<usize> {
        errors::guard(py, || {
            let t = args::timeout(timeout, "timeout")?;
            let n = self.serve(py, usize::MAX)?;
            if n > 0 || t == Some(Duration::ZERO) {
                return Ok(n);
            }
            runtime::check_may_block(py, "Producer.poll")?;
            let deadline = t.map(|t| Instant::now() + t);
            loop {
                let left = match deadline {
                    Some(d) => {
                        let now = Instant::now();
                        if now >= d {
                            return Ok(0);
                        }
                        (d - now).min(SLICE)
                    }
                    None => SLICE,
                };
                let s = &*self.state;
                let _want = self.want_reports();
                py.detach(|| s.wait(left, State::has_done));
                py.check_signals()?;
                let n = self.serve(py, usize::MAX)?;
                if n > 0 {
                    return Ok(n);
                }
            }
        })
    }

    /// Waits (GIL released) until every record sent through this producer is delivered or
    /// failed and its callback has run, for at most ``timeout`` seconds (None = no limit).
    /// Returns how many are still outstanding (0 when all are done).
    #[pyo3(signature = (timeout=None))]
    fn flush(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<usize> {
        errors::guard(py, || {
            let t = args::timeout(timeout, "timeout")?;
            runtime::check_may_block(py, "Producer.flush")?;
            self.wait_serving(py, t, |s| s.pending() == 0)?;
            Ok(self.state.pending())
        })
    }

    /// Sends a record and waits (GIL released) for the broker's acknowledgement; returns the
    /// :class:`Delivery`. Raises a :class:`SwitchyardError` subclass carrying the record on
    /// failure, or :class:`TimeoutError` after ``timeout`` seconds (the record may still be
    /// written then).
    #[pyo3(signature = (topic, value=None, key=None, headers=None, timeout=None))]
    fn send(
        &self,
        py: Python<'_>,
        topic: &Bound<'_, PyAny>,
        value: Option<&Bound<'_, PyAny>>,
        key: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Delivery> {
        errors::guard(py, || {
            let record = Args::new(topic, value, key, headers)?;
            let t = args::timeout(timeout, "timeout")?;
            let sdk = self.sdk(py)?;
            runtime::check_may_block(py, "Producer.send")?;
            let deadline = t.map(|t| Instant::now() + t);
            self.reserve(py)?;
            let (tx, mut rx) = sync_channel(1);
            self.start(py, &sdk, &record, Notify::Waiter(tx));
            loop {
                let left = match deadline {
                    Some(d) => {
                        let now = Instant::now();
                        if now >= d {
                            return Err(errors::timeout(
                                py,
                                "no delivery report within the timeout; the record may still be written",
                            ));
                        }
                        (d - now).min(SLICE)
                    }
                    None => SLICE,
                };
                let _want = self.want_reports();
                let (r, back) = py.detach(move || (rx.recv_timeout(left), rx));
                rx = back;
                match r {
                    Ok(Ok(d)) => return Ok(d),
                    Ok(Err(e)) => return Err(errors::send_error(py, e)),
                    Err(RecvTimeoutError::Timeout) => py.check_signals()?,
                    Err(RecvTimeoutError::Disconnected) => {
                        return Err(errors::closed(py, "producer"));
                    }
                }
            }
        })
    }

    /// Sends a record; returns an asyncio future of its :class:`Delivery` (call from a
    /// coroutine: ``await producer.send_async(...)``). The future fails with a
    /// :class:`SwitchyardError` carrying the record. Never blocks the event loop (it does not
    /// wait for ``max_in_flight``: bound concurrency by what you await).
    #[pyo3(signature = (topic, value=None, key=None, headers=None))]
    fn send_async(
        &self,
        py: Python<'_>,
        topic: &Bound<'_, PyAny>,
        value: Option<&Bound<'_, PyAny>>,
        key: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        errors::guard(py, || {
            let record = Args::new(topic, value, key, headers)?.into_record();
            self.check_open(py)?;
            let (ev, fut) = asyncio::new_future(py)?;
            self.state.in_flight.fetch_add(1, Ordering::SeqCst);
            self.submit(
                py,
                Job {
                    record,
                    notify: Notify::Future(ev, fut.clone_ref(py)),
                },
            )?;
            Ok(fut)
        })
    }

    /// Flushes (see :meth:`flush`, running due callbacks), then closes the producer: later
    /// sends raise :class:`ClosedError`. Returns how many records were still outstanding when
    /// ``timeout`` ran out (they complete in the background; their callbacks no longer run).
    /// Idempotent.
    #[pyo3(signature = (timeout=None))]
    fn close(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<usize> {
        errors::guard(py, || {
            let t = args::timeout(timeout, "timeout")?;
            if self.queue.lock().is_none() {
                return Ok(0);
            }
            runtime::check_may_block(py, "Producer.close")?;
            self.wait_serving(py, t, |s| s.pending() == 0)?;
            let left = self.state.pending();
            drop(self.queue.lock().take());
            let sdk = self.sdk.lock().take();
            let rt = runtime::get(py)?;
            py.detach(|| {
                let _ctx = rt.enter();
                drop(sdk);
            });
            Ok(left)
        })
    }

    /// Records accepted and not yet completed, plus completed ones whose callback has not run.
    fn __len__(&self) -> usize {
        self.state.pending()
    }

    /// Records delivered so far.
    #[getter]
    fn delivered(&self) -> u64 {
        self.state.delivered.load(Ordering::Relaxed)
    }

    /// Records whose send failed so far.
    #[getter]
    fn failed(&self) -> u64 {
        self.state.failed.load(Ordering::Relaxed)
    }

    /// Route changes this producer has applied.
    #[getter]
    fn route_changes(&self) -> u64 {
        self.sdk.lock().as_ref().map_or(0, |p| p.route_changes())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py, None)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "Producer(pending={}, delivered={}, failed={}{})",
            self.state.pending(),
            self.delivered(),
            self.failed(),
            if self.queue.lock().is_none() {
                ", closed"
            } else {
                ""
            }
        )
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // Not closed: the dispatcher finishes what is in flight in the background. The SDK
        // producer's Kafka clients are released off this (possibly GIL-holding) thread.
        drop(self.queue.get_mut().take());
        if let Some(sdk) = self.sdk.get_mut().take()
            && let Some(rt) = runtime::RUNTIME.get()
        {
            rt.spawn_blocking(move || drop(sdk));
        }
    }
}
