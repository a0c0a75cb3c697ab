//! Values across the boundary of a handle call: arguments in (key, path, timeout), each refused with
//! the documented exception before C sees it, and native_alloc blocks out.

use std::ffi::{c_void, CString};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFloat, PyInt};

use super::state::ConnInner;
use crate::buffers::PinnedBuffer;
use crate::sys;

/// Copies a native_alloc block into Python and frees it with native_free (checklist: matching allocator).
pub(super) struct NativeBlock {
    pub(super) ptr: *mut c_void,
    pub(super) len: usize,
}

impl NativeBlock {
    pub(super) fn empty() -> Self {
        NativeBlock {
            ptr: std::ptr::null_mut(),
            len: 0,
        }
    }

    pub(super) fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        if self.ptr.is_null() || self.len == 0 {
            return PyBytes::new(py, b"");
        }
        // SAFETY: libnative returned a block of exactly `len` readable bytes, alive until Drop.
        PyBytes::new(py, unsafe {
            std::slice::from_raw_parts(self.ptr as *const u8, self.len)
        })
    }
}

impl Drop for NativeBlock {
    fn drop(&mut self) {
        // Allocator: memory from native_alloc goes back through native_free, never PyMem_Free/free.
        // SAFETY: `ptr` is null or a native_alloc block this guard owns exclusively.
        unsafe { sys::native_free(self.ptr) }
    }
}

pub(super) fn key_arg<'py>(conn: &ConnInner, key: &Bound<'py, PyAny>) -> PyResult<PinnedBuffer> {
    let buf = PinnedBuffer::get(key, false, "key")?;
    if buf.len() == 0 {
        return Err(PyValueError::new_err("key must not be empty"));
    }
    if buf.len() > conn.options_max_key() {
        return Err(PyValueError::new_err(format!(
            "key is {} bytes, over max_key_size={}",
            buf.len(),
            conn.options_max_key()
        )));
    }
    Ok(buf)
}

impl ConnInner {
    fn options_max_key(&self) -> usize {
        self.options.max_key_size() as usize
    }
}

/// os.fspath, then the filesystem encoding, into a C string that we own: the bytes stay valid while
/// the GIL is released, whatever happens to the Python object ("Borrowed Data and GIL Release").
pub(super) fn path_arg<'py>(path: &Bound<'py, PyAny>) -> PyResult<(CString, Bound<'py, PyAny>)> {
    let py = path.py();
    // SAFETY: PyOS_FSPath takes a borrowed live object and returns a new reference or NULL + error.
    let fspath = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyOS_FSPath(path.as_ptr()))? };
    let encoded: Bound<'py, PyBytes> = if let Ok(b) = fspath.cast::<PyBytes>() {
        b.clone()
    } else {
        // SAFETY: fspath is a str here (PyOS_FSPath returns str or bytes); new reference or error.
        unsafe {
            Bound::from_owned_ptr_or_err(py, ffi::PyUnicode_EncodeFSDefault(fspath.as_ptr()))?
        }
        .cast_into::<PyBytes>()?
    };
    let c = CString::new(encoded.as_bytes())
        .map_err(|_| PyValueError::new_err("embedded null byte in path"))?;
    Ok((c, fspath))
}

pub(super) fn timeout_ms(timeout: Option<&Bound<'_, PyAny>>) -> PyResult<i64> {
    let Some(t) = timeout.filter(|t| !t.is_none()) else {
        return Ok(-1);
    };
    if t.is_instance_of::<pyo3::types::PyBool>()
        || !(t.is_instance_of::<PyFloat>() || t.is_instance_of::<PyInt>())
    {
        return Err(PyTypeError::new_err(format!(
            "timeout must be a number of seconds or None, not {}",
            t.get_type().name()?
        )));
    }
    let secs: f64 = t.extract()?;
    if secs.is_nan() || secs < 0.0 {
        return Err(PyValueError::new_err(
            "timeout must be a non-negative number of seconds",
        ));
    }
    if secs.is_infinite() || secs * 1000.0 >= i64::MAX as f64 {
        return Ok(-1);
    }
    Ok((secs * 1000.0).ceil() as i64)
}
