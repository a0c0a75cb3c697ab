//! In the manner of `pyo3-ffi-check`: compile a C probe against native.h and compare every struct size,
//! field offset, option default and limit with the hand-written Rust side (`sys.rs`, `Options`).
//! A mismatch here is an ABI bug that would otherwise show up as silent corruption.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

use crate::structs::Options;
use crate::sys::*;

fn probe(tag: &str) -> BTreeMap<String, u64> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out =
        std::env::temp_dir().join(format!("native_layout_probe_{}_{tag}", std::process::id()));
    let c_dir = root.join("../libnative");
    let mut sources: Vec<_> = std::fs::read_dir(&c_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.push(root.join("tests/layout_probe.c"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(cc)
        .args(["-std=c11", "-pthread", "-I"])
        .arg(&c_dir)
        .args(&sources)
        .arg("-o")
        .arg(&out)
        .status()
        .expect("a C compiler");
    assert!(status.success(), "compiling the layout probe failed");
    let text = String::from_utf8(Command::new(&out).output().unwrap().stdout).unwrap();
    let _ = std::fs::remove_file(&out);
    text.lines()
        .map(|l| {
            let mut parts = l.rsplitn(2, ' ');
            let value = parts.next().unwrap().parse().unwrap();
            (parts.next().unwrap().to_owned(), value)
        })
        .collect()
}

macro_rules! expect_layout {
    ($c:expr, $ty:ident { $($field:ident),* }) => {{
        assert_eq!($c[concat!("size ", stringify!($ty))], size_of::<$ty>() as u64, "size of {}", stringify!($ty));
        $(assert_eq!(
            $c[concat!("offset ", stringify!($ty), ".", stringify!($field))],
            offset_of!($ty, $field) as u64,
            "offset of {}.{}", stringify!($ty), stringify!($field)
        );)*
    }};
}

#[test]
fn rust_declarations_match_native_h() {
    let c = probe("layout");
    expect_layout!(
        c,
        native_error {
            code,
            sys_errno,
            op,
            message
        }
    );
    expect_layout!(
        c,
        native_options {
            create,
            sync,
            max_key_size,
            max_value_size,
            file_mode
        }
    );
    expect_layout!(
        c,
        native_stats {
            keys,
            puts,
            gets,
            deletes,
            file_bytes,
            events_delivered,
            events_dropped,
            subscriptions,
            generation
        }
    );
    expect_layout!(
        c,
        native_event {
            kind,
            seq,
            key,
            klen,
            value,
            vlen
        }
    );
    expect_layout!(
        c,
        native_debug_counters {
            live_handles,
            live_subscriptions,
            live_blocks,
            calls
        }
    );
    assert_eq!(
        c["const NATIVE_MAX_KEY_LIMIT"],
        u64::from(NATIVE_MAX_KEY_LIMIT)
    );
    assert_eq!(
        c["const NATIVE_MAX_VALUE_LIMIT"],
        u64::from(NATIVE_MAX_VALUE_LIMIT)
    );
    // The event kinds are mirrored too (native.EventKind's values).
    assert_eq!(c["const NATIVE_EVENT_PUT"], NATIVE_EVENT_PUT as u64);
    assert_eq!(c["const NATIVE_EVENT_DELETE"], NATIVE_EVENT_DELETE as u64);
}

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

#[test]
fn rust_option_defaults_match_native_options_default() {
    let c = probe("defaults");
    let raw = Options::default().to_raw();
    assert_eq!(c["default create"], raw.create as u64);
    assert_eq!(c["default sync"], raw.sync as u64);
    assert_eq!(c["default max_key_size"], u64::from(raw.max_key_size));
    assert_eq!(c["default max_value_size"], u64::from(raw.max_value_size));
    assert_eq!(c["default file_mode"], u64::from(raw.file_mode));
}
