//! In the manner of `pyo3-ffi-check`: compile a C probe against native.h and compare every struct size,
//! field offset and limit with the hand-written declarations of this crate. A mismatch here is an ABI
//! bug that would otherwise show up as silent corruption (a C struct written into a smaller Rust one).

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

use libnative_sys::*;

/// Compiles and runs tests/layout_probe.c; its "name value" lines as a map.
fn probe() -> BTreeMap<String, u64> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("native_layout_probe_{}", std::process::id()));
    let c_dir = root.join("../libnative");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(cc)
        .args(["-std=c11", "-I"])
        .arg(&c_dir)
        .arg(root.join("tests/layout_probe.c"))
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
    let c = probe();
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
            events_pending,
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
    for (name, value) in [
        ("NATIVE_OK", NATIVE_OK),
        ("NATIVE_ENOTFOUND", NATIVE_ENOTFOUND),
        ("NATIVE_EIO", NATIVE_EIO),
        ("NATIVE_ETIMEOUT", NATIVE_ETIMEOUT),
        ("NATIVE_EPROTOCOL", NATIVE_EPROTOCOL),
        ("NATIVE_ESTATE", NATIVE_ESTATE),
        ("NATIVE_EINVAL", NATIVE_EINVAL),
        ("NATIVE_ENOMEM", NATIVE_ENOMEM),
        ("NATIVE_ECANCELLED", NATIVE_ECANCELLED),
        ("NATIVE_EDONE", NATIVE_EDONE),
    ] {
        assert_eq!(c[&format!("const {name}")], value as u64, "{name}");
    }
    // The event kinds are mirrored too (native.EventKind's values).
    assert_eq!(c["const NATIVE_EVENT_PUT"], NATIVE_EVENT_PUT as u64);
    assert_eq!(c["const NATIVE_EVENT_DELETE"], NATIVE_EVENT_DELETE as u64);
}
