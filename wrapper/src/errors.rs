//! Error translation (checklist: "How are errors translated?"): every libnative status becomes a
//! Python exception of the documented class that keeps the operation, the native code, errno and
//! the library message. Python users never see raw C codes in normal control flow (chapter: "Error
//! Translation", "Translating Native Error Codes").

use std::ffi::{c_char, c_int, CStr};

use pyo3::exceptions::{PyMemoryError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};

use crate::sys;

/// The hierarchy is defined in Python because two classes need two bases (`native.Error` plus
/// `OSError`/`TimeoutError`), which `create_exception!` cannot express. Class attributes give every
/// instance `op`/`code`/`message`, so code that catches `native.Error` can always read them.
const EXCEPTIONS_SRC: &CStr = cr#"
class Error(Exception):
    """Base class of every error raised by libnative through `native`."""
    op = None
    code = None
    message = None

class ConnectionError(Error, OSError):
    """The store could not be opened or an OS call failed (errno, strerror and filename are set)."""

class TimeoutError(Error, TimeoutError):
    """The store stayed locked by another connection past `timeout`."""

class ProtocolError(Error):
    """The store file is corrupted (bad magic, bad record checksum, truncated record)."""

class InvalidStateError(Error):
    """Use after close, or the store was modified during iteration."""

for _cls in (Error, ConnectionError, TimeoutError, ProtocolError, InvalidStateError):
    _cls.__module__ = "native"
del _cls
"#;

pub(crate) struct ExceptionTypes {
    pub error: Py<PyType>,
    pub connection: Py<PyType>,
    pub timeout: Py<PyType>,
    pub protocol: Py<PyType>,
    pub invalid_state: Py<PyType>,
}

static TYPES: PyOnceLock<ExceptionTypes> = PyOnceLock::new();

pub(crate) fn types(py: Python<'_>) -> &ExceptionTypes {
    TYPES
        .get_or_try_init(py, || -> PyResult<_> {
            let ns = PyDict::new(py);
            py.run(EXCEPTIONS_SRC, Some(&ns), Some(&ns))?;
            let get = |name: &str| -> PyResult<Py<PyType>> {
                Ok(ns
                    .get_item(name)?
                    .expect("defined above")
                    .cast_into::<PyType>()?
                    .unbind())
            };
            Ok::<_, PyErr>(ExceptionTypes {
                error: get("Error")?,
                connection: get("ConnectionError")?,
                timeout: get("TimeoutError")?,
                protocol: get("ProtocolError")?,
                invalid_state: get("InvalidStateError")?,
            })
        })
        .expect("the exception hierarchy is plain Python and cannot fail to build")
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let t = types(m.py());
    m.add("Error", t.error.bind(m.py()))?;
    m.add("ConnectionError", t.connection.bind(m.py()))?;
    m.add("TimeoutError", t.timeout.bind(m.py()))?;
    m.add("ProtocolError", t.protocol.bind(m.py()))?;
    m.add("InvalidStateError", t.invalid_state.bind(m.py()))?;
    Ok(())
}

/// Every status libnative names, in native.h's order; any other code is `UNKNOWN_STATUS`. A copy of
/// libnative's `native_status_name()` (the one source of truth, which the ctypes/cffi/Cython bindings
/// call), kept so errors the wrapper raises by itself (use after close) never touch C: `mirror_check`
/// proves the copy gives C's name for every code, unknown ones included.
pub(crate) const STATUS_NAMES: [(c_int, &str); 10] = [
    (sys::NATIVE_OK, "NATIVE_OK"),
    (sys::NATIVE_ENOTFOUND, "NATIVE_ENOTFOUND"),
    (sys::NATIVE_EIO, "NATIVE_EIO"),
    (sys::NATIVE_ETIMEOUT, "NATIVE_ETIMEOUT"),
    (sys::NATIVE_EPROTOCOL, "NATIVE_EPROTOCOL"),
    (sys::NATIVE_ESTATE, "NATIVE_ESTATE"),
    (sys::NATIVE_EINVAL, "NATIVE_EINVAL"),
    (sys::NATIVE_ENOMEM, "NATIVE_ENOMEM"),
    (sys::NATIVE_ECANCELLED, "NATIVE_ECANCELLED"),
    (sys::NATIVE_EDONE, "NATIVE_EDONE"),
];

/// What `native_status_name()` returns for a code it does not know.
pub(crate) const UNKNOWN_STATUS: &str = "NATIVE_UNKNOWN";

pub(crate) fn status_name(code: c_int) -> &'static str {
    STATUS_NAMES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or(UNKNOWN_STATUS, |(_, name)| name)
}

fn c_chars(buf: &[c_char]) -> String {
    // libnative always NUL-terminates, but a corrupted struct must not make us read past the array.
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A native failure captured while detached from the interpreter; turned into a PyErr once attached.
#[derive(Clone, Debug)]
pub(crate) struct NativeError {
    pub code: c_int,
    pub errno: c_int,
    pub op: String,
    pub message: String,
}

impl NativeError {
    /// Copies the error out immediately: the struct is per call, so no other thread can clobber it.
    pub fn from_raw(status: c_int, raw: &sys::native_error, fallback_op: &str) -> Self {
        let op = c_chars(&raw.op);
        let message = c_chars(&raw.message);
        NativeError {
            code: if raw.code != 0 { raw.code } else { status },
            errno: raw.sys_errno,
            op: if op.is_empty() {
                fallback_op.to_owned()
            } else {
                op
            },
            message: if message.is_empty() {
                format!("{fallback_op} failed")
            } else {
                message
            },
        }
    }

    /// Error translation: status → documented class; `filename` is the path the user gave (for OSError's
    /// `filename` attribute), when there is one.
    pub fn into_pyerr(self, py: Python<'_>, filename: Option<&Bound<'_, PyAny>>) -> PyErr {
        match self.build(py, filename) {
            Ok(err) => err,
            Err(err) => err,
        }
    }

    fn build(self, py: Python<'_>, filename: Option<&Bound<'_, PyAny>>) -> PyResult<PyErr> {
        let t = types(py);
        let code_name = status_name(self.code);
        let text = format!("{}: {} [{}]", self.op, self.message, code_name);
        let instance = match self.code {
            sys::NATIVE_EIO => {
                // OSError's own convention (PyErr_SetFromErrnoWithFilename): strerror is the OS's text
                // for errno, so str(e) reads "[Errno 2] No such file or directory: 'path'"; the operation,
                // native code and libnative's message stay in .op, .code and .message.
                let (errno, strerror) = if self.errno != 0 {
                    let os_text: String = py
                        .import("os")?
                        .call_method1("strerror", (self.errno,))?
                        .extract()?;
                    (Some(self.errno), os_text)
                } else {
                    (None, text.clone())
                };
                match filename {
                    Some(f) => t.connection.bind(py).call1((errno, &strerror, f))?,
                    None => t.connection.bind(py).call1((errno, &strerror))?,
                }
            }
            sys::NATIVE_ETIMEOUT => t.timeout.bind(py).call1((&text,))?,
            sys::NATIVE_EPROTOCOL => t.protocol.bind(py).call1((&text,))?,
            sys::NATIVE_ESTATE => t.invalid_state.bind(py).call1((&text,))?,
            // The wrapper validates before C sees the input, so these two mean libnative disagrees with
            // the wrapper's validation or ran out of memory: still a clear exception, never a crash.
            sys::NATIVE_EINVAL => return Ok(PyValueError::new_err(text)),
            sys::NATIVE_ENOMEM => return Ok(PyMemoryError::new_err(text)),
            _ => t.error.bind(py).call1((&text,))?,
        };
        instance.setattr("op", &self.op)?;
        instance.setattr("code", code_name)?;
        instance.setattr("message", &self.message)?;
        if self.errno != 0 && self.code != sys::NATIVE_EIO {
            instance.setattr("errno", self.errno)?;
        }
        Ok(PyErr::from_value(instance))
    }
}

/// Raised by the wrapper itself (no native call happened): use after close, iteration invalidated.
pub(crate) fn invalid_state(py: Python<'_>, op: &str, message: &str) -> PyErr {
    NativeError {
        code: sys::NATIVE_ESTATE,
        errno: 0,
        op: op.to_owned(),
        message: message.to_owned(),
    }
    .into_pyerr(py, None)
}
