//! Native handles (checklist: "Who owns each native pointer?", "Can the call block?", "Pythonic API",
//! "What happens during shutdown?"). A `Connection` owns exactly one `native_db*`; the pointer never
//! leaves this module. `close` is idempotent and dealloc closes (§71.7, §71.8, §71.25). libnative forbids
//! closing while another call on the same handle runs, so calls pin the handle and close waits for the
//! pins to drain with the GIL released (a blocked closer holding the GIL would deadlock a callback).

use std::cell::Cell;
use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFloat, PyInt, PyTuple};
use pyo3::{ffi, PyTraverseError, PyVisit};

use crate::buffers::{PinnedBuffer, PollPtr, SignalPoll};
use crate::callbacks::{CallbackCtx, Subscription};
use crate::errors::{invalid_state, NativeError};
use crate::structs::{Options, Stats};
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
    pub(crate) options: Options,
    path: String,
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
            .ok_or_else(|| invalid_state(py, op, "connection is closed"))
    }

    /// `f` with the handle held under `state`, or None once closed. Never runs Python.
    pub(crate) fn try_with_db<R>(&self, f: impl FnOnce(*mut sys::native_db) -> R) -> Option<R> {
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
            .ok_or_else(|| invalid_state(py, op, "connection is closed"))
    }

    /// A pin, or None once closed. `teardown`: also while a close is pending but the handle is still
    /// open (unsubscribing is part of closing, and the notifier still delivers until the native close).
    fn try_pin(&self, teardown: bool) -> Option<Pin<'_>> {
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

    /// Blocks (GIL released) until native_close has returned, unless called from a callback (the
    /// close may be waiting for that very callback).
    fn wait_closed(&self, py: Python<'_>) {
        if CALLBACK_DEPTH.with(|d| d.get()) > 0 {
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
        let g = lock(&self.state);
        g.db.is_null() || g.close_pending
    }

    /// Idempotent. Ownership: after this returns (outside a callback) the native handle is freed and
    /// every callback reference is dropped.
    pub(crate) fn close(&self, py: Python<'_>) {
        {
            let mut g = lock(&self.state);
            if g.db.is_null() || g.close_pending {
                return;
            }
            g.close_pending = true;
            if g.busy > 0 && CALLBACK_DEPTH.with(|d| d.get()) > 0 {
                drop(g);
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

    /// Waits for pins to drain, closes the native handle exactly once, then drops the callbacks.
    fn finish_close(&self) {
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
        if !drained.is_empty() {
            // Dropping Py references needs the GIL; the callbacks' __del__ may run here.
            let _ = Python::try_attach(|_py| drop(drained));
        }
    }

    /// Cancels one subscription; Ok(false) if it was already gone. After Ok, libnative will never call
    /// the callback again and its owned reference has been dropped.
    pub(crate) fn unsubscribe(&self, py: Python<'_>, id: u64) -> PyResult<bool> {
        if !lock(&self.subs).contains_key(&id) {
            return Ok(false);
        }
        // A teardown pin: granted while a close is pending (until the native close, the notifier
        // still delivers, so the subscription must really be removed before cancel() returns).
        let Some(pin) = self.try_pin(true) else {
            // Closed meanwhile: native_close dropped every subscription; once it has returned, no
            // callback runs any more.
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
        // Ownership: drop the callback reference only now that C can no longer use it.
        Ok(ctx.is_some())
    }

    fn cancel_all(&self, py: Python<'_>) {
        let ids: Vec<u64> = lock(&self.subs).keys().copied().collect();
        for id in ids {
            let _ = self.unsubscribe(py, id);
        }
    }
}

impl Drop for ConnInner {
    fn drop(&mut self) {
        // Normally closed by Connection's Drop; this is the last line of defence against a leak.
        let needs_close = !lock(&self.state).db.is_null();
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
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
    let live: Vec<Arc<ConnInner>> = lock(&LIVE).iter().filter_map(Weak::upgrade).collect();
    for inner in live {
        inner.cancel_all(py);
    }
}

/// Copies a native_alloc block into Python and frees it with native_free (checklist: matching allocator).
struct NativeBlock {
    ptr: *mut c_void,
    len: usize,
}

impl NativeBlock {
    fn empty() -> Self {
        NativeBlock {
            ptr: std::ptr::null_mut(),
            len: 0,
        }
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        if self.ptr.is_null() || self.len == 0 {
            return PyBytes::new(py, b"");
        }
        // SAFETY: libnative returned a block of exactly `len` readable bytes, alive until Drop.
        PyBytes::new(py, unsafe {
            std::slice::from_raw_parts(self.ptr as *const u8, self.len)
        })
    }
}

impl Drop for NativeBlock {
    fn drop(&mut self) {
        // Allocator: memory from native_alloc goes back through native_free, never PyMem_Free/free.
        // SAFETY: `ptr` is null or a native_alloc block this guard owns exclusively.
        unsafe { sys::native_free(self.ptr) }
    }
}

fn key_arg<'py>(conn: &ConnInner, key: &Bound<'py, PyAny>) -> PyResult<PinnedBuffer> {
    let buf = PinnedBuffer::get(key, false, "key")?;
    if buf.len() == 0 {
        return Err(PyValueError::new_err("key must not be empty"));
    }
    if buf.len() > conn.options_max_key() {
        return Err(PyValueError::new_err(format!(
            "key is {} bytes, over max_key_size={}",
            buf.len(),
            conn.options_max_key()
        )));
    }
    Ok(buf)
}

impl ConnInner {
    fn options_max_key(&self) -> usize {
        self.options.max_key_size() as usize
    }
}

// Error translation: every status becomes the documented exception, carrying op, code and message.
fn native_result(py: Python<'_>, rc: i32, err: &sys::native_error, op: &str) -> PyResult<()> {
    if rc == sys::NATIVE_OK {
        Ok(())
    } else {
        Err(NativeError::from_raw(rc, err, op).into_pyerr(py, None))
    }
}

/// A connection to a libnative store. Context manager; closing is idempotent.
#[pyclass(module = "native", frozen, weakref)]
pub struct Connection {
    pub(crate) inner: Arc<ConnInner>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Ownership: dealloc closes if still open, which also cancels the subscriptions.
        if Python::try_attach(|py| self.inner.close(py)).is_none() {
            // Finalizing: no thread can be waiting for the GIL on our behalf any more.
            self.inner.finish_close_unattached();
        }
    }
}

impl ConnInner {
    fn finish_close_unattached(&self) {
        let pending = {
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

#[pymethods]
impl Connection {
    /// Closes the store; idempotent. Subscriptions are cancelled first.
    fn close(&self, py: Python<'_>) {
        self.inner.close(py);
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    #[getter]
    fn path(&self) -> &str {
        &self.inner.path
    }

    fn put(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let k = key_arg(&self.inner, key)?;
        let v = PinnedBuffer::get(value, false, "value")?;
        let max_value = self.inner.options.max_value_size() as usize;
        if v.len() > max_value {
            return Err(PyValueError::new_err(format!(
                "value is {} bytes, over max_value_size={max_value}",
                v.len()
            )));
        }
        let mut err = sys::native_error::zeroed();
        let rc = self.inner.call(py, "put", |db| {
            // SAFETY: both exports are pinned by k and v for the call; `db` is held (under the mutex, or
            // pinned by `call`).
            unsafe { sys::native_put(db, k.as_ptr(), k.len(), v.as_ptr(), v.len(), &mut err) }
        })?;
        native_result(py, rc, &err, "put")
    }

    fn get<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let k = key_arg(&self.inner, key)?;
        let mut err = sys::native_error::zeroed();
        let mut block = NativeBlock::empty();
        let rc = self.inner.call(py, "get", |db| {
            // SAFETY: `k` pins the key; out-params point to our guard, which will free the block.
            unsafe {
                sys::native_get(
                    db,
                    k.as_ptr(),
                    k.len(),
                    &mut block.ptr,
                    &mut block.len,
                    &mut err,
                )
            }
        })?;
        match rc {
            sys::NATIVE_OK => Ok(block.to_bytes(py)),
            sys::NATIVE_ENOTFOUND => Err(PyKeyError::new_err(key.clone().unbind())),
            _ => Err(NativeError::from_raw(rc, &err, "get").into_pyerr(py, None)),
        }
    }

    fn delete(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let k = key_arg(&self.inner, key)?;
        let mut err = sys::native_error::zeroed();
        let rc = self.inner.call(py, "delete", |db| {
            // SAFETY: `k` pins the key; `db` is held (under the mutex, or pinned by `call`).
            unsafe { sys::native_delete(db, k.as_ptr(), k.len(), &mut err) }
        })?;
        match rc {
            sys::NATIVE_ENOTFOUND => Err(PyKeyError::new_err(key.clone().unbind())),
            _ => native_result(py, rc, &err, "delete"),
        }
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        // SAFETY: `db` is held (under the mutex, or pinned by `call`).
        self.inner
            .call(py, "len", |db| unsafe { sys::native_count(db) })
    }

    fn __contains__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        match self.get(py, key) {
            Ok(_) => Ok(true),
            Err(e) if e.is_instance_of::<PyKeyError>(py) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.get(py, key)
    }

    fn __setitem__(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.put(py, key, value)
    }

    fn __delitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        self.delete(py, key)
    }

    // API shape: a mapping-like object with iterators, not a C cursor API.
    fn items(slf: &Bound<'_, Self>) -> PyResult<ItemsIter> {
        ItemsIter::new(slf, IterMode::Items)
    }

    fn keys(slf: &Bound<'_, Self>) -> PyResult<ItemsIter> {
        ItemsIter::new(slf, IterMode::Keys)
    }

    fn __iter__(slf: &Bound<'_, Self>) -> PyResult<ItemsIter> {
        ItemsIter::new(slf, IterMode::Keys)
    }

    /// fsync of the log. Blocking, so the GIL is released (checklist: "Can the call block?").
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let pin = self.inner.pin(py, "flush")?;
        let db = pin.db;
        let (rc, err) = py.detach(move || {
            let db = db;
            let mut err = sys::native_error::zeroed();
            // SAFETY: the pin keeps the handle open; `err` is local to this closure.
            let rc = unsafe { sys::native_flush(db.0, &mut err) };
            (rc, err)
        });
        drop(pin);
        native_result(py, rc, &err, "flush")
    }

    fn stats(&self, py: Python<'_>) -> PyResult<Stats> {
        let mut raw = sys::native_stats::default();
        // SAFETY: `db` is held (under the mutex, or pinned by `call`); `raw` is a valid out-param.
        let rc = self.inner.call(py, "stats", |db| unsafe {
            sys::native_stats_get(db, &mut raw)
        })?;
        native_result(py, rc, &sys::native_error::zeroed(), "stats")?;
        Ok(Stats::from(raw))
    }

    fn subscribe(&self, py: Python<'_>, callback: &Bound<'_, PyAny>) -> PyResult<Subscription> {
        crate::callbacks::subscribe(py, &self.inner, callback)
    }

    // API shape: a context manager gives deterministic cleanup without relying on finalization.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> bool {
        self.inner.close(py);
        false
    }

    fn __repr__(&self) -> String {
        let state = if self.inner.is_closed() {
            "closed"
        } else {
            "open"
        };
        format!("<native.Connection path={:?} {state}>", self.inner.path)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // GC: the callbacks we own may reference this connection; report them so cycles are found.
        // try_lock: traversal must never block, and a busy map just delays collection.
        if let Ok(subs) = self.inner.subs.try_lock() {
            for ctx in subs.values() {
                visit.call(&ctx.callback)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        // Breaking a cycle: closing drops the callbacks (and cancels their subscriptions first).
        let _ = Python::try_attach(|py| self.inner.close(py));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum IterMode {
    Items,
    Keys,
}

/// Iterator over a connection; invalidated (InvalidStateError) by any put/delete made after creation.
#[pyclass(module = "native", frozen)]
pub struct ItemsIter {
    conn: Py<Connection>,
    generation: u64,
    index: AtomicUsize,
    done: AtomicBool,
    mode: IterMode,
}

impl ItemsIter {
    fn new(conn: &Bound<'_, Connection>, mode: IterMode) -> PyResult<Self> {
        let py = conn.py();
        // SAFETY: `db` is held (under the mutex, or pinned by `call`).
        let generation = conn
            .get()
            .inner
            .call(py, "items", |db| unsafe { sys::native_generation(db) })?;
        Ok(ItemsIter {
            conn: conn.clone().unbind(),
            generation,
            index: AtomicUsize::new(0),
            done: AtomicBool::new(false),
            mode,
        })
    }
}

#[pymethods]
impl ItemsIter {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        if self.done.load(Ordering::Acquire) {
            return Ok(None);
        }
        let index = self.index.fetch_add(1, Ordering::AcqRel);
        let mut err = sys::native_error::zeroed();
        let mut key = NativeBlock::empty();
        let mut value = NativeBlock::empty();
        let rc = self.conn.get().inner.call(py, "items", |db| {
            // SAFETY: `db` is held (under the mutex, or pinned by `call`); the out-params are owned
            // by the two guards.
            unsafe {
                sys::native_item_at(
                    db,
                    index,
                    self.generation,
                    &mut key.ptr,
                    &mut key.len,
                    &mut value.ptr,
                    &mut value.len,
                    &mut err,
                )
            }
        })?;
        match rc {
            sys::NATIVE_OK => Ok(Some(match self.mode {
                IterMode::Keys => key.to_bytes(py).into_any(),
                IterMode::Items => {
                    PyTuple::new(py, [key.to_bytes(py), value.to_bytes(py)])?.into_any()
                }
            })),
            sys::NATIVE_EDONE => {
                self.done.store(true, Ordering::Release);
                Ok(None)
            }
            sys::NATIVE_ESTATE => Err(invalid_state(
                py,
                "items",
                "the store was modified during iteration",
            )),
            _ => Err(NativeError::from_raw(rc, &err, "items").into_pyerr(py, None)),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.conn)
    }
}

/// os.fspath, then the filesystem encoding, into a C string that we own: the bytes stay valid while
/// the GIL is released, whatever happens to the Python object (§71.18 borrowed data).
fn path_arg<'py>(path: &Bound<'py, PyAny>) -> PyResult<(CString, Bound<'py, PyAny>)> {
    let py = path.py();
    // SAFETY: PyOS_FSPath takes a borrowed live object and returns a new reference or NULL + error.
    let fspath = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyOS_FSPath(path.as_ptr()))? };
    let encoded: Bound<'py, PyBytes> = if let Ok(b) = fspath.cast::<PyBytes>() {
        b.clone()
    } else {
        // SAFETY: fspath is a str here (PyOS_FSPath returns str or bytes); new reference or error.
        unsafe {
            Bound::from_owned_ptr_or_err(py, ffi::PyUnicode_EncodeFSDefault(fspath.as_ptr()))?
        }
        .cast_into::<PyBytes>()?
    };
    let c = CString::new(encoded.as_bytes())
        .map_err(|_| PyValueError::new_err("embedded null byte in path"))?;
    Ok((c, fspath))
}

fn timeout_ms(timeout: Option<&Bound<'_, PyAny>>) -> PyResult<i64> {
    let Some(t) = timeout.filter(|t| !t.is_none()) else {
        return Ok(-1);
    };
    if t.is_instance_of::<pyo3::types::PyBool>()
        || !(t.is_instance_of::<PyFloat>() || t.is_instance_of::<PyInt>())
    {
        return Err(PyTypeError::new_err(format!(
            "timeout must be a number of seconds or None, not {}",
            t.get_type().name()?
        )));
    }
    let secs: f64 = t.extract()?;
    if secs.is_nan() || secs < 0.0 {
        return Err(PyValueError::new_err(
            "timeout must be a non-negative number of seconds",
        ));
    }
    if secs.is_infinite() || secs * 1000.0 >= i64::MAX as f64 {
        return Ok(-1);
    }
    Ok((secs * 1000.0).ceil() as i64)
}

/// Opens (or creates) a store. Waits for the store's lock up to `timeout` seconds (None: forever) with
/// the GIL released and Ctrl-C working.
#[pyfunction]
#[pyo3(signature = (path, *, options = None, timeout = None))]
pub(crate) fn connect(
    py: Python<'_>,
    path: &Bound<'_, PyAny>,
    options: Option<&Bound<'_, PyAny>>,
    timeout: Option<&Bound<'_, PyAny>>,
) -> PyResult<Connection> {
    // Structs: everything is validated before C sees any of it.
    let (c_path, filename) = path_arg(path)?;
    let opts = Options::from_arg(options)?;
    let timeout_ms = timeout_ms(timeout)?;
    if SHUTTING_DOWN.load(Ordering::SeqCst) {
        return Err(invalid_state(
            py,
            "connect",
            "the interpreter is shutting down",
        ));
    }
    // Ownership: everything fallible happens before native_connect; once C hands us a handle, nothing
    // may return early before a Connection owns it (that would leak the handle and its file lock).
    // `path` is always text, like os.fsdecode of what was opened (lossy for undecodable bytes).
    let path_text = py
        .import("os")?
        .call_method1("fsdecode", (&filename,))?
        .cast_into::<pyo3::types::PyString>()?
        .to_string_lossy()
        .into_owned();
    let raw_opts = opts.to_raw();
    let mut poll = SignalPoll::new();
    let poll_ptr = PollPtr(poll.stop_data());
    let (rc, err, db) = py.detach(move || {
        let poll_ptr = poll_ptr;
        let mut err = sys::native_error::zeroed();
        let mut db: *mut sys::native_db = std::ptr::null_mut();
        // SAFETY: c_path and raw_opts are owned by this closure; poll_ptr points to `poll`, alive on
        // the caller's stack until this returns; `db`/`err` are valid out-params.
        let rc = unsafe {
            sys::native_connect(
                c_path.as_ptr(),
                &raw_opts,
                timeout_ms,
                Some(SignalPoll::should_stop),
                poll_ptr.0,
                &mut db,
                &mut err,
            )
        };
        (rc, err, DbPtr(db))
    });
    match rc {
        sys::NATIVE_OK => {}
        sys::NATIVE_ECANCELLED if poll.error.is_some() => {
            return Err(poll.error.take().expect("checked"))
        }
        _ => return Err(NativeError::from_raw(rc, &err, "connect").into_pyerr(py, Some(&filename))),
    }
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
        options: opts,
        path: path_text,
    });
    let mut live = lock(&LIVE);
    live.retain(|w| w.strong_count() > 0);
    live.push(Arc::downgrade(&inner));
    Ok(Connection { inner })
}
