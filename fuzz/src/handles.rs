//! `handles`: stateful sequences over up to four connections to two store files: connect, put, get,
//! delete, len, items (with mutation mid-iteration), flush, stats, close, dropping references, gc,
//! hostile keys and values. Oracles: allowed exceptions only (InvalidStateError after close,
//! TimeoutError when a file is already open), a dict model of each file that every read must agree
//! with (also after reopening from disk), and the native ledger back at baseline at the end.

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use ffi_harness::{AllowedExceptions, OracleFailure, PyValue, ReproScript};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::{allowed, py_bytes, py_failure, with_ledger, Scenario, Scratch};

const SLOTS: usize = 4;

/// Small key space so ops collide: keys are `k` + one byte of a 6-letter alphabet.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum KeyArg {
    Bytes(u8),
    ByteArray(u8),
    MemoryView(u8),
}

impl KeyArg {
    fn bytes(self) -> Vec<u8> {
        let c = match self {
            KeyArg::Bytes(c) | KeyArg::ByteArray(c) | KeyArg::MemoryView(c) => c,
        };
        vec![b'k', b'a' + c % 6]
    }

    fn source(self) -> String {
        let lit = py_bytes(&self.bytes());
        match self {
            KeyArg::Bytes(_) => lit,
            KeyArg::ByteArray(_) => format!("bytearray({lit})"),
            KeyArg::MemoryView(_) => format!("memoryview({lit})"),
        }
    }

    fn materialise<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let b = PyBytes::new(py, &self.bytes());
        match self {
            KeyArg::Bytes(_) => Ok(b.into_any()),
            KeyArg::ByteArray(_) => Ok(pyo3::types::PyByteArray::new(py, &self.bytes()).into_any()),
            KeyArg::MemoryView(_) => Ok(pyo3::types::PyMemoryView::from(&b.into_any())?.into_any()),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum HandleOp {
    Connect {
        slot: u8,
        file: bool,
    },
    Put {
        slot: u8,
        key: KeyArg,
        value: Vec<u8>,
    },
    Get {
        slot: u8,
        key: KeyArg,
    },
    Delete {
        slot: u8,
        key: KeyArg,
    },
    Len {
        slot: u8,
    },
    Items {
        slot: u8,
        take: u8,
        mutate_at: Option<u8>,
    },
    Flush {
        slot: u8,
    },
    Stats {
        slot: u8,
    },
    Close {
        slot: u8,
    },
    Drop {
        slot: u8,
    },
    Gc,
    HostilePut {
        slot: u8,
        key: PyValue,
        value: PyValue,
    },
    HostileGet {
        slot: u8,
        key: PyValue,
    },
}

/// Per-input state: the connection slots and a dict model per file.
pub struct HandleState<'py> {
    scratch: Scratch,
    slots: Vec<Option<(Bound<'py, PyAny>, bool)>>,
    model: [BTreeMap<Vec<u8>, Vec<u8>>; 2],
}

fn slot(s: u8) -> usize {
    usize::from(s) % SLOTS
}

fn file_name(file: bool) -> &'static str {
    if file {
        "b.db"
    } else {
        "a.db"
    }
}

fn mismatch(what: String) -> OracleFailure {
    OracleFailure::new("model", what)
}

impl HandleOp {
    fn apply<'py>(
        &self,
        py: Python<'py>,
        st: &mut HandleState<'py>,
        allowed: &AllowedExceptions,
    ) -> Result<(), OracleFailure> {
        let native = py
            .import("native")
            .map_err(|e| py_failure(py, "import", e))?;
        let conn = |s: u8| st.slots[slot(s)].clone();
        // Results of an op: Ok(Some(v)) to compare, Ok(None) nothing to compare, Err(allowed exception).
        match self {
            HandleOp::Connect { slot: s, file } => {
                let path = st.scratch.path(file_name(*file));
                let kw = crate::kwargs(
                    py,
                    &[("timeout", 0i32.into_pyobject(py).unwrap().into_any())],
                )
                .unwrap();
                let opened_elsewhere = st
                    .slots
                    .iter()
                    .flatten()
                    .any(|(c, f)| f == file && !is_closed(c));
                match native.call_method("connect", (path,), Some(&kw)) {
                    Ok(c) => {
                        if opened_elsewhere {
                            return Err(mismatch(
                                "a second connection to an open store succeeded".into(),
                            ));
                        }
                        st.slots[slot(*s)] = Some((c, *file));
                    }
                    Err(e) => {
                        allowed.check(py, &e)?;
                        if !opened_elsewhere {
                            return Err(mismatch(format!(
                                "connect failed although the store was free: {e}"
                            )));
                        }
                    }
                }
            }
            HandleOp::Put {
                slot: s,
                key,
                value,
            } => {
                if let Some((c, f)) = conn(*s) {
                    let k = key.materialise(py).map_err(|e| py_failure(py, "key", e))?;
                    match c.call_method1("put", (k, PyBytes::new(py, value))) {
                        Ok(_) => {
                            st.model[f as usize].insert(key.bytes(), value.clone());
                        }
                        Err(e) => expect_closed(py, &c, e, allowed)?,
                    }
                }
            }
            HandleOp::Get { slot: s, key } => {
                if let Some((c, f)) = conn(*s) {
                    let k = key.materialise(py).map_err(|e| py_failure(py, "key", e))?;
                    let want = st.model[f as usize].get(&key.bytes());
                    match c.call_method1("get", (k,)) {
                        Ok(v) => {
                            let got: Vec<u8> =
                                v.extract().map_err(|e| py_failure(py, "get result", e))?;
                            if want != Some(&got) {
                                return Err(mismatch(format!(
                                    "get({:?}) = {got:?}, model has {want:?}",
                                    key.bytes()
                                )));
                            }
                        }
                        Err(e)
                            if e.is_instance_of::<pyo3::exceptions::PyKeyError>(py)
                                && !is_closed(&c) =>
                        {
                            if want.is_some() {
                                return Err(mismatch(format!(
                                    "get({:?}) raised KeyError, model has {want:?}",
                                    key.bytes()
                                )));
                            }
                        }
                        Err(e) => expect_closed(py, &c, e, allowed)?,
                    }
                }
            }
            HandleOp::Delete { slot: s, key } => {
                if let Some((c, f)) = conn(*s) {
                    let k = key.materialise(py).map_err(|e| py_failure(py, "key", e))?;
                    let had = st.model[f as usize].contains_key(&key.bytes());
                    match c.call_method1("delete", (k,)) {
                        Ok(_) if had => {
                            st.model[f as usize].remove(&key.bytes());
                        }
                        Ok(_) => return Err(mismatch("delete of an absent key succeeded".into())),
                        Err(e)
                            if e.is_instance_of::<pyo3::exceptions::PyKeyError>(py)
                                && !is_closed(&c) =>
                        {
                            if had {
                                return Err(mismatch(
                                    "delete raised KeyError for a present key".into(),
                                ));
                            }
                        }
                        Err(e) => expect_closed(py, &c, e, allowed)?,
                    }
                }
            }
            HandleOp::Len { slot: s } => {
                if let Some((c, f)) = conn(*s) {
                    match c.len() {
                        Ok(n) if n != st.model[f as usize].len() => {
                            return Err(mismatch(format!(
                                "len = {n}, model has {}",
                                st.model[f as usize].len()
                            )))
                        }
                        Ok(_) => {}
                        Err(e) => expect_closed(py, &c, e, allowed)?,
                    }
                }
            }
            HandleOp::Items {
                slot: s,
                take,
                mutate_at,
            } => {
                if let Some((c, f)) = conn(*s) {
                    let it = match c.call_method0("items") {
                        Ok(it) => it,
                        Err(e) => return expect_closed(py, &c, e, allowed),
                    };
                    let mut seen = BTreeMap::new();
                    let mut mutated = false;
                    for i in 0..=usize::from(*take) {
                        if *mutate_at == Some(i as u8) && !mutated {
                            let key = b"kz".to_vec();
                            if c.call_method1(
                                "put",
                                (PyBytes::new(py, &key), PyBytes::new(py, b"m")),
                            )
                            .is_ok()
                            {
                                st.model[f as usize].insert(key, b"m".to_vec());
                                mutated = true;
                            }
                        }
                        match it.call_method0("__next__") {
                            Ok(pair) => {
                                if mutated {
                                    return Err(mismatch(
                                        "iteration continued after the store was modified".into(),
                                    ));
                                }
                                let (k, v): (Vec<u8>, Vec<u8>) =
                                    pair.extract().map_err(|e| py_failure(py, "item", e))?;
                                if seen.insert(k.clone(), v).is_some() {
                                    return Err(mismatch(format!("items() yielded {k:?} twice")));
                                }
                            }
                            Err(e) if e.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) => {
                                if !mutated && seen != st.model[f as usize] {
                                    return Err(mismatch(format!(
                                        "items() = {seen:?}, model = {:?}",
                                        st.model[f as usize]
                                    )));
                                }
                                break;
                            }
                            Err(e) => {
                                let invalid = e
                                    .is_instance(py, &native.getattr("InvalidStateError").unwrap());
                                if !(invalid && mutated) {
                                    return Err(py_failure(py, "items", e));
                                }
                                break;
                            }
                        }
                    }
                }
            }
            HandleOp::Flush { slot: s } | HandleOp::Stats { slot: s } => {
                if let Some((c, f)) = conn(*s) {
                    let method = if matches!(self, HandleOp::Flush { .. }) {
                        "flush"
                    } else {
                        "stats"
                    };
                    match c.call_method0(method) {
                        Ok(r) if method == "stats" => {
                            let keys: usize = r
                                .getattr("keys")
                                .and_then(|k| k.extract())
                                .map_err(|e| py_failure(py, "stats", e))?;
                            if keys != st.model[f as usize].len() {
                                return Err(mismatch(format!(
                                    "stats().keys = {keys}, model has {}",
                                    st.model[f as usize].len()
                                )));
                            }
                        }
                        Ok(_) => {}
                        Err(e) => expect_closed(py, &c, e, allowed)?,
                    }
                }
            }
            HandleOp::Close { slot: s } => {
                if let Some((c, _)) = conn(*s) {
                    c.call_method0("close")
                        .map_err(|e| py_failure(py, "close", e))?;
                    if !is_closed(&c) {
                        return Err(mismatch("closed is False after close()".into()));
                    }
                }
            }
            HandleOp::Drop { slot: s } => {
                st.slots[slot(*s)] = None;
            }
            HandleOp::Gc => {
                py.import("gc")
                    .and_then(|gc| gc.call_method0("collect"))
                    .map_err(|e| py_failure(py, "gc", e))?;
            }
            HandleOp::HostilePut {
                slot: s,
                key,
                value,
            } => {
                if let Some((c, _)) = conn(*s) {
                    let (k, v) = (key.materialise(py), value.materialise(py));
                    if let (Ok(k), Ok(v)) = (k, v) {
                        // Only documented refusals; hostile keys never reach the model (a valid
                        // bytes-like key would, so the model is invalidated by re-reading it below).
                        if let Err(e) = c.call_method1("put", (&k, &v)) {
                            allowed.check(py, &e)?;
                        } else {
                            resync(py, st, &c)?;
                        }
                    }
                }
            }
            HandleOp::HostileGet { slot: s, key } => {
                if let Some((c, _)) = conn(*s) {
                    if let Ok(k) = key.materialise(py) {
                        if let Err(e) = c.call_method1("get", (&k,)) {
                            allowed.check(py, &e)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn to_python(&self) -> String {
        let c = |s: &u8| format!("slots[{}]", slot(*s));
        let guard = |s: &u8, body: String| {
            format!(
                "if {} is not None:\n    {}",
                c(s),
                body.replace('\n', "\n    ")
            )
        };
        match self {
            HandleOp::Connect { slot: s, file } => format!(
                "{} = native.connect(os.path.join(_TMP, {:?}), timeout=0)",
                c(s),
                file_name(*file)
            ),
            HandleOp::Put { slot: s, key, value } => guard(s, format!("{}.put({}, {})", c(s), key.source(), py_bytes(value))),
            HandleOp::Get { slot: s, key } => guard(s, format!("print({}.get({}))", c(s), key.source())),
            HandleOp::Delete { slot: s, key } => guard(s, format!("{}.delete({})", c(s), key.source())),
            HandleOp::Len { slot: s } => guard(s, format!("print(len({}))", c(s))),
            HandleOp::Items { slot: s, take, mutate_at } => guard(
                s,
                format!(
                    "_it = {}.items()\nfor _i in range({}):\n    if _i == {:?}:\n        {}.put(b'kz', b'm')\n    if next(_it, None) is None:\n        break",
                    c(s),
                    u16::from(*take) + 1,
                    mutate_at.map(i64::from).unwrap_or(-1),
                    c(s)
                ),
            ),
            HandleOp::Flush { slot: s } => guard(s, format!("{}.flush()", c(s))),
            HandleOp::Stats { slot: s } => guard(s, format!("print({}.stats())", c(s))),
            HandleOp::Close { slot: s } => guard(s, format!("{}.close()", c(s))),
            HandleOp::Drop { slot: s } => format!("{} = None", c(s)),
            HandleOp::Gc => "gc.collect()".into(),
            HandleOp::HostilePut { slot: s, key, value } => {
                guard(s, format!("{}.put({}, {})", c(s), key.to_python_source(), value.to_python_source()))
            }
            HandleOp::HostileGet { slot: s, key } => guard(s, format!("{}.get({})", c(s), key.to_python_source())),
        }
    }
}

fn is_closed(c: &Bound<'_, PyAny>) -> bool {
    c.getattr("closed")
        .and_then(|v| v.extract())
        .unwrap_or(true)
}

/// On a closed connection every method raises InvalidStateError; on an open one, none of the
/// fixed-shape ops may fail at all.
fn expect_closed(
    py: Python<'_>,
    c: &Bound<'_, PyAny>,
    e: PyErr,
    allowed: &AllowedExceptions,
) -> Result<(), OracleFailure> {
    allowed.check(py, &e)?;
    let invalid = py
        .import("native")
        .and_then(|n| n.getattr("InvalidStateError"))
        .map(|t| e.is_instance(py, &t));
    if is_closed(c) && invalid.unwrap_or(false) {
        Ok(())
    } else {
        Err(py_failure(py, "handle state", e))
    }
}

/// After a hostile put that succeeded (a valid bytes-like key the generator made), re-read the file's
/// model from the connection itself, then keep checking from there.
fn resync<'py>(
    py: Python<'py>,
    st: &mut HandleState<'py>,
    c: &Bound<'py, PyAny>,
) -> Result<(), OracleFailure> {
    let file = st
        .slots
        .iter()
        .flatten()
        .find(|(x, _)| x.is(c))
        .map(|(_, f)| *f)
        .unwrap_or(false);
    let items: Vec<(Vec<u8>, Vec<u8>)> = c
        .call_method0("items")
        .and_then(|it| py.import("builtins")?.getattr("list")?.call1((it,)))
        .and_then(|l| l.extract())
        .map_err(|e| py_failure(py, "resync", e))?;
    st.model[file as usize] = items.into_iter().collect();
    Ok(())
}

#[derive(Arbitrary, Debug, Clone)]
pub struct HandlesInput {
    pub ops: Vec<HandleOp>,
}

impl Scenario for HandlesInput {
    type State<'py> = ();

    fn run<'py>(&self, py: Python<'py>, _: &mut ()) -> Result<(), OracleFailure> {
        let allowed = Self::allowed();
        with_ledger(py, |py| {
            let mut st = HandleState {
                scratch: Scratch::new(),
                slots: vec![None; SLOTS],
                model: Default::default(),
            };
            for (i, op) in self.ops.iter().take(48).enumerate() {
                op.apply(py, &mut st, &allowed)
                    .map_err(|f| f.context(format_args!("op #{i} {op:?}")))?;
            }
            // Reopen both files from disk: the model must survive a close.
            for (_, c) in st.slots.iter().flatten().map(|(c, f)| (f, c)) {
                let _ = c.call_method0("close");
            }
            st.slots.iter_mut().for_each(|s| *s = None);
            let native = py
                .import("native")
                .map_err(|e| py_failure(py, "import", e))?;
            for file in [false, true] {
                let path = st.scratch.path(file_name(file));
                if !std::path::Path::new(&path).exists() {
                    continue;
                }
                let c = native
                    .call_method1("connect", (path,))
                    .map_err(|e| py_failure(py, "reopen", e))?;
                let items: Vec<(Vec<u8>, Vec<u8>)> = py
                    .import("builtins")
                    .and_then(|b| b.getattr("list")?.call1((c.call_method0("items")?,)))
                    .and_then(|l| l.extract())
                    .map_err(|e| py_failure(py, "reopen items", e))?;
                let _ = c.call_method0("close");
                let got: BTreeMap<_, _> = items.into_iter().collect();
                if got != st.model[file as usize] {
                    return Err(mismatch(format!(
                        "after reopen {}: {got:?} != model {:?}",
                        file_name(file),
                        st.model[file as usize]
                    )));
                }
            }
            Ok(())
        })
    }

    fn repro(&self, script: ReproScript) -> ReproScript {
        let script = script.step(format!("slots = [None] * {SLOTS}"));
        self.ops
            .iter()
            .take(48)
            .fold(script, |s, op| s.step(op.to_python()))
            .step("slots = None\ngc.collect()")
    }
}

impl HandlesInput {
    /// The exceptions this target's inputs may raise (documented ones and hostile values' own).
    pub fn allowed() -> AllowedExceptions {
        allowed(&[
            "KeyError",
            "native.InvalidStateError",
            "native.TimeoutError",
        ])
    }
}

/// The `handles` fuzz target (`fuzz_targets/handles.rs`).
pub static TARGET: std::sync::LazyLock<ffi_harness::FuzzTarget> =
    std::sync::LazyLock::new(|| crate::target("handles", &HandlesInput::allowed()));
