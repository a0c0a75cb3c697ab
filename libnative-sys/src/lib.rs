//! Raw declarations of libnative (`libnative/native.h`), kept by hand in the same order as the header,
//! and (build.rs) the C library itself, compiled and linked statically. Every Rust crate that calls
//! libnative (the `native` wrapper, the benchmarks' floor, the PyO3 call-overhead variants) depends on
//! this crate instead of declaring or compiling the C again.
//!
//! Nothing here is safe to call directly: the wrapper wraps each function and states the invariants
//! that make the call sound. `tests/layout.rs` checks these layouts against the C compiler.
#![allow(non_camel_case_types, dead_code)]

use std::ffi::{c_char, c_int, c_long, c_void};

pub const NATIVE_OK: c_int = 0;
pub const NATIVE_ENOTFOUND: c_int = 1;
pub const NATIVE_EIO: c_int = 2;
pub const NATIVE_ETIMEOUT: c_int = 3;
pub const NATIVE_EPROTOCOL: c_int = 4;
pub const NATIVE_ESTATE: c_int = 5;
pub const NATIVE_EINVAL: c_int = 6;
pub const NATIVE_ENOMEM: c_int = 7;
pub const NATIVE_ECANCELLED: c_int = 8;
pub const NATIVE_EDONE: c_int = 9;

pub const NATIVE_MAX_KEY_LIMIT: u32 = 65535;
pub const NATIVE_MAX_VALUE_LIMIT: u32 = 1 << 30;

pub const NATIVE_EVENT_PUT: c_int = 1;
pub const NATIVE_EVENT_DELETE: c_int = 2;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct native_error {
    pub code: c_int,
    pub sys_errno: c_int,
    pub op: [c_char; 32],
    pub message: [c_char; 256],
}

impl native_error {
    pub const fn zeroed() -> Self {
        native_error {
            code: 0,
            sys_errno: 0,
            op: [0; 32],
            message: [0; 256],
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct native_options {
    pub create: i32,
    pub sync: i32,
    pub max_key_size: u32,
    pub max_value_size: u32,
    pub file_mode: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct native_stats {
    pub keys: u64,
    pub puts: u64,
    pub gets: u64,
    pub deletes: u64,
    pub file_bytes: u64,
    pub events_delivered: u64,
    pub events_dropped: u64,
    pub events_pending: u64,
    pub subscriptions: u32,
    pub generation: u32,
}

#[repr(C)]
pub struct native_db {
    _opaque: [u8; 0],
}

#[repr(C)]
pub struct native_event {
    pub kind: c_int,
    pub seq: u64,
    pub key: *const c_void,
    pub klen: usize,
    pub value: *const c_void,
    pub vlen: usize,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct native_debug_counters {
    pub live_handles: i64,
    pub live_subscriptions: i64,
    pub live_blocks: i64,
    pub calls: i64,
}

pub type native_cancel_fn = Option<unsafe extern "C" fn(user_data: *mut c_void) -> c_int>;
pub type native_callback =
    Option<unsafe extern "C" fn(ev: *const native_event, user_data: *mut c_void)>;

extern "C" {
    pub fn native_status_name(status: c_int) -> *const c_char;

    pub fn native_alloc(size: usize) -> *mut c_void;
    pub fn native_free(ptr: *mut c_void);

    pub fn native_options_default(out: *mut native_options);
    pub fn native_options_validate(opts: *const native_options, err: *mut native_error) -> c_int;

    pub fn native_connect(
        path: *const c_char,
        opts: *const native_options,
        timeout_ms: i64,
        should_stop: native_cancel_fn,
        stop_data: *mut c_void,
        out: *mut *mut native_db,
        err: *mut native_error,
    ) -> c_int;
    pub fn native_close(db: *mut native_db);

    pub fn native_put(
        db: *mut native_db,
        key: *const c_void,
        klen: usize,
        val: *const c_void,
        vlen: usize,
        err: *mut native_error,
    ) -> c_int;
    pub fn native_get(
        db: *mut native_db,
        key: *const c_void,
        klen: usize,
        val_out: *mut *mut c_void,
        vlen_out: *mut usize,
        err: *mut native_error,
    ) -> c_int;
    pub fn native_delete(
        db: *mut native_db,
        key: *const c_void,
        klen: usize,
        err: *mut native_error,
    ) -> c_int;
    pub fn native_count(db: *mut native_db) -> usize;
    pub fn native_flush(db: *mut native_db, err: *mut native_error) -> c_int;
    pub fn native_stats_get(db: *mut native_db, out: *mut native_stats) -> c_int;
    pub fn native_last_error(db: *mut native_db, out: *mut native_error);

    pub fn native_generation(db: *mut native_db) -> u64;
    pub fn native_item_at(
        db: *mut native_db,
        index: usize,
        generation: u64,
        key_out: *mut *mut c_void,
        klen_out: *mut usize,
        val_out: *mut *mut c_void,
        vlen_out: *mut usize,
        err: *mut native_error,
    ) -> c_int;

    pub fn native_subscribe(
        db: *mut native_db,
        cb: native_callback,
        user_data: *mut c_void,
        id_out: *mut u64,
        err: *mut native_error,
    ) -> c_int;
    pub fn native_unsubscribe(db: *mut native_db, id: u64) -> c_int;

    pub fn native_checksum(buf: *const c_void, len: usize) -> u64;
    pub fn native_process(
        buf: *mut c_void,
        len: usize,
        key: u32,
        rounds: u32,
        should_stop: native_cancel_fn,
        stop_data: *mut c_void,
    ) -> c_int;
    pub fn native_add(a: c_long, b: c_long, out: *mut c_long) -> c_int;

    pub fn native_debug_counters_get(out: *mut native_debug_counters);
    pub fn native_debug_set_flush_delay_ms(ms: u32);
}
