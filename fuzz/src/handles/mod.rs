//! `handles`: stateful sequences over up to four connections to two store files: connect, put, get,
//! delete, len, items (with mutation mid-iteration), iterators kept across ops (next() after writes,
//! close, or the connection's last reference dropped), flush, stats, close, dropping references, gc,
//! hostile keys and values. Oracles: allowed exceptions only (InvalidStateError after close,
//! TimeoutError when a file is already open), a dict model of each file that every read must agree
//! with (also after reopening from disk), and the native ledger back at baseline at the end.

mod key;
mod ops;
mod state;

use arbitrary::Arbitrary;
use ffi_harness::{AllowedExceptions, OracleFailure, ReproScript};
use pyo3::prelude::*;

pub use key::KeyArg;
pub use ops::HandleOp;
pub use state::HandleState;
use state::SLOTS;

use crate::{allowed, with_ledger, Scenario};

/// The target's model and checks in Python, for repro.py.
const REPRO_MODEL: &str = include_str!("../handles_repro.py");

#[derive(Arbitrary, Debug, Clone)]
pub struct HandlesInput {
    pub ops: Vec<HandleOp>,
}

impl Scenario for HandlesInput {
    type State<'py> = ();

    fn run<'py>(&self, py: Python<'py>, _: &mut ()) -> Result<(), OracleFailure> {
        let allowed = Self::allowed();
        with_ledger(py, |py| {
            let mut st = HandleState::new();
            for (i, op) in self.ops.iter().take(48).enumerate() {
                op.apply(py, &mut st, &allowed)
                    .map_err(|f| f.context(format_args!("op #{i} {op:?}")))?;
            }
            st.check_reopened(py)
        })
    }
    /// Each op as a call of the model in handles_repro.py (the same checks as the Rust ops), then
    /// the reopen check: a repro of a model finding fails where the input did.
    fn repro(&self, script: ReproScript) -> ReproScript {
        let script = script
            .setup(REPRO_MODEL)
            .step(format!("_h = _Handles(_TMP, {SLOTS})"));
        self.ops
            .iter()
            .take(48)
            .fold(script, |s, op| s.step(op.to_python()))
            .step("_h.check_reopened()")
            .step("_h = None\ngc.collect()")
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
