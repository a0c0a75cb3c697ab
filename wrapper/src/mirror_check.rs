//! The wrapper keeps two facts of libnative in Rust, so that it can answer without a native call: the
//! names of status codes and the option defaults. Both must agree with the C library's own answer.
//! (The struct layouts and constants of the declarations are checked by `libnative-sys`'s tests.)

use crate::structs::Options;
use crate::sys::*;

/// libnative's `native_status_name` is the one source of truth for status names (the ctypes, cffi and
/// Cython bindings call it); the wrapper's copy (it names codes without a native call) must give the
/// same name for every code, unknown ones included.
#[test]
fn rust_status_names_match_native_status_name() {
    let codes = (-64..=64).chain([i32::MIN, i32::MIN + 1, -1000, 1000, i32::MAX - 1, i32::MAX]);
    for code in codes {
        // SAFETY: native_status_name accepts any int and returns a static string.
        let c = unsafe { std::ffi::CStr::from_ptr(native_status_name(code)) };
        let c = c.to_str().unwrap();
        assert_eq!(crate::errors::status_name(code), c, "status {code}");
    }
}

/// `Options::default()` mirrors `native_options_default()` without calling C (so rejected input never
/// causes a native call).
#[test]
fn rust_option_defaults_match_native_options_default() {
    let mut c = native_options {
        create: 0,
        sync: 0,
        max_key_size: 0,
        max_value_size: 0,
        file_mode: 0,
    };
    // SAFETY: `c` is a valid, writable native_options; the function only fills it in.
    unsafe { native_options_default(&mut c) };
    let raw = Options::default().to_raw();
    assert_eq!(raw.create, c.create, "create");
    assert_eq!(raw.sync, c.sync, "sync");
    assert_eq!(raw.max_key_size, c.max_key_size, "max_key_size");
    assert_eq!(raw.max_value_size, c.max_value_size, "max_value_size");
    assert_eq!(raw.file_mode, c.file_mode, "file_mode");
}
