//! The proptest and arbitrary generators cover the same variants, and a property
//! test wires values, oracles and reproducers together the way a user would.

use std::collections::BTreeSet;

use ffi_harness::strategies::*;
use ffi_harness::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use pyo3::prelude::*;

fn kinds_from<S: Strategy<Value = PyValue>>(strategy: S, samples: usize) -> BTreeSet<&'static str> {
    let mut runner = TestRunner::deterministic();
    let mut kinds = BTreeSet::new();
    for _ in 0..samples {
        let value = strategy.new_tree(&mut runner).unwrap().current();
        value.walk(&mut |v| {
            kinds.insert(v.kind());
        });
    }
    kinds
}

#[test]
fn both_generators_reach_every_kind() {
    let all: BTreeSet<&str> = PyValue::ALL_KINDS.iter().copied().collect();
    let mut native = kinds_from(pyvalue_strategy(3), 3000);
    native.extend(kinds_from(raced_bytearray(), 10));
    assert_eq!(
        all.difference(&native).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "proptest misses these"
    );
    let raced = Limits {
        raced_bytearrays: true,
        ..Limits::default()
    };
    let via_arbitrary = kinds_from(
        any::<Vec<u8>>().prop_map(move |bytes| {
            PyValue::arbitrary_with(
                &mut ffi_harness::arbitrary::Unstructured::new(&bytes),
                &raced,
            )
            .unwrap_or(PyValue::None)
        }),
        3000,
    );
    assert_eq!(
        all.difference(&via_arbitrary).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "arbitrary misses these"
    );
}

/// `len()` stands in for a binding: it must leave its argument's refcount alone
/// and raise only what it documents, whatever it is handed.
fn len_is_well_behaved(value: &PyValue) -> Result<(), OracleFailure> {
    Python::attach(|py| {
        let allowed = AllowedExceptions::new([
            "TypeError",
            "ValueError",
            "OverflowError",
            "ffi_harness_prelude.HostileError",
        ]);
        let len = py.import("builtins").unwrap().getattr("len").unwrap();
        let arg = value.materialise(py).unwrap();
        let fresh: Vec<(&str, &Bound<'_, PyAny>)> = value
            .is_fresh_heap_object()
            .then_some(("arg0", &arg))
            .into_iter()
            .collect();
        check_call(py, &fresh, &allowed, || {
            len.call1((&arg,))?.extract::<usize>()
        })
        .map(drop)
    })
}

proptest! {
    #![proptest_config(Config { cases: 200, failure_persistence: None, ..Config::default() })]

    #[test]
    fn len_never_leaks_or_raises_undocumented(value in pyvalue_strategy(3)) {
        if let Err(failure) = len_is_well_behaved(&value) {
            let script = ReproScript::new(&ReproConfig::new("")).failure(&failure).bind("arg0", &value).step("len(arg0)");
            prop_assert!(false, "{failure}\n{}", script.render());
        }
    }

    #[test]
    fn len_from_fuzzer_bytes(value in arbitrary_strategy::<PyValue>()) {
        prop_assert!(len_is_well_behaved(&value).is_ok());
    }
}
