//! Every PyValue variant materialises, and its Python source rebuilds an object
//! the prelude's `same()` considers identical in construction.

use std::collections::BTreeSet;
use std::ffi::CString;

use arbitrary::Unstructured;
use ffi_harness::*;
use pyo3::prelude::*;

/// One hand-picked value per kind (and then some), nested where it matters.
fn samples() -> Vec<PyValue> {
    use PyValue as V;
    let s = |pieces: Vec<StrPiece>| V::Str(StrValue(pieces));
    let mut out = vec![
        V::None,
        V::Bool(true),
        V::Int(IntValue::Small(-128)),
        V::Int(IntValue::Long(1 << 40)),
        V::Int(IntValue::Big {
            negative: true,
            extra_bits: 255,
        }),
        V::Int(IntValue::Subclass(-3)),
        V::Float(FloatValue::Nan),
        V::Float(FloatValue::Inf),
        V::Float(FloatValue::NegInf),
        V::Float(FloatValue::NegZero),
        V::Float(FloatValue::Finite(5e-324)),
        V::Float(FloatValue::Finite(0.1)),
        V::Float(FloatValue::Subclass(f64::NAN)),
        s(vec![
            StrPiece::Text("héllo 'q' \\ \n".into()),
            StrPiece::NonBmp(0xF600),
            StrPiece::Nul,
        ]),
        s(vec![
            StrPiece::LoneSurrogate(0),
            StrPiece::LoneSurrogate(0x7FF),
            StrPiece::Text("x".into()),
        ]),
        V::Bytes(b"\x00'\\\xff abc".to_vec()),
        V::ByteArray(vec![1, 2, 3]),
        V::RacedByteArray {
            fill: 0xab,
            size_class: 255,
        },
        V::Array {
            typecode: ArrayTypecode::Double,
            data: vec![0xff; 17],
        },
        V::Array {
            typecode: ArrayTypecode::UnsignedLong,
            data: vec![7; 9],
        },
        V::Mmap(vec![]),
        V::Mmap(b"mapped".to_vec()),
        V::List(vec![V::List(vec![V::Tuple(vec![V::None])])]),
        V::Tuple(vec![]),
        V::Dict(vec![
            (DictKey::Int(IntValue::Small(1)), V::None),
            (DictKey::Bool(true), V::Bool(false)),
            (DictKey::Float(FloatValue::Nan), V::Bytes(vec![])),
            (
                DictKey::Str(StrValue(vec![StrPiece::LoneSurrogate(5)])),
                V::List(vec![]),
            ),
            (DictKey::Bytes(b"k".to_vec()), V::Float(FloatValue::NegZero)),
            (
                DictKey::None,
                V::Int(IntValue::Edge(IntEdge::U64MaxPlusOne)),
            ),
        ]),
        V::Hostile(Hostile::Del(DelAction::CollectGarbage)),
        V::Hostile(Hostile::Del(DelAction::Reenter(9))),
        V::Hostile(Hostile::SelfReferentialList),
        V::Callable(CallableValue::Raises(RaiseKind::KeyboardInterrupt)),
        V::Callable(CallableValue::Returns(Box::new(V::Float(FloatValue::Nan)))),
        V::Callable(CallableValue::ReturnsThenRaises(
            Box::new(V::Str(StrValue(vec![StrPiece::Text("ab".into())]))),
            2,
        )),
        V::Callable(CallableValue::Reenter(3)),
        V::Callable(CallableValue::NoArguments),
    ];
    for edge in IntEdge::ALL {
        out.push(V::Int(IntValue::Edge(edge)));
    }
    for kind in [
        MemoryViewKind::Writable,
        MemoryViewKind::ReadOnly,
        MemoryViewKind::Strided { step: 1 },
        MemoryViewKind::Reversed,
        MemoryViewKind::Matrix { cols: 2 },
        MemoryViewKind::Matrix { cols: 7 },
        MemoryViewKind::Format { format: 0 },
        MemoryViewKind::Format { format: 1 },
        MemoryViewKind::Format { format: 2 },
        MemoryViewKind::Released,
    ] {
        out.push(V::MemoryView {
            kind,
            data: b"0123456789".to_vec(),
        });
        out.push(V::MemoryView { kind, data: vec![] });
    }
    for dunder in [
        Dunder::Index,
        Dunder::Int,
        Dunder::Float,
        Dunder::Len,
        Dunder::Buffer,
        Dunder::Hash,
        Dunder::Eq,
        Dunder::Fspath,
        Dunder::Bool,
    ] {
        for misbehaviour in [
            Misbehaviour::Raise,
            Misbehaviour::WrongType,
            Misbehaviour::OutOfRange,
            Misbehaviour::Reenter(1),
            Misbehaviour::Behave,
        ] {
            out.push(V::Hostile(Hostile::Dunder {
                dunder,
                misbehaviour,
            }));
        }
    }
    out
}

/// Materialise `value`, evaluate its source, and require `same()`.
fn assert_round_trips(py: Python<'_>, value: &PyValue) {
    let built = value
        .materialise(py)
        .unwrap_or_else(|e| panic!("materialise {value:?}: {e}"));
    let source = value.to_python_source();
    assert!(source.is_ascii(), "source is not ASCII: {source}");
    let code = CString::new(source.clone()).unwrap();
    let globals = prelude_globals(py).unwrap();
    let rebuilt = py
        .eval(&code, Some(&globals), None)
        .unwrap_or_else(|e| panic!("eval {source}: {e}"));
    assert_eq!(
        built.get_type().name().unwrap().to_string(),
        rebuilt.get_type().name().unwrap().to_string(),
        "{value:?} / {source}"
    );
    assert!(
        ffi_harness::prelude::same(&built, &rebuilt).unwrap(),
        "not the same: {value:?}\n  source: {source}\n  built: {}\n  rebuilt: {}",
        built.repr().map(|r| r.to_string()).unwrap_or_default(),
        rebuilt.repr().map(|r| r.to_string()).unwrap_or_default(),
    );
}

#[test]
fn samples_cover_every_kind() {
    let mut kinds = BTreeSet::new();
    for value in samples() {
        value.walk(&mut |v| {
            kinds.insert(v.kind());
        });
    }
    let all: BTreeSet<&str> = PyValue::ALL_KINDS.iter().copied().collect();
    assert_eq!(kinds, all);
}

#[test]
fn every_sample_materialises_and_round_trips() {
    Python::attach(|py| {
        for value in samples() {
            assert_round_trips(py, &value);
        }
    });
}

#[test]
fn values_build_what_they_say() {
    Python::attach(|py| {
        let check = |value: PyValue, expr: &str| {
            let obj = value.materialise(py).unwrap();
            let globals = prelude_globals(py).unwrap();
            globals.set_item("x", &obj).unwrap();
            let code = CString::new(expr).unwrap();
            let ok: bool = py
                .eval(&code, Some(&globals), None)
                .unwrap()
                .extract()
                .unwrap();
            assert!(ok, "{expr} is false for {value:?}");
        };
        check(
            PyValue::Int(IntValue::Edge(IntEdge::LongMinMinusOne)),
            "x == -2**63 - 1",
        );
        check(
            PyValue::Int(IntValue::Edge(IntEdge::Pow2To200)),
            "x == 2**200",
        );
        check(
            PyValue::Int(IntValue::Big {
                negative: false,
                extra_bits: 0,
            }),
            "x == 2**64",
        );
        check(
            PyValue::Int(IntValue::Subclass(5)),
            "type(x) is _fh.IntSub and x == 5",
        );
        check(
            PyValue::Str(StrValue(vec![StrPiece::LoneSurrogate(0)])),
            "x == '\\ud800'",
        );
        check(PyValue::Str(StrValue(vec![StrPiece::Nul])), "x == '\\0'");
        check(
            PyValue::MemoryView {
                kind: MemoryViewKind::ReadOnly,
                data: vec![1],
            },
            "x.readonly",
        );
        check(
            PyValue::MemoryView {
                kind: MemoryViewKind::Strided { step: 0 },
                data: vec![0; 8],
            },
            "not x.c_contiguous and len(x) == 4",
        );
        check(
            PyValue::MemoryView {
                kind: MemoryViewKind::Matrix { cols: 2 },
                data: vec![0; 9],
            },
            "x.ndim == 2 and x.shape == (3, 3)",
        );
        check(
            PyValue::MemoryView {
                kind: MemoryViewKind::Released,
                data: vec![],
            },
            "'released' in repr(x)",
        );
        check(PyValue::Mmap(vec![]), "len(x) == 1");
        check(PyValue::Hostile(Hostile::SelfReferentialList), "x[0] is x");
    });
}

#[test]
fn reenter_values_call_the_registered_hook() {
    Python::attach(|py| {
        let calls = py.eval(c"[]", None, None).unwrap();
        let hook = calls.getattr("append").unwrap();
        set_reenter_hook(py, &hook).unwrap();
        let callable = PyValue::Callable(CallableValue::Reenter(7))
            .materialise(py)
            .unwrap();
        callable.call1((1, 2)).unwrap();
        let index = PyValue::Hostile(Hostile::Dunder {
            dunder: Dunder::Index,
            misbehaviour: Misbehaviour::Reenter(8),
        })
        .materialise(py)
        .unwrap();
        let as_index: i64 = py
            .import("operator")
            .unwrap()
            .call_method1("index", (&index,))
            .unwrap()
            .extract()
            .unwrap();
        assert_eq!(as_index, 257);
        drop(
            PyValue::Hostile(Hostile::Del(DelAction::Reenter(9)))
                .materialise(py)
                .unwrap(),
        );
        set_reenter_hook(py, &py.None().into_bound(py)).unwrap();
        // Other tests may drop Reenter values meanwhile (the hook is global), so look
        // for our three calls in order rather than for exactly them.
        let seen: Vec<i64> = calls.extract().unwrap();
        let mut expected = [7, 8, 9].into_iter().peekable();
        for n in &seen {
            if expected.peek() == Some(n) {
                expected.next();
            }
        }
        assert!(expected.peek().is_none(), "hook calls: {seen:?}");
    });
}

#[test]
fn fresh_heap_objects_have_refcount_one() {
    Python::attach(|py| {
        for value in samples() {
            if value.is_fresh_heap_object() {
                let obj = value.materialise(py).unwrap();
                // SelfReferentialList refers to itself: one extra reference by design.
                let expected = if value == PyValue::Hostile(Hostile::SelfReferentialList) {
                    2
                } else {
                    1
                };
                assert_eq!(ffi_harness::oracles::refcount(&obj), expected, "{value:?}");
            }
        }
    });
}

#[test]
fn arbitrary_values_materialise_and_round_trip() {
    // A deterministic pseudo-random byte stream (xorshift), long enough for many values.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let bytes: Vec<u8> = (0..200_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    Python::attach(|py| {
        let mut u = Unstructured::new(&bytes);
        let mut count = 0;
        while !u.is_empty() && count < 500 {
            let value = PyValue::arbitrary_with(&mut u, &Limits::default()).unwrap();
            assert_round_trips(py, &value);
            count += 1;
        }
        assert!(count >= 100, "only {count} values");
    });
}

#[test]
fn a_deliberate_del_raise_is_not_printed_and_any_other_unraisable_still_is() {
    Python::attach(|py| {
        let prelude = prelude(py).unwrap();
        // Stand in for the hook that was there before the prelude (the default printer).
        let seen = py.eval(c"[]", None, None).unwrap();
        let before = prelude.getattr("_unraisable_before").unwrap();
        prelude
            .setattr("_unraisable_before", seen.getattr("append").unwrap())
            .unwrap();
        drop(
            PyValue::Hostile(Hostile::Del(DelAction::Raise))
                .materialise(py)
                .unwrap(),
        );
        let other = CString::new(
            "class _Other:\n    def __del__(self):\n        raise ValueError('not deliberate')\n_Other()\n",
        )
        .unwrap();
        py.run(&other, None, None).unwrap();
        prelude.setattr("_unraisable_before", before).unwrap();
        let kinds: Vec<String> = seen
            .try_iter()
            .unwrap()
            .map(|args| {
                args.unwrap()
                    .getattr("exc_type")
                    .unwrap()
                    .getattr("__name__")
                    .unwrap()
                    .extract()
                    .unwrap()
            })
            .collect();
        assert_eq!(kinds, ["ValueError"], "forwarded to the previous hook");
        assert!(
            py.import("sys")
                .unwrap()
                .getattr("unraisablehook")
                .unwrap()
                .is(prelude.getattr("_quiet_deliberate_unraisable").unwrap()),
            "the prelude installs its hook"
        );
    });
}
