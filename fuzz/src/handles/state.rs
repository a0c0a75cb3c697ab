//! Per-input state of the `handles` target (connection slots, a dict model per store file) and the
//! checks every op shares: the connection's state, the model after a hostile put, the final reopen.

use std::collections::BTreeMap;

use ffi_harness::{AllowedExceptions, OracleFailure};
use native_testkit::is_native_error;
use pyo3::prelude::*;

use crate::{py_failure, Scratch};

pub(super) const SLOTS: usize = 4;

/// A connection in a slot, and which of the two store files it opened.
pub(super) type Slot<'py> = Option<(Bound<'py, PyAny>, bool)>;

/// An iterator kept across ops (`KeepItems` .. `NextKept`), with what it may still yield.
pub(super) struct KeptIter<'py> {
    pub(super) it: Bound<'py, PyAny>,
    /// The connection it iterates (it keeps it alive, even after the slot drops it).
    pub(super) conn: Bound<'py, PyAny>,
    pub(super) file: usize,
    /// `writes[file]` when it was created: any write since then invalidates it.
    pub(super) writes_at_start: u64,
    /// The store's items when it was created, minus those it has yielded.
    pub(super) unseen: BTreeMap<Vec<u8>, Vec<u8>>,
    /// It has said StopIteration.
    pub(super) done: bool,
}

/// Per-input state: the connection slots, a dict model per file, how many writes each file has
/// seen, and the kept iterators.
pub struct HandleState<'py> {
    pub(super) scratch: Scratch,
    pub(super) slots: Vec<Slot<'py>>,
    pub(super) model: [BTreeMap<Vec<u8>, Vec<u8>>; 2],
    pub(super) writes: [u64; 2],
    pub(super) kept: Vec<Option<KeptIter<'py>>>,
}

pub(super) fn slot(s: u8) -> usize {
    usize::from(s) % SLOTS
}

pub(super) fn file_name(file: bool) -> &'static str {
    if file {
        "b.db"
    } else {
        "a.db"
    }
}

pub(super) fn mismatch(what: String) -> OracleFailure {
    OracleFailure::new("model", what)
}

impl<'py> HandleState<'py> {
    pub(super) fn new() -> Self {
        HandleState {
            scratch: Scratch::new(),
            slots: vec![None; SLOTS],
            model: Default::default(),
            writes: [0; 2],
            kept: (0..SLOTS).map(|_| None).collect(),
        }
    }

    /// Is `file` open on any connection the input still holds (in a slot or kept by an iterator)?
    pub(super) fn opened(&self, file: bool) -> bool {
        let kept = self.kept.iter().flatten().map(|k| (&k.conn, k.file == 1));
        let slots = self.slots.iter().flatten().map(|(c, f)| (c, *f));
        slots.chain(kept).any(|(c, f)| f == file && !is_closed(c))
    }

    /// The connection in slot `s` (if any) and its file.
    pub(super) fn conn(&self, s: u8) -> Slot<'py> {
        self.slots[slot(s)].clone()
    }

    /// After a hostile put that succeeded (a valid bytes-like key the generator made), re-read the
    /// file's model from the connection itself, then keep checking from there.
    pub(super) fn resync(
        &mut self,
        py: Python<'py>,
        c: &Bound<'py, PyAny>,
    ) -> Result<(), OracleFailure> {
        let file = self
            .slots
            .iter()
            .flatten()
            .find(|(x, _)| x.is(c))
            .map(|(_, f)| *f)
            .unwrap_or(false);
        let items: Vec<(Vec<u8>, Vec<u8>)> = c
            .call_method0("items")
            .and_then(|it| ffi_harness::imported!(py, "builtins", "list")?.call1((it,)))
            .and_then(|l| l.extract())
            .map_err(|e| py_failure(py, "resync", e))?;
        self.model[file as usize] = items.into_iter().collect();
        self.writes[file as usize] += 1;
        Ok(())
    }

    /// Close every connection, then reopen both files from disk: the model must survive a close.
    pub(super) fn check_reopened(&mut self, py: Python<'py>) -> Result<(), OracleFailure> {
        // Kept iterators hold their connections open: release them first.
        self.kept.iter_mut().for_each(|k| *k = None);
        for (_, c) in self.slots.iter().flatten().map(|(c, f)| (f, c)) {
            let _ = c.call_method0("close");
        }
        self.slots.iter_mut().for_each(|s| *s = None);
        let native =
            ffi_harness::imported!(py, "native").map_err(|e| py_failure(py, "import", e))?;
        for file in [false, true] {
            let path = self.scratch.path(file_name(file));
            if !std::path::Path::new(&path).exists() {
                // Writes that succeeded went somewhere else (a connection opened another path).
                if !self.model[file as usize].is_empty() {
                    return Err(mismatch(format!(
                        "{} is missing, model has {:?}",
                        file_name(file),
                        self.model[file as usize]
                    )));
                }
                continue;
            }
            let c = native
                .call_method1("connect", (path,))
                .map_err(|e| py_failure(py, "reopen", e))?;
            let items: Vec<(Vec<u8>, Vec<u8>)> = ffi_harness::imported!(py, "builtins")
                .and_then(|b| b.getattr("list")?.call1((c.call_method0("items")?,)))
                .and_then(|l| l.extract())
                .map_err(|e| py_failure(py, "reopen items", e))?;
            let _ = c.call_method0("close");
            let got: BTreeMap<_, _> = items.into_iter().collect();
            if got != self.model[file as usize] {
                return Err(mismatch(format!(
                    "after reopen {}: {got:?} != model {:?}",
                    file_name(file),
                    self.model[file as usize]
                )));
            }
        }
        Ok(())
    }
}

pub(super) fn is_closed(c: &Bound<'_, PyAny>) -> bool {
    c.getattr("closed")
        .and_then(|v| v.extract())
        .unwrap_or(true)
}

/// On a closed connection every method raises InvalidStateError; on an open one, none of the
/// fixed-shape ops may fail at all.
pub(super) fn expect_closed(
    py: Python<'_>,
    c: &Bound<'_, PyAny>,
    e: PyErr,
    allowed: &AllowedExceptions,
) -> Result<(), OracleFailure> {
    allowed.check(py, &e)?;
    if is_closed(c) && is_native_error(py, &e, "InvalidStateError") {
        Ok(())
    } else {
        Err(py_failure(py, "handle state", e))
    }
}
