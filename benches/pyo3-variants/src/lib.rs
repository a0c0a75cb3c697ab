//! `pyo3_variants`: the 2-argument add of `native.add` (wrapper/src/lib.rs) written the ways PyO3 0.30
//! offers, one `#[pyfunction]` each, for benches/pyo3-variants/measure.sh (callgrind instructions per
//! call). Every variant has the same contract as `native.add`: two ints that fit a C long, OverflowError
//! if an argument or the sum does not fit, TypeError for non-ints, and the sum is computed by
//! libnative's `native_add` (libnative/compute.c, through the libnative-sys crate, statically linked
//! as in `native`). Build-level knobs (`--cfg pyo3_disable_reference_pool`, LTO, abi3) are separate builds
//! of this same source.

use std::ffi::c_long;

use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use libnative_sys::{native_add, NATIVE_OK};

/// The shared body: libnative's checked add, its status turned into OverflowError.
#[inline(always)]
fn checked_add(a: c_long, b: c_long) -> PyResult<c_long> {
    let mut out: c_long = 0;
    // SAFETY: plain values and a valid out-param.
    match unsafe { native_add(a, b, &mut out) } {
        NATIVE_OK => Ok(out),
        _ => Err(PyOverflowError::new_err(
            "add: result does not fit in a C long",
        )),
    }
}

/// One argument as a C long with CPython's own checks (`__index__`, OverflowError, TypeError).
#[inline(always)]
fn long_arg(obj: &Bound<'_, PyAny>) -> PyResult<c_long> {
    // SAFETY: attached (we hold a Bound) and `obj` is live.
    let v = unsafe { ffi::PyLong_AsLong(obj.as_ptr()) };
    // SAFETY: attached.
    if v == -1 && unsafe { !ffi::PyErr_Occurred().is_null() } {
        return Err(PyErr::fetch(obj.py()));
    }
    Ok(v)
}

/// A new int from a C long, built with the C API and owned by a Bound.
#[inline(always)]
fn new_int(py: Python<'_>, v: c_long) -> PyResult<Bound<'_, PyAny>> {
    // SAFETY: attached; PyLong_FromLong returns a new reference or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyLong_FromLong(v)) }
}

/// 1. Baseline: exactly `native.add`'s signature and body.
#[pyfunction]
fn add(a: c_long, b: c_long) -> PyResult<c_long> {
    checked_add(a, b)
}

/// 2. Positional-only signature.
#[pyfunction]
#[pyo3(signature = (a, b, /))]
fn add_posonly(a: c_long, b: c_long) -> PyResult<c_long> {
    checked_add(a, b)
}

/// 3a. Result built by hand as a `Bound<PyAny>` (PyLong_FromLong) instead of `IntoPyObject for c_long`.
#[pyfunction]
fn add_ret_bound(py: Python<'_>, a: c_long, b: c_long) -> PyResult<Bound<'_, PyAny>> {
    new_int(py, checked_add(a, b)?)
}

/// 3b. Same, returned as an owned `Py<PyAny>`.
#[pyfunction]
fn add_ret_py(py: Python<'_>, a: c_long, b: c_long) -> PyResult<Py<PyAny>> {
    Ok(new_int(py, checked_add(a, b)?)?.unbind())
}

/// 4. Arguments taken as `&Bound<PyAny>` (no FromPyObject), converted with PyLong_AsLong by hand.
#[pyfunction]
fn add_any(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<c_long> {
    checked_add(long_arg(a)?, long_arg(b)?)
}

/// 5a. `*args`: the positional arguments arrive as a tuple PyO3 builds per call.
#[pyfunction]
#[pyo3(signature = (*args))]
fn add_varargs(args: &Bound<'_, PyTuple>) -> PyResult<c_long> {
    if args.len() != 2 {
        return Err(PyTypeError::new_err(format!(
            "add_varargs() takes exactly 2 positional arguments ({} given)",
            args.len()
        )));
    }
    let a: c_long = args.get_borrowed_item(0)?.extract()?;
    let b: c_long = args.get_borrowed_item(1)?.extract()?;
    checked_add(a, b)
}

/// 5b. `**kwargs`: PyO3 switches the function to METH_VARARGS | METH_KEYWORDS (tuple + dict per call).
#[pyfunction]
#[pyo3(signature = (a, b, **kwargs))]
fn add_kwargs(a: c_long, b: c_long, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<c_long> {
    if let Some(kw) = kwargs {
        if !kw.is_empty() {
            return Err(PyTypeError::new_err(
                "add_kwargs() takes no keyword arguments",
            ));
        }
    }
    checked_add(a, b)
}

/// 6. Everything at once: positional-only, `&Bound` arguments, hand-built result.
#[pyfunction]
#[pyo3(signature = (a, b, /))]
fn add_lean<'py>(a: &Bound<'py, PyAny>, b: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    new_int(a.py(), checked_add(long_arg(a)?, long_arg(b)?)?)
}

/// Which build-level knobs this module was compiled with (measure.sh checks it).
#[pyfunction]
fn build_info() -> String {
    let mut knobs = Vec::new();
    if cfg!(pyo3_disable_reference_pool) {
        knobs.push("pyo3_disable_reference_pool");
    }
    if cfg!(feature = "abi3") {
        knobs.push("abi3-py311");
    }
    knobs.join(",")
}

#[pymodule]
fn pyo3_variants(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(add, m)?)?;
    m.add_function(wrap_pyfunction!(add_posonly, m)?)?;
    m.add_function(wrap_pyfunction!(add_ret_bound, m)?)?;
    m.add_function(wrap_pyfunction!(add_ret_py, m)?)?;
    m.add_function(wrap_pyfunction!(add_any, m)?)?;
    m.add_function(wrap_pyfunction!(add_varargs, m)?)?;
    m.add_function(wrap_pyfunction!(add_kwargs, m)?)?;
    m.add_function(wrap_pyfunction!(add_lean, m)?)?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    Ok(())
}
