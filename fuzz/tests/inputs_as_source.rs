//! The fuzz targets build their inputs as objects (no compile per input), while a repro.py spells the
//! same inputs as Python source. The two must be the same input, or a finding would not reproduce.

use native_fuzz::buffers::{exact_object, exact_source, ExactKind};
use native_fuzz::structs::{dict_object, dict_source, FieldValue};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// `a` and `b` are the same input: same type and value, and for a memoryview the same shape, format and
/// underlying object (the bytes around a window are what the neighbour check compares).
const SAME: &std::ffi::CStr = c"
def same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, memoryview):
        return (a.shape, a.format, a.tobytes(), type(a.obj), bytes(a.obj)) == (
            b.shape, b.format, b.tobytes(), type(b.obj), bytes(b.obj))
    if isinstance(a, dict):
        return list(a.items()) == list(b.items()) and [type(v) for v in a.values()] == [
            type(v) for v in b.values()]
    return a == b
";

fn same(py: Python<'_>, a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> bool {
    let globals = PyDict::new(py);
    py.run(SAME, Some(&globals), None).unwrap();
    globals
        .get_item("same")
        .unwrap()
        .unwrap()
        .call1((a, b))
        .unwrap()
        .extract()
        .unwrap()
}

fn eval<'py>(py: Python<'py>, src: &str) -> Bound<'py, PyAny> {
    let globals = PyDict::new(py);
    globals
        .set_item("array", py.import("array").unwrap())
        .unwrap();
    let code = std::ffi::CString::new(src).unwrap();
    py.eval(&code, Some(&globals), None)
        .unwrap_or_else(|e| panic!("{src}: {e}"))
}

#[test]
fn objects_equal_their_repro_source() {
    // `init` re-executes a libFuzzer binary once to add its default flags; a test binary is not one.
    std::env::set_var(
        "FFI_HARNESS_FLAGS_ADDED",
        "none (a cargo test, not libFuzzer)",
    );
    native_fuzz::init();
    Python::attach(|py| {
        let kinds = [
            ExactKind::ArrayB,
            ExactKind::ByteArray,
            ExactKind::Window { pad: 0 },
            ExactKind::Window { pad: 37 },
            ExactKind::TwoD,
        ];
        let datas: [&[u8]; 5] = [
            b"",
            b"\x00",
            b"abc",
            b"\xa5\xff\x00\x01abcdefghijkl",
            &[7; 64],
        ];
        for kind in kinds {
            for data in datas {
                let src = exact_source(kind, data);
                let built = exact_object(py, kind, data).unwrap();
                assert!(
                    same(py, &built, &eval(py, &src)),
                    "{kind:?} {data:?}: not {src}"
                );
            }
        }
        let fields = [
            (0, FieldValue::Bool(true)),
            (2, FieldValue::Int(-5)),
            (3, FieldValue::Edge(9)),
            (4, FieldValue::Edge(6)),
            (5, FieldValue::Int(i64::MIN)),
            // A repeated name keeps its last value, as in a dict literal.
            (0, FieldValue::Bool(false)),
            (1, FieldValue::Edge(3)),
        ];
        for n in 0..=fields.len() {
            let src = dict_source(&fields[..n]);
            let built = dict_object(py, &fields[..n]).unwrap();
            assert!(same(py, built.as_any(), &eval(py, &src)), "not {src}");
        }
    });
}
