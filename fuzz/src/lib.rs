//! What the `native` fuzz targets share beyond the ffi-harness crate (which owns the loop: the
//! `Scenario` trait, `FuzzTarget::fuzz_one`, repro-on-failure, interpreter start-up, sanitizer
//! defaults): `native` linked into the binary, its documented exceptions, its ledger, the reproducer
//! preamble, and Rust references of its kernels.
//!
//! Each target lives in its own module with a plain `Scenario` impl, so regression tests and the
//! repro writer call exactly what the fuzzer calls.

use std::path::PathBuf;

use ffi_harness::{
    set_reenter_hook, AllowedExceptions, FuzzTarget, Ledger, LedgerOracle, OracleFailure,
    ReproConfig,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

pub use ffi_harness::py_bytes_literal as py_bytes;
pub use ffi_harness::{Scenario, Scratch};

pub mod buffers;
pub mod callbacks;
pub mod differential;
pub mod errors;
pub mod handles;
pub mod structs;

ffi_harness::sanitizer_defaults!(include_str!("../lsan.supp"));

/// Starts the interpreter with the in-binary `native` module (libFuzzer's `init:`).
pub fn init() {
    ffi_harness::init_embedded(
        // `import native` resolves to this binary's (instrumented) module, not the venv's copy.
        || pyo3::append_to_inittab!(native_module),
        |py| {
            // The ctypes/cffi bindings used by the differential target.
            let bindings = repo_root().join("pytests").join("bindings");
            py.import("sys")?
                .getattr("path")?
                .call_method1("insert", (0, bindings.to_string_lossy().as_ref()))?;
            // Targets that hold a connection replace the default re-entrancy hook (gc.collect)
            // with something nastier; start from the default for every target.
            set_reenter_hook(py, &py.import("gc")?.getattr("collect")?)
        },
    );
}

use native_wrapper::embedded::native as native_module;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fuzz/ is in the repo")
        .to_path_buf()
}

/// The documented exceptions of `native`, plus what hostile values raise on purpose.
pub fn allowed(extra: &[&str]) -> AllowedExceptions {
    let mut names = vec![
        "TypeError",
        "ValueError",
        "OverflowError",
        "BufferError",
        "_fh.HostileError",
    ];
    names.extend_from_slice(extra);
    AllowedExceptions::new(names)
}

/// libnative's live-object counters (the `calls` counter is not a ledger: it only grows).
pub fn read_ledger(py: Python<'_>) -> PyResult<Ledger> {
    let counters = py.import("native")?.call_method0("debug_counters")?;
    let mut ledger: Ledger = counters.extract()?;
    ledger.remove("calls");
    Ok(ledger)
}

pub fn native_calls(py: Python<'_>) -> PyResult<i64> {
    py.import("native")?
        .call_method0("debug_counters")?
        .get_item("calls")?
        .extract()
}

/// Runs `scenario` and then checks the native ledger returns to where it started.
pub fn with_ledger<F>(py: Python<'_>, scenario: F) -> Result<(), OracleFailure>
where
    F: FnOnce(Python<'_>) -> Result<(), OracleFailure>,
{
    let mut ledger =
        LedgerOracle::new(read_ledger).with_deadline(std::time::Duration::from_secs(5));
    let baseline = ledger.read(py).map_err(|e| py_failure(py, "ledger", e))?;
    scenario(py)?;
    ledger.check_returns_to(py, &baseline)
}

/// Python helpers shared by every repro: the same references and checks as the Rust oracles.
pub const REPRO_HELPERS: &str = concat!(
    "import types as _types\n_REFS_SOURCE = r'''",
    include_str!("../../pytests/_refs.py"),
    "'''\n",
    r#"import array, gc, mmap, os, sys, tempfile, threading, time
import native

# The pure-Python references of pytests/_refs.py, embedded so the script stands alone.
_refs = _types.ModuleType("_refs")
exec(compile(_REFS_SOURCE, "_refs.py", "exec"), _refs.__dict__)
_ref_fnv = _refs.fnv1a64
_ref_process = _refs.process_ref

def _ledger():
    c = native.debug_counters()
    return (c["live_handles"], c["live_subscriptions"], c["live_blocks"])

def _wait_ledger(baseline, seconds=5.0):
    deadline = time.time() + seconds
    while True:
        gc.collect()
        if _ledger() == baseline or time.time() > deadline:
            break
        time.sleep(0.01)
    assert _ledger() == baseline, f"ledger {_ledger()} != baseline {baseline}"

_BASELINE = _ledger()
_TMP = tempfile.mkdtemp(prefix="native-repro-")
"#
);

/// The environment a repro needs, per bug class: memory bugs need ASan preloaded and every Python
/// object in malloc (the extension must be built with ASan: `ci/sanitize` builds one).
pub fn repro_config(allowed: &AllowedExceptions) -> ReproConfig {
    ReproConfig::new(REPRO_HELPERS)
        .allow(allowed)
        .note("Memory-safety findings: `ci/asan-python repro.py` runs it against the ASan build of native")
        .note("(the environment above, set up for you); logic findings reproduce with plain `python repro.py`.")
        .asan("clang-19")
}

/// A `native` fuzz target: reproducers under fuzz/artifacts/<name>/, each ending with the ledger
/// check (every handle, subscription and block released).
pub fn target(name: &str, allowed: &AllowedExceptions) -> FuzzTarget {
    FuzzTarget::new(name, repro_config(allowed))
        .repro_dir(repo_root().join("fuzz").join("artifacts").join(name))
        .epilogue("_wait_ledger(_BASELINE)")
}

/// `Result` of a Python step as an oracle verdict of `oracle`.
pub fn py_failure(py: Python<'_>, oracle: &'static str, err: PyErr) -> OracleFailure {
    OracleFailure::from_py(py, oracle, err)
}

/// `kwargs` dict helper for calls made from Rust.
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

/// Rust references of libnative's kernels (the oracles compare against these).
pub fn ref_fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

pub fn ref_process(data: &mut [u8], key: u32, rounds: u32) {
    let k = key.to_le_bytes();
    for _ in 0..rounds {
        for (i, b) in data.iter_mut().enumerate() {
            *b = (*b ^ k[i % 4]).wrapping_add((i & 0xff) as u8);
        }
    }
}
