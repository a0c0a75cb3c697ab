//! Shared support for the `native` fuzz targets: interpreter start-up with `native` linked into the
//! binary (instrumented by cargo-fuzz, its C side by clang's ASan), the oracles every target applies,
//! and the bridge from a failing input to a standalone `repro.py`.
//!
//! Each target lives in its own module with a plain `run` function, so regression tests and the
//! repro writer call exactly what the fuzzer calls.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use ffi_harness::{
    add_venv_site_packages, prepare_embedded_python_env, set_reenter_hook, AllowedExceptions,
    Ledger, LedgerOracle, OracleFailure, ReproConfig, ReproScript,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

pub mod buffers;
pub mod callbacks;
pub mod differential;
pub mod errors;
pub mod handles;
pub mod structs;

/// Starts the interpreter with the in-binary `native` module. Must run once, on the main thread,
/// before any other thread exists (libFuzzer's `init:`).
pub fn init() {
    // SAFETY: called from fuzz_target!'s init block, before libFuzzer or Python start threads.
    unsafe { prepare_embedded_python_env() };
    // `import native` resolves to this binary's (instrumented) module, not the venv's copy.
    pyo3::append_to_inittab!(native_module);
    Python::initialize();
    Python::attach(|py| -> PyResult<()> {
        add_venv_site_packages(py)?;
        let sys = py.import("sys")?;
        // The ctypes/cffi bindings used by the differential target.
        let bindings = repo_root().join("pytests").join("bindings");
        sys.getattr("path")?
            .call_method1("insert", (0, bindings.to_string_lossy().as_ref()))?;
        // A hostile value's re-entrancy hook: by default, collect garbage mid-call (targets that hold
        // a connection replace it with something nastier, e.g. closing that connection).
        set_reenter_hook(py, &py.import("gc")?.getattr("collect")?)?;
        Ok(())
    })
    .expect("interpreter set-up");
}

use native_wrapper::embedded::native as native_module;

/// tmpfs when there is one: every input creates and removes store files.
fn scratch_base() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    let base = if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    };
    base.join(format!("native-fuzz-{}", std::process::id()))
}

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

pub fn py_failure(py: Python<'_>, oracle: &'static str, err: PyErr) -> OracleFailure {
    OracleFailure::new(oracle, ffi_harness::oracles::format_exception(py, &err))
}

/// A fresh, empty directory for this input's stores (removed by the caller's `Scratch` drop).
pub struct Scratch {
    pub dir: PathBuf,
}

static SCRATCH_SEQ: AtomicU64 = AtomicU64::new(0);

impl Scratch {
    pub fn new() -> Scratch {
        let dir = scratch_base().join(SCRATCH_SEQ.fetch_add(1, Ordering::Relaxed).to_string());
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An input that can replay itself in Rust and describe itself as a Python script.
pub trait Scenario: std::fmt::Debug {
    /// Target name (for artifact paths).
    const TARGET: &'static str;
    /// Run under the oracles.
    fn run(&self, py: Python<'_>) -> Result<(), OracleFailure>;
    /// Python set-up and steps that replay this input against the installed module.
    fn repro(&self, config: &ReproConfig) -> ReproScript;
    /// Allowed exceptions, for the repro header.
    fn allowed() -> AllowedExceptions;
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
pub fn repro_config<S: Scenario>() -> ReproConfig {
    ReproConfig::new(REPRO_HELPERS)
        .allow(&S::allowed())
        .note("Memory-safety findings: `ci/asan-python repro.py` runs it against the ASan build of native")
        .note("(the environment above, set up for you); logic findings reproduce with plain `python repro.py`.")
        .asan("clang-19")
}

/// Where repro files go: FFI_HARNESS_REPRO_DIR, else fuzz/artifacts/<target>/.
fn repro_dir(target: &str) -> PathBuf {
    std::env::var_os("FFI_HARNESS_REPRO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("fuzz").join("artifacts").join(target))
}

fn write_repro_for<S: Scenario>(input: &S, failure: Option<&OracleFailure>) -> PathBuf {
    let dir = repro_dir(S::TARGET);
    let _ = std::fs::create_dir_all(&dir);
    let text = format!("{input:?}");
    let hash = text.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    let path = dir.join(format!("repro-{hash:016x}.py"));
    let mut script = input.repro(&repro_config::<S>());
    if let Some(f) = failure {
        script = script.failure(f);
    }
    let script = script.epilogue("_wait_ledger(_BASELINE)");
    if let Err(e) = ffi_harness::write_repro(&path, &script) {
        eprintln!("ffi-harness: could not write {}: {e}", path.display());
    }
    path
}

/// The body of every fuzz target. With FFI_HARNESS_WRITE_REPRO set, the repro is written before the
/// input runs: that is how a crash artifact (ASan abort, no chance to write afterwards) becomes a
/// repro.py: `FFI_HARNESS_WRITE_REPRO=1 fuzz/target/.../<target> <artifact>`.
pub fn fuzz_one<S: Scenario>(input: &S) {
    if std::env::var_os("FFI_HARNESS_WRITE_REPRO").is_some() {
        let path = write_repro_for(input, None);
        eprintln!("ffi-harness: repro written to {}", path.display());
    }
    let result = Python::attach(|py| input.run(py));
    if let Err(failure) = result {
        let path = write_repro_for(input, Some(&failure));
        eprintln!(
            "ffi-harness: {failure}\nffi-harness: repro written to {}",
            path.display()
        );
        panic!("oracle failure: {failure}");
    }
}

/// Python `repr`-style bytes literal.
pub fn py_bytes(b: &[u8]) -> String {
    let mut s = String::from("b'");
    for &c in b {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'\'' => s.push_str("\\'"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push('\'');
    s
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

/// ASan's defaults for these binaries, so a bare `cargo fuzz run <target>` behaves like CI: leak
/// checking on at exit, with the suppressions below.
#[no_mangle]
pub extern "C" fn __asan_default_options() -> *const std::ffi::c_char {
    c"detect_leaks=1:detect_odr_violation=0".as_ptr()
}

/// The committed suppressions (fuzz/lsan.supp), compiled in: no LSAN_OPTIONS needed.
#[no_mangle]
pub extern "C" fn __lsan_default_suppressions() -> *const std::ffi::c_char {
    concat!(include_str!("../lsan.supp"), "\0").as_ptr().cast()
}
