//! The Tokio runtime every Switchyard object of the process runs on, and logging.

use std::sync::{Once, OnceLock};

use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::errors;

/// Worker threads of the runtime (SDK tasks; asyncio futures are resolved from them).
const WORKER_THREADS: usize = 2;

pub(crate) static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The process-wide runtime, started on first use.
pub(crate) fn get(py: Python<'_>) -> PyResult<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("switchyard-py")
        .enable_all()
        .build()
        .map_err(|e| errors::internal(py, &format!("cannot start the runtime: {e}")))?;
    // Another thread may have won the race; its runtime is used and ours is dropped.
    let _ = RUNTIME.set(rt);
    Ok(RUNTIME.get().expect("set above"))
}

/// Fails when called on a runtime thread, where blocking would deadlock.
pub(crate) fn check_may_block(py: Python<'_>, what: &str) -> PyResult<()> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(errors::exception(
            py,
            "InvalidArgumentError",
            &format!("{what} blocks and cannot be called on a Switchyard runtime thread"),
            false,
            None,
        ));
    }
    Ok(())
}

/// Logs go to stderr when `SWITCHYARD_LOG` is set (a `tracing` filter such as `info`);
/// otherwise the library prints nothing.
pub(crate) fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("SWITCHYARD_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .try_init();
        }
    });
}
