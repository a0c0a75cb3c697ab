//! Iteration over a connection's keys or items, invalidated by any write made after it started.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::{PyTraverseError, PyVisit};

use super::connection::Connection;
use super::convert::NativeBlock;
use crate::errors::{invalid_state, NativeError};
use crate::sys;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum IterMode {
    Items,
    Keys,
}

/// Iterator over a connection; invalidated (InvalidStateError) by any put/delete made after creation.
#[pyclass(module = "native", frozen)]
pub struct ItemsIter {
    conn: Py<Connection>,
    generation: u64,
    index: AtomicUsize,
    done: AtomicBool,
    mode: IterMode,
}

impl ItemsIter {
    pub(super) fn new(conn: &Bound<'_, Connection>, mode: IterMode) -> PyResult<Self> {
        let py = conn.py();
        // SAFETY: `db` is held (under the mutex, or pinned by `call`).
        let generation = conn
            .get()
            .inner
            .call(py, "items", |db| unsafe { sys::native_generation(db) })?;
        Ok(ItemsIter {
            conn: conn.clone().unbind(),
            generation,
            index: AtomicUsize::new(0),
            done: AtomicBool::new(false),
            mode,
        })
    }
}

#[pymethods]
impl ItemsIter {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        if self.done.load(Ordering::Acquire) {
            return Ok(None);
        }
        let index = self.index.fetch_add(1, Ordering::AcqRel);
        let mut err = sys::native_error::zeroed();
        let mut key = NativeBlock::empty();
        let mut value = NativeBlock::empty();
        let rc = self.conn.get().inner.call(py, "items", |db| {
            // SAFETY: `db` is held (under the mutex, or pinned by `call`); the out-params are owned
            // by the two guards.
            unsafe {
                sys::native_item_at(
                    db,
                    index,
                    self.generation,
                    &mut key.ptr,
                    &mut key.len,
                    &mut value.ptr,
                    &mut value.len,
                    &mut err,
                )
            }
        })?;
        match rc {
            sys::NATIVE_OK => Ok(Some(match self.mode {
                IterMode::Keys => key.to_bytes(py).into_any(),
                IterMode::Items => {
                    PyTuple::new(py, [key.to_bytes(py), value.to_bytes(py)])?.into_any()
                }
            })),
            sys::NATIVE_EDONE => {
                self.done.store(true, Ordering::Release);
                Ok(None)
            }
            sys::NATIVE_ESTATE => Err(invalid_state(
                py,
                "items",
                "the store was modified during iteration",
            )),
            _ => Err(NativeError::from_raw(rc, &err, "items").into_pyerr(py, None)),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.conn)
    }
}
