//! Model-based: random op sequences on a Connection and on a reference model (a dict of
//! bytes -> bytes plus one live iterator) agree at every step, including across reopening the store
//! from disk, size-limit rejections (which change nothing, and do not invalidate iterators) and
//! mutation during iteration (InvalidStateError). A valid iterator yields each item of the store
//! exactly once (a repeat is a failure even when the count comes out right), an iterator may be
//! abandoned half-way at any step, and when the sequence ends libnative's ledger is back where it
//! was before the first connect (abandoned iterators and reopened connections hold nothing).
//!
//! The reference is a `proptest_state_machine::ReferenceStateMachine`: its `sequential_strategy`
//! generates transition sequences that respect preconditions and shrinks them (dropping transitions,
//! then simplifying each). The system under test is driven by our own loop rather than
//! `StateMachineTest`, so each whole sequence can run in a forked child (crash isolation).

use std::collections::{BTreeMap, BTreeSet};

use native_testkit::{Scratch, is_native_error, settled_ledger};
use proptest::prelude::*;
use proptest_state_machine::ReferenceStateMachine;
use proptests::{config, isolated, ledger_returns_to, regressions, with_python};
use pyo3::exceptions::{PyKeyError, PyStopIteration, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

const MAX_KEY: usize = 8;
const MAX_VALUE: usize = 32;

#[derive(Debug, Clone)]
enum Step {
    Put(Vec<u8>, Vec<u8>),
    Get(Vec<u8>),
    Delete(Vec<u8>),
    Contains(Vec<u8>),
    Len,
    Items,
    Keys,
    Stats,
    Flush,
    /// close() and connect() again to the same file.
    Reopen,
    /// Start a new items() iterator (replacing the previous one).
    IterNew,
    IterNext,
    /// Drop the iterator without finishing it (abandoned half-way, or never started).
    IterDrop,
}

#[derive(Debug, Clone, Default)]
struct Iter {
    len_at_start: usize,
    consumed: usize,
    valid: bool,
    done: bool,
}

#[derive(Debug, Clone, Default)]
struct Model {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    iter: Option<Iter>,
}

impl Model {
    /// The store's items in key order, as `sorted_items()` reads them from the connection.
    fn items(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

fn valid_key(k: &[u8]) -> bool {
    !k.is_empty() && k.len() <= MAX_KEY
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        10 => proptest::sample::select(vec![&b"a"[..], b"b", b"c", b"dd", b"e\x00e", b"\xff\xfe", b"k8bytes!"])
            .prop_map(<[u8]>::to_vec),
        1 => Just(Vec::new()),
        1 => Just(b"ninebytes".to_vec()),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        10 => proptest::collection::vec(any::<u8>(), 0..=12),
        1 => Just(vec![b'v'; MAX_VALUE]),
        1 => Just(vec![b'v'; MAX_VALUE + 1]),
    ]
}

struct DictModel;

impl ReferenceStateMachine for DictModel {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::default()).boxed()
    }

    fn transitions(_state: &Model) -> BoxedStrategy<Step> {
        prop_oneof![
            6 => (key(), value()).prop_map(|(k, v)| Step::Put(k, v)),
            3 => key().prop_map(Step::Get),
            2 => key().prop_map(Step::Delete),
            1 => key().prop_map(Step::Contains),
            1 => Just(Step::Len),
            1 => Just(Step::Items),
            1 => Just(Step::Keys),
            1 => Just(Step::Stats),
            1 => Just(Step::Flush),
            1 => Just(Step::Reopen),
            2 => Just(Step::IterNew),
            3 => Just(Step::IterNext),
            1 => Just(Step::IterDrop),
        ]
        .boxed()
    }

    fn apply(mut state: Model, step: &Step) -> Model {
        let invalidate = |state: &mut Model| {
            if let Some(it) = state.iter.as_mut() {
                it.valid = false;
            }
        };
        match step {
            Step::Put(k, v) if valid_key(k) && v.len() <= MAX_VALUE => {
                state.data.insert(k.clone(), v.clone());
                invalidate(&mut state);
            }
            Step::Delete(k) if valid_key(k) && state.data.remove(k).is_some() => {
                invalidate(&mut state);
            }
            // Reopening closes the iterator's connection.
            Step::Reopen => invalidate(&mut state),
            Step::IterNew => {
                state.iter = Some(Iter {
                    len_at_start: state.data.len(),
                    consumed: 0,
                    valid: true,
                    done: false,
                })
            }
            Step::IterDrop => state.iter = None,
            Step::IterNext => {
                if let Some(it) = state.iter.as_mut()
                    && !it.done
                    && it.valid
                {
                    if it.consumed == it.len_at_start {
                        it.done = true;
                    } else {
                        it.consumed += 1;
                    }
                }
            }
            _ => {}
        }
        state
    }

    fn preconditions(state: &Model, step: &Step) -> bool {
        !matches!(step, Step::IterNext | Step::IterDrop) || state.iter.is_some()
    }
}

struct Sut<'py> {
    py: Python<'py>,
    path: String,
    conn: Bound<'py, PyAny>,
    iter: Option<Bound<'py, PyAny>>,
    /// The keys the current iterator has yielded: none may come twice.
    yielded: BTreeSet<Vec<u8>>,
}

impl<'py> Sut<'py> {
    fn connect(py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyAny>> {
        let options = PyDict::new(py);
        options.set_item("max_key_size", MAX_KEY)?;
        options.set_item("max_value_size", MAX_VALUE)?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("options", options)?;
        py.import("native")?
            .getattr("connect")?
            .call((path,), Some(&kwargs))
    }

    fn sorted_items(&self) -> PyResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut items: Vec<(Vec<u8>, Vec<u8>)> = self
            .conn
            .call_method0("items")?
            .try_iter()?
            .map(|item| item?.extract())
            .collect::<PyResult<_>>()?;
        items.sort();
        Ok(items)
    }
}

fn bytes<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, b)
}

/// Apply `step` to the real connection and compare with what the model (`before`) predicts.
fn check_step(sut: &mut Sut<'_>, before: &Model, step: &Step) -> Result<(), String> {
    let py = sut.py;
    let d = |e: &PyErr| native_testkit::describe(py, e);
    let expect_value_error = |r: PyResult<Bound<'_, PyAny>>, what: &str| match r {
        Err(e) if e.is_instance_of::<PyValueError>(py) => Ok(()),
        Err(e) => Err(format!("{what}: expected ValueError, got {}", d(&e))),
        Ok(v) => Err(format!("{what}: expected ValueError, got {v:?}")),
    };
    match step {
        Step::Put(k, v) => {
            let r = sut.conn.call_method1("put", (bytes(py, k), bytes(py, v)));
            if !valid_key(k) || v.len() > MAX_VALUE {
                return expect_value_error(r, "put over the limits");
            }
            r.map_err(|e| d(&e))?;
        }
        Step::Get(k) => {
            let r = sut.conn.call_method1("get", (bytes(py, k),));
            if !valid_key(k) {
                return expect_value_error(r, "get of an invalid key");
            }
            match (before.data.get(k), r) {
                (Some(want), Ok(got)) => {
                    let got: Vec<u8> = got.extract().map_err(|e| d(&e))?;
                    if &got != want {
                        return Err(format!("get({k:?}) = {got:?}, model {want:?}"));
                    }
                }
                (None, Err(e)) if e.is_instance_of::<PyKeyError>(py) => {}
                (want, got) => return Err(format!("get({k:?}) = {got:?}, model {want:?}")),
            }
        }
        Step::Delete(k) => {
            let r = sut.conn.call_method1("delete", (bytes(py, k),));
            if !valid_key(k) {
                return expect_value_error(r, "delete of an invalid key");
            }
            match (before.data.contains_key(k), r) {
                (true, Ok(_)) => {}
                (false, Err(e)) if e.is_instance_of::<PyKeyError>(py) => {}
                (present, got) => {
                    return Err(format!("delete({k:?}) = {got:?}, model has key: {present}"));
                }
            }
        }
        Step::Contains(k) => {
            let r = sut.conn.call_method1("__contains__", (bytes(py, k),));
            if !valid_key(k) {
                return expect_value_error(r, "`in` with an invalid key");
            }
            let got: bool = r.and_then(|r| r.extract()).map_err(|e| d(&e))?;
            if got != before.data.contains_key(k) {
                return Err(format!("{k:?} in conn = {got}, model {}", !got));
            }
        }
        Step::Len | Step::Stats => {
            let n: usize = if let Step::Len = step {
                sut.conn.len().map_err(|e| d(&e))?
            } else {
                sut.conn
                    .call_method0("stats")
                    .and_then(|s| s.getattr("keys"))
                    .and_then(|k| k.extract())
                    .map_err(|e| d(&e))?
            };
            if n != before.data.len() {
                return Err(format!("{step:?} = {n}, model {}", before.data.len()));
            }
        }
        Step::Items | Step::Keys => {
            let items = sut.sorted_items().map_err(|e| d(&e))?;
            let want = before.items();
            if items != want {
                return Err(format!("items() = {items:?}, model {want:?}"));
            }
            let mut keys: Vec<Vec<u8>> = sut
                .conn
                .call_method0("keys")
                .and_then(|it| it.try_iter()?.map(|k| k?.extract()).collect())
                .map_err(|e| d(&e))?;
            keys.sort();
            let want_keys: Vec<Vec<u8>> = before.data.keys().cloned().collect();
            if keys != want_keys {
                return Err(format!("keys() = {keys:?}, model {want_keys:?}"));
            }
        }
        Step::Flush => {
            sut.conn.call_method0("flush").map_err(|e| d(&e))?;
        }
        Step::Reopen => {
            sut.conn.call_method0("close").map_err(|e| d(&e))?;
            sut.conn = Sut::connect(py, &sut.path).map_err(|e| d(&e))?;
            let items = sut.sorted_items().map_err(|e| d(&e))?;
            let want = before.items();
            if items != want {
                return Err(format!(
                    "after reopening: items() = {items:?}, model {want:?}"
                ));
            }
        }
        Step::IterNew => {
            sut.iter = Some(sut.conn.call_method0("items").map_err(|e| d(&e))?);
            sut.yielded.clear();
        }
        Step::IterDrop => {
            sut.iter = None;
            sut.yielded.clear();
        }
        Step::IterNext => {
            let it = sut.iter.as_ref().expect("precondition: an iterator exists");
            let model = before.iter.as_ref().expect("precondition");
            let r = it.call_method0("__next__");
            let expect_stop = model.done || (model.valid && model.consumed == model.len_at_start);
            match r {
                Err(e) if expect_stop && e.is_instance_of::<PyStopIteration>(py) => {}
                Err(e)
                    if !expect_stop
                        && !model.valid
                        && is_native_error(py, &e, "InvalidStateError") => {}
                Ok(item) if !expect_stop && model.valid => {
                    let (k, v): (Vec<u8>, Vec<u8>) = item
                        .cast::<PyTuple>()
                        .map_err(|e| e.to_string())?
                        .extract()
                        .map_err(|e| d(&e))?;
                    if before.data.get(&k) != Some(&v) {
                        return Err(format!("iterator yielded ({k:?}, {v:?}), not in the model"));
                    }
                    if !sut.yielded.insert(k.clone()) {
                        return Err(format!(
                            "iterator yielded key {k:?} a second time (model: {model:?})"
                        ));
                    }
                }
                other => {
                    let other = other.map_err(|e| d(&e));
                    return Err(format!(
                        "next(iterator) = {other:?}; model: {model:?} (expected {})",
                        if expect_stop {
                            "StopIteration"
                        } else if model.valid {
                            "an item"
                        } else {
                            "InvalidStateError (store modified or closed since items())"
                        }
                    ));
                }
            }
        }
    }
    Ok(())
}

fn run(py: Python<'_>, steps: &[Step]) -> Result<(), String> {
    let baseline = settled_ledger(py).map_err(|e| native_testkit::describe(py, &e))?;
    let dir = Scratch::new();
    let path = dir.path("model.db");
    let conn = Sut::connect(py, &path).map_err(|e| native_testkit::describe(py, &e))?;
    let mut sut = Sut {
        py,
        path,
        conn,
        iter: None,
        yielded: BTreeSet::new(),
    };
    let mut model = Model::default();
    for (i, step) in steps.iter().enumerate() {
        check_step(&mut sut, &model, step).map_err(|m| format!("step #{i} {step:?}: {m}"))?;
        model = DictModel::apply(model, step);
    }
    // Whatever happened, the file on disk holds the model.
    check_step(&mut sut, &model, &Step::Reopen).map_err(|m| format!("final reopen: {m}"))?;
    sut.conn
        .call_method0("close")
        .map_err(|e| native_testkit::describe(py, &e))?;
    drop(sut);
    ledger_returns_to(py, &baseline).map_err(|f| format!("after the last step: {f}"))
}

proptest! {
    #![proptest_config(config(128, regressions!("model")))]

    #[test]
    fn connection_agrees_with_a_dict_model(
        (_, steps, _) in DictModel::sequential_strategy(1..48)
    ) {
        let result = with_python(|py| isolated(py, |py| run(py, &steps)));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}
