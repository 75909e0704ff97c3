//! Value types handed to Python: `Delivery`, `Message`, `Record`.

use std::sync::Arc;

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

fn opt_bytes<'py>(py: Python<'py>, b: &Option<Bytes>) -> Option<Bound<'py, PyBytes>> {
    b.as_ref().map(|b| PyBytes::new(py, b))
}

fn header_list<'py>(py: Python<'py>, h: &[(String, Bytes)]) -> PyResult<Bound<'py, PyList>> {
    let items = h
        .iter()
        .map(|(k, v)| {
            PyTuple::new(
                py,
                [
                    k.into_pyobject(py)?.into_any(),
                    PyBytes::new(py, v).into_any(),
                ],
            )
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

/// The names in a [`Delivery`]: shared by the deliveries of one route, so a delivery report
/// copies no string.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Names {
    pub(crate) topic: String,
    pub(crate) cluster: String,
    pub(crate) physical_topic: String,
}

impl Names {
    /// Whether these are the names of `d`.
    pub(crate) fn of(&self, d: &switchyard::DeliveryRef<'_>) -> bool {
        self.topic == d.topic
            && self.cluster == d.cluster
            && self.physical_topic == d.physical_topic
    }
}

/// Where a record was written.
#[pyclass(module = "switchyard", frozen)]
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    names: Arc<Names>,
    partition: i32,
    offset: i64,
    config_version: u64,
}

impl Delivery {
    pub(crate) fn from_sdk(d: switchyard::Delivery) -> Self {
        Self {
            names: Arc::new(Names {
                topic: d.topic,
                cluster: d.cluster,
                physical_topic: d.physical_topic,
            }),
            partition: d.partition,
            offset: d.offset,
            config_version: d.version,
        }
    }

    /// `d` with its names taken from `names` (which must be `d`'s, see [`Names::of`]).
    pub(crate) fn from_ref(names: Arc<Names>, d: &switchyard::DeliveryRef<'_>) -> Self {
        Self {
            names,
            partition: d.partition,
            offset: d.offset,
            config_version: d.version,
        }
    }
}

#[pymethods]
impl Delivery {
    /// Logical topic.
    #[getter]
    fn topic(&self) -> &str {
        &self.names.topic
    }

    /// Cluster the record was written to.
    #[getter]
    fn cluster(&self) -> &str {
        &self.names.cluster
    }

    /// Physical topic on that cluster.
    #[getter]
    fn physical_topic(&self) -> &str {
        &self.names.physical_topic
    }

    /// Partition.
    #[getter]
    fn partition(&self) -> i32 {
        self.partition
    }

    /// Offset.
    #[getter]
    fn offset(&self) -> i64 {
        self.offset
    }

    /// Configuration version that routed the record.
    #[getter]
    fn config_version(&self) -> u64 {
        self.config_version
    }

    fn __repr__(&self) -> String {
        format!(
            "Delivery(topic={:?}, cluster={:?}, physical_topic={:?}, partition={}, offset={}, config_version={})",
            self.names.topic,
            self.names.cluster,
            self.names.physical_topic,
            self.partition,
            self.offset,
            self.config_version
        )
    }
}

/// A record that was not sent, given back to the caller unchanged (in
/// `SwitchyardError.record`).
#[pyclass(module = "switchyard", frozen)]
#[derive(Debug, Clone)]
pub(crate) struct Record {
    topic: String,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Vec<(String, Bytes)>,
}

impl Record {
    pub(crate) fn from_sdk(r: switchyard::Record) -> Self {
        Self {
            topic: r.topic,
            key: r.key,
            value: r.payload,
            headers: r.headers,
        }
    }
}

#[pymethods]
impl Record {
    /// Logical topic.
    #[getter]
    fn topic(&self) -> &str {
        &self.topic
    }
    /// Key, or None.
    #[getter]
    fn key<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        opt_bytes(py, &self.key)
    }
    /// Value, or None.
    #[getter]
    fn value<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        opt_bytes(py, &self.value)
    }
    /// Headers as a list of (name, value) pairs, in order.
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        header_list(py, &self.headers)
    }
    fn __repr__(&self) -> String {
        format!(
            "Record(topic={:?}, key={}, value={} bytes, headers={})",
            self.topic,
            self.key
                .as_ref()
                .map_or("None".into(), |k| format!("{} bytes", k.len())),
            self.value.as_ref().map_or(0, |v| v.len()),
            self.headers.len()
        )
    }
}

/// A record read from a logical topic.
#[pyclass(module = "switchyard", frozen)]
#[derive(Debug)]
pub(crate) struct Message {
    pub(crate) msg: switchyard::Message,
    /// The consumer that returned it (commits go through that one).
    pub(crate) consumer_id: u64,
}

#[pymethods]
impl Message {
    /// Logical topic.
    #[getter]
    fn topic(&self) -> &str {
        &self.msg.topic
    }
    /// Cluster it was read from.
    #[getter]
    fn cluster(&self) -> &str {
        &self.msg.cluster
    }
    /// Physical topic on that cluster.
    #[getter]
    fn physical_topic(&self) -> &str {
        &self.msg.physical_topic
    }
    /// Partition.
    #[getter]
    fn partition(&self) -> i32 {
        self.msg.partition
    }
    /// Offset.
    #[getter]
    fn offset(&self) -> i64 {
        self.msg.offset
    }
    /// Key, or None.
    #[getter]
    fn key<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        opt_bytes(py, &self.msg.key)
    }
    /// Value, or None.
    #[getter]
    fn value<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        opt_bytes(py, &self.msg.payload)
    }
    /// Headers as a list of (name, value) pairs, in order.
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        header_list(py, &self.msg.headers)
    }
    /// Kafka timestamp in milliseconds since the epoch, or None.
    #[getter]
    fn timestamp_ms(&self) -> Option<i64> {
        self.msg.timestamp_ms
    }
    fn __repr__(&self) -> String {
        format!(
            "Message(topic={:?}, cluster={:?}, physical_topic={:?}, partition={}, offset={})",
            self.msg.topic,
            self.msg.cluster,
            self.msg.physical_topic,
            self.msg.partition,
            self.msg.offset
        )
    }
}
