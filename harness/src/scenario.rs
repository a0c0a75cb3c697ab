//! The one abstraction for work under the oracles: a [`Scenario`]. A whole fuzz input is a scenario
//! over no state (`State = ()`); one step of a stateful sequence (a put on a connection, a `next()` on
//! an iterator) is a scenario over the objects the steps share; [`OpSeq`] makes a sequence of steps a
//! scenario again. Every scenario runs from Rust under the oracles and prints itself as Python for a
//! standalone `repro.py`, so what the fuzzer or a property test ran is what the reproducer replays.

use std::fmt::Debug;

use arbitrary::{Arbitrary, Unstructured};
use proptest::prelude::*;
use pyo3::prelude::*;

use crate::oracles::OracleFailure;
use crate::repro::ReproScript;

/// Work that runs under the oracles and replays as Python.
///
/// ```
/// use arbitrary::Arbitrary;
/// use ffi_harness::{AllowedExceptions, OracleFailure, PyValue, ReproScript, Scenario};
/// use pyo3::prelude::*;
///
/// #[derive(Arbitrary, Debug, Clone)]
/// enum ConnOp { Put(PyValue, PyValue), Get(PyValue), Close }
///
/// impl ConnOp {
///     fn call<'py>(&self, py: Python<'py>, conn: &Bound<'py, PyAny>) -> PyResult<()> {
///         match self {
///             ConnOp::Put(k, v) => conn.call_method1("put", (k.materialise(py)?, v.materialise(py)?))?,
///             ConnOp::Get(k) => conn.call_method1("get", (k.materialise(py)?,))?,
///             ConnOp::Close => conn.call_method0("close")?,
///         };
///         Ok(())
///     }
/// }
///
/// impl Scenario for ConnOp {
///     // The connection, borrowed for the duration of one `Python::attach`.
///     type State<'py> = Bound<'py, PyAny>;
///     fn run<'py>(&self, py: Python<'py>, conn: &mut Bound<'py, PyAny>) -> Result<(), OracleFailure> {
///         // A documented refusal is fine; anything else is a finding.
///         AllowedExceptions::new(["TypeError", "ValueError"]).check_result(py, self.call(py, conn)).map(drop)
///     }
///     fn repro(&self, script: ReproScript) -> ReproScript {
///         script.step(match self {
///             ConnOp::Put(k, v) => format!("conn.put({}, {})", k.to_python_source(), v.to_python_source()),
///             ConnOp::Get(k) => format!("conn.get({})", k.to_python_source()),
///             ConnOp::Close => "conn.close()".to_owned(),
///         })
///     }
/// }
/// ```
pub trait Scenario: Debug {
    /// What it acts on: `()` for a self-contained input; for a step of a sequence, the objects the
    /// steps share (a connection, a pool of iterators...). It may borrow the interpreter (`'py`).
    type State<'py>;

    /// Perform it. `Err` is an oracle's verdict (an undocumented exception, a wrong result, a leak).
    fn run<'py>(&self, py: Python<'py>, state: &mut Self::State<'py>) -> Result<(), OracleFailure>;

    /// Add the same work to a reproducer, as Python (set-up lines, then steps).
    fn repro(&self, script: ReproScript) -> ReproScript;
}

/// A bounded sequence of steps: what a stateful fuzz target or property test takes.
#[derive(Debug, Clone, PartialEq)]
pub struct OpSeq<O> {
    /// The steps, in order.
    pub ops: Vec<O>,
}

impl<O> OpSeq<O> {
    /// Longest sequence the `Arbitrary` impl generates: long enough to reach deep
    /// states, short enough that a crash input stays readable.
    pub const MAX_LEN: usize = 64;

    /// A sequence of the given steps.
    pub fn new(ops: Vec<O>) -> Self {
        OpSeq { ops }
    }
}

impl<'a, O: Arbitrary<'a>> Arbitrary<'a> for OpSeq<O> {
    /// "Another op?" flag before each op: running out of fuzzer bytes ends the
    /// sequence, and mutating one flag grows or cuts it (as `arbitrary_take_rest_iter`).
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut ops = Vec::new();
        while ops.len() < Self::MAX_LEN && !u.is_empty() && u.arbitrary::<bool>()? {
            ops.push(O::arbitrary(u)?);
        }
        Ok(OpSeq { ops })
    }
}

/// Every step in order, on the same state; the first failure stops the sequence and names its step.
impl<O: Scenario> Scenario for OpSeq<O> {
    type State<'py> = O::State<'py>;

    fn run<'py>(&self, py: Python<'py>, state: &mut Self::State<'py>) -> Result<(), OracleFailure> {
        for (index, op) in self.ops.iter().enumerate() {
            op.run(py, state)
                .map_err(|failure| failure.context(format_args!("op #{index} {op:?}")))?;
        }
        Ok(())
    }

    fn repro(&self, script: ReproScript) -> ReproScript {
        self.ops.iter().fold(script, |script, op| op.repro(script))
    }
}

/// A proptest strategy for sequences of up to `max_len` ops drawn from `op`
/// (shrinks by dropping ops, then by shrinking each op).
pub fn opseq_strategy<O, S>(op: S, max_len: usize) -> impl Strategy<Value = OpSeq<O>>
where
    O: Debug + Clone,
    S: Strategy<Value = O>,
{
    proptest::collection::vec(op, 0..=max_len).prop_map(OpSeq::new)
}
