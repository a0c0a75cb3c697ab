//! native's C API for other extension modules, exported as the `PyCapsule` "native._C_API" (checklist:
//! "Who owns each native pointer?" across modules; the chapter's capsule mechanism). The table is the
//! `#[repr(C)]` twin of `native_capi` in pytests/bindings/capsule_consumer/native_capi.h: a version and
//! size a consumer checks before use, the buffer kernels, and a handle accessor (`pin`/`unpin`) that
//! hands out a Connection's `native_db*` under the same rules as the wrapper's own calls.
//!
//! Lifetimes, as documented in the header: the capsule owns the table (its destructor frees it) and holds
//! a strong reference to the exporting module (its context), so a consumer that keeps the capsule keeps
//! both alive. A pinned handle is never closed under the consumer: `close()` waits for the unpin (with the
//! GIL released), and `pin()` on a closed connection fails with InvalidStateError like every other call.
//! A pin belongs to the process that took it: in a child made by fork() its handle is the parent's
//! (`pin()` there refuses an inherited connection, unpinning a copy leaves the parent's handle alone, and
//! libnative itself fails every call on a handle opened in another process).

use std::ffi::{c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use pyo3::exceptions::{PySystemError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;

use crate::handles::{ConnInner, Connection, Pin};
use crate::sys;

/// The capsule's name: `PyCapsule_Import("native._C_API")` finds it as the `_C_API` attribute of the
/// `native` package (re-exported from the extension). Static: a capsule keeps a pointer to its name.
pub const CAPI_NAME: &CStr = c"native._C_API";
/// Bumped on any change of meaning or layout of an existing field; consumers refuse any other.
pub const CAPI_VERSION: u32 = 1;

/// `native_capi` of native_capi.h, field for field.
#[repr(C)]
pub struct NativeCApi {
    pub version: u32,
    pub size: u32,
    pub checksum: unsafe extern "C" fn(*const c_void, usize) -> u64,
    pub process: unsafe extern "C" fn(*mut c_void, usize, u32, u32) -> c_int,
    pub pin: unsafe extern "C" fn(*mut ffi::PyObject, *mut *mut sys::native_db) -> *mut CApiPin,
    pub unpin: unsafe extern "C" fn(*mut CApiPin),
    pub count: unsafe extern "C" fn(*mut sys::native_db) -> usize,
    pub put: unsafe extern "C" fn(
        *mut sys::native_db,
        *const c_void,
        usize,
        *const c_void,
        usize,
    ) -> c_int,
}

/// Tables alive right now (one per live capsule): tests check that a consumer keeps its capsule.
static LIVE_TABLES: AtomicIsize = AtomicIsize::new(0);

/// What `pin()` returns (opaque to C): a pin on the handle plus the `ConnInner` it borrows from.
pub struct CApiPin {
    // Drop order is declaration order: the pin (which borrows `*_inner`) goes before the Arc.
    _pin: Pin<'static>,
    _inner: Arc<ConnInner>,
}

unsafe extern "C" fn capi_process(buf: *mut c_void, len: usize, key: u32, rounds: u32) -> c_int {
    // SAFETY: the caller passes a writable buffer of `len` bytes (documented contract); no cancel hook.
    unsafe { sys::native_process(buf, len, key, rounds, None, ptr::null_mut()) }
}

unsafe extern "C" fn capi_put(
    db: *mut sys::native_db,
    key: *const c_void,
    klen: usize,
    val: *const c_void,
    vlen: usize,
) -> c_int {
    // SAFETY: `db` is pinned by the caller (documented contract), so it is open and no close can run;
    // key/val describe readable memory; a NULL native_error is allowed.
    unsafe { sys::native_put(db, key, klen, val, vlen, ptr::null_mut()) }
}

unsafe extern "C" fn capi_count(db: *mut sys::native_db) -> usize {
    // SAFETY: `db` is pinned by the caller (documented contract).
    unsafe { sys::native_count(db) }
}

/// Pins `conn`'s handle. GIL held (contract). NULL with TypeError/InvalidStateError set on failure.
unsafe extern "C" fn capi_pin(
    conn: *mut ffi::PyObject,
    db_out: *mut *mut sys::native_db,
) -> *mut CApiPin {
    let result = catch_unwind(AssertUnwindSafe(|| {
        Python::attach(|py| {
            let pinned = (|| -> PyResult<*mut CApiPin> {
                if conn.is_null() || db_out.is_null() {
                    return Err(PyTypeError::new_err("pin: NULL argument"));
                }
                // SAFETY: `conn` is a live object the caller lends for the duration of this call.
                let obj = unsafe { Bound::from_borrowed_ptr(py, conn) };
                let conn = obj.cast::<Connection>()?;
                let inner = conn.get().inner.clone();
                // SAFETY: the reference is stored in the same CApiPin as the Arc `inner`, which keeps
                // the ConnInner alive at a fixed address until the pin field has been dropped first.
                let borrowed: &'static ConnInner = unsafe { &*Arc::as_ptr(&inner) };
                // Use after close: a closed connection refuses the pin (InvalidStateError).
                let pin = borrowed.pin(py, "capsule pin")?;
                // SAFETY: checked non-null above; the caller provides a writable out-parameter.
                unsafe { *db_out = pin.db.0 };
                Ok(Box::into_raw(Box::new(CApiPin {
                    _pin: pin,
                    _inner: inner,
                })))
            })();
            pinned.unwrap_or_else(|e| {
                e.restore(py);
                ptr::null_mut()
            })
        })
    }));
    result.unwrap_or_else(|_| {
        Python::attach(|py| PySystemError::new_err("native C API: panic in pin").restore(py));
        ptr::null_mut()
    })
}

/// Ends a pin; may finish a close that waited for it. With or without the GIL.
unsafe extern "C" fn capi_unpin(pin: *mut CApiPin) {
    if pin.is_null() {
        return;
    }
    // SAFETY: `pin` came from capi_pin's Box::into_raw and is unpinned once (documented contract).
    let pin = unsafe { Box::from_raw(pin) };
    // A panic must not unwind into C; dropping a pin only touches a mutex and may close the handle.
    let _ = catch_unwind(AssertUnwindSafe(|| drop(pin)));
}

unsafe extern "C" fn capsule_destructor(capsule: *mut ffi::PyObject) {
    // Runs with the GIL held, when the last reference to the capsule goes.
    // SAFETY: `capsule` is our capsule (this destructor is only installed on it), named CAPI_NAME.
    let table =
        unsafe { ffi::PyCapsule_GetPointer(capsule, CAPI_NAME.as_ptr()) }.cast::<NativeCApi>();
    // SAFETY: as above.
    let module = unsafe { ffi::PyCapsule_GetContext(capsule) }.cast::<ffi::PyObject>();
    if !table.is_null() {
        // Poison the version first: a consumer that kept the pointer but not the capsule fails loudly.
        // SAFETY: `table` is the live Box from register(); it is freed exactly once, here.
        unsafe {
            ptr::write_volatile(&mut (*table).version, 0);
            drop(Box::from_raw(table));
        }
        LIVE_TABLES.fetch_sub(1, Ordering::SeqCst);
    }
    if !module.is_null() {
        // SAFETY: the context is the strong module reference taken in register().
        unsafe { ffi::Py_DECREF(module) };
    }
}

/// Number of live C API tables (capsules not yet destroyed): normally 1.
#[pyfunction]
fn _capi_live_tables() -> isize {
    LIVE_TABLES.load(Ordering::SeqCst)
}

/// Adds `_C_API` (the capsule) and `_capi_live_tables` to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let table = Box::into_raw(Box::new(NativeCApi {
        version: CAPI_VERSION,
        size: std::mem::size_of::<NativeCApi>() as u32,
        checksum: sys::native_checksum,
        process: capi_process,
        pin: capi_pin,
        unpin: capi_unpin,
        count: capi_count,
        put: capi_put,
    }));
    // SAFETY: `table` is a valid heap pointer; the name is 'static; the destructor frees `table` once.
    let raw =
        unsafe { ffi::PyCapsule_New(table.cast(), CAPI_NAME.as_ptr(), Some(capsule_destructor)) };
    if raw.is_null() {
        // SAFETY: the capsule was not created, so nothing else owns `table`.
        drop(unsafe { Box::from_raw(table) });
        return Err(PyErr::fetch(py));
    }
    LIVE_TABLES.fetch_add(1, Ordering::SeqCst);
    // SAFETY: PyCapsule_New returned a new reference.
    let capsule = unsafe { Bound::from_owned_ptr(py, raw) };
    // Lifetime: the capsule keeps the exporting module alive (released by the destructor).
    let module = m.clone().into_ptr();
    // SAFETY: `capsule` is a valid capsule; the context is an owned reference the destructor releases.
    if unsafe { ffi::PyCapsule_SetContext(capsule.as_ptr(), module.cast()) } != 0 {
        // SAFETY: the context was not stored: release the reference taken for it.
        unsafe { ffi::Py_DECREF(module) };
        return Err(PyErr::fetch(py));
    }
    m.add("_C_API", capsule)?;
    m.add_function(wrap_pyfunction!(_capi_live_tables, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_the_c_layout_of_native_capi() {
        // native_capi on LP64: two uint32_t, then six pointers.
        assert_eq!(std::mem::size_of::<NativeCApi>(), 8 + 6 * 8);
        assert_eq!(std::mem::offset_of!(NativeCApi, checksum), 8);
        assert_eq!(std::mem::offset_of!(NativeCApi, put), 8 + 5 * 8);
    }
}
