//! `native`: the reference PyO3 wrapper of libnative. Each module owns one boundary concern of the
//! "Calling C from Python" checklist ("Practical Design Checklist"): `errors` (error translation),
//! `buffers` (raw memory, pinning, GIL release, signals), `handles` (ownership, blocking calls, API
//! shape, shutdown), `callbacks` (callbacks and native threads), `structs` (structs both ways),
//! `fastcall` (a hand-rolled METH_FASTCALL entry point with the same safety net). The raw C
//! declarations and the C build are the `libnative-sys` crate, re-exported as `sys`.

use std::ffi::c_long;

use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

mod buffers;
mod callbacks;
mod capsule;
mod errors;
mod fastcall;
mod fork;
mod handles;
#[cfg(test)]
mod mirror_check;
mod structs;
mod thread_state;
pub use libnative_sys as sys;

pub use callbacks::{Event, Subscription};
pub use handles::{Connection, ItemsIter};
pub use structs::{Options, Stats};

/// C long addition through libnative; OverflowError if an argument or the result does not fit.
#[pyfunction]
fn add(a: c_long, b: c_long) -> PyResult<c_long> {
    // Wrong results: arguments are range-checked by extraction (OverflowError, never truncation), and
    // the sum by libnative's overflow check.
    let mut out: c_long = 0;
    // SAFETY: plain values and a valid out-param.
    match unsafe { sys::native_add(a, b, &mut out) } {
        sys::NATIVE_OK => Ok(out),
        _ => Err(PyOverflowError::new_err(
            "add: result does not fit in a C long",
        )),
    }
}

/// libnative's live-object counters (process-wide), for tests and oracles.
#[pyfunction]
fn debug_counters(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let mut c = sys::native_debug_counters::default();
    // SAFETY: valid out-param.
    unsafe { sys::native_debug_counters_get(&mut c) };
    let d = PyDict::new(py);
    d.set_item("live_handles", c.live_handles)?;
    d.set_item("live_subscriptions", c.live_subscriptions)?;
    d.set_item("live_blocks", c.live_blocks)?;
    d.set_item("calls", c.calls)?;
    Ok(d)
}

/// Test knob: every flush, and every write of a `sync=True` connection, sleeps `ms` before fsync, so
/// GIL release during the fsync is observable.
#[pyfunction]
fn _set_flush_delay_ms(ms: u32) {
    // SAFETY: sets a process-wide integer.
    unsafe { sys::native_debug_set_flush_delay_ms(ms) }
}

/// atexit hook: cancel every subscription while the interpreter is still whole (checklist: shutdown).
#[pyfunction]
fn _shutdown(py: Python<'_>) {
    handles::shutdown_all(py);
}

/// The extension `native._native` (maturin's `module-name`); the package `native` re-exports it.
#[pymodule]
pub fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    init(m)
}

/// For programs that embed Python and register this build in the inittab (the fuzz targets, the
/// property tests): the same module under its public name, so `import native` there is this code and
/// never a copy installed in a venv.
pub mod embedded {
    use pyo3::prelude::*;

    #[pymodule]
    pub fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
        super::init(m)
    }
}

fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "__doc__",
        "Reference PyO3 wrapper of libnative (ffi-harness).",
    )?;
    errors::register(m)?;
    m.add("EventKind", callbacks::event_kind(py)?)?;
    m.add_class::<Options>()?;
    m.add_class::<Stats>()?;
    m.add_class::<Connection>()?;
    m.add_class::<ItemsIter>()?;
    m.add_class::<Subscription>()?;
    m.add_class::<Event>()?;
    m.add_function(wrap_pyfunction!(add, m)?)?;
    m.add_function(wrap_pyfunction!(buffers::checksum, m)?)?;
    m.add_function(wrap_pyfunction!(buffers::process, m)?)?;
    m.add_function(wrap_pyfunction!(handles::connect, m)?)?;
    m.add_function(wrap_pyfunction!(debug_counters, m)?)?;
    m.add_function(wrap_pyfunction!(_set_flush_delay_ms, m)?)?;
    let shutdown = wrap_pyfunction!(_shutdown, m)?;
    m.add_function(shutdown.clone())?;
    capsule::register(m)?; // `_C_API`: the C API capsule for other extension modules
    fastcall::register(m)?;
    // Runs before finalization starts (after non-daemon threads are joined), while notifier threads
    // can still take the GIL normally.
    py.import("atexit")?.call_method1("register", (shutdown,))?;
    let public: Vec<String> = m
        .dict()
        .keys()
        .iter()
        .filter_map(|k| k.extract::<String>().ok())
        // The public API only: `_shutdown` and the test knobs are not for `from native import *`
        // (native/__init__.py re-exports them by name).
        .filter(|k| !k.starts_with('_'))
        .collect();
    m.add("__all__", public)?;
    Ok(())
}
