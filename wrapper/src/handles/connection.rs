//! `Connection`, the Python object that owns one native handle, and `connect`, which opens it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use super::convert::{key_arg, path_arg, timeout_ms, NativeBlock};
use super::iter::{ItemsIter, IterMode};
use super::state::{native_result, ConnInner, DbPtr, SHUTTING_DOWN};
use crate::buffers::{PinnedBuffer, PollPtr, SignalPoll};
use crate::callbacks::Subscription;
use crate::errors::{invalid_state, NativeError};
use crate::structs::{Options, Stats};
use crate::sys;

/// A connection to a libnative store. Context manager; closing is idempotent. It belongs to the
/// process that opened it: in a child made by fork() it reads as closed and every call raises
/// InvalidStateError (open a new connection in the child).
#[pyclass(module = "native", frozen, weakref)]
pub struct Connection {
    pub(crate) inner: Arc<ConnInner>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Ownership: dealloc closes if still open, which also cancels the subscriptions.
        if Python::try_attach(|py| self.inner.close(py)).is_none() {
            // Finalizing: no thread can be waiting for the GIL on our behalf any more.
            self.inner.finish_close_unattached();
        }
    }
}

#[pymethods]
impl Connection {
    /// Closes the store; idempotent. Subscriptions are cancelled first.
    fn close(&self, py: Python<'_>) {
        self.inner.close(py);
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// os.fsdecode of the bytes that were opened: undecodable bytes come back as surrogate escapes, so
    /// `connect(conn.path)` opens this very file (a lossy decode would name another one).
    #[getter]
    fn path<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        let p = &self.inner.path;
        // SAFETY: p is a live byte slice of p.len() bytes for the duration of the call; the result is
        // a new reference or NULL with an exception set.
        let text = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyUnicode_DecodeFSDefaultAndSize(
                    p.as_ptr().cast(),
                    p.len() as ffi::Py_ssize_t,
                ),
            )?
        };
        Ok(text.cast_into::<PyString>()?)
    }

    fn put(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let k = key_arg(&self.inner, key)?;
        let v = PinnedBuffer::get(value, false, "value")?;
        let max_value = self.inner.options.max_value_size() as usize;
        if v.len() > max_value {
            return Err(PyValueError::new_err(format!(
                "value is {} bytes, over max_value_size={max_value}",
                v.len()
            )));
        }
        let mut err = sys::native_error::zeroed();
        let rc = self.inner.call(py, "put", |db| {
            // SAFETY: both exports are pinned by k and v for the call; `db` is held (under the mutex, or
            // pinned by `call`).
            unsafe { sys::native_put(db, k.as_ptr(), k.len(), v.as_ptr(), v.len(), &mut err) }
        })?;
        native_result(py, rc, &err, "put")
    }

    fn get<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let k = key_arg(&self.inner, key)?;
        let mut err = sys::native_error::zeroed();
        let mut block = NativeBlock::empty();
        let rc = self.inner.call(py, "get", |db| {
            // SAFETY: `k` pins the key; out-params point to our guard, which will free the block.
            unsafe {
                sys::native_get(
                    db,
                    k.as_ptr(),
                    k.len(),
                    &mut block.ptr,
                    &mut block.len,
                    &mut err,
                )
            }
        })?;
        match rc {
            sys::NATIVE_OK => Ok(block.to_bytes(py)),
            sys::NATIVE_ENOTFOUND => Err(PyKeyError::new_err(key.clone().unbind())),
            _ => Err(NativeError::from_raw(rc, &err, "get").into_pyerr(py, None)),
        }
    }

    fn delete(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let k = key_arg(&self.inner, key)?;
        let mut err = sys::native_error::zeroed();
        let rc = self.inner.call(py, "delete", |db| {
            // SAFETY: `k` pins the key; `db` is held (under the mutex, or pinned by `call`).
            unsafe { sys::native_delete(db, k.as_ptr(), k.len(), &mut err) }
        })?;
        match rc {
            sys::NATIVE_ENOTFOUND => Err(PyKeyError::new_err(key.clone().unbind())),
            _ => native_result(py, rc, &err, "delete"),
        }
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        // SAFETY: `db` is held (under the mutex, or pinned by `call`).
        self.inner
            .call(py, "len", |db| unsafe { sys::native_count(db) })
    }

    fn __contains__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        match self.get(py, key) {
            Ok(_) => Ok(true),
            Err(e) if e.is_instance_of::<PyKeyError>(py) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.get(py, key)
    }

    fn __setitem__(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.put(py, key, value)
    }

    fn __delitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        self.delete(py, key)
    }

    // API shape: a mapping-like object with iterators, not a C cursor API.
    fn items(slf: &Bound<'_, Self>) -> PyResult<ItemsIter> {
        ItemsIter::new(slf, IterMode::Items)
    }

    fn keys(slf: &Bound<'_, Self>) -> PyResult<ItemsIter> {
        ItemsIter::new(slf, IterMode::Keys)
    }

    fn __iter__(slf: &Bound<'_, Self>) -> PyResult<ItemsIter> {
        ItemsIter::new(slf, IterMode::Keys)
    }

    /// fsync of the log. Blocking, so the GIL is released (checklist: "Can the call block?").
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let pin = self.inner.pin(py, "flush")?;
        let db = pin.db;
        let (rc, err) = py.detach(move || {
            let db = db;
            let mut err = sys::native_error::zeroed();
            // SAFETY: the pin keeps the handle open; `err` is local to this closure.
            let rc = unsafe { sys::native_flush(db.0, &mut err) };
            (rc, err)
        });
        drop(pin);
        native_result(py, rc, &err, "flush")
    }

    fn stats(&self, py: Python<'_>) -> PyResult<Stats> {
        let mut raw = sys::native_stats::default();
        // SAFETY: `db` is held (under the mutex, or pinned by `call`); `raw` is a valid out-param.
        let rc = self.inner.call(py, "stats", |db| unsafe {
            sys::native_stats_get(db, &mut raw)
        })?;
        native_result(py, rc, &sys::native_error::zeroed(), "stats")?;
        Ok(Stats::from(raw))
    }

    fn subscribe(&self, py: Python<'_>, callback: &Bound<'_, PyAny>) -> PyResult<Subscription> {
        crate::callbacks::subscribe(py, &self.inner, callback)
    }

    // API shape: a context manager gives deterministic cleanup without relying on finalization.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> bool {
        self.inner.close(py);
        false
    }

    fn __repr__(&self) -> String {
        let state = if self.inner.is_closed() {
            "closed"
        } else {
            "open"
        };
        format!(
            "<native.Connection path={:?} {state}>",
            String::from_utf8_lossy(&self.inner.path)
        )
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // GC: the callbacks we own may reference this connection; report them so cycles are found.
        // try_lock: traversal must never block, and a busy map just delays collection.
        if let Ok(subs) = self.inner.subs.try_lock() {
            for ctx in subs.values() {
                visit.call(&ctx.callback)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        // Breaking a cycle: closing drops the callbacks (and cancels their subscriptions first).
        let _ = Python::try_attach(|py| self.inner.close(py));
    }
}

/// Opens (or creates) a store. Waits for the store's lock up to `timeout` seconds (None: forever) with
/// the GIL released and Ctrl-C working.
#[pyfunction]
#[pyo3(signature = (path, *, options = None, timeout = None))]
pub(crate) fn connect(
    py: Python<'_>,
    path: &Bound<'_, PyAny>,
    options: Option<&Bound<'_, PyAny>>,
    timeout: Option<&Bound<'_, PyAny>>,
) -> PyResult<Connection> {
    // Structs: everything is validated before C sees any of it.
    let (c_path, filename) = path_arg(path)?;
    let opts = Options::from_arg(options)?;
    let timeout_ms = timeout_ms(timeout)?;
    if SHUTTING_DOWN.load(Ordering::SeqCst) {
        return Err(invalid_state(
            py,
            "connect",
            "the interpreter is shutting down",
        ));
    }
    // Ownership: everything fallible happens before native_connect; once C hands us a handle, nothing
    // may return early before a Connection owns it (that would leak the handle and its file lock).
    let path_bytes = c_path.as_bytes().to_vec();
    let raw_opts = opts.to_raw();
    let mut poll = SignalPoll::new();
    let poll_ptr = PollPtr(poll.stop_data());
    let (rc, err, db) = py.detach(move || {
        let poll_ptr = poll_ptr;
        let mut err = sys::native_error::zeroed();
        let mut db: *mut sys::native_db = std::ptr::null_mut();
        // SAFETY: c_path and raw_opts are owned by this closure; poll_ptr points to `poll`, alive on
        // the caller's stack until this returns; `db`/`err` are valid out-params.
        let rc = unsafe {
            sys::native_connect(
                c_path.as_ptr(),
                &raw_opts,
                timeout_ms,
                Some(SignalPoll::should_stop),
                poll_ptr.0,
                &mut db,
                &mut err,
            )
        };
        (rc, err, DbPtr(db))
    });
    match rc {
        sys::NATIVE_OK => {}
        sys::NATIVE_ECANCELLED if poll.error.is_some() => {
            return Err(poll.error.take().expect("checked"))
        }
        _ => return Err(NativeError::from_raw(rc, &err, "connect").into_pyerr(py, Some(&filename))),
    }
    let inner = ConnInner::open(db, opts, path_bytes);
    Ok(Connection { inner })
}
