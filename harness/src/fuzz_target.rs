//! The loop every fuzz target of an embedded-interpreter binary shares, so a user's target is a few
//! lines: [`init_embedded`] starts the interpreter (the module under test linked in, the venv on
//! `sys.path`, `PYTHONMALLOC=malloc` for ASan), [`FuzzTarget::fuzz_one`] runs one input as a
//! [`Scenario`] under the oracles and turns a failure into a `repro.py` before it panics (libFuzzer
//! then saves the input), and [`sanitizer_defaults!`](crate::sanitizer_defaults) makes a bare
//! `cargo fuzz run T` use the same ASan/LSan settings as CI. An input that runs past
//! `FFI_HARNESS_INPUT_TIMEOUT` (25 s) is a finding: every Python thread's stack, then the input
//! thread's native stack and a crash artifact (libFuzzer's own `-timeout` defaults to 20 minutes).
//!
//! ```ignore
//! // fuzz/fuzz_targets/sum.rs: a whole PyO3 fuzz target.
//! #![no_main]
//! use libfuzzer_sys::fuzz_target;
//! use ffi_harness::{FuzzTarget, ReproConfig};
//! ffi_harness::sanitizer_defaults!("");
//! static TARGET: std::sync::LazyLock<FuzzTarget> =
//!     std::sync::LazyLock::new(|| FuzzTarget::new("sum", ReproConfig::new("import mymod")));
//! fuzz_target!(
//!     init: ffi_harness::init_embedded(|| pyo3::append_to_inittab!(mymod), |_py| Ok(())),
//!     |input: SumInput| TARGET.fuzz_one(&input)
//! );
//! ```

use std::path::PathBuf;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::oracles::OracleFailure;
use crate::repro::{ReproConfig, ReproScript, write_repro};
use crate::scenario::Scenario;

/// Starts the interpreter for a fuzz binary. Must run once, on the main thread, before any other
/// thread exists (libFuzzer's `init:`). `register` runs before start-up (where
/// `pyo3::append_to_inittab!` must run, so `import mymod` resolves to the instrumented copy linked
/// into the binary); `after` runs once the interpreter is up (extra `sys.path` entries, a different
/// re-entrancy hook...). By default a hostile value's re-entrancy hook collects garbage mid-call.
/// Last, everything start-up made is frozen (`gc.freeze()`), so a collection costs what the input made.
pub fn init_embedded(register: impl FnOnce(), after: impl FnOnce(Python<'_>) -> PyResult<()>) {
    reexec_with_default_flags(DEFAULT_LIBFUZZER_FLAGS);
    // SAFETY: the caller runs this before libFuzzer or Python start threads (see above), which is
    // what `prepare_embedded_python_env` requires of its caller.
    unsafe { crate::env::prepare_embedded_python_env() };
    register();
    Python::initialize();
    Python::attach(|py| -> PyResult<()> {
        crate::env::add_venv_site_packages(py)?;
        crate::prelude::set_reenter_hook(py, &py.import("gc")?.getattr("collect")?)?;
        after(py)?;
        // What start-up made (imports, the prelude, the target's set-up) lives for the whole process:
        // frozen, it is never traversed again, so every gc pass (the re-entrancy hook, a target's own
        // collects) costs what the input made, not what the interpreter holds. Measured on the
        // `callbacks` target: 1.3-1.9x exec/s (benches/results/fuzz-where-the-time-goes.md).
        py.import("gc")?.call_method0("freeze")?;
        Ok(())
    })
    .expect("interpreter set-up for the fuzz target");
}

/// libFuzzer flags a bare `cargo fuzz run T` gets unless the command line sets them. `-detect_leaks=0`
/// turns off only libFuzzer's per-input leak scan: with an interpreter in the process every input
/// looks like growth (caches, interned objects), so the scan re-runs inputs under LSan and costs most
/// of the throughput (the README's bare command ran 647 exec/s against 1,734 with the flag). Leaks
/// stay covered: LeakSanitizer still runs at exit (`sanitizer_defaults!`), and the native ledger and
/// refcount oracles judge every input. Pass `-detect_leaks=1` to have the scan back.
pub const DEFAULT_LIBFUZZER_FLAGS: &[&str] = &["-detect_leaks=0"];

/// libFuzzer parses its flags after `LLVMFuzzerInitialize` (where this runs) but gives it no way to
/// add any, so a flag the command line lacks is added by executing the same binary again with it
/// (once: `FFI_HARNESS_FLAGS_ADDED` marks the second start; libFuzzer's `-jobs`/`-fork` children
/// inherit the flags). Runs before any thread exists.
fn reexec_with_default_flags(defaults: &[&str]) {
    if let Some(added) = std::env::var_os("FFI_HARNESS_FLAGS_ADDED") {
        eprintln!(
            "ffi-harness: libFuzzer flag(s) added by default: {} (set them on the command line to override)",
            added.to_string_lossy()
        );
        return;
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let missing: Vec<&str> = defaults
        .iter()
        .copied()
        .filter(|flag| {
            let name = flag.split('=').next().unwrap_or(flag);
            !args
                .iter()
                .any(|a| a.to_string_lossy().starts_with(&format!("{name}=")))
        })
        .collect();
    if missing.is_empty() || args.is_empty() {
        return;
    }
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new("/proc/self/exe")
        .arg0(&args[0])
        .args(&args[1..])
        .args(&missing)
        .env("FFI_HARNESS_FLAGS_ADDED", missing.join(" "))
        .exec();
    // Only returns on failure: fuzz on with libFuzzer's own defaults.
    eprintln!(
        "ffi-harness: could not re-execute with {missing:?} ({err}); using libFuzzer's defaults"
    );
}

/// One fuzz target: its name (artifact directory), what every reproducer starts with, and where
/// reproducers go.
#[derive(Debug, Clone)]
pub struct FuzzTarget {
    name: String,
    repro: ReproConfig,
    repro_dir: PathBuf,
    epilogue: Option<String>,
}

impl FuzzTarget {
    /// A target named `name` whose reproducers start with `repro`'s set-up. Reproducers go to
    /// `$FFI_HARNESS_REPRO_DIR`, else `artifacts/<name>/` (cargo-fuzz's artifact directory when
    /// run from the fuzz crate).
    pub fn new(name: impl Into<String>, repro: ReproConfig) -> Self {
        let name = name.into();
        let repro_dir = PathBuf::from("artifacts").join(&name);
        FuzzTarget {
            name,
            repro,
            repro_dir,
            epilogue: None,
        }
    }

    /// Reproducers go to `dir` (unless `$FFI_HARNESS_REPRO_DIR` is set).
    pub fn repro_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.repro_dir = dir.into();
        self
    }

    /// Python every reproducer runs after the steps (e.g. a ledger check).
    pub fn epilogue(mut self, code: impl Into<String>) -> Self {
        self.epilogue = Some(code.into());
        self
    }

    /// The target's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `input` as a reproducer script (with `failure` in its header when there is one).
    pub fn script<S: Scenario>(&self, input: &S, failure: Option<&OracleFailure>) -> ReproScript {
        let mut script = input.repro(ReproScript::new(&self.repro));
        if let Some(failure) = failure {
            script = script.failure(failure);
        }
        match &self.epilogue {
            Some(code) => script.epilogue(code.clone()),
            None => script,
        }
    }

    /// Writes `input`'s reproducer; its name hashes the input, so a repeat overwrites it.
    pub fn write_repro<S: Scenario>(&self, input: &S, failure: Option<&OracleFailure>) -> PathBuf {
        let dir = std::env::var_os("FFI_HARNESS_REPRO_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.repro_dir.clone());
        let _ = std::fs::create_dir_all(&dir);
        let hash = fnv1a64(format!("{input:?}").as_bytes());
        let path = dir.join(format!("repro-{hash:016x}.py"));
        if let Err(e) = write_repro(&path, &self.script(input, failure)) {
            eprintln!("ffi-harness: could not write {}: {e}", path.display());
        }
        path
    }

    /// The body of a fuzz target: run `input` under the oracles; on a verdict, write its
    /// reproducer and panic (libFuzzer saves the input as a crash artifact). With
    /// `FFI_HARNESS_WRITE_REPRO` set, the reproducer is written *before* the input runs: that is
    /// how an input that kills the process (an ASan report, a segfault) becomes a `repro.py`:
    /// `FFI_HARNESS_WRITE_REPRO=1 <fuzz binary> <artifact>`.
    pub fn fuzz_one<S>(&self, input: &S)
    where
        S: for<'py> Scenario<State<'py> = ()>,
    {
        if std::env::var_os("FFI_HARNESS_WRITE_REPRO").is_some() {
            let path = self.write_repro(input, None);
            eprintln!("ffi-harness: repro written to {}", path.display());
        }
        let watch = Watchdog::start();
        let result = Python::attach(|py| input.run(py, &mut ()));
        watch.done();
        if let Err(failure) = result {
            let path = self.write_repro(input, Some(&failure));
            eprintln!(
                "ffi-harness: {failure}\nffi-harness: repro written to {}",
                path.display()
            );
            panic!("oracle failure in {}: {failure}", self.name);
        }
    }
}

/// Default bound on one input's run, in seconds (`FFI_HARNESS_INPUT_TIMEOUT` overrides it; 0 = none).
/// libFuzzer's own `-timeout` defaults to 1200 s, so a bare `cargo fuzz run` on a deadlock would sit
/// for 20 minutes and then say only "timeout".
pub const DEFAULT_INPUT_TIMEOUT_SECS: u64 = 25;

/// Milliseconds since `EPOCH` at which the running input started (0: no input running).
static INPUT_STARTED_MS: AtomicU64 = AtomicU64::new(0);
/// `pthread_self()` of the thread running inputs (libFuzzer's main loop).
static INPUT_THREAD: AtomicU64 = AtomicU64::new(0);
static WATCHDOG: Once = Once::new();
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn now_ms() -> u64 {
    // +1: 0 means "idle".
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Stuck is a finding: an input that runs past the bound gets every Python thread's stack
/// (faulthandler, no GIL needed: a deadlock may hold it), the threads waiting on a held mutex with
/// its holder and every native stack ([`crate::stuck`]), then SIGABRT on the input's own thread,
/// which libFuzzer reports as a deadly signal with that thread's native stack, saving the input as a
/// crash artifact like any other crash.
struct Watchdog;

impl Watchdog {
    fn start() -> Watchdog {
        WATCHDOG.call_once(|| {
            let bound = std::env::var("FFI_HARNESS_INPUT_TIMEOUT")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(DEFAULT_INPUT_TIMEOUT_SECS);
            if bound == 0 {
                return;
            }
            let Some(dump_signal) = Python::attach(register_stack_dump).ok() else {
                eprintln!(
                    "ffi-harness: no faulthandler: a stuck input is reported without Python stacks"
                );
                return;
            };
            // SAFETY: pthread_self has no preconditions.
            INPUT_THREAD.store(unsafe { libc::pthread_self() } as u64, Ordering::Relaxed);
            let _ = std::thread::Builder::new()
                .name("ffi-harness-watchdog".into())
                .spawn(move || watch(Duration::from_secs(bound), dump_signal));
        });
        INPUT_STARTED_MS.store(now_ms(), Ordering::Relaxed);
        Watchdog
    }

    fn done(self) {
        INPUT_STARTED_MS.store(0, Ordering::Relaxed);
    }
}

/// `faulthandler.register(<a real-time signal>, all_threads=True)`: that signal, sent to any thread,
/// writes every Python thread's stack to stderr. Registered at the first input, after libFuzzer has
/// installed its own handlers, and on a signal neither libFuzzer nor the sanitizers use.
fn register_stack_dump(py: Python<'_>) -> PyResult<i32> {
    let signal = py.import("signal")?;
    let signum: i32 = signal.getattr("SIGRTMAX")?.extract::<i32>()? - 1;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("all_threads", true)?;
    py.import("faulthandler")?
        .call_method("register", (signum,), Some(&kwargs))?;
    Ok(signum)
}

fn watch(bound: Duration, dump_signal: i32) {
    let tick = (bound / 10).clamp(Duration::from_millis(50), Duration::from_millis(500));
    loop {
        std::thread::sleep(tick);
        let started = INPUT_STARTED_MS.load(Ordering::Relaxed);
        if started == 0 || now_ms().saturating_sub(started) < bound.as_millis() as u64 {
            continue;
        }
        let thread = INPUT_THREAD.load(Ordering::Relaxed) as libc::pthread_t;
        eprintln!(
            "ffi-harness: STUCK: one input has run for more than {} s (FFI_HARNESS_INPUT_TIMEOUT); \
             every Python thread's stack follows, then the lock owners and every thread's native \
             stack, then the input thread's stack again from libFuzzer",
            bound.as_secs()
        );
        // SAFETY: `thread` is the input thread's pthread_t, alive (it is running the input); both
        // signals have handlers installed (faulthandler's; libFuzzer's deadly-signal handler).
        unsafe { libc::pthread_kill(thread, dump_signal) };
        std::thread::sleep(Duration::from_millis(300));
        eprintln!("{}", crate::stuck::native_report(std::process::id() as i32));
        if INPUT_STARTED_MS.load(Ordering::Relaxed) != started {
            // The report took seconds (gdb); an input that finished meanwhile was slow, not stuck, and
            // aborting now would save the next input as the crash.
            eprintln!("ffi-harness: the input ended during the report (slow, not stuck); going on");
            continue;
        }
        // SAFETY: as above.
        unsafe { libc::pthread_kill(thread, libc::SIGABRT) };
        std::thread::sleep(Duration::from_secs(5));
        eprintln!("ffi-harness: the stuck input did not end on SIGABRT; exiting");
        std::process::abort();
    }
}

fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// A fresh, empty directory for one input's files (stores, sockets...), removed on drop (with its
/// per-process parent once that is empty). On tmpfs (`/dev/shm`) when there is one: every input
/// creates and removes files.
#[derive(Debug)]
pub struct Scratch {
    /// The directory.
    pub dir: PathBuf,
}

static SCRATCH_SEQ: AtomicU64 = AtomicU64::new(0);

impl Scratch {
    /// A new directory under `/dev/shm/ffi-harness-<pid>/` (or the temp dir).
    pub fn new() -> Scratch {
        let shm = PathBuf::from("/dev/shm");
        let base = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        let dir = base
            .join(format!("ffi-harness-{}", std::process::id()))
            .join(SCRATCH_SEQ.fetch_add(1, Ordering::Relaxed).to_string());
        // A concurrent drop may remove the (empty) per-process parent between the two levels that
        // create_dir_all makes: try again.
        let mut attempt = 0;
        while let Err(e) = std::fs::create_dir_all(&dir) {
            attempt += 1;
            assert!(attempt < 3, "scratch dir {}: {e}", dir.display());
        }
        Scratch { dir }
    }

    /// `name` inside the directory, as a string (what Python APIs take).
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
        // The per-process parent too, once empty: forked children (crash isolation) each make one.
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// The ASan option that fills the first 4 KiB of every freed block with 0x55. A use after free by
/// code ASan does not instrument (libc's `open` reading a path whose bytes object died, the
/// interpreter itself) reads stale but plausible bytes by default, and nothing notices; scribbled,
/// the call sees garbage and its result goes wrong where an oracle looks (mutant 15: `connect` on a
/// freed path). Every repro.py and the sanitized pytest runs set it too.
pub const ASAN_FREE_FILL: &str = "max_free_fill_size=4096";

/// What [`sanitizer_defaults!`] hands ASan (leak check at exit, ODR checks off, [`ASAN_FREE_FILL`]).
/// A C string literal cannot be built with `concat!`, so the fill is spelled out here; a unit test
/// holds the two together.
pub const ASAN_DEFAULT_OPTIONS: &std::ffi::CStr =
    c"detect_leaks=1:detect_odr_violation=0:max_free_fill_size=4096";

/// Defines ASan's and LSan's default options for the binary that invokes it, so a bare
/// `cargo fuzz run T` behaves like CI: leak checking at exit (`detect_leaks=1`), ODR checks off
/// (an interpreter and an extension may both carry a copy of a static library), freed blocks
/// scribbled over (see [`ASAN_FREE_FILL`]), and the given
/// LSan suppressions (e.g. `include_str!("../lsan.supp")`; CPython's interned objects and the
/// allocations of `Py_Initialize` are never freed) compiled in, no `LSAN_OPTIONS` needed.
/// A macro because the sanitizer runtime finds these weak hooks by their unmangled names in the
/// final binary: they must be defined by the fuzz target's own crate.
#[macro_export]
macro_rules! sanitizer_defaults {
    ($lsan_suppressions:expr) => {
        /// ASan's defaults for this binary (see `ffi_harness::sanitizer_defaults!`).
        #[unsafe(no_mangle)]
        pub extern "C" fn __asan_default_options() -> *const ::std::ffi::c_char {
            $crate::fuzz_target::ASAN_DEFAULT_OPTIONS.as_ptr()
        }

        /// LSan's suppressions for this binary (see `ffi_harness::sanitizer_defaults!`).
        #[unsafe(no_mangle)]
        pub extern "C" fn __lsan_default_suppressions() -> *const ::std::ffi::c_char {
            concat!($lsan_suppressions, "\0").as_ptr().cast()
        }
    };
}

#[cfg(test)]
mod tests {
    use super::{ASAN_DEFAULT_OPTIONS, ASAN_FREE_FILL};

    #[test]
    fn the_default_asan_options_fill_freed_blocks() {
        let options = ASAN_DEFAULT_OPTIONS.to_str().unwrap();
        assert!(options.split(':').any(|o| o == ASAN_FREE_FILL), "{options}");
        assert!(
            options.split(':').any(|o| o == "detect_leaks=1"),
            "{options}"
        );
    }
}
