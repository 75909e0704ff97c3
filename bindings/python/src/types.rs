//! Value types handed to Python: `Delivery`, `Message`, `Record`.

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

/// Where a record was written.
#[pyclass(module = "switchyard", frozen, get_all)]
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    /// Logical topic.
    pub(crate) topic: String,
    /// Cluster the record was written to.
    pub(crate) cluster: String,
    /// Physical topic on that cluster.
    pub(crate) physical_topic: String,
    /// Partition.
    pub(crate) partition: i32,
    /// Offset.
    pub(crate) offset: i64,
    /// Configuration version that routed the record.
    pub(crate) config_version: u64,
}

impl Delivery {
    pub(crate) fn from_sdk(d: switchyard::Delivery) -> Self {
        Self {
            topic: d.topic,
            cluster: d.cluster,
            physical_topic: d.physical_topic,
            partition: d.partition,
            offset: d.offset,
            config_version: d.version,
        }
    }
}

#[pymethods]
impl Delivery {
    fn __repr__(&self) -> String {
        format!(
            "Delivery(topic={:?}, cluster={:?}, physical_topic={:?}, partition={}, offset={}, config_version={})",
            self.topic,
            self.cluster,
            self.physical_topic,
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
