//! Which process a native resource belongs to, across `fork()`.
//!
//! A forked child is a copy of one thread of its parent: libnative's notifier threads are not in it,
//! and a libnative lock some other parent thread held at the fork stays held in the child for good.
//! A connection opened before the fork therefore belongs to the parent: in the child, using it could
//! deadlock and closing it would join a notifier thread that does not exist (every child of a
//! process with a subscribed connection hung at exit). Each connection records the fork generation
//! it was opened in; a `pthread_atfork` child handler bumps the generation, so any fork (`os.fork`,
//! multiprocessing, a C extension calling fork(2)) makes every older connection "inherited".
//!
//! A fork inside a callback makes a child whose only thread is a copy of a notifier: that child's
//! program ends when the delivery returns in it (`end_child_forked_in_a_callback`).

use std::os::raw::c_int;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::prelude::*;

static GENERATION: AtomicU32 = AtomicU32::new(0);

unsafe extern "C" fn after_fork_in_child() {
    // Async-signal-safe only: an atomic add, a const thread-local read, pthread_sigmask.
    GENERATION.fetch_add(1, Ordering::SeqCst);
    let on_a_notifier = crate::handles::CALLBACK_DEPTH
        .try_with(|d| d.get() > 0)
        .unwrap_or(false);
    if on_a_notifier {
        // Forked inside a callback: this process's only thread is a copy of a notifier, which blocks
        // every signal (libnative's notify.c) so that they reach the host's threads. Here it is the
        // host's thread: SIGINT, SIGTERM and the rest must reach it (and the programs it execs).
        // SAFETY: an empty set built by sigemptyset; pthread_sigmask only changes this thread's mask.
        unsafe {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        }
    }
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
    prepare: Option<unsafe extern "C" fn()>,
    parent: Option<unsafe extern "C" fn()>,
    child: Option<unsafe extern "C" fn()>,
) {
    // SAFETY: registers handlers with no preconditions; they stay valid for the process's life (this
    // library is never unloaded: CPython does not dlclose extension modules).
    let rc = unsafe { libc::pthread_atfork(prepare, parent, child) };
    // ENOMEM only; without the handlers forks go unnoticed, as before this module existed.
    debug_assert_eq!(rc, 0, "pthread_atfork failed");
}

/// The current fork generation, without registering the handler (for comparing before and after a
/// call: see `end_child_forked_in_a_callback`).
pub(crate) fn current() -> u32 {
    GENERATION.load(Ordering::SeqCst)
}

/// Ends a child that a callback forked, once the delivery has returned in it, the way a Python program
/// ends: non-daemon threads are joined and the atexit functions run, then the status is
/// `SystemExit`'s code (0 for None; its value printed and 1 for anything else not an int), death by
/// SIGINT after `KeyboardInterrupt`, 1 after any other exception (printed by `sys.excepthook`), else 0.
/// `_exit`, not `exit`: the C library's exit handlers belong to the parent's program.
pub(crate) fn end_child_forked_in_a_callback(py: Python<'_>, error: Option<PyErr>) -> ! {
    let mut interrupted = false;
    let status = match error {
        None => 0,
        Some(e) if e.is_instance_of::<PySystemExit>(py) => match e.value(py).getattr("code") {
            Err(_) => 1,
            Ok(code) if code.is_none() => 0,
            // As CPython's own exit: the int's low bits, `(int)PyLong_AsLong(code)`.
            Ok(code) => match code.extract::<std::os::raw::c_long>() {
                Ok(n) => n as c_int,
                Err(_) => {
                    let _ = py.import("sys").and_then(|sys| {
                        sys.getattr("stderr")?
                            .call_method1("write", (format!("{code}\n"),))
                    });
                    1
                }
            },
        },
        Some(e) => {
            interrupted = e.is_instance_of::<PyKeyboardInterrupt>(py);
            e.print(py); // sys.excepthook, as for an uncaught exception
            1
        }
    };
    let threading = py
        .import("sys")
        .and_then(|sys| sys.getattr("modules")?.get_item("threading"));
    if let Ok(threading) = threading {
        let _ = threading.call_method0("_shutdown"); // joins non-daemon threads, as at a normal exit
    }
    let _ = py
        .import("atexit")
        .and_then(|m| m.call_method0("_run_exitfuncs"));
    for stream in ["stdout", "stderr"] {
        let _ = py
            .import("sys")
            .and_then(|sys| sys.getattr(stream)?.call_method0("flush"));
    }
    if interrupted {
        // SAFETY: default action for SIGINT, then raise it at this thread (unblocked in the child
        // handler above): the process ends killed by SIGINT, as CPython's does after Ctrl-C.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::raise(libc::SIGINT);
        }
    }
    // SAFETY: ends this process at once; nothing after it runs. The child's state is its own copy.
    unsafe { libc::_exit(status) }
}

/// Whether something recorded at `generation` was inherited from a parent process by a fork.
pub(crate) fn inherited(generation: u32) -> bool {
    GENERATION.load(Ordering::SeqCst) != generation
}
