//! asyncio futures completed from Rust threads.
//!
//! A Rust task never touches an asyncio future directly: it hands a [`Resolve`] callable to
//! `loop.call_soon_threadsafe`, and the event loop's own thread completes the future (unless
//! it was cancelled meanwhile). The consumer has its own resolver, which keeps a message whose
//! future was cancelled.

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

static ASYNCIO: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// A future of the running event loop, and the loop: `(loop, future)`.
pub(crate) fn new_future(py: Python<'_>) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
    let asyncio = ASYNCIO
        .get_or_try_init(py, || PyModule::import(py, "asyncio").map(Bound::unbind))?
        .bind(py);
    let ev = asyncio.call_method0("get_running_loop")?;
    let fut = ev.call_method0("create_future")?;
    Ok((ev.unbind(), fut.unbind()))
}

/// What to complete a future with.
pub(crate) enum Outcome {
    /// A result value.
    Value(Py<PyAny>),
    /// An exception.
    Error(PyErr),
}

/// Completes `fut` on its loop's thread (a callable given to `call_soon_threadsafe`).
#[pyclass(module = "switchyard", frozen)]
pub(crate) struct Resolve {
    fut: Py<PyAny>,
    outcome: Mutex<Option<Outcome>>,
}

#[pymethods]
impl Resolve {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let Some(outcome) = self.outcome.lock().take() else {
            return Ok(());
        };
        let fut = self.fut.bind(py);
        if fut.call_method0("done")?.extract::<bool>()? {
            return Ok(());
        }
        match outcome {
            Outcome::Value(v) => {
                fut.call_method1("set_result", (v,))?;
            }
            Outcome::Error(e) => {
                fut.call_method1("set_exception", (e.into_value(py),))?;
            }
        }
        Ok(())
    }
}

/// Schedules the completion of `fut` on `ev` from any thread. `make` builds the outcome once
/// attached to the interpreter. Does nothing when the interpreter is shutting down or the
/// loop is closed (then nobody awaits the future any more).
pub(crate) fn complete(ev: Py<PyAny>, fut: Py<PyAny>, make: impl FnOnce(Python<'_>) -> Outcome) {
    let _ = Python::try_attach(|py| {
        let r = Resolve {
            fut,
            outcome: Mutex::new(Some(make(py))),
        };
        let _ = Py::new(py, r).and_then(|r| {
            ev.bind(py)
                .call_method1("call_soon_threadsafe", (r,))
                .map(|_| ())
        });
    });
}
