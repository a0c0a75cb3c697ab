//! Buffers (checklist: "Does it need raw memory?" and "Can memory resize during use?"): raw memory
//! comes from the buffer protocol, zero copy, and the export is held (pinned) for the whole native
//! call, so a bytearray cannot be resized or freed under C: the resizer gets BufferError instead
//! ("Passing Buffers to C"). Only C-contiguous memory reaches C; read-only memory is never written
//! ("Common Bugs": data corruption). Long work runs with the GIL released ("Releasing the GIL") and
//! stays interruptible by signals ("Signals and Interrupts").

use std::ffi::{c_int, c_void};
use std::pin::Pin;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyBufferError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;

use crate::sys;

/// Inputs at least this large are processed with the GIL released; below it, releasing and
/// re-taking the GIL costs more than the work.
pub(crate) const DETACH_THRESHOLD: usize = 64 * 1024;

/// A buffer export held for as long as this value lives. Boxed and pinned because exporters may
/// point `shape` at the struct's own `len` field (PyBuffer_FillInfo does), so it must not move.
pub(crate) struct PinnedBuffer {
    view: Pin<Box<ffi::Py_buffer>>,
}

impl PinnedBuffer {
    /// Exports `obj` as C-contiguous memory, read-only or writable. Errors are the documented ones:
    /// TypeError for non-buffers, read-only memory when writing, and non-contiguous layouts.
    pub fn get(obj: &Bound<'_, PyAny>, writable: bool, what: &str) -> PyResult<Self> {
        let py = obj.py();
        let mut view = Box::pin(ffi::Py_buffer::new());
        // Ask for strides, suboffsets and format so non-contiguous exporters (strided views, PIL-style
        // arrays of pointers) answer instead of failing with a generic BufferError; contiguity is
        // checked below with a precise message, a TypeError as every other binding of libnative gives.
        let flags = if writable {
            ffi::PyBUF_FULL
        } else {
            ffi::PyBUF_FULL_RO
        };
        // SAFETY: `obj` is a live object (we hold a Bound) and `view` points to writable storage
        // that stays put (pinned box) until PyBuffer_Release in Drop.
        let rc = unsafe {
            ffi::PyObject_GetBuffer(
                obj.as_ptr(),
                view.as_mut().get_unchecked_mut() as *mut _,
                flags,
            )
        };
        if rc != 0 {
            let err = PyErr::fetch(py);
            if writable
                && err.is_instance_of::<PyBufferError>(py)
                && !err.is_instance_of::<PyTypeError>(py)
            {
                let type_err = PyTypeError::new_err(format!(
                    "{what} must be a writable bytes-like object, not read-only"
                ));
                type_err.set_cause(py, Some(err));
                return Err(type_err);
            }
            return Err(err);
        }
        let pinned = PinnedBuffer { view };
        // SAFETY: the view was filled by a successful PyObject_GetBuffer and is still held.
        if unsafe { ffi::PyBuffer_IsContiguous(&*pinned.view, b'C' as std::ffi::c_char) } == 0 {
            return Err(PyTypeError::new_err(format!(
                "{what} must be a C-contiguous buffer (got a strided or indirect view; copy it with bytes(...) first)"
            )));
        }
        if writable && pinned.view.readonly != 0 {
            return Err(PyTypeError::new_err(format!("{what} must be writable")));
        }
        if pinned.view.len < 0 {
            return Err(PyValueError::new_err(format!(
                "{what}: exporter reported a negative length"
            )));
        }
        Ok(pinned)
    }

    pub fn len(&self) -> usize {
        self.view.len as usize
    }

    pub fn as_ptr(&self) -> *const c_void {
        self.view.buf as *const c_void
    }

    /// Raw memory that may cross into a detached closure. Only valid while `self` lives, which the
    /// callers guarantee by keeping `self` on their stack across the detach.
    pub fn raw(&mut self) -> RawMem {
        RawMem {
            ptr: self.view.buf,
            len: self.len(),
        }
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        // PyBuffer_Release needs an attached thread; every PinnedBuffer is created and dropped
        // attached (detached closures only ever see `RawMem`, never the guard itself).
        // SAFETY: the view is held (successful GetBuffer) and released exactly once, here.
        unsafe { ffi::PyBuffer_Release(self.view.as_mut().get_unchecked_mut()) }
    }
}

/// Pointer + length of memory pinned by a `PinnedBuffer` the caller keeps alive across `detach`.
#[derive(Clone, Copy)]
pub(crate) struct RawMem {
    pub ptr: *mut c_void,
    pub len: usize,
}
// SAFETY: the memory is exported and pinned by a PinnedBuffer that outlives the detached closure,
// and only the detached closure touches it meanwhile (the GIL-holding side does not).
unsafe impl Send for RawMem {}

/// Polled by libnative during long detached work: re-attaches every `period` at most and runs
/// Python's signal handlers, so Ctrl-C interrupts within ~100 ms (checklist: signals).
pub(crate) struct SignalPoll {
    last: Instant,
    period: Duration,
    pub error: Option<PyErr>,
}

impl SignalPoll {
    pub fn new() -> Self {
        SignalPoll {
            last: Instant::now(),
            period: Duration::from_millis(20),
            error: None,
        }
    }

    pub fn stop_data(&mut self) -> *mut c_void {
        self as *mut SignalPoll as *mut c_void
    }

    /// The `native_cancel_fn` handed to libnative with `stop_data()`.
    pub unsafe extern "C" fn should_stop(data: *mut c_void) -> c_int {
        // An extern "C" callback must not unwind into C.
        std::panic::catch_unwind(|| {
            // SAFETY: libnative passes back the stop_data we gave it: a live SignalPoll owned by the
            // detached caller, used only from that caller's thread.
            let poll = unsafe { &mut *(data as *mut SignalPoll) };
            if poll.last.elapsed() < poll.period {
                return 0;
            }
            poll.last = Instant::now();
            // Signal handlers only run on the main thread; elsewhere check_signals is a no-op.
            match Python::try_attach(|py| py.check_signals()) {
                Some(Err(e)) => {
                    poll.error = Some(e);
                    1
                }
                _ => 0,
            }
        })
        .unwrap_or(1)
    }
}

// SAFETY: SignalPoll crosses into the detached closure by pointer only; the PyErr it may hold is
// created and later consumed with the thread attached (PyErr is Send in PyO3).
unsafe impl Send for SignalPoll {}

/// 64-bit FNV-1a of any C-contiguous bytes-like object, without copying it.
#[pyfunction]
pub(crate) fn checksum(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<u64> {
    let mut buf = PinnedBuffer::get(data, false, "data")?;
    let mem = buf.raw();
    if mem.len >= DETACH_THRESHOLD {
        // GIL: read-only work on pinned memory; no Python object is touched while detached.
        Ok(py.detach(move || {
            let mem = mem;
            // SAFETY: `mem` is pinned by `buf`, which outlives this detached call.
            unsafe { sys::native_checksum(mem.ptr, mem.len) }
        }))
    } else {
        // SAFETY: `mem` is pinned by `buf`, which lives until the end of this function.
        Ok(unsafe { sys::native_checksum(mem.ptr, mem.len) })
    }
}

/// Transforms a writable C-contiguous buffer in place (`rounds` times), interruptible by signals.
#[pyfunction]
#[pyo3(signature = (data, *, key = 0, rounds = 1))]
pub(crate) fn process(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    key: u32,
    rounds: u32,
) -> PyResult<()> {
    if rounds == 0 {
        return Err(PyValueError::new_err("rounds must be at least 1"));
    }
    // Buffers: the writable export is held until this function returns, so a concurrent resize of
    // the bytearray raises BufferError in the resizing thread instead of freeing memory under C.
    let mut buf = PinnedBuffer::get(data, true, "data")?;
    let mem = buf.raw();
    let mut poll = SignalPoll::new();
    let work = mem.len.saturating_mul(rounds as usize);
    let rc = if work >= DETACH_THRESHOLD {
        let poll_ptr = PollPtr(poll.stop_data());
        py.detach(move || {
            let (mem, poll_ptr) = (mem, poll_ptr);
            // SAFETY: `mem` is pinned by `buf` and `poll_ptr` points to `poll`, both alive on this
            // stack frame for the whole detached call.
            unsafe {
                sys::native_process(
                    mem.ptr,
                    mem.len,
                    key,
                    rounds,
                    Some(SignalPoll::should_stop),
                    poll_ptr.0,
                )
            }
        })
    } else {
        // SAFETY: as above, without detaching (small work); no stop hook needed for so little work.
        unsafe { sys::native_process(mem.ptr, mem.len, key, rounds, None, std::ptr::null_mut()) }
    };
    drop(buf);
    match rc {
        sys::NATIVE_OK => Ok(()),
        sys::NATIVE_ECANCELLED => Err(poll
            .error
            .take()
            .unwrap_or_else(|| PyBufferError::new_err("process was cancelled"))),
        other => Err(PyValueError::new_err(format!(
            "process failed: {}",
            crate::errors::status_name(other)
        ))),
    }
}

/// A pointer to a stack-owned value handed through `detach`; see the SAFETY notes at each use.
#[derive(Clone, Copy)]
pub(crate) struct PollPtr(pub *mut c_void);
// SAFETY: only dereferenced by libnative on the detached thread while the pointee lives on the
// caller's stack; the caller does not touch the pointee until the detached call returns.
unsafe impl Send for PollPtr {}
