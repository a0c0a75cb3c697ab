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
//! - [`allowed`], [`ledger_returns_to`]: the exception set and the ledger deadline of these tests.
//!
//! What the property tests share with the fuzz targets (the ledger, the call counter, documented
//! exceptions, scratch store directories, `pytests/_refs.py`) is in the `native-testkit` crate.

pub mod inputs;

use std::sync::{Mutex, MutexGuard, Once};
use std::time::Duration;

use ffi_harness::{AllowedExceptions, Ledger, OracleFailure, run_in_fork};
use proptest::test_runner::{Config, FileFailurePersistence};
use pyo3::prelude::*;

static INIT: Once = Once::new();
static SERIAL: Mutex<()> = Mutex::new(());

/// Start the interpreter once, with `native` (this build) in the inittab.
pub fn init() {
    INIT.call_once(|| {
        native_testkit::register_native();
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

/// Exceptions `native` documents for the calls these properties make (`native_testkit::allowed`:
/// the documented ones and the hostile objects' own `HostileError`, which a dunder of an argument
/// raises and the binding must simply propagate), plus KeyError and `native.Error`. SystemError and
/// PanicException always fail.
pub fn allowed() -> AllowedExceptions {
    native_testkit::allowed(&["KeyError", "native.Error"])
}

/// Wait (polling `gc.collect()`, GIL released between polls) until the ledger equals `baseline`.
pub fn ledger_returns_to(py: Python<'_>, baseline: &Ledger) -> Result<(), OracleFailure> {
    native_testkit::ledger_oracle(Duration::from_secs(2)).check_returns_to(py, baseline)
}
