//! `add_fast`: the same contract as `add`, through a METH_FASTCALL entry point written with
//! `pyo3::ffi`, for call-overhead benchmarks. It keeps every safety property of the idiomatic
//! `#[pyfunction]`: a panic becomes `pyo3_runtime.PanicException` (never unwinds into CPython),
//! arguments are range-checked (OverflowError, never truncation), non-ints raise TypeError, and
//! libnative's status is translated. What it drops is only generality: positional, exactly two args.

use std::ffi::c_long;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;

use crate::sys;

/// Reads one argument as a C long with CPython's own checks; None means an exception is set.
///
/// # Safety
/// Attached, and `obj` is a valid borrowed reference.
unsafe fn long_arg(obj: *mut ffi::PyObject) -> Option<c_long> {
    // SAFETY: the caller guarantees an attached thread and a live object.
    unsafe {
        // Ints take the direct path; everything else goes through __index__ like PyO3 does, so
        // floats and str raise TypeError and huge ints raise OverflowError. Not PyLong_AsLong on the
        // object itself: before 3.10 it falls back to __int__ and truncates 2.5 to 2 (found by the
        // pytest suite on 3.9, ci/pythons).
        if ffi::PyLong_Check(obj) != 0 {
            let v = ffi::PyLong_AsLong(obj);
            if v == -1 && !ffi::PyErr_Occurred().is_null() {
                return None;
            }
            return Some(v);
        }
        let index = ffi::PyNumber_Index(obj);
        if index.is_null() {
            return None;
        }
        let v = ffi::PyLong_AsLong(index);
        ffi::Py_DECREF(index);
        if v == -1 && !ffi::PyErr_Occurred().is_null() {
            return None;
        }
        Some(v)
    }
}

unsafe extern "C" fn add_fast_impl(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    let body = AssertUnwindSafe(|| {
        if nargs != 2 {
            // SAFETY: called by CPython with the GIL held; the format has one %zd for a Py_ssize_t.
            unsafe {
                ffi::PyErr_Format(
                    ffi::PyExc_TypeError,
                    c"add_fast() takes exactly 2 positional arguments (%zd given)".as_ptr(),
                    nargs,
                )
            };
            return std::ptr::null_mut();
        }
        // SAFETY: METH_FASTCALL passes `nargs` (== 2) valid borrowed references in `args`.
        let (a, b) = unsafe { (*args, *args.add(1)) };
        // One at a time: once the first conversion has set an exception, the second must not run
        // (it would replace the exception, or call into Python with one pending: SystemError).
        // SAFETY: attached (CPython calls us with the GIL held) and both objects are live.
        let Some(a) = (unsafe { long_arg(a) }) else {
            return std::ptr::null_mut();
        };
        // SAFETY: as above.
        let Some(b) = (unsafe { long_arg(b) }) else {
            return std::ptr::null_mut();
        };
        let mut out: c_long = 0;
        // SAFETY: plain values and a valid out-param.
        if unsafe { sys::native_add(a, b, &mut out) } != sys::NATIVE_OK {
            // SAFETY: attached; a static message.
            unsafe {
                ffi::PyErr_SetString(
                    ffi::PyExc_OverflowError,
                    c"add: result does not fit in a C long".as_ptr(),
                )
            };
            return std::ptr::null_mut();
        }
        // SAFETY: attached; returns a new reference or NULL with an exception set.
        unsafe { ffi::PyLong_FromLong(out) }
    });
    match catch_unwind(body) {
        Ok(result) => result,
        Err(payload) => {
            // SAFETY: CPython called us attached and we have not detached.
            let py = unsafe { Python::assume_attached() };
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic in add_fast".to_owned());
            PanicException::new_err(msg).restore(py);
            std::ptr::null_mut()
        }
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // CPython keeps a pointer to the method def for the function's lifetime: give it 'static storage.
    let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: c"add_fast".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFast: add_fast_impl,
        },
        ml_flags: ffi::METH_FASTCALL,
        ml_doc:
            c"add_fast(a, b, /)\n--\n\nSame contract as add(), through a METH_FASTCALL entry point."
                .as_ptr(),
    }));
    let module_name = m.name()?;
    // SAFETY: `def` lives forever; module and name are live objects; returns a new reference or NULL.
    let func = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyCFunction_NewEx(def, m.as_ptr(), module_name.as_ptr()),
        )?
    };
    m.add("add_fast", func)
}
