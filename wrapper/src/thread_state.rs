//! One Python thread state per notifier thread, kept for the thread's whole life (checklist: "Native
//! Threads Calling Python").
//!
//! libnative's notifier is a foreign thread: CPython has no thread state for it. Attaching with
//! `PyGILState_Ensure` creates one and the matching release destroys it again when its nesting count
//! drops to zero, so a callback per event meant a thread state built and torn down per event. On
//! CPython 3.11+ that is an mmap and an munmap of the frame stack and a gettid per call (strace: one
//! of each per callback), most of a trivial callback's cost, and every `threading.local` value and
//! context variable a callback set was gone by its next call. CPython documents the remedy
//! (gh-146219): one outer Ensure that stays outstanding for the thread's lifetime, so the callbacks'
//! own Ensure/Release pairs only move the count between 1 and 2.
//!
//! The outer Ensure is made in its own attach, before the callback's attach, so the callback still
//! takes and releases the GIL exactly as before. The matching release runs when the thread exits (a
//! Rust thread-local's destructor: glibc runs those before `pthread_join` returns), so once
//! `native_close` has joined the notifier, its thread state is gone too.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex, MutexGuard};

use pyo3::ffi;
use pyo3::prelude::*;

use crate::handles::SHUTTING_DOWN;

/// The thread state this thread keeps; its drop (at thread exit) deletes it.
struct KeptThreadState {
    tstate: *mut ffi::PyThreadState,
}

thread_local! {
    static KEPT: RefCell<Option<KeptThreadState>> = const { RefCell::new(None) };
}

/// Orders notifier threads' exits against the atexit hook. A thread that found the hook not yet run
/// goes on to take the GIL; without the fence the hook could run and finalization begin in between,
/// and the thread would then take the GIL of a finalizing interpreter (CPython ends or parks a thread
/// that does, here inside a thread-local destructor) with a state finalization may have freed. An
/// exit that finds `hook_ran` unset counts itself in `releasing` until its state is released; the
/// hook sets `hook_ran`, then waits for that count to reach 0.
///
/// A late exit never waits: releasing a state runs Python (its `threading.local` values' `__del__`),
/// which may close another connection and so join that connection's notifier. With a lock held from
/// check to release (a read-write lock, say), that notifier's exit would queue behind the waiting hook
/// while the hook waits for the first exit: a deadlock (`pytests/test_shutdown.py` has it).
struct ExitFence {
    hook_ran: bool,
    releasing: usize,
    /// The fork generation `releasing` counts in (see `crate::fork`). A child forked while a notifier
    /// was releasing inherits the count but not the thread, so its atexit hook would wait forever: a
    /// new generation restarts the count.
    generation: u32,
}

static EXIT_FENCE: Mutex<ExitFence> = Mutex::new(ExitFence {
    hook_ran: false,
    releasing: 0,
    generation: 0,
});
static RELEASED: Condvar = Condvar::new();

fn lock_exit_fence() -> MutexGuard<'static, ExitFence> {
    // Plain data behind the lock: a panic elsewhere leaves nothing half-updated that matters here.
    EXIT_FENCE.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// The fence, locked by the forking thread across a fork (see `keep_the_fence_unlocked_across_forks`).
    static FENCE_HELD_FOR_FORK: RefCell<Option<MutexGuard<'static, ExitFence>>> =
        const { RefCell::new(None) };
}

unsafe extern "C" fn fence_before_fork() {
    let guard = lock_exit_fence();
    let _ = FENCE_HELD_FOR_FORK.try_with(|held| *held.borrow_mut() = Some(guard));
}

unsafe extern "C" fn fence_after_fork() {
    let _ = FENCE_HELD_FOR_FORK.try_with(|held| drop(held.borrow_mut().take()));
}

/// A fork while another thread holds the fence (for a few instructions: it is never held while Python
/// runs) would copy it locked into the child, whose atexit hook would then block on it for good. So
/// the forking thread takes the fence before the fork and lets go of it after, in both processes.
fn keep_the_fence_unlocked_across_forks() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        crate::fork::at_fork(
            Some(fence_before_fork),
            Some(fence_after_fork),
            Some(fence_after_fork),
        )
    });
}

fn exit_fence() -> MutexGuard<'static, ExitFence> {
    let mut fence = lock_exit_fence();
    if crate::fork::inherited(fence.generation) {
        // The first use in a forked child: no thread of this process is releasing.
        fence.generation = crate::fork::generation();
        fence.releasing = 0;
    }
    fence
}

/// Whether the interpreter has started finalizing (it then frees every thread state). Normally the
/// atexit hook has run by then; not if `native` was first imported by another atexit function, as
/// CPython does not run a hook registered while the hooks run.
#[cfg(Py_3_13)]
pub(crate) fn interpreter_finalizing() -> bool {
    // SAFETY: reads the runtime's finalizing flag; callable without the GIL.
    unsafe { ffi::Py_IsFinalizing() != 0 }
}

#[cfg(not(Py_3_13))]
pub(crate) fn interpreter_finalizing() -> bool {
    extern "C" {
        // CPython 3.7-3.12's name for it (exported; declared in cpython/pylifecycle.h).
        fn _Py_IsFinalizing() -> std::os::raw::c_int;
    }
    // SAFETY: as above.
    unsafe { _Py_IsFinalizing() != 0 }
}

/// The atexit hook's first step: from here on no notifier thread's exit touches Python. Detached while
/// it waits, because the exits it waits for need the GIL.
pub(crate) fn stop_releasing_at_exit(py: Python<'_>) {
    py.detach(|| {
        let mut fence = exit_fence();
        fence.hook_ran = true;
        SHUTTING_DOWN.store(true, Ordering::SeqCst);
        while fence.releasing > 0 {
            fence = RELEASED.wait(fence).unwrap_or_else(|e| e.into_inner());
        }
    });
}

/// Called by the callback trampoline before it attaches: on a foreign thread's first callback, makes
/// the outer Ensure. Never panics (it runs on a C thread) and does nothing on a thread CPython made
/// (CPython owns and deletes that thread state itself) or after the atexit hook (see below).
pub(crate) fn keep_for_this_thread() {
    let _ = std::panic::catch_unwind(|| {
        let _ = KEPT.try_with(|kept| {
            let Ok(mut kept) = kept.try_borrow_mut() else {
                return;
            };
            if kept.is_some() || SHUTTING_DOWN.load(Ordering::SeqCst) {
                return;
            }
            // SAFETY: reads this thread's gilstate slot only; callable without the GIL.
            if !unsafe { ffi::PyGILState_GetThisThreadState() }.is_null() {
                return;
            }
            keep_the_fence_unlocked_across_forks();
            *kept = Python::try_attach(|_py| {
                // SAFETY: attached, so this Ensure only raises this thread state's nesting count to 2;
                // the attach's own release brings it back to 1 and detaches, keeping the state.
                let _ = unsafe { ffi::PyGILState_Ensure() };
                KeptThreadState {
                    // SAFETY: attached: this thread's current state.
                    tstate: unsafe { ffi::PyThreadState_Get() },
                }
            });
        });
    });
}

impl Drop for KeptThreadState {
    fn drop(&mut self) {
        // Thread exit. After the atexit hook, finalization may already have freed this state (it frees
        // every thread's): leave it to that. Before it, nothing native calls Python after shutdown.
        // Counted in the fence, so the hook waits for this release (see EXIT_FENCE).
        let counted_in = {
            let mut fence = exit_fence();
            if fence.hook_ran || interpreter_finalizing() {
                return;
            }
            fence.releasing += 1;
            fence.generation
        };
        // For close() and cancel(), the release runs inside this notifier's callbacks: the Python it
        // runs (a `threading.local` value's __del__) may close this notifier's own connection or cancel
        // one of its subscriptions, while another thread's close() is joining this very thread; waiting
        // for that close to finish would wait for this thread to exit.
        let depth = crate::callbacks::CallbackDepth::enter();
        // SAFETY: `tstate` is this thread's own state, detached (every callback's attach has ended);
        // restoring it takes the GIL. Its nesting count is then 1 (the outer Ensure): this release
        // drops it to 0, which clears and deletes the state and releases the GIL. UNLOCKED because
        // the state did not exist before the first attach made it (CPython asserts that).
        unsafe {
            ffi::PyEval_RestoreThread(self.tstate);
            ffi::PyGILState_Release(ffi::PyGILState_STATE::PyGILState_UNLOCKED);
        }
        drop(depth);
        let mut fence = exit_fence();
        // Not if the release forked (its Python may): the child's count restarted without this one.
        if fence.generation == counted_in {
            fence.releasing -= 1;
            if fence.releasing == 0 {
                RELEASED.notify_all();
            }
        }
    }
}
