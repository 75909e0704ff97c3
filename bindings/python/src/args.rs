//! Python arguments checked and converted: a wrong type is a `TypeError`, a wrong value a
//! `ValueError`, each naming the argument.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMemoryView, PyString, PyTuple};

/// Longest timeout accepted (about 31 years); longer ones mean "no limit" in practice.
const MAX_TIMEOUT_SECS: f64 = 1e9;

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A `str` argument.
pub(crate) fn string(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<String> {
    str_ref(obj, name).map(str::to_owned)
}

/// A `str` argument, borrowed (its UTF-8 form is cached in the `str` object, immutable and
/// alive as long as `obj`).
pub(crate) fn str_ref<'a>(obj: &'a Bound<'_, PyAny>, name: &str) -> PyResult<&'a str> {
    let s = obj
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("{name} must be str, not {}", type_name(obj))))?;
    s.to_str()
        .map_err(|_| PyValueError::new_err(format!("{name} is not valid UTF-8 (lone surrogate)")))
}

/// A non-empty `str` argument.
pub(crate) fn name(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    name_ref(obj, what).map(str::to_owned)
}

/// A non-empty `str` argument, borrowed (see [`str_ref`]).
pub(crate) fn name_ref<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<&'a str> {
    let s = str_ref(obj, what)?;
    if s.is_empty() {
        return Err(PyValueError::new_err(format!("{what} must not be empty")));
    }
    if s.contains('\0') {
        return Err(PyValueError::new_err(format!(
            "{what} must not contain NUL"
        )));
    }
    Ok(s)
}

/// A key, value or header value: `bytes`, `bytearray`, `memoryview` or `str` (UTF-8 encoded);
/// `None` when absent.
pub(crate) fn bytes(obj: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<Bytes>> {
    Ok(bytes_ref(obj, name)?.map(owned))
}

/// What [`bytes_ref`] gave, owned (a borrowed slice copied once, an owned one moved).
pub(crate) fn owned(b: Cow<'_, [u8]>) -> Bytes {
    match b {
        Cow::Borrowed(b) => Bytes::copy_from_slice(b),
        Cow::Owned(v) => Bytes::from(v),
    }
}

/// As [`bytes`], borrowing from `bytes` and `str` objects (immutable, alive as long as `obj`)
/// and copying only `bytearray` and `memoryview` contents (which Python code may change).
pub(crate) fn bytes_ref<'a>(
    obj: Option<&'a Bound<'_, PyAny>>,
    name: &str,
) -> PyResult<Option<Cow<'a, [u8]>>> {
    let Some(obj) = obj else { return Ok(None) };
    if obj.is_none() {
        return Ok(None);
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Some(Cow::Borrowed(b.as_bytes())));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        let s = s.to_str().map_err(|_| {
            PyValueError::new_err(format!("{name} is a str that is not valid UTF-8"))
        })?;
        return Ok(Some(Cow::Borrowed(s.as_bytes())));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Some(Cow::Owned(b.to_vec())));
    }
    if obj.cast::<PyMemoryView>().is_ok() {
        let b: Vec<u8> = obj
            .call_method0("tobytes")?
            .cast::<PyBytes>()
            .map(|b| b.as_bytes().to_vec())
            .map_err(|_| {
                PyTypeError::new_err(format!("{name}: memoryview.tobytes() did not return bytes"))
            })?;
        return Ok(Some(Cow::Owned(b)));
    }
    Err(PyTypeError::new_err(format!(
        "{name} must be bytes, bytearray, memoryview, str or None, not {}",
        type_name(obj)
    )))
}

/// Record headers: `None`, a dict `{name: value}` or a sequence of `(name, value)` pairs
/// (names repeat only in the sequence form); names are `str`, values as for [`bytes`].
pub(crate) fn headers(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<(String, Bytes)>> {
    let Some(obj) = obj else {
        return Ok(Vec::new());
    };
    if obj.is_none() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut push = |k: &Bound<'_, PyAny>, v: &Bound<'_, PyAny>, i: usize| -> PyResult<()> {
        let k = string(k, &format!("headers[{i}] name"))?;
        let v = bytes(Some(v), &format!("headers[{k:?}] value"))?.ok_or_else(|| {
            PyTypeError::new_err(format!(
                "headers[{k:?}] value must be bytes, bytearray, memoryview or str, not None"
            ))
        })?;
        out.push((k, v));
        Ok(())
    };
    if let Ok(d) = obj.cast::<PyDict>() {
        for (i, (k, v)) in d.iter().enumerate() {
            push(&k, &v, i)?;
        }
        return Ok(out);
    }
    if obj.cast::<PyList>().is_ok() || obj.cast::<PyTuple>().is_ok() {
        for (i, item) in obj.try_iter()?.enumerate() {
            let item = item?;
            let pair = item
                .cast::<PyTuple>()
                .ok()
                .filter(|t| t.len() == 2)
                .ok_or_else(|| {
                    PyTypeError::new_err(format!(
                        "headers[{i}] must be a (name, value) tuple, not {}",
                        type_name(&item)
                    ))
                })?;
            push(&pair.get_item(0)?, &pair.get_item(1)?, i)?;
        }
        return Ok(out);
    }
    Err(PyTypeError::new_err(format!(
        "headers must be a dict, a list of (name, value) tuples or None, not {}",
        type_name(obj)
    )))
}

/// A timeout in seconds: `None` means no limit; negative or NaN is a `ValueError`.
pub(crate) fn timeout(secs: Option<f64>, name: &str) -> PyResult<Option<Duration>> {
    match secs {
        None => Ok(None),
        Some(s) if s.is_nan() || s < 0.0 => Err(PyValueError::new_err(format!(
            "{name} must be a number of seconds >= 0 or None, not {s}"
        ))),
        Some(s) if s > MAX_TIMEOUT_SECS => Ok(None),
        Some(s) => Ok(Some(Duration::from_secs_f64(s))),
    }
}

/// Client properties: a dict of str to str (or int / bool, written as Kafka expects).
pub(crate) fn properties(obj: Option<&Bound<'_, PyAny>>) -> PyResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let Some(obj) = obj else { return Ok(out) };
    if obj.is_none() {
        return Ok(out);
    }
    let d = obj.cast::<PyDict>().map_err(|_| {
        PyTypeError::new_err(format!(
            "properties must be a dict of str to str, not {}",
            type_name(obj)
        ))
    })?;
    for (k, v) in d.iter() {
        let k = name(&k, "property name")?;
        let v = if let Ok(b) = v.cast::<pyo3::types::PyBool>() {
            if b.is_true() { "true" } else { "false" }.to_string()
        } else if v.cast::<pyo3::types::PyInt>().is_ok() {
            v.str()?.to_str()?.to_string()
        } else {
            string(&v, &format!("property {k:?}"))?
        };
        out.insert(k, v);
    }
    Ok(out)
}

/// A callable or None.
pub(crate) fn callback(obj: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<Py<PyAny>>> {
    match obj {
        None => Ok(None),
        Some(o) if o.is_none() => Ok(None),
        Some(o) if o.is_callable() => Ok(Some(o.clone().unbind())),
        Some(o) => Err(PyTypeError::new_err(format!(
            "{name} must be callable or None, not {}",
            type_name(o)
        ))),
    }
}

/// A list of non-empty `str` (a single `str` is refused, not split into characters).
pub(crate) fn names(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    if obj.cast::<PyString>().is_ok() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a list of str, not a single str (write [{:?}])",
            obj.str()?.to_str()?
        )));
    }
    if obj.cast::<PyList>().is_err() && obj.cast::<PyTuple>().is_err() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a list of str, not {}",
            type_name(obj)
        )));
    }
    let mut out = Vec::new();
    for (i, item) in obj.try_iter()?.enumerate() {
        out.push(name(&item?, &format!("{what}[{i}]"))?);
    }
    if out.is_empty() {
        return Err(PyValueError::new_err(format!("{what} must not be empty")));
    }
    Ok(out)
}
