//! The ops of the `handles` target: one function per kind (each with its model checks), and each
//! op's Python spelling for repro.py.

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use ffi_harness::{AllowedExceptions, OracleFailure, PyValue};
use native_testkit::is_native_error;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::key::KeyArg;
use super::state::{expect_closed, file_name, is_closed, mismatch, slot, HandleState, KeptIter};
use crate::{py_bytes, py_failure};

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
    /// `kept[it] = slots[slot].items()`: an iterator that outlives the ops after it (writes,
    /// close, dropping the connection).
    KeepItems {
        slot: u8,
        it: u8,
    },
    /// `next(kept[it])`, whatever happened to its connection and store since.
    NextKept {
        it: u8,
    },
}

impl HandleOp {
    pub(super) fn apply<'py>(
        &self,
        py: Python<'py>,
        st: &mut HandleState<'py>,
        allowed: &AllowedExceptions,
    ) -> Result<(), OracleFailure> {
        let native =
            ffi_harness::imported!(py, "native").map_err(|e| py_failure(py, "import", e))?;
        let s = match self {
            HandleOp::Connect { slot: s, file } => {
                return connect(py, native, st, allowed, *s, *file)
            }
            HandleOp::Drop { slot: s } => {
                st.slots[slot(*s)] = None;
                return Ok(());
            }
            HandleOp::NextKept { it } => return next_kept(py, st, *it),
            HandleOp::Gc => {
                return ffi_harness::imported!(py, "gc")
                    .and_then(|gc| gc.call_method0("collect"))
                    .map(drop)
                    .map_err(|e| py_failure(py, "gc", e))
            }
            HandleOp::Put { slot: s, .. }
            | HandleOp::Get { slot: s, .. }
            | HandleOp::Delete { slot: s, .. }
            | HandleOp::Len { slot: s }
            | HandleOp::Items { slot: s, .. }
            | HandleOp::Flush { slot: s }
            | HandleOp::Stats { slot: s }
            | HandleOp::Close { slot: s }
            | HandleOp::HostilePut { slot: s, .. }
            | HandleOp::HostileGet { slot: s, .. }
            | HandleOp::KeepItems { slot: s, .. } => *s,
        };
        // Every other op is on the connection in a slot: nothing to do on an empty one.
        let Some((c, file)) = st.conn(s) else {
            return Ok(());
        };
        let on = OnConn {
            py,
            c,
            f: usize::from(file),
            allowed,
        };
        match self {
            HandleOp::Put { key, value, .. } => on.put(st, *key, value),
            HandleOp::Get { key, .. } => on.get(st, *key),
            HandleOp::Delete { key, .. } => on.delete(st, *key),
            HandleOp::Len { .. } => on.len(st),
            HandleOp::Items {
                take, mutate_at, ..
            } => on.items(st, *take, *mutate_at),
            HandleOp::Flush { .. } => on.flush_or_stats(st, "flush"),
            HandleOp::Stats { .. } => on.flush_or_stats(st, "stats"),
            HandleOp::Close { .. } => on.close(),
            HandleOp::HostilePut { key, value, .. } => on.hostile_put(st, key, value),
            HandleOp::HostileGet { key, .. } => on.hostile_get(key),
            HandleOp::KeepItems { it, .. } => on.keep_items(st, *it),
            HandleOp::Connect { .. }
            | HandleOp::Drop { .. }
            | HandleOp::Gc
            | HandleOp::NextKept { .. } => unreachable!(),
        }
    }

    /// The op as one call of repro.py's model (fuzz/src/handles_repro.py), which makes the same
    /// native call and checks its outcome the way [`HandleOp::apply`] does.
    pub(super) fn to_python(&self) -> String {
        let key = |k: &KeyArg| format!("{}, {}", k.source(), py_bytes(&k.bytes()));
        match self {
            HandleOp::Connect { slot: s, file } => {
                format!("_h.connect({}, {})", slot(*s), u8::from(*file))
            }
            HandleOp::Put {
                slot: s,
                key: k,
                value,
            } => {
                format!("_h.put({}, {}, {})", slot(*s), key(k), py_bytes(value))
            }
            HandleOp::Get { slot: s, key: k } => format!("_h.get({}, {})", slot(*s), key(k)),
            HandleOp::Delete { slot: s, key: k } => format!("_h.delete({}, {})", slot(*s), key(k)),
            HandleOp::Len { slot: s } => format!("_h.len({})", slot(*s)),
            HandleOp::Items {
                slot: s,
                take,
                mutate_at,
            } => format!(
                "_h.items({}, {take}, {})",
                slot(*s),
                mutate_at.map_or("None".to_string(), |m| m.to_string())
            ),
            HandleOp::Flush { slot: s } => format!("_h.flush({})", slot(*s)),
            HandleOp::Stats { slot: s } => format!("_h.stats({})", slot(*s)),
            HandleOp::Close { slot: s } => format!("_h.close({})", slot(*s)),
            HandleOp::Drop { slot: s } => format!("_h.drop({})", slot(*s)),
            HandleOp::Gc => "_h.gc()".into(),
            HandleOp::HostilePut {
                slot: s,
                key,
                value,
            } => format!(
                "_h.hostile_put({}, {}, {})",
                slot(*s),
                key.to_python_source(),
                value.to_python_source()
            ),
            HandleOp::HostileGet { slot: s, key } => {
                format!("_h.hostile_get({}, {})", slot(*s), key.to_python_source())
            }
            HandleOp::KeepItems { slot: s, it } => {
                format!("_h.keep_items({}, {})", slot(*s), slot(*it))
            }
            HandleOp::NextKept { it } => format!("_h.next_kept({})", slot(*it)),
        }
    }
}

/// A second connection to a file that is open elsewhere must fail (TimeoutError, timeout=0), and a
/// connection to a free file must succeed.
fn connect<'py>(
    py: Python<'py>,
    native: &Bound<'py, PyModule>,
    st: &mut HandleState<'py>,
    allowed: &AllowedExceptions,
    s: u8,
    file: bool,
) -> Result<(), OracleFailure> {
    let path = st.scratch.path(file_name(file));
    let kw = crate::kwargs(
        py,
        &[("timeout", 0i32.into_pyobject(py).unwrap().into_any())],
    )
    .unwrap();
    let opened_elsewhere = st.opened(file);
    match native.call_method("connect", (path,), Some(&kw)) {
        Ok(c) => {
            if opened_elsewhere {
                return Err(mismatch(
                    "a second connection to an open store succeeded".into(),
                ));
            }
            st.slots[slot(s)] = Some((c, file));
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
    Ok(())
}

/// An op on the connection in a slot: the connection, the index of its file's model, and the
/// exceptions allowed.
struct OnConn<'a, 'py> {
    py: Python<'py>,
    c: Bound<'py, PyAny>,
    f: usize,
    allowed: &'a AllowedExceptions,
}

impl<'py> OnConn<'_, 'py> {
    /// An exception from a fixed-shape op: only InvalidStateError on a closed connection.
    fn closed(&self, e: PyErr) -> Result<(), OracleFailure> {
        expect_closed(self.py, &self.c, e, self.allowed)
    }

    fn key(&self, key: KeyArg) -> Result<Bound<'py, PyAny>, OracleFailure> {
        key.materialise(self.py)
            .map_err(|e| py_failure(self.py, "key", e))
    }

    fn put(
        &self,
        st: &mut HandleState<'py>,
        key: KeyArg,
        value: &[u8],
    ) -> Result<(), OracleFailure> {
        let (py, c, f) = (self.py, &self.c, self.f);
        match c.call_method1("put", (self.key(key)?, PyBytes::new(py, value))) {
            Ok(_) => {
                st.model[f].insert(key.bytes(), value.to_vec());
                st.writes[f] += 1;
            }
            Err(e) => self.closed(e)?,
        }
        Ok(())
    }

    fn get(&self, st: &mut HandleState<'py>, key: KeyArg) -> Result<(), OracleFailure> {
        let (py, c, f) = (self.py, &self.c, self.f);
        let k = self.key(key)?;
        let want = st.model[f].get(&key.bytes());
        match c.call_method1("get", (k,)) {
            Ok(v) => {
                let got: Vec<u8> = v.extract().map_err(|e| py_failure(py, "get result", e))?;
                if want != Some(&got) {
                    return Err(mismatch(format!(
                        "get({:?}) = {got:?}, model has {want:?}",
                        key.bytes()
                    )));
                }
            }
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyError>(py) && !is_closed(c) => {
                if want.is_some() {
                    return Err(mismatch(format!(
                        "get({:?}) raised KeyError, model has {want:?}",
                        key.bytes()
                    )));
                }
            }
            Err(e) => self.closed(e)?,
        }
        Ok(())
    }

    fn delete(&self, st: &mut HandleState<'py>, key: KeyArg) -> Result<(), OracleFailure> {
        let (py, c, f) = (self.py, &self.c, self.f);
        let k = self.key(key)?;
        let had = st.model[f].contains_key(&key.bytes());
        match c.call_method1("delete", (k,)) {
            Ok(_) if had => {
                st.model[f].remove(&key.bytes());
                st.writes[f] += 1;
            }
            Ok(_) => return Err(mismatch("delete of an absent key succeeded".into())),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyError>(py) && !is_closed(c) => {
                if had {
                    return Err(mismatch("delete raised KeyError for a present key".into()));
                }
            }
            Err(e) => self.closed(e)?,
        }
        Ok(())
    }

    fn len(&self, st: &HandleState<'py>) -> Result<(), OracleFailure> {
        let model = &st.model[self.f];
        match self.c.len() {
            Ok(n) if n != model.len() => {
                Err(mismatch(format!("len = {n}, model has {}", model.len())))
            }
            Ok(_) => Ok(()),
            Err(e) => self.closed(e),
        }
    }

    /// Iterate up to `take + 1` items, putting a key at `mutate_at`: items must equal the model,
    /// and after a mutation the iterator must stop with InvalidStateError, never yield another item.
    fn items(
        &self,
        st: &mut HandleState<'py>,
        take: u8,
        mutate_at: Option<u8>,
    ) -> Result<(), OracleFailure> {
        let (py, c, f) = (self.py, &self.c, self.f);
        let it = match c.call_method0("items") {
            Ok(it) => it,
            Err(e) => return self.closed(e),
        };
        let mut seen = BTreeMap::new();
        let mut mutated = false;
        for i in 0..=usize::from(take) {
            if mutate_at == Some(i as u8) && !mutated {
                let key = b"kz".to_vec();
                if c.call_method1("put", (PyBytes::new(py, &key), PyBytes::new(py, b"m")))
                    .is_ok()
                {
                    st.model[f].insert(key, b"m".to_vec());
                    st.writes[f] += 1;
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
                    if !mutated && seen != st.model[f] {
                        return Err(mismatch(format!(
                            "items() = {seen:?}, model = {:?}",
                            st.model[f]
                        )));
                    }
                    break;
                }
                Err(e) => {
                    if !(is_native_error(py, &e, "InvalidStateError") && mutated) {
                        return Err(py_failure(py, "items", e));
                    }
                    break;
                }
            }
        }
        Ok(())
    }

    /// `flush()` must succeed on an open connection; `stats().keys` must equal the model's size.
    fn flush_or_stats(&self, st: &HandleState<'py>, method: &str) -> Result<(), OracleFailure> {
        let model = &st.model[self.f];
        match self.c.call_method0(method) {
            Ok(r) if method == "stats" => {
                let keys: usize = r
                    .getattr("keys")
                    .and_then(|k| k.extract())
                    .map_err(|e| py_failure(self.py, "stats", e))?;
                if keys != model.len() {
                    return Err(mismatch(format!(
                        "stats().keys = {keys}, model has {}",
                        model.len()
                    )));
                }
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => self.closed(e),
        }
    }

    fn close(&self) -> Result<(), OracleFailure> {
        self.c
            .call_method0("close")
            .map_err(|e| py_failure(self.py, "close", e))?;
        if !is_closed(&self.c) {
            return Err(mismatch("closed is False after close()".into()));
        }
        Ok(())
    }

    fn hostile_put(
        &self,
        st: &mut HandleState<'py>,
        key: &PyValue,
        value: &PyValue,
    ) -> Result<(), OracleFailure> {
        let py = self.py;
        if let (Ok(k), Ok(v)) = (key.materialise(py), value.materialise(py)) {
            // Only documented refusals; hostile keys never reach the model (a valid bytes-like key
            // would, so the model is invalidated by re-reading it below).
            if let Err(e) = self.c.call_method1("put", (&k, &v)) {
                self.allowed.check(py, &e)?;
            } else {
                st.resync(py, &self.c)?;
            }
        }
        Ok(())
    }

    fn keep_items(&self, st: &mut HandleState<'py>, it: u8) -> Result<(), OracleFailure> {
        match self.c.call_method0("items") {
            Ok(iter) => {
                st.kept[slot(it)] = Some(KeptIter {
                    it: iter,
                    conn: self.c.clone(),
                    file: self.f,
                    writes_at_start: st.writes[self.f],
                    unseen: st.model[self.f].clone(),
                    done: false,
                });
                Ok(())
            }
            Err(e) => self.closed(e),
        }
    }

    fn hostile_get(&self, key: &PyValue) -> Result<(), OracleFailure> {
        if let Ok(k) = key.materialise(self.py) {
            if let Err(e) = self.c.call_method1("get", (&k,)) {
                self.allowed.check(self.py, &e)?;
            }
        }
        Ok(())
    }
}

/// `next()` on a kept iterator, against what its connection and store went through: on a closed
/// connection or after any write to its store it must raise InvalidStateError (a finished iterator
/// may keep saying StopIteration); otherwise it yields each item the store had when it was created,
/// once, and stops only when none is left.
fn next_kept<'py>(py: Python<'py>, st: &mut HandleState<'py>, it: u8) -> Result<(), OracleFailure> {
    let writes = st.writes;
    let Some(k) = st.kept[slot(it)].as_mut() else {
        return Ok(());
    };
    let invalid = is_closed(&k.conn) || writes[k.file] != k.writes_at_start;
    match k.it.call_method0("__next__") {
        Ok(item) => {
            if k.done || invalid {
                return Err(mismatch(format!(
                    "a kept iterator yielded {item} {}",
                    if k.done {
                        "after StopIteration"
                    } else {
                        "after its store was closed or written"
                    }
                )));
            }
            let (key, value): (Vec<u8>, Vec<u8>) =
                item.extract().map_err(|e| py_failure(py, "kept item", e))?;
            if k.unseen.remove(&key) != Some(value.clone()) {
                return Err(mismatch(format!(
                    "a kept iterator yielded ({key:?}, {value:?}): not an item of the store it was created on, or yielded twice"
                )));
            }
        }
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) => {
            if !k.done && !invalid && !k.unseen.is_empty() {
                return Err(mismatch(format!(
                    "a kept iterator stopped with {} item(s) never yielded: {:?}",
                    k.unseen.len(),
                    k.unseen
                )));
            }
            if !k.done && invalid {
                return Err(mismatch(
                    "a kept iterator said StopIteration, not InvalidStateError, after its store was closed or written"
                        .into(),
                ));
            }
            k.done = true;
        }
        Err(e) => {
            if !(invalid && !k.done && is_native_error(py, &e, "InvalidStateError")) {
                return Err(py_failure(py, "kept iterator", e));
            }
        }
    }
    Ok(())
}
