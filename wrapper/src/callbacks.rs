//! Callbacks from C into Python (checklist: "Can native code call back?"; "Callbacks From C Into
//! Python" to "Native Threads Calling Python"). The Python callable is owned (a strong reference)
//! for as long as libnative may call it, and released only after native_unsubscribe/native_close
//! guarantee no further call. The trampoline runs on libnative's notifier thread, so it attaches
//! (takes the GIL) before touching any Python object, never lets a panic unwind into C, and sends
//! callback exceptions to sys.unraisablehook.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyTuple};

use crate::errors::{invalid_state, NativeError};
use crate::handles::{ConnInner, CALLBACK_DEPTH, SHUTTING_DOWN};
use crate::sys;

/// What libnative's `user_data` points to: boxed, so its address is stable while registered.
pub(crate) struct CallbackCtx {
    pub(crate) callback: Py<PyAny>,
    /// The connection's `silenced` flag: set, the trampoline delivers nothing more.
    pub(crate) silenced: Arc<AtomicBool>,
    /// Set by a cancel() that could not unsubscribe natively (a close was already under way), or that
    /// found another thread's cancel() under way: the trampoline delivers nothing more to this
    /// subscription.
    pub(crate) cancelled: AtomicBool,
    /// Set by the cancel() that owns this subscription's native unsubscribe: a concurrent cancel()
    /// waits for that one to finish instead of making its own call, which would find the
    /// subscription already unlinked and return while its callback may still run.
    pub(crate) unsubscribing: AtomicBool,
}

static EVENT_KIND: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `native.EventKind`, a real `enum.Enum` (Pythonic API: enums, not raw C ints).
pub(crate) fn event_kind(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    EVENT_KIND
        .get_or_try_init(py, || -> PyResult<Py<PyAny>> {
            let enum_mod = py.import("enum")?;
            let members = [
                ("PUT", sys::NATIVE_EVENT_PUT),
                ("DELETE", sys::NATIVE_EVENT_DELETE),
            ];
            let kind = enum_mod.getattr("Enum")?.call1(("EventKind", members))?;
            kind.setattr("__module__", "native")?;
            Ok(kind.unbind())
        })
        .map(|k| k.bind(py))
}

/// One put/delete notification, built fresh for each callback call.
#[pyclass(module = "native", frozen)]
pub struct Event {
    #[pyo3(get)]
    kind: Py<PyAny>,
    #[pyo3(get)]
    seq: u64,
    #[pyo3(get)]
    key: Py<PyBytes>,
    #[pyo3(get)]
    value: Option<Py<PyBytes>>,
}

#[pymethods]
impl Event {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "native.Event(kind={}, seq={}, key={}, value={})",
            self.kind.bind(py).repr()?,
            self.seq,
            self.key.bind(py).repr()?,
            match &self.value {
                Some(v) => v.bind(py).repr()?.to_string(),
                None => "None".to_owned(),
            }
        ))
    }
}

impl Event {
    /// Copies the event out of C memory, which is only valid during the callback.
    ///
    /// # Safety
    /// `ev` must point to a live native_event whose key/value describe readable memory.
    unsafe fn from_raw(py: Python<'_>, ev: *const sys::native_event) -> PyResult<Event> {
        // SAFETY: guaranteed by the caller (libnative's callback contract).
        let ev = unsafe { &*ev };
        let bytes = |p: *const c_void, n: usize| -> Py<PyBytes> {
            if p.is_null() || n == 0 {
                return PyBytes::new(py, b"").unbind();
            }
            // SAFETY: libnative guarantees `n` readable bytes at `p` for the duration of the callback.
            PyBytes::new(py, unsafe { std::slice::from_raw_parts(p as *const u8, n) }).unbind()
        };
        Ok(Event {
            kind: event_kind(py)?.call1((ev.kind,))?.unbind(),
            seq: ev.seq,
            key: bytes(ev.key, ev.klen),
            value: if ev.kind == sys::NATIVE_EVENT_PUT {
                Some(bytes(ev.value, ev.vlen))
            } else {
                None
            },
        })
    }
}

/// `CALLBACK_DEPTH` raised while it lives (the trampoline's body, and a notifier's release of its kept
/// thread state), lowered on every way out.
pub(crate) struct CallbackDepth;

impl CallbackDepth {
    pub(crate) fn enter() -> Self {
        CALLBACK_DEPTH.with(|d| d.set(d.get() + 1));
        CallbackDepth
    }
}

impl Drop for CallbackDepth {
    fn drop(&mut self) {
        CALLBACK_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// The C trampoline registered with libnative for every subscription.
// Callbacks: the C trampoline takes the GIL, owns its own reference to the callable for the call, and
// never unwinds into C.
unsafe extern "C" fn trampoline(ev: *const sys::native_event, user_data: *mut c_void) {
    // Finalizing without our atexit hook having run (`native` first imported by another atexit
    // function): take no GIL. pyo3's try_attach checks this itself only on 3.13+.
    if crate::thread_state::interpreter_finalizing() {
        return;
    }
    // Performance: one thread state for the notifier's whole life, not one per callback.
    crate::thread_state::keep_for_this_thread();
    // A panic must not unwind into C (that would abort the process from a foreign frame).
    let _ = std::panic::catch_unwind(|| {
        // GIL: this runs on libnative's notifier thread; attach before touching Python.
        Python::try_attach(|py| {
            if cfg!(any(debug_assertions, feature = "gil-asserts")) {
                // SAFETY: PyGILState_Check only reads the current thread state.
                let attached = unsafe { ffi::PyGILState_Check() };
                assert_eq!(attached, 1, "callback trampoline without the GIL");
            }
            // For close(), this thread is inside a callback for the whole body, not only the call:
            // building the event, reporting an error and dropping our reference may run Python too
            // (a GC pass, a __del__) that closes this connection, and that close must not wait for
            // the notifier it runs on. The guard is declared first, so it is dropped last.
            let _depth = CallbackDepth::enter();
            // Anything below may run Python that forks (the callback, a __del__, the unraisable
            // hook). In that child the only thread is a copy of the notifier, whose loop must not go
            // on there (it would deliver the parent's events, then wait for a stop no thread of that
            // process can give): the child's program ends when this delivery does.
            let generation = crate::fork::current();
            let failed = deliver(py, ev, user_data);
            if crate::fork::inherited(generation) {
                crate::fork::end_child_forked_in_a_callback(py, failed.map(|(e, _)| e));
            }
            if let Some((e, callback)) = failed {
                // Errors: an exception in a callback is reported, never lost, never kills the thread.
                e.write_unraisable(py, Some(callback.bind(py)));
                drop(callback);
                if crate::fork::inherited(generation) {
                    crate::fork::end_child_forked_in_a_callback(py, None);
                }
            }
        });
    });
}

/// One delivery: the event to the subscription's callback, unless it was silenced. Returns the
/// callback's exception (with the callback, to report it against) instead of reporting it, and has
/// dropped every other reference it made by the time it returns.
fn deliver(
    py: Python<'_>,
    ev: *const sys::native_event,
    user_data: *mut c_void,
) -> Option<(PyErr, Py<PyAny>)> {
    // Take our own reference first: a close from inside the callback may free the context, so
    // `user_data` is not touched after this block.
    let callback = {
        // SAFETY: libnative passes back the CallbackCtx registered with this subscription; it is alive
        // until native_unsubscribe/native_close return, which cannot happen before this read (they
        // wait for the callback in flight).
        let ctx = unsafe { &*(user_data as *const CallbackCtx) };
        // A close() returned inside a callback before the native close, or a cancel() that found the
        // close under way: deliver no more.
        if ctx.silenced.load(Ordering::SeqCst) || ctx.cancelled.load(Ordering::SeqCst) {
            return None;
        }
        ctx.callback.clone_ref(py)
    };
    // SAFETY: libnative's contract: `ev` is valid for the duration of the callback.
    let event = match unsafe { Event::from_raw(py, ev) } {
        Ok(e) => e,
        Err(e) => return Some((e, callback)),
    };
    let outcome = callback.bind(py).call1((event,));
    match outcome {
        Ok(_) => None,
        Err(e) => Some((e, callback)),
    }
}

pub(crate) fn subscribe(
    py: Python<'_>,
    inner: &Arc<ConnInner>,
    callback: &Bound<'_, PyAny>,
) -> PyResult<Subscription> {
    if !callback.is_callable() {
        return Err(PyTypeError::new_err(format!(
            "callback must be callable, not {}",
            callback.get_type().name()?
        )));
    }
    if SHUTTING_DOWN.load(Ordering::SeqCst) {
        return Err(invalid_state(
            py,
            "subscribe",
            "the interpreter is shutting down",
        ));
    }
    // Callbacks + ownership: the context owns a strong reference for as long as libnative may call it.
    let ctx = Box::new(CallbackCtx {
        callback: callback.clone().unbind(),
        silenced: inner.silenced.clone(),
        cancelled: AtomicBool::new(false),
        unsubscribing: AtomicBool::new(false),
    });
    let user_data = &*ctx as *const CallbackCtx as *mut c_void;
    let mut err = sys::native_error::zeroed();
    let mut id = 0u64;
    // The map is locked across native_subscribe so the id is registered before anyone can look it up;
    // libnative never calls back while subscribing, so no callback can need this lock meanwhile.
    // Locks: no Python runs while `subs` is held (building an exception may run a GC pass whose
    // __del__ or gc callback touches this connection's subscriptions): decide under the lock, raise
    // after releasing it. `ctx` (a Python reference) is dropped after the lock, too.
    if inner.inherited() {
        // Before any lock: in a forked child a parent thread may have held `subs` at the fork.
        return Err(invalid_state(py, "subscribe", inner.refusal()));
    }
    let mut subs = inner.subs.lock().unwrap_or_else(|e| e.into_inner());
    let rc = inner.try_with_db(|db| {
        // SAFETY: `db` is held under the mutex; `user_data` stays valid until removed from `subs`,
        // which happens only after native_unsubscribe/native_close return.
        unsafe { sys::native_subscribe(db, Some(trampoline), user_data, &mut id, &mut err) }
    });
    match rc {
        Some(sys::NATIVE_OK) => {
            subs.insert(id, ctx);
            drop(subs);
        }
        Some(rc) => {
            drop(subs);
            drop(ctx);
            return Err(NativeError::from_raw(rc, &err, "subscribe").into_pyerr(py, None));
        }
        None => {
            drop(subs);
            drop(ctx);
            return Err(invalid_state(py, "subscribe", inner.refusal()));
        }
    }
    Ok(Subscription {
        inner: inner.clone(),
        id,
    })
}

/// A live subscription; `cancel()` (or leaving a `with` block) stops it for good.
#[pyclass(module = "native", frozen, weakref)]
pub struct Subscription {
    /// Not a strong reference to the Connection object: dropping the connection must close it and
    /// cancel this subscription, even while the Subscription object lives on.
    inner: Arc<ConnInner>,
    id: u64,
}

#[pymethods]
impl Subscription {
    /// Idempotent. After it returns the callback is never called again.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        self.inner.unsubscribe(py, self.id)?;
        Ok(())
    }

    #[getter]
    fn active(&self) -> bool {
        !self.inner.is_closed()
            && self
                .inner
                .subs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&self.id)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.cancel(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "<native.Subscription id={} {}>",
            self.id,
            if self.active() { "active" } else { "cancelled" }
        )
    }
}
