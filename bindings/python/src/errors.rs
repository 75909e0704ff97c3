//! SDK errors as Python exceptions, and the panic guard every entry point runs in.
//!
//! The exception classes are defined in Python (`switchyard/_errors.py`) so that they can also
//! derive from the matching builtin (`InvalidArgumentError` is a `ValueError`, `TimeoutError`
//! a `TimeoutError`); this module looks them up once and instantiates them.

use std::panic::{AssertUnwindSafe, catch_unwind};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};
use switchyard::ErrorKind;

use crate::types::Record;

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The Python class name for an SDK error kind.
pub(crate) fn class_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidArgument => "InvalidArgumentError",
        ErrorKind::UnknownTopic => "UnknownTopicError",
        ErrorKind::NoConfig => "NoConfigError",
        ErrorKind::ConfigService => "ConfigServiceError",
        ErrorKind::Cache => "CacheError",
        ErrorKind::Kafka => "KafkaError",
        ErrorKind::Timeout => "TimeoutError",
        ErrorKind::Closed => "ClosedError",
        ErrorKind::QuotaExceeded => "QuotaExceededError",
        // `ErrorKind` is non-exhaustive: a kind added later reads as internal until mapped.
        _ => "InternalError",
    }
}

/// A `switchyard` exception instance of class `class` (a name from `_errors.py`).
pub(crate) fn exception<'py>(
    py: Python<'py>,
    class: &str,
    message: &str,
    retriable: bool,
    record: Option<Record>,
) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let module = ERRORS
            .get_or_try_init(py, || {
                PyModule::import(py, "switchyard._errors").map(Bound::unbind)
            })?
            .bind(py);
        let cls = module.getattr(class)?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("retriable", retriable)?;
        if let Some(r) = record {
            kwargs.set_item("record", Py::new(py, r)?)?;
        }
        let value = cls.call((message,), Some(&kwargs))?;
        Ok(PyErr::from_value(value))
    };
    // Failing to build the exception (e.g. `switchyard._errors` not importable) is itself
    // reported, rather than lost.
    build().unwrap_or_else(|e| e)
}

/// An SDK error as a Python exception.
pub(crate) fn sdk_error(py: Python<'_>, e: &switchyard::Error) -> PyErr {
    exception(
        py,
        class_name(e.kind()),
        &e.to_string(),
        e.is_retriable(),
        None,
    )
}

/// A failed send as a Python exception carrying the record given back.
pub(crate) fn send_error(py: Python<'_>, e: switchyard::SendError) -> PyErr {
    let retriable = e.is_retriable();
    let class = class_name(e.kind());
    let message = e.error.to_string();
    exception(
        py,
        class,
        &message,
        retriable,
        Some(Record::from_sdk(e.record)),
    )
}

/// `switchyard.ClosedError`.
pub(crate) fn closed(py: Python<'_>, what: &str) -> PyErr {
    exception(
        py,
        "ClosedError",
        &format!("the {what} is closed"),
        false,
        None,
    )
}

/// `switchyard.TimeoutError`.
pub(crate) fn timeout(py: Python<'_>, message: &str) -> PyErr {
    exception(py, "TimeoutError", message, true, None)
}

/// `switchyard.InternalError`.
pub(crate) fn internal(py: Python<'_>, message: &str) -> PyErr {
    exception(py, "InternalError", message, false, None)
}

/// Runs an entry point: a Rust panic inside becomes `switchyard.InternalError` instead of
/// PyO3's `PanicException` (a `BaseException` that `except Exception` does not catch).
pub(crate) fn guard<T>(py: Python<'_>, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".into());
            Err(internal(py, &format!("internal panic: {what}")))
        }
    }
}
