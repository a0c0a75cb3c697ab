//! Support shared by the property tests of `native` (tests/*.rs, one binary per concern).
//!
//! - [`with_python`]: one embedded interpreter per test binary, with the `native` crate of this build
//!   registered in the inittab (so `import native` is the code under test, never a stale venv copy),
//!   and every test serialised: libnative's debug counters are process-wide, so a ledger or `calls`
//!   check must not see another test's connections.
//! - [`config`] / [`cases`]: case budgets tuned for CI; `FFI_HARNESS_DEEP=1` multiplies them,
//!   `PROPTEST_CASES` overrides them; regressions land in `proptests/proptest-regressions/`.
//! - [`isolated`]: crash isolation: the case runs in a forked child (harness `run_in_fork`), so a
//!   segfault or abort becomes a failing, shrinkable case instead of a dead test binary.
//! - [`ledger`], [`native_calls`], [`allowed`], [`refs`], [`StoreDir`]: the oracles' inputs.

pub mod inputs;

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::Duration;

use ffi_harness::{AllowedExceptions, Ledger, OracleFailure, run_in_fork};
use native_wrapper::embedded::native as native_module;
use proptest::test_runner::{Config, FileFailurePersistence};
use pyo3::prelude::*;
use pyo3::types::PyDict;

static INIT: Once = Once::new();
static SERIAL: Mutex<()> = Mutex::new(());

/// The ledger keys that must return to baseline (`calls` only ever grows).
pub const LEDGER_KEYS: [&str; 3] = ["live_handles", "live_subscriptions", "live_blocks"];

/// Start the interpreter once, with `native` (this build) in the inittab.
pub fn init() {
    INIT.call_once(|| {
        pyo3::append_to_inittab!(native_module);
        Python::initialize();
        Python::attach(|py| {
            // Fail loudly if `import native` would find anything but the compiled-in module.
            let module = py.import("native").expect("import native (inittab)");
            let file = module.getattr("__file__").ok();
            assert!(
                file.is_none(),
                "`native` was imported from {file:?}, not from the inittab"
            );
            // Hostile values raise from finalisers and callbacks on purpose: keep the output for
            // the oracles' own messages (set FFI_HARNESS_UNRAISABLE=1 to see them).
            if std::env::var_os("FFI_HARNESS_UNRAISABLE").is_none() {
                py.run(
                    c"import sys; sys.unraisablehook = lambda args: None",
                    None,
                    None,
                )
                .expect("install a quiet unraisablehook");
            }
        });
    });
}

/// Run `f` attached to the interpreter, serialised with every other test of this binary.
/// The lock is taken BEFORE attaching: a thread waiting for it never holds the GIL.
pub fn with_python<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
    let _serial = serial();
    init();
    Python::attach(f)
}

/// The per-binary serialisation lock (poisoning is ignored: a failed test must not fail the rest).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// True when `FFI_HARNESS_DEEP=1` asks for many more cases.
pub fn deep() -> bool {
    std::env::var("FFI_HARNESS_DEEP").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The case count: `PROPTEST_CASES` if set, else `ci` (x20 under `FFI_HARNESS_DEEP=1`).
pub fn cases(ci: u32) -> u32 {
    if let Some(n) = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    if deep() { ci * 20 } else { ci }
}

/// A proptest config with [`cases`]`(ci)` cases whose failures persist in
/// `proptests/proptest-regressions/<file>.txt` (committed, replayed first on every run).
/// `file` must be a `&'static str`: use the [`regressions!`] macro.
pub fn config(ci: u32, regressions: &'static str) -> Config {
    Config {
        cases: cases(ci),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        // Shrinking re-runs whole scenarios (a fork each, and a failing ledger check waits for its
        // deadline): keep it bounded so a failure is reported in well under a minute.
        max_shrink_iters: 256,
        max_shrink_time: shrink_ms(),
        ..Config::default()
    }
}

/// Shrinking budget in ms: 20 s (`FFI_HARNESS_SHRINK_MS` overrides; 0 means no limit).
fn shrink_ms() -> u32 {
    std::env::var("FFI_HARNESS_SHRINK_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// The absolute path of `proptests/proptest-regressions/<name>.txt`, as a `&'static str`.
#[macro_export]
macro_rules! regressions {
    ($name:literal) => {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/",
            $name,
            ".txt"
        )
    };
}

/// How long one isolated case may run before it is reported stuck (every thread's Python and native
/// stack, the holder of each mutex a thread waits for) and killed. A case takes well under a second,
/// a few under ASan: 20 s is a deadlock, not a slow machine.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(20);

/// Run `scenario` in a forked child (see `ffi_harness::isolate`); a crash, a timeout, an `Err` or a
/// panic in the child is returned as `Err` with the details. `FFI_HARNESS_NO_FORK=1` runs it in
/// process instead (for debuggers).
///
/// Forking is safe here: tests are serialised by [`with_python`], so at fork time no other thread
/// of this process runs Python or holds a libnative lock (each scenario closes what it opens, and
/// threads it starts live and die in the child).
pub fn isolated(
    py: Python<'_>,
    scenario: impl FnOnce(Python<'_>) -> Result<(), String>,
) -> Result<(), String> {
    if std::env::var_os("FFI_HARNESS_NO_FORK").is_some_and(|v| !v.is_empty() && v != "0") {
        return scenario(py);
    }
    let outcome =
        run_in_fork(py, Some(CASE_TIMEOUT), scenario).map_err(|e| format!("fork failed: {e}"))?;
    if outcome.is_success() {
        Ok(())
    } else {
        Err(outcome.to_string())
    }
}

/// libnative's live-object counters (without `calls`).
pub fn ledger(py: Python<'_>) -> PyResult<Ledger> {
    let counters = py.import("native")?.call_method0("debug_counters")?;
    let mut out = Ledger::new();
    for key in LEDGER_KEYS {
        out.insert(key.to_owned(), counters.get_item(key)?.extract()?);
    }
    Ok(out)
}

/// libnative's `calls` counter: every public entry point bumps it.
pub fn native_calls(py: Python<'_>) -> PyResult<i64> {
    py.import("native")?
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

/// Exceptions `native` documents (plus the hostile objects' own `HostileError`, which a dunder of an
/// argument raises and the binding must simply propagate). SystemError and PanicException always fail.
pub fn allowed() -> AllowedExceptions {
    AllowedExceptions::new([
        "TypeError",
        "ValueError",
        "OverflowError",
        "KeyError",
        "BufferError",
        "native.Error",
        "ffi_harness_prelude.HostileError",
    ])
}

/// Wait (polling `gc.collect()`, GIL released between polls) until the ledger equals `baseline`.
pub fn ledger_returns_to(py: Python<'_>, baseline: &Ledger) -> Result<(), OracleFailure> {
    let mut oracle = ffi_harness::LedgerOracle::new(ledger);
    oracle.deadline = Duration::from_secs(2);
    oracle.check_returns_to(py, baseline)
}

/// The pure-Python references of the pytest suite (`pytests/_refs.py`: `fnv1a64`, `process_ref`,
/// `process_ref_fast`), shared so both suites judge against the same transcription of the contract.
pub fn refs(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    const SOURCE: &str = include_str!("../../pytests/_refs.py");
    let sys_modules = py.import("sys")?.getattr("modules")?;
    if let Ok(module) = sys_modules.get_item("proptests_refs") {
        return Ok(module.cast_into()?);
    }
    let code = CString::new(SOURCE).expect("no NUL in _refs.py");
    PyModule::from_code(py, &code, c"_refs.py", c"proptests_refs")
}

/// Run Python `code` (statements) in a fresh namespace holding `locals`, returning the namespace.
pub fn run_python<'py>(
    py: Python<'py>,
    code: &str,
    locals: &[(&str, Bound<'py, PyAny>)],
) -> PyResult<Bound<'py, PyDict>> {
    let globals = PyDict::new(py);
    globals.set_item("__builtins__", py.import("builtins")?)?;
    for (name, value) in locals {
        globals.set_item(*name, value)?;
    }
    let code = CString::new(code).expect("no NUL in snippet");
    py.run(&code, Some(&globals), None)?;
    Ok(globals)
}

/// A fresh directory for one case's stores, removed (with everything in it) on drop.
pub struct StoreDir {
    path: PathBuf,
}

impl StoreDir {
    /// A new empty directory under the system temp dir.
    pub fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "ffi-proptests-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a store directory");
        StoreDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<dir>/<name>` as a string.
    pub fn store(&self, name: &str) -> String {
        self.path.join(name).to_string_lossy().into_owned()
    }
}

impl Default for StoreDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for StoreDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `PyErr` → a one-line description with the traceback (for failure messages).
pub fn describe(py: Python<'_>, err: &PyErr) -> String {
    ffi_harness::oracles::format_exception(py, err)
}

/// True if `err` is an instance of `native.<name>`.
pub fn is_native_error(py: Python<'_>, err: &PyErr, name: &str) -> bool {
    py.import("native")
        .and_then(|m| m.getattr(name))
        .is_ok_and(|ty| err.is_instance(py, &ty))
}
