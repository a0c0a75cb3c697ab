//! Test support for `native`, shared by the fuzz targets (`fuzz/`) and the property tests
//! (`proptests/`). The generic loop, oracles and hostile values are `ffi-harness`'s; this crate holds
//! what both suites know about `native` in particular, so each fact is written once:
//!
//! - [`register_native`]: this build of `native` in the interpreter's inittab;
//! - [`LEDGER_KEYS`], [`ledger`], [`settled_ledger`], [`ledger_oracle`], [`with_ledger`]: libnative's live-object ledger
//!   (handles, subscriptions, allocator blocks) and the oracle that waits for it to return to baseline;
//! - [`native_calls`], [`debug_counters_self_cost`]: libnative's `calls` counter (it only grows);
//! - [`allowed`], [`HOSTILE_ERROR`], [`is_native_error`]: the exceptions `native` documents, the
//!   hostile objects' own exception as the prelude spells it, and `native.<Name>` checks;
//! - [`Scratch`]: the one scratch directory for a case's store files (ffi-harness's);
//! - [`refs`], [`PySource`], [`run_python`], [`kwargs`]: the pure-Python references and helpers of
//!   `pytests/_refs.py` (the pytest suite imports the same file) and Python run from Rust.

use std::ffi::{CStr, CString};
use std::time::Duration;

use ffi_harness::{AllowedExceptions, Ledger, LedgerOracle, OracleFailure};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};

pub use ffi_harness::Scratch;

/// Register this build's `native` module in the inittab, so `import native` is the code under test
/// (instrumented, in the fuzz binaries), never a copy installed in a venv. Call before the
/// interpreter starts.
pub fn register_native() {
    use native_wrapper::embedded::native as native_module;
    pyo3::append_to_inittab!(native_module);
}

// ---------------------------------------------------------------------------------------------
// The ledger and the call counter.

/// The ledger keys of `native.debug_counters()` that must return to baseline (`calls` only grows).
/// `pytests/_refs.py` spells the same tuple as `LEDGER_KEYS`.
pub const LEDGER_KEYS: [&str; 3] = ["live_handles", "live_subscriptions", "live_blocks"];

/// libnative's live-object counters ([`LEDGER_KEYS`], without `calls`).
pub fn ledger(py: Python<'_>) -> PyResult<Ledger> {
    let counters = ffi_harness::imported!(py, "native")?.call_method0("debug_counters")?;
    let mut out = Ledger::new();
    for key in LEDGER_KEYS {
        out.insert(key.to_owned(), counters.get_item(key)?.extract()?);
    }
    Ok(out)
}

/// `gc.collect()`, then the [`ledger`]: a baseline that does not count the garbage of earlier cases.
pub fn settled_ledger(py: Python<'_>) -> PyResult<Ledger> {
    ffi_harness::imported!(py, "gc")?.call_method0("collect")?;
    ledger(py)
}

/// The ledger oracle: polls `gc.collect()` (GIL released between polls) until the ledger equals a
/// baseline or `deadline` passes (a notifier thread may still be tearing a subscription down).
pub fn ledger_oracle(deadline: Duration) -> LedgerOracle<fn(Python<'_>) -> PyResult<Ledger>> {
    LedgerOracle::new(ledger as fn(Python<'_>) -> PyResult<Ledger>).with_deadline(deadline)
}

/// Reads the ledger, runs `scenario`, then checks the ledger returns to where it started within
/// `deadline`.
pub fn with_ledger<F>(py: Python<'_>, deadline: Duration, scenario: F) -> Result<(), OracleFailure>
where
    F: FnOnce(Python<'_>) -> Result<(), OracleFailure>,
{
    let mut oracle = ledger_oracle(deadline);
    let baseline = oracle
        .read(py)
        .map_err(|e| OracleFailure::from_py(py, "ledger", e))?;
    scenario(py)?;
    oracle.check_returns_to(py, &baseline)
}

/// libnative's `calls` counter: every public entry point bumps it.
pub fn native_calls(py: Python<'_>) -> PyResult<i64> {
    ffi_harness::imported!(py, "native")?
        .call_method0("debug_counters")?
        .get_item("calls")?
        .extract()
}

/// How much one `debug_counters()` call bumps `calls` itself (measured: 0 or 1).
pub fn debug_counters_self_cost(py: Python<'_>) -> PyResult<i64> {
    let mut best = i64::MAX;
    for _ in 0..5 {
        let a = native_calls(py)?;
        let b = native_calls(py)?;
        best = best.min(b - a);
    }
    Ok(best)
}

// ---------------------------------------------------------------------------------------------
// Exceptions.

/// The hostile objects' own exception (raised on purpose by a dunder of an argument; a binding must
/// simply propagate it), spelled as reproducers spell the prelude's classes: `_fh` is
/// [`ffi_harness::PRELUDE_ALIAS`], which the harness resolves to the prelude module.
pub const HOSTILE_ERROR: &str = "_fh.HostileError";

/// The exceptions every entry point of `native` may raise on bad input.
pub const DOCUMENTED: [&str; 4] = ["TypeError", "ValueError", "OverflowError", "BufferError"];

/// [`DOCUMENTED`], plus [`HOSTILE_ERROR`], plus `extra` (e.g. `"KeyError"`,
/// `"native.InvalidStateError"`). SystemError and PanicException always fail, whatever is listed.
pub fn allowed(extra: &[&str]) -> AllowedExceptions {
    AllowedExceptions::new(
        DOCUMENTED
            .iter()
            .chain(&[HOSTILE_ERROR])
            .chain(extra)
            .copied(),
    )
}

/// True if `err` is an instance of `native.<name>` (e.g. `"InvalidStateError"`).
pub fn is_native_error(py: Python<'_>, err: &PyErr, name: &str) -> bool {
    ffi_harness::imported!(py, "native")
        .and_then(|m| m.getattr(name))
        .is_ok_and(|ty| err.is_instance(py, &ty))
}

/// `PyErr` → a description with the traceback (for failure messages).
pub fn describe(py: Python<'_>, err: &PyErr) -> String {
    ffi_harness::oracles::format_exception(py, err)
}

// ---------------------------------------------------------------------------------------------
// Python helpers.

/// A Python module compiled from embedded source the first time it is asked for, once per
/// interpreter (`include_str!` a `.py` file into a `static`).
pub struct PySource {
    source: &'static str,
    file: &'static CStr,
    name: &'static CStr,
    module: PyOnceLock<Py<PyModule>>,
}

impl PySource {
    /// `source` compiled as module `name` (file name `file`, for tracebacks).
    pub const fn new(source: &'static str, file: &'static CStr, name: &'static CStr) -> Self {
        PySource {
            source,
            file,
            name,
            module: PyOnceLock::new(),
        }
    }

    /// The source text (reproducers embed it).
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// Python statements that rebuild this module as `var` from its embedded source (for a
    /// reproducer, which must run without this repository).
    pub fn embed_as(&self, var: &str) -> String {
        let (file, name) = (self.file.to_string_lossy(), self.name.to_string_lossy());
        format!(
            "import types as _types\n{var} = _types.ModuleType({name:?})\n\
             exec(compile(r'''{}''', {file:?}, 'exec'), {var}.__dict__)\n",
            self.source
        )
    }

    /// The module, compiled on first use.
    pub fn module<'py>(&self, py: Python<'py>) -> PyResult<&Bound<'py, PyModule>> {
        self.module
            .get_or_try_init(py, || {
                let code = CString::new(self.source).expect("no NUL byte in embedded Python");
                PyModule::from_code(py, &code, self.file, self.name).map(Bound::unbind)
            })
            .map(|m| m.bind(py))
    }
}

/// `pytests/_refs.py`: the pure-Python references (`fnv1a64`, `process_ref`, `process_ref_fast`) and
/// small helpers (`resize_race`, `UserMapping`, `ledger_snapshot` …) the pytest suite imports, so
/// every suite judges against the same transcription of the contract. Registered as `_refs`, the
/// name the pytest suite imports it by, so a helper `.py` reads the same in both suites.
pub static REFS: PySource = PySource::new(
    include_str!("../../pytests/_refs.py"),
    c"_refs.py",
    c"_refs",
);

/// The [`REFS`] module.
pub fn refs(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    REFS.module(py)
}

/// Run Python `code` (statements) in a fresh namespace holding `locals`, returning the namespace.
/// `code` may `from _refs import …` (see [`REFS`]).
pub fn run_python<'py>(
    py: Python<'py>,
    code: &str,
    locals: &[(&str, Bound<'py, PyAny>)],
) -> PyResult<Bound<'py, PyDict>> {
    refs(py)?;
    let globals = PyDict::new(py);
    globals.set_item("__builtins__", ffi_harness::imported!(py, "builtins")?)?;
    for (name, value) in locals {
        globals.set_item(*name, value)?;
    }
    let code = CString::new(code).expect("no NUL in snippet");
    py.run(&code, Some(&globals), None)?;
    Ok(globals)
}

/// A `kwargs` dict for calls made from Rust.
pub fn kwargs<'py>(
    py: Python<'py>,
    items: &[(&str, Bound<'py, PyAny>)],
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in items {
        d.set_item(k, v)?;
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hostile_error_is_spelled_with_the_prelude_alias() {
        let (module, class) = super::HOSTILE_ERROR.split_once('.').unwrap();
        assert_eq!(module, ffi_harness::PRELUDE_ALIAS);
        assert_eq!(class, "HostileError");
    }
}
