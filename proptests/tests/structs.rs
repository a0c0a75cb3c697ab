//! Structs (Python -> C): random mappings, given as a dict, a MappingProxy, a user Mapping, keyword
//! arguments or `Options.from_mapping`, either round-trip exactly (`to_dict()` equals the defaults
//! updated by the mapping, same types; `Options(**o.to_dict()) == o`) or raise exactly the exception
//! an exact model predicts (TypeError / ValueError / OverflowError for the first bad entry).
//! Invalid input never reaches C: `connect(path, options=bad)` makes no native call (the `calls`
//! debug counter moves only by `debug_counters()`'s own cost) and creates no file. Random objects
//! of any kind as `options=` either work or raise one of the three, with the same no-call rule.

use ffi_harness::strategies::pyvalue_strategy;
use native_testkit::{Scratch, debug_counters_self_cost, native_calls, run_python};
use proptest::prelude::*;
use proptests::inputs::{OptValue, Rejection, expected_options, options_entries};
use proptests::{config, isolated, regressions, with_python};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

#[derive(Debug, Clone, Copy)]
enum Form {
    Kwargs,
    FromMappingDict,
    FromMappingProxy,
    FromUserMapping,
    ConnectDict,
    ConnectUserMapping,
}

fn form() -> impl Strategy<Value = Form> {
    proptest::sample::select(vec![
        Form::Kwargs,
        Form::FromMappingDict,
        Form::FromMappingProxy,
        Form::FromUserMapping,
        Form::ConnectDict,
        Form::ConnectUserMapping,
    ])
}

const CHECK: &str = include_str!("py/structs_check.py");

fn py_expected<'py>(
    py: Python<'py>,
    expected: &Result<std::collections::BTreeMap<String, OptValue>, Rejection>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    match expected {
        Ok(map) => {
            let d = PyDict::new(py);
            for (k, v) in map {
                match v {
                    OptValue::Bool(b) => d.set_item(k, *b)?,
                    OptValue::Int(n) => d.set_item(k, *n)?,
                }
            }
            Ok((d.into_any(), PyTuple::empty(py).into_any()))
        }
        Err(rejection) => Ok((
            py.None().into_bound(py),
            PyTuple::new(py, rejection.python_names())?.into_any(),
        )),
    }
}

proptest! {
    #![proptest_config(config(192, regressions!("structs")))]

    #[test]
    fn options_round_trip_exactly_or_raise_what_the_model_says(
        form in form(),
        entries in options_entries(),
    ) {
        let expected = expected_options(&entries);
        let result = with_python(|py| isolated(py, |py| {
            let fail = |e: PyErr| native_testkit::describe(py, &e);
            let dir = Scratch::new();
            let ns = run_python(py, CHECK, &[]).map_err(fail)?;
            let items = entries
                .iter()
                .map(|(k, v)| Ok((k.clone(), v.materialise(py)?)))
                .collect::<PyResult<Vec<_>>>()
                .map_err(fail)?;
            let (want, rejected_by) = py_expected(py, &expected).map_err(fail)?;
            let cost = debug_counters_self_cost(py).map_err(fail)?;
            ns.get_item("check").map_err(fail)?.unwrap()
                .call1((format!("{form:?}"), items, want, rejected_by, dir.path("o.db"), cost))
                .map(drop)
                .map_err(|e| format!("{}\nmodel: {expected:?}", fail(e)))
        }));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn any_object_as_options_works_or_is_rejected_before_c(value in pyvalue_strategy(2)) {
        let result = with_python(|py| isolated(py, |py| {
            let fail = |e: PyErr| native_testkit::describe(py, &e);
            let dir = Scratch::new();
            let ns = run_python(py, CHECK, &[]).map_err(fail)?;
            let obj = value.materialise(py).map_err(fail)?;
            let cost = debug_counters_self_cost(py).map_err(fail)?;
            ns.get_item("check_any").map_err(fail)?.unwrap()
                .call1((obj, dir.path("a.db"), cost))
                .map(drop)
                .map_err(fail)
        }));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

#[test]
fn native_calls_counter_sees_a_valid_connect() {
    // Positive control for the no-call oracle: a valid connect does move `calls`.
    with_python(|py| {
        let dir = Scratch::new();
        let before = native_calls(py).unwrap();
        let conn = py
            .import("native")
            .unwrap()
            .call_method1("connect", (dir.path("c.db"),))
            .unwrap();
        conn.call_method0("close").unwrap();
        assert!(native_calls(py).unwrap() - before > debug_counters_self_cost(py).unwrap());
    });
}
