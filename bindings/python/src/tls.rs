//! TLS material for `https://` config service endpoints: the `ca_cert`, `client_cert` and
//! `client_key` arguments of `Switchyard.connect` turned into PEM bytes.
//!
//! Each argument is a path (`str` or `os.PathLike`) or the PEM itself (`bytes`, `bytearray`,
//! `memoryview`, or a `str` that starts with `-----BEGIN`). Files are read with the GIL
//! released. This module only checks that each one is PEM text, so the error can name the
//! argument and the file; what the PEM blocks must hold is the SDK's check at connect.

use std::path::{Path, PathBuf};

use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyString};

use crate::errors;

/// Where one argument's PEM comes from.
enum PemSource {
    /// Given inline (`bytes`-like, or a `str` holding PEM text).
    Inline(Vec<u8>),
    /// A file to read.
    File(PathBuf),
}

/// One TLS argument: its name and where its PEM comes from.
struct PemArg {
    name: &'static str,
    source: PemSource,
}

/// One argument's PEM as read (the file's, or what was given inline), or why it could not be.
struct Loaded {
    name: &'static str,
    /// The file it was read from; `None` when given inline.
    path: Option<PathBuf>,
    read: std::io::Result<Vec<u8>>,
}

/// The `ca_cert` and `client_cert` / `client_key` arguments, checked for type and pairing.
pub(crate) struct TlsArgs {
    ca: Option<PemArg>,
    identity: Option<(PemArg, PemArg)>,
}

/// What [`TlsArgs::load`] read, to be checked with [`TlsPem::check`].
pub(crate) struct LoadedTls {
    ca: Option<Loaded>,
    identity: Option<(Loaded, Loaded)>,
}

/// The PEM of each TLS argument, checked to be PEM text.
pub(crate) struct TlsPem {
    pub ca: Option<Vec<u8>>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// One argument: `None` when absent.
fn pem_arg(obj: Option<&Bound<'_, PyAny>>, name: &'static str) -> PyResult<Option<PemArg>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    let source = if let Ok(b) = obj.cast::<PyBytes>() {
        PemSource::Inline(b.as_bytes().to_vec())
    } else if let Ok(b) = obj.cast::<PyByteArray>() {
        PemSource::Inline(b.to_vec())
    } else if obj.cast::<PyMemoryView>().is_ok() {
        let b = obj.call_method0("tobytes")?;
        let b = b.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!("{name}: memoryview.tobytes() did not return bytes"))
        })?;
        PemSource::Inline(b.as_bytes().to_vec())
    } else if let Ok(s) = obj.cast::<PyString>() {
        let s = s.to_str().map_err(|_| {
            PyValueError::new_err(format!("{name} is not valid UTF-8 (lone surrogate)"))
        })?;
        if s.trim_start().starts_with("-----BEGIN") {
            PemSource::Inline(s.as_bytes().to_vec())
        } else {
            PemSource::File(path(s.into(), name)?)
        }
    } else if obj.hasattr("__fspath__")? {
        // `os.PathLike`: PyO3 converts through `os.fspath` (a str or bytes path).
        let p = obj
            .extract::<PathBuf>()
            .map_err(|e| PyTypeError::new_err(format!("{name}: os.fspath() failed: {e}")))?;
        PemSource::File(path(p, name)?)
    } else {
        return Err(PyTypeError::new_err(format!(
            "{name} must be a path (str or os.PathLike), the PEM as bytes, or None, not {}",
            type_name(obj)
        )));
    };
    Ok(Some(PemArg { name, source }))
}

fn path(p: PathBuf, name: &str) -> PyResult<PathBuf> {
    if p.as_os_str().is_empty() {
        return Err(PyValueError::new_err(format!(
            "{name} must not be an empty path"
        )));
    }
    Ok(p)
}

impl TlsArgs {
    /// Checks the arguments' types and that a client certificate comes with its key.
    pub(crate) fn parse(
        ca_cert: Option<&Bound<'_, PyAny>>,
        client_cert: Option<&Bound<'_, PyAny>>,
        client_key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let ca = pem_arg(ca_cert, "ca_cert")?;
        let cert = pem_arg(client_cert, "client_cert")?;
        let key = pem_arg(client_key, "client_key")?;
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(PyValueError::new_err(
                    "client_cert needs client_key (the certificate's private key)",
                ));
            }
            (None, Some(_)) => {
                return Err(PyValueError::new_err(
                    "client_key needs client_cert (the certificate it is the key of)",
                ));
            }
        };
        Ok(Self { ca, identity })
    }

    /// Reads the files (call it with the GIL released).
    pub(crate) fn load(self) -> LoadedTls {
        LoadedTls {
            ca: self.ca.map(PemArg::load),
            identity: self.identity.map(|(c, k)| (c.load(), k.load())),
        }
    }
}

impl PemArg {
    fn load(self) -> Loaded {
        let (path, read) = match self.source {
            PemSource::Inline(b) => (None, Ok(b)),
            PemSource::File(p) => {
                let read = std::fs::read(&p);
                (Some(p), read)
            }
        };
        Loaded {
            name: self.name,
            path,
            read,
        }
    }
}

impl Loaded {
    /// The PEM, or a Python exception naming the argument (and the file): an `OSError`
    /// subclass (`FileNotFoundError`, `PermissionError`, ...) when the file cannot be read,
    /// `switchyard.InvalidArgumentError` when it holds no PEM.
    fn check(self, py: Python<'_>) -> PyResult<Vec<u8>> {
        let name = self.name;
        let pem = match (self.read, &self.path) {
            (Ok(pem), _) => pem,
            (Err(e), Some(p)) => return Err(read_error(name, p, &e)),
            (Err(e), None) => return Err(PyOSError::new_err(format!("{name}: {e}"))),
        };
        if !is_pem(&pem) {
            let what = match &self.path {
                Some(p) => format!("file {} is not PEM text (no -----BEGIN line)", p.display()),
                None => "the bytes given are not PEM text (no -----BEGIN line); a path must be \
                         a str or os.PathLike"
                    .into(),
            };
            return Err(errors::exception(
                py,
                "InvalidArgumentError",
                &format!("{name}: {what}"),
                false,
                None,
            ));
        }
        Ok(pem)
    }
}

/// An `OSError` for a file that could not be read. Created as `OSError(errno, strerror,
/// filename)`, it is the errno's subclass (`FileNotFoundError`, `PermissionError`, ...) and its
/// `str()` ends with the path.
fn read_error(name: &str, path: &Path, e: &std::io::Error) -> PyErr {
    let Some(errno) = e.raw_os_error() else {
        return PyOSError::new_err(format!("{name}: could not read {}: {e}", path.display()));
    };
    let text = e.to_string();
    let why = text
        .strip_suffix(&format!(" (os error {errno})"))
        .unwrap_or(&text);
    PyOSError::new_err((
        errno,
        format!("{name}: could not read the file: {why}"),
        path.as_os_str().to_owned(),
    ))
}

/// UTF-8 text with at least one `-----BEGIN ...-----` line.
fn is_pem(b: &[u8]) -> bool {
    std::str::from_utf8(b).is_ok_and(|t| {
        t.lines().any(|l| {
            let l = l.trim();
            l.starts_with("-----BEGIN ") && l.ends_with("-----")
        })
    })
}

impl TlsPem {
    /// What [`TlsArgs::load`] read, checked (see [`Loaded::check`]).
    pub(crate) fn check(py: Python<'_>, loaded: LoadedTls) -> PyResult<Self> {
        Ok(Self {
            ca: loaded.ca.map(|c| c.check(py)).transpose()?,
            identity: match loaded.identity {
                Some((c, k)) => Some((c.check(py)?, k.check(py)?)),
                None => None,
            },
        })
    }
}
