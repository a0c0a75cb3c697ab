//! `callbacks`: subscribe (callbacks that record, raise, or re-enter: get, put, close, cancel
//! themselves, subscribe, gc), cancel (also twice), puts/deletes from the main thread and from writer
//! threads racing cancels, close, dropping subscriptions and connections, reconnecting. Oracles: each
//! subscription gets the main thread's mutations made after it subscribed, in order, never an older one
//! (all of them if it stayed live and every event was delivered), and seq only grows; no
//! call after cancel/close returned, a cancel() or close() from inside a callback included (counted
//! once every notifier thread has exited, and a notifier that outlives its connection is one too), a
//! callback released once its cancel() returns and every callback object released after close + gc
//! (weakrefs die), callback errors go to sys.unraisablehook and are never SystemError/PanicException,
//! the native ledger returns to baseline, and (under ASan + PYTHONMALLOC=malloc) any refcount slip is
//! a use-after-free.

use arbitrary::Arbitrary;
use ffi_harness::{AllowedExceptions, OracleFailure, ReproScript};
use pyo3::prelude::*;
use pyo3::types::PyList;

use native_testkit::{is_native_error, PySource};

use crate::{allowed, py_bytes, py_failure, with_ledger, Scenario, Scratch};

/// The Python side of this target, shared with repro.py.
pub static HELPERS: PySource = PySource::new(
    include_str!("callbacks_helpers.py"),
    c"fuzz_callbacks.py",
    c"fuzz_callbacks",
);
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum CallbackKind {
    Record,
    Raise,
    ReenterGet,
    ReenterPut,
    ReenterClose,
    CancelSelf,
    Subscribe,
    Gc,
}

impl CallbackKind {
    fn name(self) -> &'static str {
        match self {
            CallbackKind::Record => "record",
            CallbackKind::Raise => "raise",
            CallbackKind::ReenterGet => "get",
            CallbackKind::ReenterPut => "put",
            CallbackKind::ReenterClose => "close",
            CallbackKind::CancelSelf => "cancel_self",
            CallbackKind::Subscribe => "subscribe",
            CallbackKind::Gc => "gc",
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum CallbackOp {
    Subscribe(CallbackKind),
    Cancel(u8),
    CancelTwice(u8),
    ExitContext(u8),
    Put(u8, Vec<u8>),
    Delete(u8),
    Writer(u8),
    Settle,
    Close,
    DropSub(u8),
    DropConnection,
    Reconnect,
    Gc,
}

struct State<'py> {
    scratch: Scratch,
    conn_ref: Bound<'py, PyList>,
    subs: Bound<'py, PyList>,
    boxes: Bound<'py, PyList>,
    weakrefs: Bound<'py, PyList>,
    threads: Bound<'py, PyList>,
    errors: Bound<'py, PyList>,
}

fn key(k: u8) -> Vec<u8> {
    vec![b'k', b'a' + k % 4]
}

impl CallbackOp {
    fn apply<'py>(
        &self,
        py: Python<'py>,
        st: &State<'py>,
        allowed: &AllowedExceptions,
    ) -> PyResult<()> {
        let h = HELPERS.module(py)?;
        let conn = st.conn_ref.get_item(0)?;
        let pick = |i: u8| -> PyResult<Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
            let n = st.subs.len();
            if n == 0 {
                return Ok(None);
            }
            let i = usize::from(i) % n;
            let sub = st.subs.get_item(i)?;
            // A dropped slot (DropSub) holds None: nothing to cancel there.
            Ok((!sub.is_none()).then(|| (sub, st.boxes.get_item(i).expect("boxes parallel subs"))))
        };
        let cancel = |sub: &Bound<'py, PyAny>, bx: &Bound<'py, PyAny>| -> PyResult<()> {
            sub.call_method0("cancel")?;
            // From here on, any call of this callback is a bug.
            bx.set_item("cancelled", true)
        };
        // ...and the wrapper must have let go of it (reported by finish, with the other problems).
        let released = |bx: &Bound<'py, PyAny>| -> PyResult<()> {
            h.call_method1("check_released", (bx, &st.errors)).map(drop)
        };
        let on_conn = |f: &dyn Fn(&Bound<'py, PyAny>) -> PyResult<()>| -> PyResult<()> {
            if conn.is_none() {
                return Ok(());
            }
            match f(&conn) {
                Err(e) if is_native_error(py, &e, "InvalidStateError") => Ok(()),
                other => other,
            }
        };
        match self {
            CallbackOp::Subscribe(kind) => on_conn(&|_| {
                let sub = h.call_method1(
                    "subscribe",
                    (&st.conn_ref, kind.name(), &st.boxes, &st.weakrefs),
                )?;
                st.subs.append(sub)
            })?,
            CallbackOp::Cancel(i) | CallbackOp::CancelTwice(i) | CallbackOp::ExitContext(i) => {
                if let Some((sub, bx)) = pick(*i)? {
                    match self {
                        CallbackOp::ExitContext(_) => {
                            sub.call_method1("__exit__", (py.None(), py.None(), py.None()))?;
                            bx.set_item("cancelled", true)?;
                        }
                        CallbackOp::CancelTwice(_) => {
                            cancel(&sub, &bx)?;
                            cancel(&sub, &bx)?;
                        }
                        _ => cancel(&sub, &bx)?,
                    }
                    released(&bx)?;
                }
            }
            // Through the helpers, which log each mutation for the delivery check.
            CallbackOp::Put(k, v) => on_conn(&|_| {
                h.call_method1("put", (&st.conn_ref, key(*k), v.as_slice()))
                    .map(drop)
            })?,
            CallbackOp::Delete(k) => {
                match on_conn(&|_| h.call_method1("delete", (&st.conn_ref, key(*k))).map(drop)) {
                    Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyError>(py) => {}
                    other => other?,
                }
            }
            CallbackOp::Writer(n) => on_conn(&|_| {
                let t =
                    h.call_method1("writer", (&st.conn_ref, u32::from(*n % 64) + 1, &st.errors))?;
                st.threads.append(t)
            })?,
            CallbackOp::Settle => {
                on_conn(&|_| h.call_method1("settle", (&st.conn_ref,)).map(drop))?
            }
            CallbackOp::Close => on_conn(&|c| {
                c.call_method0("close")?;
                // Closing cancels every subscription: no callback may run after this returns.
                for bx in st.boxes.iter() {
                    bx.set_item("cancelled", true)?;
                }
                Ok(())
            })?,
            CallbackOp::DropSub(i) => {
                if !st.subs.is_empty() {
                    // Dropping our reference to a Subscription does NOT cancel it (the connection owns
                    // the callback); the box stays live.
                    let i = usize::from(*i) % st.subs.len();
                    st.subs.set_item(i, py.None())?;
                }
            }
            CallbackOp::DropConnection | CallbackOp::Reconnect => {
                if !conn.is_none() {
                    st.conn_ref.set_item(0, py.None())?;
                    for t in st.threads.iter() {
                        t.call_method0("join")?;
                    }
                    drop(conn);
                    ffi_harness::imported!(py, "gc")?.call_method0("collect")?;
                    // Dropping the connection closes it (its subscriptions with it)... unless a live
                    // Subscription object or a writer still holds it: only then is it still open.
                    for bx in st.boxes.iter() {
                        bx.set_item("cancelled", true)?;
                    }
                }
                if matches!(self, CallbackOp::Reconnect) {
                    let c = ffi_harness::imported!(py, "native")?
                        .call_method1("connect", (st.scratch.path("cb.db"),))?;
                    st.conn_ref.set_item(0, c)?;
                    st.conn_ref.set_item(1, PyList::empty(py))?; // its own log of mutations
                }
            }
            CallbackOp::Gc => {
                ffi_harness::imported!(py, "gc")?.call_method0("collect")?;
            }
        }
        let _ = allowed;
        Ok(())
    }

    fn to_python(&self) -> String {
        match self {
            CallbackOp::Subscribe(kind) => format!(
                "if conn_ref[0] is not None:\n    subs.append(_cb.subscribe(conn_ref, {:?}, boxes, weakrefs))",
                kind.name()
            ),
            CallbackOp::Cancel(i) | CallbackOp::CancelTwice(i) | CallbackOp::ExitContext(i) => {
                let call = match self {
                    CallbackOp::ExitContext(_) => "_s.__exit__(None, None, None)",
                    CallbackOp::CancelTwice(_) => "_s.cancel(); _s.cancel()",
                    _ => "_s.cancel()",
                };
format!("if subs and subs[{i} % len(subs)] is not None:\n    _s = subs[{i} % len(subs)]\n    {call}\n    boxes[{i} % len(subs)]['cancelled'] = True\n    _cb.check_released(boxes[{i} % len(subs)], errors)")
            }
            CallbackOp::Put(k, v) => format!("if conn_ref[0] is not None:\n    _cb.put(conn_ref, {}, {})", py_bytes(&key(*k)), py_bytes(v)),
            CallbackOp::Delete(k) => format!(
                "if conn_ref[0] is not None:\n    try:\n        _cb.delete(conn_ref, {})\n    except KeyError:\n        pass",
                py_bytes(&key(*k))
            ),
            CallbackOp::Writer(n) => format!(
                "if conn_ref[0] is not None:\n    threads.append(_cb.writer(conn_ref, {}, errors))",
                u32::from(*n % 64) + 1
            ),
            CallbackOp::Settle => "if conn_ref[0] is not None:\n    _cb.settle(conn_ref)".into(),
            CallbackOp::Close => "if conn_ref[0] is not None:\n    conn_ref[0].close()\n    for _b in boxes: _b['cancelled'] = True".into(),
            CallbackOp::DropSub(i) => format!("if subs:\n    subs[{i} % len(subs)] = None"),
            CallbackOp::DropConnection | CallbackOp::Reconnect => {
                let mut s = String::from(
                    "if conn_ref[0] is not None:\n    conn_ref[0] = None\n    for _t in threads: _t.join()\n    gc.collect()\n    for _b in boxes: _b['cancelled'] = True",
                );
                if matches!(self, CallbackOp::Reconnect) {
                    s.push_str("\nconn_ref[0:2] = [native.connect(os.path.join(_TMP, 'cb.db')), []]");
                }
                s
            }
            CallbackOp::Gc => "gc.collect()".into(),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub struct CallbacksInput {
    pub ops: Vec<CallbackOp>,
}

impl Scenario for CallbacksInput {
    type State<'py> = ();

    fn run<'py>(&self, py: Python<'py>, _: &mut ()) -> Result<(), OracleFailure> {
        let allowed = Self::allowed();
        with_ledger(py, |py| {
            let h = HELPERS
                .module(py)
                .map_err(|e| py_failure(py, "helpers", e))?;
            let scratch = Scratch::new();
            let conn = ffi_harness::imported!(py, "native")
                .and_then(|n| n.call_method1("connect", (scratch.path("cb.db"),)))
                .map_err(|e| py_failure(py, "connect", e))?;
            let st = State {
                // The connection, and the log of its main-thread mutations (the helpers' put/delete).
                conn_ref: PyList::new(py, [conn, PyList::empty(py).into_any()]).unwrap(),
                scratch,
                subs: PyList::empty(py),
                boxes: PyList::empty(py),
                weakrefs: PyList::empty(py),
                threads: PyList::empty(py),
                errors: PyList::empty(py),
            };
            let mut outcome = Ok(());
            for (i, op) in self.ops.iter().take(32).enumerate() {
                if let Err(e) = op.apply(py, &st, &allowed) {
                    outcome = allowed
                        .check(py, &e)
                        .map_err(|f| f.context(format_args!("op #{i} {op:?}")));
                    if outcome.is_err() {
                        break;
                    }
                }
            }
            let problems: Vec<String> = h
                .call_method1(
                    "finish",
                    (
                        &st.conn_ref,
                        &st.subs,
                        &st.boxes,
                        &st.weakrefs,
                        &st.threads,
                        &st.errors,
                    ),
                )
                .and_then(|p| p.extract())
                .map_err(|e| py_failure(py, "finish", e))?;
            outcome?;
            if problems.is_empty() {
                Ok(())
            } else {
                Err(OracleFailure::new("callbacks", problems.join("; ")))
            }
        })
    }

    fn repro(&self, script: ReproScript) -> ReproScript {
        let script = script.setup(&HELPERS.embed_as("_cb"));
        let script = script.step(
            "conn_ref = [native.connect(os.path.join(_TMP, 'cb.db')), []]\nsubs, boxes, weakrefs, threads, errors = [], [], [], [], []",
        );
        self.ops
            .iter()
            .take(32)
            .fold(script, |s, op| s.step(op.to_python()))
            .step("_problems = _cb.finish(conn_ref, subs, boxes, weakrefs, threads, errors)\nassert not _problems, _problems")
    }
}

impl CallbacksInput {
    /// The exceptions this target's inputs may raise (documented ones and hostile values' own).
    pub fn allowed() -> AllowedExceptions {
        allowed(&["KeyError", "native.InvalidStateError"])
    }
}

/// The `callbacks` fuzz target (`fuzz_targets/callbacks.rs`).
pub static TARGET: std::sync::LazyLock<ffi_harness::FuzzTarget> =
    std::sync::LazyLock::new(|| crate::target("callbacks", &CallbacksInput::allowed()));
