//! # switchyard-python: the Python binding of the Switchyard SDK
//!
//! `import switchyard` gives a Python program the same routing, hot swap, quotas and
//! delivery guarantees as a Rust one: every call goes through the Rust SDK, running on one
//! Tokio runtime per process. The Python package (`python/switchyard`) re-exports this
//! extension module (`switchyard._switchyard`) and adds the exception classes and type stubs.
//!
//! Conventions:
//! - The GIL is released around every call that may block (connect, send, poll, flush,
//!   commit, close); blocking calls wake up every 100-200 ms to honour Ctrl-C.
//! - Arguments are checked: a wrong type raises `TypeError`, a bad value `ValueError`, each
//!   naming the argument. SDK failures raise a `switchyard.SwitchyardError` subclass per error
//!   kind; a Rust panic raises `switchyard.InternalError` rather than crashing.
//! - asyncio futures are completed on their event loop's thread via `call_soon_threadsafe`.

mod args;
mod asyncio;
mod client;
mod consumer;
mod errors;
mod producer;
mod runtime;
mod tls;
mod types;

use pyo3::prelude::*;

/// The native part of the `switchyard` package.
#[pymodule]
fn _switchyard(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::Switchyard>()?;
    m.add_class::<producer::Producer>()?;
    m.add_class::<consumer::Consumer>()?;
    m.add_class::<types::Delivery>()?;
    m.add_class::<types::Message>()?;
    m.add_class::<types::Record>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
