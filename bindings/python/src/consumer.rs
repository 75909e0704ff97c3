//! `switchyard.Consumer`: a consumer group member over logical topics, with `poll`, `commit`
//! and their asyncio forms.
//!
//! Every receive (sync or async) runs as a runtime task that takes `recv_lock`, receives one
//! message from the SDK and puts it at the back of `ready`; the caller then takes the *front*
//! of `ready`. So messages come out in the order the SDK returned them even when an asyncio
//! receive is cancelled after its message arrived (the message stays in `ready` for the next
//! receive) or when sync and async receives are mixed. A `poll` that times out leaves its task
//! running rather than cancelling the SDK's receive: the SDK does its drain bookkeeping inside
//! receives, and a receive cancelled every few hundred milliseconds would never finish it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use switchyard::ConsumerOptions;

use crate::types::Message;
use crate::{args, errors, runtime};

/// Tells consumers apart, so a message is committed through the consumer that returned it.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Longest stretch a blocking call stays detached before it checks for signals (Ctrl-C).
const SLICE: Duration = Duration::from_millis(200);

/// State shared with the runtime tasks of `recv_async`.
pub(crate) struct Shared {
    consumer: RwLock<Option<Arc<switchyard::Consumer>>>,
    id: u64,
    /// Received, not yet handed to the application.
    ready: Mutex<VecDeque<switchyard::Message>>,
    recv_lock: tokio::sync::Mutex<()>,
    /// Set on close: pending async receives end with `ClosedError`.
    closed: tokio::sync::watch::Sender<bool>,
    /// A background receive for `poll` is running.
    filling: AtomicBool,
    /// Its failure, for the next `poll`.
    failure: Mutex<Option<RecvFailure>>,
    /// Signalled when a background receive ends.
    cv_lock: Mutex<()>,
    cv: Condvar,
}

impl Shared {
    fn take_ready(&self) -> Option<switchyard::Message> {
        self.ready.lock().pop_front()
    }

    /// Receives one message into `ready` (unless one is there already); stops early when
    /// the consumer is closed.
    async fn fill(&self) -> Result<(), RecvFailure> {
        let _g = self.recv_lock.lock().await;
        if !self.ready.lock().is_empty() {
            return Ok(());
        }
        let c = self.consumer.read().clone().ok_or(RecvFailure::Closed)?;
        let mut closed = self.closed.subscribe();
        tokio::select! {
            r = c.recv() => {
                let m = r.map_err(RecvFailure::Sdk)?;
                self.ready.lock().push_back(m);
                Ok(())
            }
            _ = closed.wait_for(|c| *c) => Err(RecvFailure::Closed),
        }
    }
}

impl Shared {
    /// Starts a background receive into `ready` unless one is running.
    fn start_fill(self: &Arc<Self>, rt: &tokio::runtime::Runtime) {
        if self.filling.swap(true, Ordering::SeqCst) {
            return;
        }
        let s = self.clone();
        rt.spawn(async move {
            if let Err(f) = s.fill().await {
                *s.failure.lock() = Some(f);
            }
            s.filling.store(false, Ordering::SeqCst);
            let _g = s.cv_lock.lock();
            s.cv.notify_all();
        });
    }

    /// Waits at most `d` for the background receive to end (call detached).
    fn wait_fill(&self, d: Duration) {
        let mut g = self.cv_lock.lock();
        if self.ready.lock().is_empty()
            && self.failure.lock().is_none()
            && self.filling.load(Ordering::SeqCst)
        {
            self.cv.wait_for(&mut g, d);
        }
    }
}

enum RecvFailure {
    Closed,
    Sdk(switchyard::Error),
}

impl RecvFailure {
    fn into_pyerr(self, py: Python<'_>) -> PyErr {
        match self {
            RecvFailure::Closed => errors::closed(py, "consumer"),
            RecvFailure::Sdk(e) => errors::sdk_error(py, &e),
        }
    }
}

/// Resolves `fut` with the front of `ready`, on the event loop's thread.
#[pyclass(module = "switchyard", frozen)]
pub(crate) struct ResolveMessage {
    shared: Arc<Shared>,
    fut: Py<PyAny>,
    failure: Mutex<Option<PyErr>>,
}

#[pymethods]
impl ResolveMessage {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let fut = self.fut.bind(py);
        if fut.call_method0("done")?.extract::<bool>()? {
            // Cancelled: a received message stays in `ready` for the next receive.
            return Ok(());
        }
        if let Some(e) = self.failure.lock().take() {
            fut.call_method1("set_exception", (e.into_value(py),))?;
            return Ok(());
        }
        match self.shared.take_ready() {
            Some(msg) => {
                let m = Py::new(
                    py,
                    Message {
                        msg,
                        consumer_id: self.shared.id,
                    },
                )?;
                fut.call_method1("set_result", (m,))?;
            }
            // Another receive took it meanwhile: receive again for this future.
            None => spawn_recv(
                py,
                self.shared.clone(),
                fut.getattr("get_loop")?.call0()?.unbind(),
                self.fut.clone_ref(py),
            )?,
        }
        Ok(())
    }
}

fn spawn_recv(py: Python<'_>, shared: Arc<Shared>, ev: Py<PyAny>, fut: Py<PyAny>) -> PyResult<()> {
    let rt = runtime::get(py)?;
    rt.spawn(async move {
        let r = shared.fill().await;
        let _ = Python::try_attach(|py| {
            let failure = r.err().map(|f| f.into_pyerr(py));
            let cb = ResolveMessage {
                shared,
                fut,
                failure: Mutex::new(failure),
            };
            // A closed loop: nobody awaits the future; a received message stays in `ready`.
            let _ = Py::new(py, cb).and_then(|cb| {
                ev.bind(py)
                    .call_method1("call_soon_threadsafe", (cb,))
                    .map(|_| ())
            });
        });
    });
    Ok(())
}

/// A member of a consumer group reading logical topics wherever the configuration says they
/// live; it follows route changes without a restart (draining the old location first, so
/// nothing is lost).
///
/// Receive with :meth:`poll` (blocking, GIL released) or ``await`` :meth:`recv_async`; commit
/// with :meth:`commit` / :meth:`commit_async` unless created with ``auto_commit=True``. The
/// group joins on the first receive. Use it as a context manager, or call :meth:`close`.
#[pyclass(module = "switchyard", frozen)]
pub(crate) struct Consumer {
    shared: Arc<Shared>,
    group: String,
}

impl Consumer {
    pub(crate) fn create(
        py: Python<'_>,
        sy: &switchyard::Switchyard,
        group: &str,
        topics: &[String],
        auto_commit: bool,
        properties: BTreeMap<String, String>,
    ) -> PyResult<Self> {
        let rt = runtime::get(py)?;
        let _ctx = rt.enter();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let opts = ConsumerOptions {
            properties,
            auto_commit,
            ..ConsumerOptions::default()
        };
        let c = sy
            .consumer_with(group, &names, opts)
            .map_err(|e| errors::sdk_error(py, &e))?;
        let (closed, _) = tokio::sync::watch::channel(false);
        Ok(Self {
            shared: Arc::new(Shared {
                consumer: RwLock::new(Some(Arc::new(c))),
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                ready: Mutex::new(VecDeque::new()),
                recv_lock: tokio::sync::Mutex::new(()),
                closed,
                filling: AtomicBool::new(false),
                failure: Mutex::new(None),
                cv_lock: Mutex::new(()),
                cv: Condvar::new(),
            }),
            group: group.to_string(),
        })
    }

    fn sdk(&self, py: Python<'_>) -> PyResult<Arc<switchyard::Consumer>> {
        self.shared
            .consumer
            .read()
            .clone()
            .ok_or_else(|| errors::closed(py, "consumer"))
    }

    fn message(&self, msg: switchyard::Message) -> Message {
        Message {
            msg,
            consumer_id: self.shared.id,
        }
    }

    fn own_message<'py>(&self, message: &Bound<'py, PyAny>) -> PyResult<Bound<'py, Message>> {
        let m = message.cast::<Message>().map_err(|_| {
            PyTypeError::new_err(format!(
                "message must be a switchyard.Message, not {}",
                message
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        if m.get().consumer_id != self.shared.id {
            return Err(PyValueError::new_err(
                "the message was returned by another consumer; commit it through that one",
            ));
        }
        Ok(m.clone())
    }
}

#[pymethods]
impl Consumer {
    /// The next message from any subscribed topic, waiting up to ``timeout`` seconds (GIL
    /// released; None = no limit; 0 = only what is already there). Returns None when nothing
    /// arrived in time; a timeout loses nothing.
    #[pyo3(signature = (timeout=None))]
    fn poll(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Message>> {
        errors::guard(py, || {
            let t = args::timeout(timeout, "timeout")?;
            if let Some(m) = self.shared.take_ready() {
                return Ok(Some(self.message(m)));
            }
            self.sdk(py)?;
            runtime::check_may_block(py, "Consumer.poll")?;
            let rt = runtime::get(py)?;
            let deadline = t.map(|t| Instant::now() + t);
            loop {
                if let Some(m) = self.shared.take_ready() {
                    return Ok(Some(self.message(m)));
                }
                if let Some(f) = self.shared.failure.lock().take() {
                    return Err(f.into_pyerr(py));
                }
                self.shared.start_fill(rt);
                let slice = match deadline {
                    Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
                    None => SLICE,
                };
                let shared = &*self.shared;
                py.detach(|| shared.wait_fill(slice));
                py.check_signals()?;
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    // A message that arrived meanwhile is returned now rather than later.
                    return Ok(self.shared.take_ready().map(|m| self.message(m)));
                }
            }
        })
    }

    /// An asyncio future of the next message (``await consumer.recv_async()``). Cancelling it
    /// loses nothing: a message that arrived meanwhile is returned by the next receive.
    fn recv_async(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        errors::guard(py, || {
            self.sdk(py)?;
            let (ev, fut) = crate::asyncio::new_future(py)?;
            if let Some(m) = self.shared.take_ready() {
                fut.call_method1(py, "set_result", (Py::new(py, self.message(m))?,))?;
                return Ok(fut);
            }
            spawn_recv(py, self.shared.clone(), ev, fut.clone_ref(py))?;
            Ok(fut)
        })
    }

    /// Commits ``message`` and every earlier message of its partition for the group, and
    /// waits (GIL released) for the broker to confirm. ``message`` must come from this
    /// consumer. Commit in receive order: as in Kafka, committing an earlier message after a
    /// later one of the same partition moves the committed offset back.
    fn commit(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<()> {
        errors::guard(py, || {
            let m = self.own_message(message)?;
            let c = self.sdk(py)?;
            runtime::check_may_block(py, "Consumer.commit")?;
            let rt = runtime::get(py)?;
            let msg = &m.get().msg;
            py.detach(|| rt.block_on(c.commit(msg)))
                .map_err(|e| errors::sdk_error(py, &e))
        })
    }

    /// An asyncio future that completes when ``message`` (and every earlier message of its
    /// partition) is committed.
    fn commit_async(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        errors::guard(py, || {
            let m = self.own_message(message)?;
            let c = self.sdk(py)?;
            let (ev, fut) = crate::asyncio::new_future(py)?;
            let msg = m.get().msg.clone();
            let rt = runtime::get(py)?;
            let fut2 = fut.clone_ref(py);
            rt.spawn(async move {
                let r = c.commit(&msg).await;
                crate::asyncio::complete(ev, fut2, |py| match r {
                    Ok(()) => crate::asyncio::Outcome::Value(py.None()),
                    Err(e) => crate::asyncio::Outcome::Error(errors::sdk_error(py, &e)),
                });
            });
            Ok(fut)
        })
    }

    /// The consumer group id.
    #[getter]
    fn group(&self) -> &str {
        &self.group
    }

    /// Clusters this consumer reads now, each with its physical topics:
    /// ``[(cluster, [physical_topic, ...]), ...]``.
    fn assignment(&self, py: Python<'_>) -> PyResult<Vec<(String, Vec<String>)>> {
        errors::guard(py, || Ok(self.sdk(py)?.assignment_summary()))
    }

    /// Leaves the group on every cluster (GIL released; may take a moment). Pending
    /// :meth:`recv_async` futures fail with :class:`ClosedError`. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        errors::guard(py, || {
            let _ = self.shared.closed.send(true);
            let c = self.shared.consumer.write().take();
            if let Some(c) = c {
                let rt = runtime::get(py)?;
                py.detach(|| {
                    // Receives in progress hold the consumer until they see `closed`.
                    let _g = rt.block_on(self.shared.recv_lock.lock());
                    let _ctx = rt.enter();
                    drop(c);
                });
            }
            Ok(())
        })
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "Consumer(group={:?}{})",
            self.group,
            if self.shared.consumer.read().is_none() {
                ", closed"
            } else {
                ""
            }
        )
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.shared.closed.send(true);
        // Leaving the group blocks: off this (possibly GIL-holding) thread.
        if let Some(c) = self.shared.consumer.write().take()
            && let Some(rt) = runtime::RUNTIME.get()
        {
            rt.spawn_blocking(move || drop(c));
        }
    }
}
