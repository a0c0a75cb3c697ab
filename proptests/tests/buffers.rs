//! Buffers:
//!
//! - the export is released: after every call that takes a bytearray (or a memoryview of one,
//!   released after the call), successful or not, the bytearray can be resized;
//! - the export is held for the whole call: while a thread keeps resizing the bytearray, a long
//!   `process`/`checksum` makes it fail with BufferError, and the result is exact;
//! - `process` on random writable buffers (bytearray, writable/2-D/itemsize>1 memoryviews,
//!   array.array, mmap; small and over the GIL-release threshold) matches the pure-Python reference;
//! - `checksum` matches the reference for every buffer kind (bytes, bytearray, memoryviews incl.
//!   read-only and multi-dimensional C-contiguous casts, array.array typecodes, anonymous and
//!   read-only file mmaps), raises TypeError for non-contiguous views, ValueError for released ones.
//!
//! The references are `pytests/_refs.py`'s `fnv1a64` / `process_ref` / `process_ref_fast`.

use ffi_harness::strategies::{array_typecode, memoryview_kind, payload};
use ffi_harness::{MemoryViewKind, PyValue};
use native_testkit::{Scratch, refs, run_python};
use proptest::prelude::*;
use proptests::{config, isolated, regressions, with_python};
use pyo3::prelude::*;

/// A bytearray-taking call.
#[derive(Debug, Clone, Copy)]
enum BaCall {
    Checksum,
    Process,
    ProcessRoundsZero,
    PutKey,
    PutValue,
    PutKeyTooLong,
    Get,
    Delete,
    Contains,
    SetItem,
    Connect,
}

fn ba_call() -> impl Strategy<Value = BaCall> {
    proptest::sample::select(vec![
        BaCall::Checksum,
        BaCall::Process,
        BaCall::ProcessRoundsZero,
        BaCall::PutKey,
        BaCall::PutValue,
        BaCall::PutKeyTooLong,
        BaCall::Get,
        BaCall::Delete,
        BaCall::Contains,
        BaCall::SetItem,
        BaCall::Connect,
    ])
}

const RESIZE: &str = include_str!("py/buffers_resize.py");

fn resize_scenario(py: Python<'_>, which: BaCall, data: &[u8], via_mv: bool) -> Result<(), String> {
    let fail = |e: PyErr| native_testkit::describe(py, &e);
    let dir = Scratch::new();
    let ns = run_python(py, RESIZE, &[]).map_err(fail)?;
    let opts = [("max_key_size", 8)]
        .into_iter()
        .collect::<std::collections::HashMap<_, _>>();
    let native = py.import("native").map_err(fail)?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("options", opts).map_err(fail)?;
    let conn = native
        .getattr("connect")
        .and_then(|c| c.call((dir.path("b.db"),), Some(&kwargs)))
        .map_err(fail)?;
    conn.call_method1(
        "put",
        (
            pyo3::types::PyBytes::new(py, b"present"),
            pyo3::types::PyBytes::new(py, b"x"),
        ),
    )
    .map_err(fail)?;
    let data = if matches!(which, BaCall::PutKeyTooLong) {
        let mut d = data.to_vec();
        d.resize(d.len().max(9), b'x');
        d
    } else {
        data.to_vec()
    };
    let result = ns
        .get_item("call_and_resize")
        .map_err(fail)?
        .unwrap()
        .call1((
            &conn,
            dir.path("other.db"),
            format!("{which:?}"),
            pyo3::types::PyBytes::new(py, &data),
            via_mv,
        ))
        .map(drop)
        .map_err(|e| format!("after {which:?} (memoryview: {via_mv}): {}", fail(e)));
    conn.call_method0("close").map_err(fail)?;
    result
}

proptest! {
    #![proptest_config(config(96, regressions!("buffers")))]

    #[test]
    fn a_bytearray_is_resizable_after_every_call(
        which in ba_call(),
        data in prop_oneof![Just(b"present".to_vec()), payload()],
        via_mv in any::<bool>(),
    ) {
        let result = with_python(|py| isolated(py, |py| resize_scenario(py, which, &data, via_mv)));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

/// A writable buffer kind for `process`.
#[derive(Debug, Clone)]
enum Writable {
    ByteArray,
    View(MemoryViewKind),
    Array(ffi_harness::ArrayTypecode),
    Mmap,
}

fn writable() -> impl Strategy<Value = Writable> {
    prop_oneof![
        2 => Just(Writable::ByteArray),
        2 => memoryview_kind()
            .prop_filter("writable, C-contiguous, not released", |k| {
                matches!(k, MemoryViewKind::Writable | MemoryViewKind::Matrix { .. } | MemoryViewKind::Format { .. })
            })
            .prop_map(Writable::View),
        1 => array_typecode().prop_map(Writable::Array),
        1 => Just(Writable::Mmap),
    ]
}

impl Writable {
    fn value(&self, data: Vec<u8>) -> PyValue {
        match self {
            Writable::ByteArray => PyValue::ByteArray(data),
            Writable::View(kind) => PyValue::MemoryView { kind: *kind, data },
            Writable::Array(typecode) => PyValue::Array {
                typecode: *typecode,
                data,
            },
            Writable::Mmap => PyValue::Mmap(data),
        }
    }
}

/// Payload: short random bytes, or a random block repeated past the GIL-release threshold (64 KiB).
fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => payload(),
        1 => (payload(), 64usize * 1024..80 * 1024).prop_map(|(p, n)| {
            if p.is_empty() { vec![0xA5; n] } else { p.iter().copied().cycle().take(n).collect() }
        }),
    ]
}

const PROCESS_CHECK: &str = include_str!("py/buffers_process.py");

proptest! {
    #![proptest_config(config(96, regressions!("buffers")))]

    #[test]
    fn process_matches_the_reference_on_writable_buffers(
        kind in writable(),
        data in data(),
        key in any::<u32>(),
        rounds in 1..=3u32,
    ) {
        let value = kind.value(data);
        let result = with_python(|py| isolated(py, |py| {
            let fail = |e: PyErr| native_testkit::describe(py, &e);
            let ns = run_python(py, PROCESS_CHECK, &[]).map_err(fail)?;
            let obj = value.materialise(py).map_err(fail)?;
            ns.get_item("check_process").map_err(fail)?.unwrap()
                .call1((obj, key, rounds, refs(py).map_err(fail)?))
                .map(drop)
                .map_err(fail)
        }));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

/// A buffer kind for `checksum` beyond the harness values: read-only file mmaps and 3-D casts.
#[derive(Debug, Clone)]
enum Readable {
    Value(PyValue),
    Bytes(Vec<u8>),
    FileMmap(Vec<u8>),
    Cast3d(Vec<u8>),
}

fn readable() -> impl Strategy<Value = Readable> {
    prop_oneof![
        2 => data().prop_map(Readable::Bytes),
        1 => data().prop_map(|d| Readable::Value(PyValue::ByteArray(d))),
        3 => (memoryview_kind(), data()).prop_map(|(kind, data)| Readable::Value(PyValue::MemoryView { kind, data })),
        2 => (array_typecode(), data()).prop_map(|(typecode, data)| Readable::Value(PyValue::Array { typecode, data })),
        1 => data().prop_map(|d| Readable::Value(PyValue::Mmap(d))),
        1 => data().prop_map(Readable::FileMmap),
        1 => data().prop_map(Readable::Cast3d),
    ]
}

const CHECKSUM_CHECK: &str = include_str!("py/buffers_checksum.py");

proptest! {
    #![proptest_config(config(128, regressions!("buffers")))]

    #[test]
    fn checksum_matches_the_reference_for_every_buffer_kind(kind in readable()) {
        let result = with_python(|py| isolated(py, |py| {
            let fail = |e: PyErr| native_testkit::describe(py, &e);
            let dir = Scratch::new();
            let ns = run_python(py, CHECKSUM_CHECK, &[]).map_err(fail)?;
            let build = ns.get_item("build").map_err(fail)?.unwrap();
            let path = dir.path("mapped.bin");
            let obj = match &kind {
                Readable::Value(v) => v.materialise(py),
                Readable::Bytes(d) => build.call1(("bytes", d.clone(), &path)),
                Readable::FileMmap(d) => build.call1(("file_mmap", d.clone(), &path)),
                Readable::Cast3d(d) => build.call1(("cast3d", d.clone(), &path)),
            }.map_err(fail)?;
            ns.get_item("check_checksum").map_err(fail)?.unwrap()
                .call1((obj, refs(py).map_err(fail)?))
                .map(drop)
                .map_err(fail)
        }));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

const RESIZE_RACE: &str = include_str!("py/buffers_resize_race.py");

proptest! {
    #![proptest_config(config(4, regressions!("buffers")))]

    #[test]
    fn the_export_is_held_for_the_whole_call(
        process in any::<bool>(),
        mib in 8usize..=16,
        key in any::<u32>(),
        rounds in 1..=2u32,
        seed in any::<u8>(),
    ) {
        let result = with_python(|py| isolated(py, |py| {
            let fail = |e: PyErr| native_testkit::describe(py, &e);
            let ns = run_python(py, RESIZE_RACE, &[]).map_err(fail)?;
            let call = if process { "process" } else { "checksum" };
            // checksum is ~10x faster than process: give it more bytes to stay in C long enough.
            let size = if process { mib << 20 } else { (mib << 20) * 4 };
            ns.get_item("race").map_err(fail)?.unwrap()
                .call1((call, size, key, rounds, seed))
                .map(drop)
                .map_err(fail)
        }));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}
