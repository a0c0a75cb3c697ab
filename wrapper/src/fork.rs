//! Which process a native resource belongs to, across `fork()`.
//!
//! A forked child is a copy of one thread of its parent: libnative's notifier threads are not in it,
//! and a libnative lock some other parent thread held at the fork stays held in the child for good.
//! A connection opened before the fork therefore belongs to the parent: in the child, using it could
//! deadlock and closing it would join a notifier thread that does not exist (every child of a
//! process with a subscribed connection hung at exit). Each connection records the fork generation
//! it was opened in; a `pthread_atfork` child handler bumps the generation, so any fork (`os.fork`,
//! multiprocessing, a C extension calling fork(2)) makes every older connection "inherited".

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

use pyo3::exceptions::PySystemExit;
use pyo3::prelude::*;

static GENERATION: AtomicU32 = AtomicU32::new(0);

extern "C" fn after_fork_in_child() {
    // Async-signal-safe: one atomic add (the only thing a fork handler may safely do here).
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

extern "C" {
    // glibc 2.28+ exports it from libc itself.
    fn pthread_atfork(
        prepare: Option<extern "C" fn()>,
        parent: Option<extern "C" fn()>,
        child: Option<extern "C" fn()>,
    ) -> std::os::raw::c_int;
}

/// The current fork generation (0 in the process that first loaded this module, +1 per fork since),
/// after making sure forks are counted: call it before opening anything that records it.
pub(crate) fn generation() -> u32 {
    static WATCH: Once = Once::new();
    WATCH.call_once(|| at_fork(None, None, Some(after_fork_in_child)));
    GENERATION.load(Ordering::SeqCst)
}

/// Registers fork handlers (`pthread_atfork`): `prepare` runs in the forking thread before the fork,
/// `parent` and `child` after it, each in that same thread of its process.
pub(crate) fn at_fork(
    prepare: Option<extern "C" fn()>,
    parent: Option<extern "C" fn()>,
    child: Option<extern "C" fn()>,
) {
    // SAFETY: registers handlers with no preconditions; they stay valid for the process's life (this
    // library is never unloaded: CPython does not dlclose extension modules).
    let rc = unsafe { pthread_atfork(prepare, parent, child) };
    // ENOMEM only; without the handlers forks go unnoticed, as before this module existed.
    debug_assert_eq!(rc, 0, "pthread_atfork failed");
}

/// The current fork generation, without registering the handler (for comparing before and after a
/// call: see `end_child_forked_in_a_callback`).
pub(crate) fn current() -> u32 {
    GENERATION.load(Ordering::SeqCst)
}

extern "C" {
    fn _exit(status: std::os::raw::c_int) -> !;
}

/// Ends a child that a callback forked, once the callback has returned in it, the way a program
/// ends: `SystemExit`'s code (0 for None; its value printed and 1 for anything else not an int),
/// or 1 after printing any other exception, or 0; the atexit functions run and stdio is flushed.
/// `_exit`, not `exit`: the C library's exit handlers belong to the parent's program.
pub(crate) fn end_child_forked_in_a_callback(py: Python<'_>, error: Option<PyErr>) -> ! {
    let status = match error {
        None => 0,
        Some(e) if e.is_instance_of::<PySystemExit>(py) => {
            let code = e.value(py).getattr("code").ok();
            match code {
                None => 1,
                Some(c) if c.is_none() => 0,
                Some(c) => c.extract::<i32>().unwrap_or_else(|_| {
                    let _ = py.import("sys").and_then(|sys| {
                        sys.getattr("stderr")?
                            .call_method1("write", (format!("{c}\n"),))
                    });
                    1
                }),
            }
        }
        Some(e) => {
            e.display(py);
            1
        }
    };
    let _ = py
        .import("atexit")
        .and_then(|m| m.call_method0("_run_exitfuncs"));
    for stream in ["stdout", "stderr"] {
        let _ = py
            .import("sys")
            .and_then(|sys| sys.getattr(stream)?.call_method0("flush"));
    }
    // SAFETY: ends this process at once; nothing after it runs. The child's state is its own copy.
    unsafe { _exit(status) }
}

/// Whether something recorded at `generation` was inherited from a parent process by a fork.
pub(crate) fn inherited(generation: u32) -> bool {
    GENERATION.load(Ordering::SeqCst) != generation
}
