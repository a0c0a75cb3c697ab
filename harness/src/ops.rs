//! Operation sequences for stateful targets (a connection, a subscription...):
//! the user defines an op enum implementing [`Operation`]; [`OpSeq`] generates a
//! bounded sequence of them, replays it under the exception oracle, and prints
//! it as Python statements for `repro.py`.

use std::fmt::Debug;

use arbitrary::{Arbitrary, Unstructured};
use proptest::prelude::*;
use pyo3::prelude::*;

use crate::oracles::{AllowedExceptions, OracleFailure};

/// One step against a stateful Python object.
///
/// `apply` performs it from Rust; `to_python` prints the same step as Python
/// statement(s) over the names the repro's setup snippet defines (e.g. `conn`),
/// so a failing sequence replays in a standalone script.
///
/// ```
/// use arbitrary::Arbitrary;
/// use ffi_harness::{Operation, PyValue};
/// use pyo3::prelude::*;
///
/// #[derive(Arbitrary, Debug, Clone)]
/// enum ConnOp { Put(PyValue, PyValue), Get(PyValue), Close }
///
/// impl Operation for ConnOp {
///     type State = Py<PyAny>; // the connection object
///     fn apply(&self, py: Python<'_>, conn: &mut Py<PyAny>) -> PyResult<()> {
///         let conn = conn.bind(py);
///         match self {
///             ConnOp::Put(k, v) => conn.call_method1("put", (k.materialise(py)?, v.materialise(py)?))?,
///             ConnOp::Get(k) => conn.call_method1("get", (k.materialise(py)?,))?,
///             ConnOp::Close => conn.call_method0("close")?,
///         };
///         Ok(())
///     }
///     fn to_python(&self) -> String {
///         match self {
///             ConnOp::Put(k, v) => format!("conn.put({}, {})", k.to_python_source(), v.to_python_source()),
///             ConnOp::Get(k) => format!("conn.get({})", k.to_python_source()),
///             ConnOp::Close => "conn.close()".to_owned(),
///         }
///     }
/// }
/// ```
pub trait Operation: for<'a> Arbitrary<'a> + Debug + Clone {
    /// What the ops act on (created by the user before replay).
    type State;

    /// Perform the op. An `Err` is judged by the exception oracle.
    fn apply(&self, py: Python<'_>, state: &mut Self::State) -> PyResult<()>;

    /// The op as Python statement(s); may span several lines.
    fn to_python(&self) -> String;
}

/// A bounded sequence of ops: what a stateful fuzz target or property test takes.
#[derive(Debug, Clone, PartialEq)]
pub struct OpSeq<O> {
    /// The ops, in order.
    pub ops: Vec<O>,
}

impl<O> OpSeq<O> {
    /// Longest sequence the `Arbitrary` impl generates: long enough to reach deep
    /// states, short enough that a crash input stays readable.
    pub const MAX_LEN: usize = 64;

    /// A sequence of the given ops.
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

impl<O: Operation> OpSeq<O> {
    /// Apply every op in order; an exception that `allowed` accepts lets the
    /// sequence continue (the binding refused the op, as documented), anything else
    /// stops it with a failure naming the op.
    pub fn run(
        &self,
        py: Python<'_>,
        state: &mut O::State,
        allowed: &AllowedExceptions,
    ) -> Result<(), OracleFailure> {
        for (index, op) in self.ops.iter().enumerate() {
            let result = op.apply(py, state);
            allowed
                .check_result(py, result)
                .map_err(|failure| failure.context(format_args!("op #{index} {op:?}")))?;
        }
        Ok(())
    }

    /// Each op as Python statement(s), in order.
    pub fn to_python(&self) -> Vec<String> {
        self.ops.iter().map(Operation::to_python).collect()
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
