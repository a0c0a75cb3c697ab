//! The shared state of one native handle: who may use the pointer when (the mutex for fast calls,
//! pins for calls made with the GIL released), and how close waits for both. Every open connection
//! is registered here, so the atexit hook can cancel callbacks before finalization.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use pyo3::prelude::*;

use crate::callbacks::CallbackCtx;
use crate::errors::{invalid_state, NativeError};
use crate::structs::Options;
use crate::sys;

thread_local! {
    /// How many libnative callbacks this thread is inside (set by the trampoline). A close requested
    /// from inside a callback must not wait for pinned calls: one of them may be waiting for that very
    /// callback to return (cancel from another thread).
    pub(crate) static CALLBACK_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Set by the atexit hook: from then on no new connection or subscription is accepted, so no native
/// thread can call into an interpreter that is finalizing.
pub(crate) static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// Every open connection, so the atexit hook can cancel their subscriptions before finalization.
static LIVE: Mutex<Vec<Weak<ConnInner>>> = Mutex::new(Vec::new());

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct DbState {
    /// Non-null until the native handle is actually closed.
    db: *mut sys::native_db,
    /// Calls in progress that run with the GIL released (flush, unsubscribe).
    busy: usize,
    /// Logically closed: new calls fail; the last pin (or close itself) finishes the native close.
    close_pending: bool,
    /// finish_close is waiting for the pins to drain: no new pin, not even a teardown one (a callback
    /// closing its connection would wait for that pin while the pin's unsubscribe waits for it).
    closing: bool,
    /// native_close has returned: no callback of this connection runs or will run.
    closed: bool,
}

/// State shared by a Connection, its Subscriptions and its callbacks.
pub(crate) struct ConnInner {
    state: Mutex<DbState>,
    idle: Condvar,
    /// The owned Python callbacks, by subscription id (checklist: callbacks are owned while registered).
    pub(crate) subs: Mutex<std::collections::HashMap<u64, Box<CallbackCtx>>>,
    /// Signalled (with `subs`) whenever callbacks leave `subs`: a cancel() waiting for another
    /// thread's cancel of the same subscription wakes on it.
    subs_removed: Condvar,
    pub(crate) options: Options,
    /// The path's bytes exactly as handed to native_connect (the OS sees bytes; `path` decodes them).
    pub(super) path: Vec<u8>,
    /// Set when close() returns inside a callback before the native close has run (a pinned call
    /// defers it, or another thread's close is still waiting for this very callback): the notifier
    /// may still hold queued events, and the trampoline drops them, as no callback may run after
    /// close() has returned.
    pub(crate) silenced: Arc<AtomicBool>,
    /// The fork generation this handle was opened in (see `crate::fork`): in a forked child it is the
    /// parent's, and nothing may touch it natively.
    fork_generation: u32,
}

// SAFETY: the raw handle is only used under `state`'s rules: fast calls hold the mutex, blocking calls
// hold a pin, and libnative itself is thread-safe for everything but close, which waits for both.
unsafe impl Send for ConnInner {}
// SAFETY: as above; all interior mutability goes through Mutex/Condvar.
unsafe impl Sync for ConnInner {}

/// A pin on the native handle for a call made with the GIL released; dropping it may finish a close
/// that was requested meanwhile.
pub(crate) struct Pin<'a> {
    inner: &'a ConnInner,
    pub db: DbPtr,
}

#[derive(Clone, Copy)]
pub(crate) struct DbPtr(pub *mut sys::native_db);
// SAFETY: a DbPtr is only created from a pinned or mutex-held handle and used within that scope.
unsafe impl Send for DbPtr {}

/// A native call moved to a detached section, with the pinned handle it runs on.
struct Detached<F>(F, DbPtr);
// SAFETY: the closures given to `ConnInner::call` only capture pointers into memory owned by the
// calling frame (pinned buffer exports, out-params, guards), all alive until `py.detach` returns, and
// touch no Python object; the handle is pinned for the whole call.
unsafe impl<F> Send for Detached<F> {}

impl<F> Detached<F> {
    fn run<R>(self) -> R
    where
        F: FnOnce(*mut sys::native_db) -> R,
    {
        (self.0)((self.1).0)
    }
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        if self.inner.inherited() {
            // Taken in the parent before a fork (a C API pin): the parent's, like the handle. Its
            // lock may be held by a parent thread the child does not have: not touched.
            return;
        }
        let finish = {
            let mut g = lock(&self.inner.state);
            g.busy -= 1;
            if g.busy == 0 {
                self.inner.idle.notify_all();
            }
            let finish = g.busy == 0 && g.close_pending && !g.db.is_null();
            g.closing |= finish;
            finish
        };
        if finish {
            self.inner.finish_close();
        }
    }
}

impl ConnInner {
    /// Runs a short, non-blocking native call with the handle held; the GIL stays held (the call is
    /// cheaper than releasing it). InvalidStateError once closed.
    pub(crate) fn with_db<R>(
        &self,
        py: Python<'_>,
        op: &str,
        f: impl FnOnce(*mut sys::native_db) -> R,
    ) -> PyResult<R> {
        // Locks: decide under the lock, build the exception after releasing it. Building it runs
        // Python (allocation, so a GC pass: __del__, weakref and gc callbacks that may re-enter this
        // connection on this thread, or let another thread run and block on `state` holding the GIL).
        self.try_with_db(f)
            .ok_or_else(|| invalid_state(py, op, self.refusal()))
    }

    /// Why a call was refused: closed, or opened by the parent of this forked process.
    pub(crate) fn refusal(&self) -> &'static str {
        if self.inherited() {
            "connection was opened before fork(): it belongs to the parent process; open a new one in \
             this process"
        } else {
            "connection is closed"
        }
    }

    /// Opened by a parent process, this one a fork of it (see `crate::fork`).
    pub(crate) fn inherited(&self) -> bool {
        crate::fork::inherited(self.fork_generation)
    }

    /// `f` with the handle held under `state`, or None once closed. Never runs Python.
    pub(crate) fn try_with_db<R>(&self, f: impl FnOnce(*mut sys::native_db) -> R) -> Option<R> {
        // Inherited first: in a forked child, `state` may be held by a parent thread it does not have.
        if self.inherited() {
            return None;
        }
        let g = lock(&self.state);
        if g.db.is_null() || g.close_pending {
            return None;
        }
        Some(f(g.db))
    }

    /// A call that may block in libnative: on a `sync=True` connection every keyed call can wait for
    /// an fsync (its own, or another thread's holding libnative's handle lock), so it runs pinned with
    /// the GIL released (checklist: "Can the call block?"); otherwise it is `with_db`.
    /// `f` runs detached: it must touch no Python object (it gets only the raw handle).
    pub(crate) fn call<R: Send>(
        &self,
        py: Python<'_>,
        op: &str,
        f: impl FnOnce(*mut sys::native_db) -> R,
    ) -> PyResult<R> {
        if !self.options.sync() {
            return self.with_db(py, op, f);
        }
        let pin = self.pin(py, op)?;
        let job = Detached(f, pin.db);
        // GIL: released for the fsync (Ctrl-C is handled as soon as the call returns).
        let r = py.detach(move || job.run());
        drop(pin);
        Ok(r)
    }

    /// Pins the handle for a call that will release the GIL.
    pub(crate) fn pin(&self, py: Python<'_>, op: &str) -> PyResult<Pin<'_>> {
        // Locks: the exception is built after try_pin has released `state` (see with_db).
        self.try_pin(false)
            .ok_or_else(|| invalid_state(py, op, self.refusal()))
    }

    /// A pin, or None once closed. `teardown`: also while a close is pending but the handle is still
    /// open (unsubscribing is part of closing, and the notifier still delivers until the native close).
    fn try_pin(&self, teardown: bool) -> Option<Pin<'_>> {
        if self.inherited() {
            return None; // see try_with_db
        }
        let mut g = lock(&self.state);
        if g.db.is_null() || g.closing || (g.close_pending && !teardown) {
            return None;
        }
        g.busy += 1;
        Some(Pin {
            inner: self,
            db: DbPtr(g.db),
        })
    }

    /// Blocks (GIL released) until native_close has returned, unless called from a callback or from a
    /// notifier thread's exit (both count in CALLBACK_DEPTH: the close may be waiting for that very
    /// callback, or joining that very thread).
    fn wait_closed(&self, py: Python<'_>) {
        // Inherited: the closing thread, if any, is in the parent.
        if CALLBACK_DEPTH.with(|d| d.get()) > 0 || self.inherited() {
            return;
        }
        py.detach(|| {
            let mut g = lock(&self.state);
            while !g.closed {
                g = self.idle.wait(g).unwrap_or_else(|e| e.into_inner());
            }
        });
    }

    pub(crate) fn is_closed(&self) -> bool {
        if self.inherited() {
            return true; // see try_with_db
        }
        let g = lock(&self.state);
        g.db.is_null() || g.close_pending
    }

    /// Idempotent. Ownership: after this returns (outside a callback) the native handle is freed and
    /// every callback reference is dropped; inside a callback (or a notifier thread's exit, see
    /// `thread_state`), no callback runs after it returns, but the native close may still be under way
    /// on another thread. In a forked child, the parent's handle is let go of (see `forget`).
    pub(crate) fn close(&self, py: Python<'_>) {
        if self.inherited() {
            self.forget();
            return;
        }
        let in_callback = CALLBACK_DEPTH.with(|d| d.get()) > 0;
        {
            let mut g = lock(&self.state);
            if g.db.is_null() || g.close_pending {
                // Another call is closing it (or has). Inside a callback that close may be waiting for
                // this very callback: return, but let nothing more be delivered. Outside one, wait for
                // it, so that this close() keeps the contract above too.
                let closed = g.closed;
                drop(g);
                if in_callback {
                    self.silenced.store(true, Ordering::SeqCst);
                } else if !closed {
                    self.wait_closed(py);
                }
                return;
            }
            g.close_pending = true;
            if g.busy > 0 && in_callback {
                drop(g);
                self.silenced.store(true, Ordering::SeqCst);
                // The last pin finishes the native close (see CALLBACK_DEPTH), but no callback may run
                // after close() returns: cancel every subscription now (teardown pins keep the handle
                // open; from its own notifier thread native_unsubscribe does not wait).
                self.cancel_all(py);
                return;
            }
            // Decided under the lock: from here no pin is granted (see `closing`).
            g.closing = true;
        }
        // GIL: waiting for pins and joining the notifier both block on threads that may need the GIL.
        self.finish_close();
    }

    /// In a forked child: let go of the parent's handle without a native call (closing it would join
    /// a notifier thread this process does not have; the parent still owns it) and without its state
    /// lock (a parent thread may have held it at the fork). The callbacks are dropped if their map is
    /// free (no thread here can call them: see the trampoline), else when the connection goes.
    fn forget(&self) {
        let drained: Vec<Box<CallbackCtx>> = match self.subs.try_lock() {
            Ok(mut subs) => subs.drain().map(|(_, v)| v).collect(),
            Err(_) => return,
        };
        if !drained.is_empty() {
            let _ = Python::try_attach(|_py| drop(drained));
        }
    }

    /// Waits for pins to drain, closes the native handle exactly once, then drops the callbacks.
    fn finish_close(&self) {
        if self.inherited() {
            return; // the parent's handle (see forget)
        }
        let closer = |inner: &ConnInner| {
            let mut g = lock(&inner.state);
            g.closing = true;
            while g.busy > 0 {
                g = inner.idle.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            let db = std::mem::replace(&mut g.db, std::ptr::null_mut());
            drop(g);
            if !db.is_null() {
                // SAFETY: `db` came from native_connect, no call is in flight (busy == 0, fast calls
                // hold the mutex), and swapping it to null above makes this the only close.
                unsafe { sys::native_close(db) };
                lock(&inner.state).closed = true;
                inner.idle.notify_all();
            }
        };
        match Python::try_attach(|py| py.detach(|| closer(self))) {
            Some(()) => {}
            // Not attachable (finalizing): nothing can be waiting on the GIL for us.
            None => closer(self),
        }
        let drained: Vec<Box<CallbackCtx>> = lock(&self.subs).drain().map(|(_, v)| v).collect();
        self.subs_removed.notify_all();
        if !drained.is_empty() {
            // Dropping Py references needs the GIL; the callbacks' __del__ may run here.
            let _ = Python::try_attach(|_py| drop(drained));
        }
    }

    /// Cancels one subscription; Ok(false) if it was already gone. After Ok, libnative will never call
    /// the callback again and its owned reference has been dropped.
    pub(crate) fn unsubscribe(&self, py: Python<'_>, id: u64) -> PyResult<bool> {
        if self.inherited() {
            // No notifier here to call it; native_unsubscribe could block on a lock a parent thread
            // held at the fork. Drop the reference only, if the map is free (outside its lock: the
            // callback's __del__ may run).
            let ctx = self
                .subs
                .try_lock()
                .ok()
                .and_then(|mut subs| subs.remove(&id));
            drop(ctx);
            return Ok(false);
        }
        {
            let subs = lock(&self.subs);
            let Some(ctx) = subs.get(&id) else {
                return Ok(false);
            };
            if ctx.unsubscribing.swap(true, Ordering::SeqCst) {
                // Another thread's cancel() owns the native unsubscribe, which waits for a callback in
                // flight; a second native call would find the subscription gone at once. Wait for the
                // first to finish, so this cancel keeps the contract too. Not inside a callback: the
                // callback in flight may be this very thread, and the first cancel waits for it. The
                // owner may not have reached C yet (it still unlinks nothing while this returns), so
                // the trampoline drops every delivery to it from now on: none follows this return.
                ctx.cancelled.store(true, Ordering::SeqCst);
                drop(subs);
                if CALLBACK_DEPTH.with(|d| d.get()) == 0 {
                    py.detach(|| {
                        let mut subs = lock(&self.subs);
                        while subs.contains_key(&id) {
                            subs = self
                                .subs_removed
                                .wait(subs)
                                .unwrap_or_else(|e| e.into_inner());
                        }
                    });
                }
                return Ok(false);
            }
        }
        // A teardown pin: granted while a close is pending (until the native close, the notifier
        // still delivers, so the subscription must really be removed before cancel() returns).
        let Some(pin) = self.try_pin(true) else {
            // Closed meanwhile: native_close drops every subscription; once it has returned, no
            // callback runs any more. Until it stops the notifier (the closing thread may still be
            // waiting for a pinned call), queued events are still delivered: this subscription's are
            // dropped from now on, so no call follows this return, not even inside a callback, where
            // wait_closed cannot wait.
            if let Some(ctx) = lock(&self.subs).get(&id) {
                ctx.cancelled.store(true, Ordering::SeqCst);
            }
            self.wait_closed(py);
            return Ok(false);
        };
        let db = pin.db;
        // GIL: native_unsubscribe waits for an in-flight callback, which needs the GIL to finish.
        py.detach(move || {
            let db = db;
            // SAFETY: the pin keeps the handle open for the duration of the call.
            unsafe { sys::native_unsubscribe(db.0, id) }
        });
        drop(pin);
        let ctx = lock(&self.subs).remove(&id);
        self.subs_removed.notify_all();
        // Ownership: drop the callback reference only now that C can no longer use it.
        Ok(ctx.is_some())
    }

    fn cancel_all(&self, py: Python<'_>) {
        if self.inherited() {
            self.forget(); // without the locks (see forget)
            return;
        }
        let ids: Vec<u64> = lock(&self.subs).keys().copied().collect();
        for id in ids {
            let _ = self.unsubscribe(py, id);
        }
    }
}

impl Drop for ConnInner {
    fn drop(&mut self) {
        // Normally closed by Connection's Drop; this is the last line of defence against a leak.
        let needs_close = !self.inherited() && !lock(&self.state).db.is_null();
        if needs_close {
            lock(&self.state).close_pending = true;
            self.finish_close();
        }
    }
}

/// Called from the atexit hook: cancel every subscription while the interpreter is still whole, so no
/// notifier thread calls Python during finalization (checklist: shutdown).
// Shutdown: cancel (and join) every callback while CPython can still run them; connections stay usable
// by daemon threads, and nothing native calls Python after this.
pub(crate) fn shutdown_all(py: Python<'_>) {
    crate::thread_state::stop_releasing_at_exit(py);
    let live: Vec<Arc<ConnInner>> = lock(&LIVE).iter().filter_map(Weak::upgrade).collect();
    for inner in live {
        inner.cancel_all(py);
    }
}

// Error translation: every status becomes the documented exception, carrying op, code and message.
pub(super) fn native_result(
    py: Python<'_>,
    rc: i32,
    err: &sys::native_error,
    op: &str,
) -> PyResult<()> {
    if rc == sys::NATIVE_OK {
        Ok(())
    } else {
        Err(NativeError::from_raw(rc, err, op).into_pyerr(py, None))
    }
}

impl ConnInner {
    pub(super) fn finish_close_unattached(&self) {
        let pending = {
            if self.inherited() {
                return;
            }
            let mut g = lock(&self.state);
            if g.db.is_null() {
                false
            } else {
                g.close_pending = true;
                true
            }
        };
        if pending {
            self.finish_close();
        }
    }
}

impl ConnInner {
    /// The shared state of a handle native_connect has just returned, registered for the atexit
    /// hook (`shutdown_all`).
    pub(super) fn open(db: DbPtr, options: Options, path: Vec<u8>) -> Arc<Self> {
        let inner = Arc::new(ConnInner {
            state: Mutex::new(DbState {
                db: db.0,
                busy: 0,
                close_pending: false,
                closing: false,
                closed: false,
            }),
            idle: Condvar::new(),
            subs: Mutex::new(Default::default()),
            subs_removed: Condvar::new(),
            options,
            path,
            silenced: Arc::new(AtomicBool::new(false)),
            fork_generation: crate::fork::generation(),
        });
        let mut live = lock(&LIVE);
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&inner));
        inner
    }
}
