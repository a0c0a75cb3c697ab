//! What the `native` fuzz targets share beyond the ffi-harness crate (which owns the loop: the
//! `Scenario` trait, `FuzzTarget::fuzz_one`, repro-on-failure, interpreter start-up, sanitizer
//! defaults) and the native-testkit crate (shared with proptests/: `native` in the inittab, its
//! documented exceptions, its ledger and call counter, scratch stores, `pytests/_refs.py`): the
//! reproducer preamble and configuration, the ledger deadline, and Rust references of its kernels.
//!
//! Each target lives in its own module with a plain `Scenario` impl, so regression tests and the
//! repro writer call exactly what the fuzzer calls.

use std::path::PathBuf;
use std::time::Duration;

use ffi_harness::{set_reenter_hook, AllowedExceptions, FuzzTarget, OracleFailure, ReproConfig};
use pyo3::prelude::*;

pub use ffi_harness::py_bytes_literal as py_bytes;
pub use ffi_harness::Scenario;
pub use native_testkit::{allowed, kwargs, native_calls, Scratch};

pub mod buffers;
pub mod callbacks;
pub mod differential;
pub mod errors;
pub mod handles;
pub mod structs;

ffi_harness::sanitizer_defaults!(include_str!("../lsan.supp"));

/// Starts the interpreter with the in-binary `native` module (libFuzzer's `init:`).
pub fn init() {
    ffi_harness::init_embedded(
        // `import native` resolves to this binary's (instrumented) module, not the venv's copy.
        native_testkit::register_native,
        |py| {
            // The ctypes/cffi bindings used by the differential target.
            let bindings = repo_root().join("pytests").join("bindings");
            py.import("sys")?
                .getattr("path")?
                .call_method1("insert", (0, bindings.to_string_lossy().as_ref()))?;
            // Targets that hold a connection replace the default re-entrancy hook (gc.collect)
            // with something nastier; start from the default for every target.
            set_reenter_hook(py, &py.import("gc")?.getattr("collect")?)
        },
    );
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fuzz/ is in the repo")
        .to_path_buf()
}

/// How long the ledger may take to return to baseline after an input (a notifier thread may still be
/// tearing a subscription down).
pub const LEDGER_DEADLINE: Duration = Duration::from_secs(5);

/// Runs `scenario` and then checks the native ledger returns to where it started.
pub fn with_ledger<F>(py: Python<'_>, scenario: F) -> Result<(), OracleFailure>
where
    F: FnOnce(Python<'_>) -> Result<(), OracleFailure>,
{
    native_testkit::with_ledger(py, LEDGER_DEADLINE, scenario)
}

/// Python helpers shared by every repro: `pytests/_refs.py` embedded as `_refs` (so the script stands
/// alone), then `repro_helpers.py` (the same references and checks as the Rust oracles).
pub fn repro_helpers() -> String {
    native_testkit::REFS.embed_as("_refs") + include_str!("repro_helpers.py")
}

/// The environment a repro needs, per bug class: memory bugs need ASan preloaded and every Python
/// object in malloc (the extension must be built with ASan: `ci/sanitize` builds one).
pub fn repro_config(allowed: &AllowedExceptions) -> ReproConfig {
    ReproConfig::new(repro_helpers())
        .allow(allowed)
        .note("Memory-safety findings: `ci/asan-python repro.py` runs it against the ASan build of native")
        .note("(the environment above, set up for you); logic findings reproduce with plain `python repro.py`.")
        .asan("clang-19")
}

/// A `native` fuzz target: reproducers under fuzz/artifacts/<name>/, each ending with the ledger
/// check (every handle, subscription and block released).
pub fn target(name: &str, allowed: &AllowedExceptions) -> FuzzTarget {
    FuzzTarget::new(name, repro_config(allowed))
        .repro_dir(repo_root().join("fuzz").join("artifacts").join(name))
        .epilogue("_wait_ledger(_BASELINE)")
}

/// `Result` of a Python step as an oracle verdict of `oracle`.
pub fn py_failure(py: Python<'_>, oracle: &'static str, err: PyErr) -> OracleFailure {
    OracleFailure::from_py(py, oracle, err)
}

/// Rust references of libnative's kernels (the oracles compare against these).
pub fn ref_fnv(data: &[u8]) -> u64 {
    fnv_continue(FNV_OFFSET, data)
}

/// [`ref_fnv`] of `fill` repeated `len` times, then `tail`, for the resize race's checksum (a bytearray
/// of one byte repeated just over 64 KiB). FNV-1a is one dependent multiply per byte, so over 64 KiB it
/// was a fifth of the plain buffers target's own work; the state after the first 64 KiB of each fill
/// byte is computed once per process and the rest (at most 255 bytes plus the tail) per call.
pub fn ref_fnv_uniform_then(fill: u8, len: usize, tail: &[u8]) -> u64 {
    const CACHED: usize = 64 << 10;
    static AFTER_CACHED: [std::sync::OnceLock<u64>; 256] =
        [const { std::sync::OnceLock::new() }; 256];
    let (start, done) = if len >= CACHED {
        let h = *AFTER_CACHED[usize::from(fill)].get_or_init(|| ref_fnv(&[fill; CACHED]));
        (h, CACHED)
    } else {
        (FNV_OFFSET, 0)
    };
    let h = fnv_continue(start, std::iter::repeat_n(&fill, len - done));
    fnv_continue(h, tail)
}

const FNV_OFFSET: u64 = 0xcbf29ce484222325;

fn fnv_continue<'a>(h: u64, data: impl IntoIterator<Item = &'a u8>) -> u64 {
    data.into_iter()
        .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
}

pub fn ref_process(data: &mut [u8], key: u32, rounds: u32) {
    let k = key.to_le_bytes();
    for _ in 0..rounds {
        for (i, b) in data.iter_mut().enumerate() {
            *b = (*b ^ k[i % 4]).wrapping_add((i & 0xff) as u8);
        }
    }
}

/// [`ref_process`] of `data` when everything before its last 256-aligned block is one byte repeated (the
/// resize race's 64 KiB buffer), without a pass over every byte: ref_process maps byte i from data[i],
/// i % 4 and i % 256 only, so that run's output repeats with period 256 and is copied, not computed.
/// Under coverage instrumentation every iteration of ref_process costs a counter bump and a compare
/// hook: over 64 KiB x 3 rounds that was a fifth of the buffers target's CPU.
pub fn ref_process_uniform_prefix(data: &[u8], key: u32, rounds: u32) -> Vec<u8> {
    const PERIOD: usize = 256;
    let tail_start = data.len().saturating_sub(1) / PERIOD * PERIOD;
    debug_assert!(data[..tail_start].iter().all(|&b| b == data[0]));
    let mut period = data[..PERIOD.min(tail_start)].to_vec();
    ref_process(&mut period, key, rounds);
    let mut out = Vec::with_capacity(data.len());
    while out.len() < tail_start {
        out.extend_from_slice(&period);
    }
    // The tail starts on a period boundary, so its i % 4 and i % 256 are its own indices'.
    let mut tail = data[tail_start..].to_vec();
    ref_process(&mut tail, key, rounds);
    out.extend_from_slice(&tail);
    out
}

#[cfg(test)]
mod tests {
    use super::{ref_fnv, ref_fnv_uniform_then, ref_process, ref_process_uniform_prefix};

    #[test]
    fn uniform_fnv_reference_equals_the_full_reference() {
        for len in [0, 1, 255, 65535, 65536, 65537, 65536 + 255] {
            for tail in [&[][..], &[0x55][..], &[0x55, 0x55][..]] {
                for fill in [0, 0x55, 0xa7, 0xff] {
                    let mut data = vec![fill; len];
                    data.extend_from_slice(tail);
                    // Twice: the first call fills the cache, the second reads it.
                    for _ in 0..2 {
                        assert_eq!(
                            ref_fnv_uniform_then(fill, len, tail),
                            ref_fnv(&data),
                            "fill {fill:#x} len {len} tail {tail:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn uniform_prefix_reference_equals_the_full_reference() {
        for len in [
            0,
            1,
            2,
            255,
            256,
            257,
            511,
            512,
            513,
            1000,
            65536,
            65536 + 255,
        ] {
            for tail in [&[][..], &[0x55][..]] {
                let mut data = vec![0xa7; len];
                data.extend_from_slice(tail);
                for (key, rounds) in [(0, 1), (0xdead_beef, 2), (u32::MAX, 3)] {
                    let mut want = data.clone();
                    ref_process(&mut want, key, rounds);
                    assert!(
                        ref_process_uniform_prefix(&data, key, rounds) == want,
                        "len {len} tail {tail:?} key {key:#x} rounds {rounds}"
                    );
                }
            }
        }
    }
}
