//! The Python prelude module `ffi_harness_prelude`: the hostile classes and
//! helper constructors that both the Rust materialiser and every generated
//! `repro.py` use, so a reproducer rebuilds exactly the objects the fuzzer built.

use std::ffi::CString;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

/// The prelude's Python source, embedded verbatim into every reproducer.
pub const PRELUDE_SOURCE: &str = include_str!("prelude.py");

/// The module name the prelude is registered under in `sys.modules`.
pub const PRELUDE_MODULE: &str = "ffi_harness_prelude";

/// The name emitted Python source uses for the prelude module
/// (`import ffi_harness_prelude as _fh`): short, and unlikely to clash with user code.
pub const PRELUDE_ALIAS: &str = "_fh";

static PRELUDE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The prelude module, executed once per interpreter and registered in `sys.modules`
/// (so user code, and the re-entrancy hook, can `import ffi_harness_prelude`).
pub fn prelude(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    PRELUDE
        .get_or_try_init(py, || {
            let code = CString::new(PRELUDE_SOURCE).expect("prelude.py contains no NUL byte");
            PyModule::from_code(py, &code, c"ffi_harness_prelude.py", c"ffi_harness_prelude")
                .map(Bound::unbind)
        })
        .map(|module| module.bind(py))
}

/// The prelude module if something in this interpreter has already loaded it (no hostile value can
/// have been made otherwise).
pub(crate) fn loaded(py: Python<'_>) -> Option<&Bound<'_, PyModule>> {
    PRELUDE.get(py).map(|module| module.bind(py))
}

/// A fresh globals dict with the prelude bound to [`PRELUDE_ALIAS`], in which
/// the output of [`crate::PyValue::to_python_source`] can be evaluated.
pub fn prelude_globals(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let globals = PyDict::new(py);
    globals.set_item(PRELUDE_ALIAS, prelude(py)?)?;
    Ok(globals)
}

/// Install `hook(n)`, called by every `Reenter(n)` value (re-entrant dunders,
/// finalisers and callables). Pass `py.None()` to uninstall.
///
/// In a reproducer the same wiring is one line of the setup snippet:
/// `_fh.set_reenter_hook(lambda n: conn.close())`.
pub fn set_reenter_hook(py: Python<'_>, hook: &Bound<'_, PyAny>) -> PyResult<()> {
    prelude(py)?.call_method1("set_reenter_hook", (hook,))?;
    Ok(())
}

/// The prelude's structural comparison `same(a, b)`: nan equals nan, `-0.0`
/// differs from `0.0`, buffers compare by layout and content, hostile objects by
/// class and mode.
pub fn same(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<bool> {
    prelude(a.py())?.call_method1("same", (a, b))?.extract()
}
