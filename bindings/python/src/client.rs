//! `switchyard.Switchyard`: a connection to the configuration (service or file).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use crate::consumer::Consumer;
use crate::producer::{DEFAULT_MAX_IN_FLIGHT, Producer};
use crate::tls::{TlsArgs, TlsPem};
use crate::{args, errors, runtime};

/// A connection to the Switchyard configuration, shared by the producers and consumers made
/// from it.
///
/// Create it with :meth:`Switchyard.connect` (config service) or
/// :meth:`Switchyard.from_file` (a static desired-state or snapshot file). The configuration
/// is watched in the background: route and property changes reach running producers and
/// consumers without a restart and without losing in-flight records. Safe to share between
/// threads. Use it as a context manager, or call :meth:`close`.
#[pyclass(module = "switchyard", frozen)]
pub(crate) struct Switchyard {
    sy: RwLock<Option<Arc<switchyard::Switchyard>>>,
}

impl Switchyard {
    fn get(&self, py: Python<'_>) -> PyResult<Arc<switchyard::Switchyard>> {
        self.sy
            .read()
            .clone()
            .ok_or_else(|| errors::closed(py, "Switchyard client"))
    }
}

impl Drop for Switchyard {
    fn drop(&mut self) {
        // Dropping only signals the background tasks to stop; it does not block.
        drop(self.sy.get_mut().take());
    }
}

fn endpoints(obj: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let list: Vec<String> = if obj.cast::<PyString>().is_ok() {
        args::string(obj, "endpoint")?
            .split(',')
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect()
    } else if obj.cast::<PyList>().is_ok() || obj.cast::<PyTuple>().is_ok() {
        args::names(obj, "endpoint")?
    } else {
        return Err(PyTypeError::new_err(format!(
            "endpoint must be a str or a list of str, not {}",
            obj.get_type().name()?
        )));
    };
    if list.is_empty() {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "endpoint names no config service endpoint",
        ));
    }
    Ok(list)
}

#[pymethods]
impl Switchyard {
    /// Connects application ``app`` to the config service at ``endpoint`` (a URL such as
    /// ``"http://127.0.0.1:7070"`` or ``"https://config.example:7070"``, a comma-separated
    /// list, or a list of URLs tried in turn).
    ///
    /// Returns once a configuration is in use: at once when the last-known-good cache is
    /// valid, else when the first snapshot arrives (at most ``initial_timeout`` seconds, then
    /// :class:`NoConfigError`). The GIL is released while waiting.
    ///
    /// Args:
    ///     token: the app's client token (``switchyard token new --app APP``; the service then
    ///         serves this app's scoped configuration); None for a service without client tokens.
    ///     cache_path: file for the last-known-good snapshot (default
    ///         ``$SWITCHYARD_CACHE_DIR/<app>.snapshot`` or ``~/.cache/switchyard/<app>.snapshot``).
    ///     no_cache: keep no last-known-good cache.
    ///     client_id: the id reported to the service.
    ///     properties: Kafka client properties set by the application (enforced service
    ///         settings still win).
    ///     initial_timeout: seconds to wait for a first configuration without a cache.
    ///     watch_stall_timeout: seconds a config service that stopped answering (a hung or
    ///         cut-off replica) may hold the watch before the client fails over to the next
    ///         endpoint (at least 0.1).
    ///     ca_cert: for ``https://`` endpoints, the CA certificate(s) that signed the
    ///         service's certificate; None trusts the system's roots.
    ///     client_cert: a client certificate (chain), for a service that requires mutual TLS;
    ///         needs ``client_key``.
    ///     client_key: the private key of ``client_cert``.
    ///
    /// ``ca_cert``, ``client_cert`` and ``client_key`` are each a path (``str`` or
    /// ``os.PathLike``) or the PEM itself (``bytes``, ``bytearray``, ``memoryview``, or a
    /// ``str`` that starts with ``-----BEGIN``). A file that cannot be read raises the
    /// matching :class:`OSError` (``FileNotFoundError``, ``PermissionError``...) naming the
    /// argument and the path; content that is not PEM, or PEM without the expected blocks,
    /// raises :class:`InvalidArgumentError`. A service that cannot be reached over TLS (an
    /// ``http://`` endpoint for a TLS service or the reverse, an untrusted certificate, a
    /// missing client certificate) raises :class:`NoConfigError` after ``initial_timeout``,
    /// its message naming the cause.
    #[staticmethod]
    #[pyo3(signature = (endpoint, app, *, token=None, cache_path=None, no_cache=false, client_id=None, properties=None, initial_timeout=10.0, watch_stall_timeout=10.0, ca_cert=None, client_cert=None, client_key=None))]
    #[allow(clippy::too_many_arguments)]
    fn connect(
        py: Python<'_>,
        endpoint: &Bound<'_, PyAny>,
        app: &Bound<'_, PyAny>,
        token: Option<&Bound<'_, PyAny>>,
        cache_path: Option<PathBuf>,
        no_cache: bool,
        client_id: Option<&Bound<'_, PyAny>>,
        properties: Option<&Bound<'_, PyAny>>,
        initial_timeout: f64,
        watch_stall_timeout: f64,
        ca_cert: Option<&Bound<'_, PyAny>>,
        client_cert: Option<&Bound<'_, PyAny>>,
        client_key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        errors::guard(py, || {
            let endpoints = endpoints(endpoint)?;
            let app = args::name(app, "app")?;
            let token = match token {
                Some(t) if !t.is_none() => Some(args::name(t, "token")?),
                _ => None,
            };
            let client_id = match client_id {
                Some(t) if !t.is_none() => Some(args::name(t, "client_id")?),
                _ => None,
            };
            let properties = args::properties(properties)?;
            let initial = args::timeout(Some(initial_timeout), "initial_timeout")?
                .unwrap_or(Duration::from_secs(u64::from(u32::MAX)));
            let stall = args::timeout(Some(watch_stall_timeout), "watch_stall_timeout")?
                .unwrap_or(Duration::from_secs(u64::from(u32::MAX)));
            let tls = TlsArgs::parse(ca_cert, client_cert, client_key)?;
            runtime::check_may_block(py, "Switchyard.connect")?;
            let tls = TlsPem::check(py, py.detach(|| tls.load()))?;
            runtime::init_logging();
            let mut b = switchyard::Switchyard::builder(app)
                .language("python")
                .initial_timeout(initial)
                .watch_stall_timeout(stall);
            for e in endpoints {
                b = b.endpoint(e);
            }
            if let Some(t) = token {
                b = b.token(t);
            }
            if let Some(p) = cache_path {
                b = b.cache_path(p);
            }
            if no_cache {
                b = b.without_cache();
            }
            if let Some(id) = client_id {
                b = b.client_id(id);
            }
            for (k, v) in properties {
                b = b.property(k, v);
            }
            if let Some(ca) = tls.ca {
                b = b.ca_certificate(ca);
            }
            if let Some((cert, key)) = tls.identity {
                b = b.client_certificate(cert, key);
            }
            let rt = runtime::get(py)?;
            let sy = py
                .detach(|| rt.block_on(b.connect()))
                .map_err(|e| errors::sdk_error(py, &e))?;
            Ok(Self {
                sy: RwLock::new(Some(Arc::new(sy))),
            })
        })
    }

    /// A client whose configuration is a file: a desired-state YAML/JSON file (the format of
    /// ``switchyard apply -f``) or a snapshot cache file. No config service is contacted and
    /// the configuration never changes. Raises :class:`CacheError` when the file is unreadable
    /// or invalid.
    #[staticmethod]
    fn from_file(py: Python<'_>, path: PathBuf, app: &Bound<'_, PyAny>) -> PyResult<Self> {
        errors::guard(py, || {
            let app = args::name(app, "app")?;
            if path.as_os_str().is_empty() {
                return Err(pyo3::exceptions::PyValueError::new_err(
                    "path must not be empty",
                ));
            }
            runtime::init_logging();
            let rt = runtime::get(py)?;
            let sy = py
                .detach(|| {
                    let _ctx = rt.enter();
                    switchyard::Switchyard::from_file(&path, app)
                })
                .map_err(|e| errors::sdk_error(py, &e))?;
            Ok(Self {
                sy: RwLock::new(Some(Arc::new(sy))),
            })
        })
    }

    /// A :class:`Producer` for this application's logical topics.
    ///
    /// Args:
    ///     properties: extra Kafka producer properties (enforced service settings still win).
    ///     max_in_flight: sends accepted but not yet completed before ``produce`` waits for
    ///         room.
    #[pyo3(signature = (*, properties=None, max_in_flight=DEFAULT_MAX_IN_FLIGHT))]
    fn producer(
        &self,
        py: Python<'_>,
        properties: Option<&Bound<'_, PyAny>>,
        max_in_flight: i64,
    ) -> PyResult<Producer> {
        errors::guard(py, || {
            let sy = self.get(py)?;
            let properties = args::properties(properties)?;
            let max_in_flight = usize::try_from(max_in_flight)
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    pyo3::exceptions::PyValueError::new_err(format!(
                        "max_in_flight must be at least 1, not {max_in_flight}"
                    ))
                })?;
            Producer::create(py, &sy, properties, max_in_flight)
        })
    }

    /// A :class:`Consumer` in consumer group ``group`` over the logical ``topics`` (a list of
    /// str). A group with no committed offset starts at the earliest record.
    ///
    /// Args:
    ///     auto_commit: commit the offsets of returned messages in the background; when
    ///         False (the default) call :meth:`Consumer.commit`.
    ///     properties: extra Kafka consumer properties (enforced service settings still win).
    #[pyo3(signature = (group, topics, *, auto_commit=false, properties=None))]
    fn consumer(
        &self,
        py: Python<'_>,
        group: &Bound<'_, PyAny>,
        topics: &Bound<'_, PyAny>,
        auto_commit: bool,
        properties: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Consumer> {
        errors::guard(py, || {
            let sy = self.get(py)?;
            let group = args::name(group, "group")?;
            let topics = args::names(topics, "topics")?;
            let properties = args::properties(properties)?;
            Consumer::create(py, &sy, &group, &topics, auto_commit, properties)
        })
    }

    /// The configuration version in use.
    #[getter]
    fn version(&self, py: Python<'_>) -> PyResult<u64> {
        errors::guard(py, || Ok(self.get(py)?.version()))
    }

    /// This client's metrics in the Prometheus text exposition format (version 0.0.4): records
    /// and bytes sent and received per logical topic and cluster, send errors, the send latency
    /// histogram, throttled records, route changes, the configuration version and its age.
    /// Serve it on the application's ``/metrics`` endpoint.
    fn metrics(&self, py: Python<'_>) -> PyResult<String> {
        errors::guard(py, || Ok(self.get(py)?.metrics().encode()))
    }

    /// This client's id as reported to the service.
    #[getter]
    fn client_id(&self, py: Python<'_>) -> PyResult<String> {
        errors::guard(py, || Ok(self.get(py)?.client_id().to_string()))
    }

    /// The last error of the configuration watch (it keeps retrying), or None.
    #[getter]
    fn last_watch_error(&self, py: Python<'_>) -> PyResult<Option<String>> {
        errors::guard(py, || Ok(self.get(py)?.last_watch_error()))
    }

    /// Where logical ``topic`` is routed in the configuration in use: ``(cluster,
    /// physical_topic)``, or None when it is not routed.
    fn route(
        &self,
        py: Python<'_>,
        topic: &Bound<'_, PyAny>,
    ) -> PyResult<Option<(String, String)>> {
        errors::guard(py, || {
            let topic = args::string(topic, "topic")?;
            let md = self.get(py)?.metadata();
            Ok(md
                .route(&topic)
                .map(|r| (r.cluster.name.clone(), r.physical.clone())))
        })
    }

    /// Waits (GIL released) until configuration ``version`` or a later one is in use; returns
    /// the version. Raises :class:`TimeoutError` after ``timeout`` seconds.
    #[pyo3(signature = (version, timeout=30.0))]
    fn wait_for_version(&self, py: Python<'_>, version: i64, timeout: f64) -> PyResult<u64> {
        errors::guard(py, || {
            let version = u64::try_from(version).map_err(|_| {
                pyo3::exceptions::PyValueError::new_err(format!(
                    "version must be >= 0, not {version}"
                ))
            })?;
            let t = args::timeout(Some(timeout), "timeout")?
                .unwrap_or(Duration::from_secs(u64::from(u32::MAX)));
            let sy = self.get(py)?;
            runtime::check_may_block(py, "Switchyard.wait_for_version")?;
            let rt = runtime::get(py)?;
            py.detach(|| rt.block_on(sy.wait_for_version(version, t)))
                .map_err(|e| errors::sdk_error(py, &e))
        })
    }

    /// Stops watching the configuration. Producers and consumers made from this client keep
    /// working with the configuration they have. Idempotent.
    fn close(&self) {
        drop(self.sy.write().take());
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, PyTuple>) -> bool {
        self.close();
        false
    }

    fn __repr__(&self) -> String {
        match self.sy.read().as_ref() {
            Some(sy) => format!(
                "Switchyard(client_id={:?}, version={})",
                sy.client_id(),
                sy.version()
            ),
            None => "Switchyard(closed)".into(),
        }
    }
}
