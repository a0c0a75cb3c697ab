//! Handles: random op sequences on a Connection (with subscriptions and live iterators), ended by
//! `close()` or by dropping every reference, must bring libnative's ledger (live_handles,
//! live_subscriptions, live_blocks) back to its baseline after `gc.collect()`; `close()` is
//! idempotent; every use after close raises `native.InvalidStateError`.
//!
//! Built on ffi-harness `Scenario`/`OpSeq` (the abstraction the fuzz targets use too): each op is a
//! scenario over the shared `Handles`; one that sees a contract violation (a use after close that
//! succeeds, or raises anything but InvalidStateError) raises AssertionError, which its exception
//! oracle turns into a verdict that `OpSeq` reports with the op's index. Each case runs in a forked child:
//! a double close or a use-after-free is a failing, shrinkable case.

use arbitrary::Arbitrary;
use ffi_harness::{OpSeq, OracleFailure, ReproScript, Scenario, opseq_strategy};
use native_testkit::{PySource, Scratch, is_native_error, settled_ledger};
use proptest::prelude::*;
use proptests::{allowed, config, isolated, ledger_returns_to, regressions, with_python};
use pyo3::exceptions::{PyAssertionError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

const KEYS: u8 = 6;

fn key_bytes(k: u8) -> Vec<u8> {
    format!("key{}", k % KEYS).into_bytes()
}

/// One step on the connection and the objects hanging off it.
#[derive(Arbitrary, Debug, Clone)]
enum HandleOp {
    Put {
        key: u8,
        value: Vec<u8>,
    },
    Get(u8),
    Delete(u8),
    Contains(u8),
    Len,
    /// Creates an iterator (items or keys) and keeps it.
    Iterate {
        keys_only: bool,
    },
    /// Advances kept iterator `n % len` once.
    Next(u8),
    Flush,
    Stats,
    /// Subscribes a recorder; `cyclic` makes the callback reference the connection (a cycle that
    /// only gc can break, through Connection's `__traverse__`/`__clear__`).
    Subscribe {
        cyclic: bool,
    },
    /// Cancels kept subscription `n % len` (may already be cancelled: idempotent).
    Cancel(u8),
    /// Forgets kept subscription `n % len` without cancelling it.
    ForgetSub(u8),
    Close,
}

/// Python-side objects of one case.
struct Handles {
    conn: Option<Py<PyAny>>,
    closed: bool,
    subs: Vec<Py<PyAny>>,
    iters: Vec<Py<PyAny>>,
    factory: Py<PyAny>,
}

fn assertion(msg: String) -> PyErr {
    PyAssertionError::new_err(msg)
}

impl HandleOp {
    /// Whether the op uses the connection (so must raise InvalidStateError after close).
    fn uses_connection(&self) -> bool {
        !matches!(
            self,
            HandleOp::Close | HandleOp::Cancel(_) | HandleOp::ForgetSub(_) | HandleOp::Next(_)
        )
    }

    fn perform(&self, py: Python<'_>, h: &mut Handles) -> PyResult<()> {
        let Some(conn) = h.conn.as_ref().map(|c| c.bind(py).clone()) else {
            return Ok(());
        };
        match self {
            HandleOp::Put { key, value } => {
                conn.call_method1(
                    "put",
                    (PyBytes::new(py, &key_bytes(*key)), PyBytes::new(py, value)),
                )?;
            }
            HandleOp::Get(k) => match conn.call_method1("get", (PyBytes::new(py, &key_bytes(*k)),))
            {
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyError>(py) => {}
                other => {
                    other?;
                }
            },
            HandleOp::Delete(k) => {
                match conn.call_method1("delete", (PyBytes::new(py, &key_bytes(*k)),)) {
                    Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyError>(py) => {}
                    other => {
                        other?;
                    }
                }
            }
            HandleOp::Contains(k) => {
                conn.call_method1("__contains__", (PyBytes::new(py, &key_bytes(*k)),))?;
            }
            HandleOp::Len => {
                conn.len()?;
            }
            HandleOp::Iterate { keys_only } => {
                let it = conn.call_method0(if *keys_only { "keys" } else { "items" })?;
                h.iters.push(it.unbind());
            }
            HandleOp::Next(n) => {
                if h.iters.is_empty() {
                    return Ok(());
                }
                let it = h.iters[*n as usize % h.iters.len()].bind(py).clone();
                match it.call_method0("__next__") {
                    Ok(_) => {}
                    Err(e) if e.is_instance_of::<PyStopIteration>(py) => {}
                    // Mutated or closed since the iterator was made: documented.
                    Err(e) if is_native_error(py, &e, "InvalidStateError") => {}
                    Err(e) => return Err(e),
                }
            }
            HandleOp::Flush => {
                conn.call_method0("flush")?;
            }
            HandleOp::Stats => {
                conn.call_method0("stats")?;
            }
            HandleOp::Subscribe { cyclic } => {
                let cb = h
                    .factory
                    .bind(py)
                    .call1((if *cyclic { Some(&conn) } else { None },))?;
                let sub = conn.call_method1("subscribe", (cb,))?;
                h.subs.push(sub.unbind());
            }
            HandleOp::Cancel(n) => {
                if !h.subs.is_empty() {
                    let sub = h.subs[*n as usize % h.subs.len()].bind(py).clone();
                    sub.call_method0("cancel")?;
                    if sub.getattr("active")?.is_truthy()? {
                        return Err(assertion("subscription still active after cancel()".into()));
                    }
                }
            }
            HandleOp::ForgetSub(n) => {
                if !h.subs.is_empty() {
                    let i = *n as usize % h.subs.len();
                    h.subs.remove(i);
                }
            }
            HandleOp::Close => {
                conn.call_method0("close")?;
                h.closed = true;
                if !conn.getattr("closed")?.is_truthy()? {
                    return Err(assertion("`closed` is False after close()".into()));
                }
            }
        }
        Ok(())
    }
}

impl HandleOp {
    fn apply(&self, py: Python<'_>, h: &mut Handles) -> PyResult<()> {
        let was_closed = h.closed;
        let result = self.perform(py, h);
        if was_closed && self.uses_connection() {
            return match result {
                Ok(()) => Err(assertion(format!("{self:?} after close() succeeded"))),
                Err(e) if is_native_error(py, &e, "InvalidStateError") => Ok(()),
                Err(e) => Err(assertion(format!(
                    "{self:?} after close() raised {} instead of InvalidStateError",
                    native_testkit::describe(py, &e)
                ))),
            };
        }
        result
    }
}

impl Scenario for HandleOp {
    type State<'py> = Handles;

    fn run<'py>(&self, py: Python<'py>, h: &mut Handles) -> Result<(), OracleFailure> {
        allowed().check_result(py, self.apply(py, h)).map(drop)
    }

    fn repro(&self, script: ReproScript) -> ReproScript {
        script.step(self.to_python())
    }
}

impl HandleOp {
    fn to_python(&self) -> String {
        let k = |k: &u8| format!("b'key{}'", k % KEYS);
        match self {
            HandleOp::Put { key, value } => {
                format!("conn.put({}, {:?})", k(key), PyBytesLit(value))
            }
            HandleOp::Get(key) => format!("conn.get({})", k(key)),
            HandleOp::Delete(key) => format!("conn.delete({})", k(key)),
            HandleOp::Contains(key) => format!("{} in conn", k(key)),
            HandleOp::Len => "len(conn)".into(),
            HandleOp::Iterate { keys_only } => {
                format!(
                    "iters.append(conn.{}())",
                    if *keys_only { "keys" } else { "items" }
                )
            }
            HandleOp::Next(n) => format!("next(iters[{n} % len(iters)], None)"),
            HandleOp::Flush => "conn.flush()".into(),
            HandleOp::Stats => "conn.stats()".into(),
            HandleOp::Subscribe { cyclic } => format!(
                "subs.append(conn.subscribe(make_callback({})))",
                if *cyclic { "conn" } else { "None" }
            ),
            HandleOp::Cancel(n) => format!("subs[{n} % len(subs)].cancel()"),
            HandleOp::ForgetSub(n) => format!("subs.pop({n} % len(subs))"),
            HandleOp::Close => "conn.close()".into(),
        }
    }
}

/// Prints bytes as a Python literal.
struct PyBytesLit<'a>(&'a [u8]);

impl std::fmt::Debug for PyBytesLit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b'")?;
        for b in self.0 {
            write!(f, "\\x{b:02x}")?;
        }
        write!(f, "'")
    }
}

fn op_strategy() -> impl Strategy<Value = HandleOp> {
    prop_oneof![
        4 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..24))
            .prop_map(|(key, value)| HandleOp::Put { key, value }),
        2 => any::<u8>().prop_map(HandleOp::Get),
        2 => any::<u8>().prop_map(HandleOp::Delete),
        1 => any::<u8>().prop_map(HandleOp::Contains),
        1 => Just(HandleOp::Len),
        2 => any::<bool>().prop_map(|keys_only| HandleOp::Iterate { keys_only }),
        2 => any::<u8>().prop_map(HandleOp::Next),
        1 => Just(HandleOp::Flush),
        1 => Just(HandleOp::Stats),
        2 => any::<bool>().prop_map(|cyclic| HandleOp::Subscribe { cyclic }),
        1 => any::<u8>().prop_map(HandleOp::Cancel),
        1 => any::<u8>().prop_map(HandleOp::ForgetSub),
        1 => Just(HandleOp::Close),
    ]
}

/// How a case lets go of the connection.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// `close()` three times (idempotent), then drop everything.
    Close,
    /// Drop every reference without closing (dealloc, or gc for cycles, must close).
    Drop,
}

/// The callback factory, defined once in a module that outlives every case (a class collected
/// with a case's garbage would be cleared while a dying connection may still call its instances).
static CALLBACKS: PySource = PySource::new(
    include_str!("py/handles_callbacks.py"),
    c"proptests_handles_callbacks.py",
    c"proptests_handles_callbacks",
);

fn callback_factory(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    CALLBACKS.module(py)?.getattr("make_callback")
}

fn scenario(py: Python<'_>, ops: &OpSeq<HandleOp>, ending: Ending) -> Result<(), String> {
    let fail = |e: PyErr| native_testkit::describe(py, &e);
    let baseline = settled_ledger(py).map_err(fail)?;
    let dir = Scratch::new();
    {
        let conn = py
            .import("native")
            .and_then(|m| m.call_method1("connect", (dir.path("h.db"),)))
            .map_err(fail)?;
        let mut handles = Handles {
            conn: Some(conn.unbind()),
            closed: false,
            subs: Vec::new(),
            iters: Vec::new(),
            factory: callback_factory(py).map_err(fail)?.unbind(),
        };
        ops.run(py, &mut handles).map_err(|f| f.to_string())?;
        if let Ending::Close = ending {
            let conn = handles.conn.as_ref().unwrap().bind(py);
            for round in 0..3 {
                conn.call_method0("close")
                    .map_err(|e| format!("close() #{round} at the end raised: {}", fail(e)))?;
            }
            let use_after =
                conn.call_method1("put", (PyBytes::new(py, b"k"), PyBytes::new(py, b"v")));
            match use_after {
                Err(e) if is_native_error(py, &e, "InvalidStateError") => {}
                Err(e) => return Err(format!("put after close raised {}", fail(e))),
                Ok(_) => return Err("put after close succeeded".into()),
            }
        }
        drop(handles);
    }
    ledger_returns_to(py, &baseline).map_err(|f| format!("{f} (ending: {ending:?})"))
}

proptest! {
    #![proptest_config(config(128, regressions!("handles")))]

    #[test]
    fn any_op_sequence_returns_the_ledger_to_baseline(
        ops in opseq_strategy(op_strategy(), 24),
        close in any::<bool>(),
    ) {
        let ending = if close { Ending::Close } else { Ending::Drop };
        let result = with_python(|py| isolated(py, |py| scenario(py, &ops, ending)));
        prop_assert!(
            result.is_ok(),
            "{}\n-- as Python --\n{}",
            result.unwrap_err(),
            ops.ops.iter().map(HandleOp::to_python).collect::<Vec<_>>().join("\n")
        );
    }
}
