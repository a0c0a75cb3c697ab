//! Oracles: what "correct" means at the Python/C boundary, as small checks that
//! return `Result<(), OracleFailure>` with a message a human can act on.
//!
//! - [`RefcountSnapshot`]: a call leaves its arguments' refcounts as it found them;
//!   [`check_sole_owner`]: a returned object is owned by the caller alone.
//! - [`AllowedExceptions`]: only documented exception types escape; `SystemError`
//!   and PyO3's `PanicException` never do.
//! - [`LedgerOracle`]: user-supplied native counters return to baseline after a
//!   scenario and `gc.collect()`, polled until a deadline (teardown may be asynchronous).
//! - [`check_call`]: the first two wrapped around one call.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use pyo3::exceptions::PySystemError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyType};

/// A failed oracle: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OracleFailure {
    /// The oracle that failed (`"refcount"`, `"exception"`, `"ledger"`, `"leak-hunt"`, ...).
    pub oracle: &'static str,
    /// What went wrong, with the numbers.
    pub message: String,
}

impl OracleFailure {
    /// A failure of `oracle` because a step it needed raised `err` (formatted with its traceback).
    pub fn from_py(py: Python<'_>, oracle: &'static str, err: PyErr) -> Self {
        OracleFailure::new(oracle, format_exception(py, &err))
    }

    /// A failure of `oracle` with `message`.
    pub fn new(oracle: &'static str, message: impl Into<String>) -> Self {
        OracleFailure {
            oracle,
            message: message.into(),
        }
    }

    /// The same failure, with `context` (e.g. "op #3 Put { .. }") in front of the message.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for OracleFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} oracle] {}", self.oracle, self.message)
    }
}

impl std::error::Error for OracleFailure {}

/// The reference count of `obj`, including the reference `obj` itself holds.
pub fn refcount(obj: &Bound<'_, PyAny>) -> isize {
    // SAFETY: `obj` is a live, attached reference (the `Bound` proves the thread is
    // attached and keeps the object alive), so reading its refcount field is sound.
    unsafe { pyo3::ffi::Py_REFCNT(obj.as_ptr()) }
}

// ---------------------------------------------------------------------------
// Refcount neutrality.

/// Refcounts of chosen argument objects, taken before a call and compared after.
///
/// Track only objects nobody else references concurrently: fresh heap objects
/// (see [`crate::PyValue::is_fresh_heap_object`]). Shared objects such as `None`,
/// small ints, interned strings or the empty tuple see their counts move for
/// unrelated reasons (on 3.12+ many are immortal and never move at all).
#[derive(Debug, Default)]
pub struct RefcountSnapshot {
    tracked: Vec<(String, Py<PyAny>, isize)>,
}

impl RefcountSnapshot {
    /// An empty snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record `obj`'s current refcount under `label`. The snapshot holds one
    /// reference of its own, counted in both readings, so deltas are unaffected.
    pub fn track(&mut self, label: impl Into<String>, obj: &Bound<'_, PyAny>) {
        let held = obj.clone().unbind();
        let before = refcount(obj);
        self.tracked.push((label.into(), held, before));
    }

    /// Compare current refcounts with the recorded ones. Non-zero deltas are
    /// re-read after `gc.collect()` (a traceback or a cycle may still hold an
    /// argument briefly) and reported only if they persist.
    pub fn check(&self, py: Python<'_>) -> Result<(), OracleFailure> {
        if self.deltas(py).iter().all(|(_, delta)| *delta == 0) {
            return Ok(());
        }
        collect_garbage(py);
        let bad: Vec<String> = self
            .deltas(py)
            .into_iter()
            .filter(|(_, delta)| *delta != 0)
            .map(|(label, delta)| {
                let what = if delta > 0 { "leaked" } else { "over-released" };
                format!(
                    "{label}: refcount delta {delta:+} ({what} {} reference(s))",
                    delta.abs()
                )
            })
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(OracleFailure::new("refcount", bad.join("; ")))
        }
    }

    fn deltas(&self, py: Python<'_>) -> Vec<(&str, isize)> {
        self.tracked
            .iter()
            .map(|(label, obj, before)| (label.as_str(), refcount(obj.bind(py)) - before))
            .collect()
    }
}

/// Check that `obj`, just returned by a call, is referenced by the caller alone
/// (refcount 1: the `Bound` you hold). Only meaningful for objects the callee
/// promised to create afresh: a cached or shared result legitimately has more.
pub fn check_sole_owner(label: &str, obj: &Bound<'_, PyAny>) -> Result<(), OracleFailure> {
    let count = refcount(obj);
    if count == 1 {
        return Ok(());
    }
    // A cycle or a pending traceback may hold it briefly; look again after gc.
    collect_garbage(obj.py());
    match refcount(obj) {
        1 => Ok(()),
        count => Err(OracleFailure::new(
            "refcount",
            format!(
                "{label}: returned object has refcount {count}, expected 1 (the caller's): \
                 the callee kept {} extra reference(s)",
                count - 1
            ),
        )),
    }
}

fn collect_garbage(py: Python<'_>) {
    if let Ok(gc) = crate::imported!(py, "gc") {
        let _ = gc.call_method0("collect");
    }
}

// ---------------------------------------------------------------------------
// Exceptions.

/// The exception types a binding documents. Names are Python-side paths
/// (`"ValueError"`, `"native.Error"`), resolved when checked (builtins by name,
/// others by importing the module part), and printed as-is into `repro.py`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedExceptions {
    names: Vec<String>,
}

impl AllowedExceptions {
    /// Allow the named exception types (and their subclasses).
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AllowedExceptions {
            names: names.into_iter().map(Into::into).collect(),
        }
    }

    /// The configured names, as Python expressions.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Check one escaped exception. `SystemError` (a C function returned an error
    /// without setting one, or vice versa) and PyO3's `PanicException` (a Rust panic
    /// crossed the boundary) always fail, even if listed.
    pub fn check(&self, py: Python<'_>, err: &PyErr) -> Result<(), OracleFailure> {
        let never = if err.is_instance_of::<PySystemError>(py) {
            Some("SystemError always fails: the C side broke the error-indicator protocol")
        } else if is_panic_exception(py, err) {
            Some("PanicException always fails: a Rust panic crossed the boundary")
        } else {
            None
        };
        if let Some(why) = never {
            return Err(OracleFailure::new(
                "exception",
                format!("{why}\n{}", format_exception(py, err)),
            ));
        }
        for name in &self.names {
            let ty = resolve_type(py, name).map_err(|e| {
                OracleFailure::new(
                    "exception",
                    format!("allowed exception {name:?} does not name a type: {e}"),
                )
            })?;
            if err.is_instance(py, ty.as_any()) {
                return Ok(());
            }
        }
        Err(OracleFailure::new(
            "exception",
            format!(
                "undocumented exception escaped (allowed: {})\n{}",
                self.names.join(", "),
                format_exception(py, err)
            ),
        ))
    }

    /// Pass `Ok` through as `Some`, an allowed exception as `None`, and turn any
    /// other exception into a failure.
    pub fn check_result<T>(
        &self,
        py: Python<'_>,
        result: PyResult<T>,
    ) -> Result<Option<T>, OracleFailure> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(err) => self.check(py, &err).map(|()| None),
        }
    }
}

/// PyO3 creates one `pyo3_runtime.PanicException` type per compiled extension, so
/// compare by qualified name rather than against this crate's type object.
fn is_panic_exception(py: Python<'_>, err: &PyErr) -> bool {
    let ty = err.get_type(py);
    let name = ty.name().map(|n| n.to_string()).unwrap_or_default();
    let module = ty.module().map(|m| m.to_string()).unwrap_or_default();
    name == "PanicException" && module == "pyo3_runtime"
}

/// The type an allowed-exception name resolves to, looked up once per process: the check runs for
/// every exception of every input, and resolving a name imports its module (see [`crate::imported!`]
/// for what an import costs there). The lock is never held across a call into Python.
fn resolve_type<'py>(py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyType>> {
    static RESOLVED: Mutex<BTreeMap<String, Py<PyType>>> = Mutex::new(BTreeMap::new());
    let cached = RESOLVED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(path)
        .map(|ty| ty.clone_ref(py).into_bound(py));
    if let Some(ty) = cached {
        return Ok(ty);
    }
    let ty = resolve_type_uncached(py, path)?;
    RESOLVED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(path.to_owned(), ty.clone().unbind());
    Ok(ty)
}

fn resolve_type_uncached<'py>(py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyType>> {
    let obj = match path.rsplit_once('.') {
        None => py.import("builtins")?.getattr(path)?,
        // `_fh.X` is how reproducers spell the prelude's classes: resolve it the same way here.
        Some((crate::prelude::PRELUDE_ALIAS, attr)) => {
            crate::prelude::prelude(py)?.getattr(attr)?
        }
        Some((module, attr)) => py.import(module)?.getattr(attr)?,
    };
    Ok(obj.cast_into::<PyType>()?)
}

/// The exception with its traceback, as Python would print it.
pub fn format_exception(py: Python<'_>, err: &PyErr) -> String {
    let formatted = (|| -> PyResult<String> {
        // Pass the traceback explicitly: PyO3 keeps it beside the value.
        let lines = py.import("traceback")?.call_method1(
            "format_exception",
            (err.get_type(py), err.value(py), err.traceback(py)),
        )?;
        PyString::new(py, "")
            .call_method1("join", (lines,))?
            .extract()
    })();
    formatted.unwrap_or_else(|_| err.to_string())
}

// ---------------------------------------------------------------------------
// One call, two oracles.

/// Run `call` with refcount snapshots of `fresh_args` around it and the exception
/// oracle on its result. Returns what `call` returned (`None` if it raised an
/// allowed exception). Pass only arguments that are fresh heap objects.
///
/// Refcounts are compared after `call` returns, so its return value must not hold
/// Python references to the arguments: extract or inspect the result inside `call`
/// (e.g. with [`check_sole_owner`]) and return plain data. A Python result that
/// legitimately contains an argument (`[x]`, `x` itself) would read as a leak.
///
/// ```no_run
/// # use pyo3::prelude::*;
/// # use ffi_harness::{AllowedExceptions, PyValue, check_call};
/// # fn demo(py: Python<'_>, value: &PyValue) -> Result<(), ffi_harness::OracleFailure> {
/// let allowed = AllowedExceptions::new(["TypeError", "ValueError", "native.Error"]);
/// let checksum = py.import("native").unwrap().getattr("checksum").unwrap();
/// let arg = value.materialise(py).unwrap();
/// let fresh: Vec<_> = value.is_fresh_heap_object().then_some(("data", &arg)).into_iter().collect();
/// let sum: Option<u64> = check_call(py, &fresh, &allowed, || checksum.call1((&arg,))?.extract())?;
/// # Ok(()) }
/// ```
pub fn check_call<'py, T, F>(
    py: Python<'py>,
    fresh_args: &[(&str, &Bound<'py, PyAny>)],
    allowed: &AllowedExceptions,
    call: F,
) -> Result<Option<T>, OracleFailure>
where
    F: FnOnce() -> PyResult<T>,
{
    let mut snapshot = RefcountSnapshot::new();
    for (label, obj) in fresh_args {
        snapshot.track(*label, obj);
    }
    forget_answers(py)?;
    let result = call();
    // Check (and drop) any exception before reading refcounts: its traceback
    // holds the frames that hold the arguments.
    let returned = allowed.check_result(py, result)?;
    snapshot.check(py)?;
    check_answers_released(py)?;
    Ok(returned)
}

/// Empty the prelude's answers ledger: what hostile dunders handed out before the call about to be
/// judged is not that call's to release. [`check_call`] does this itself.
pub fn forget_answers(py: Python<'_>) -> Result<(), OracleFailure> {
    if let Some(ledger) = answers_ledger(py)
        && ledger.len().is_ok_and(|n| n > 0)
    {
        ledger
            .call_method0("clear")
            .map_err(|e| OracleFailure::from_py(py, "answers", e))?;
    }
    Ok(())
}

/// The prelude's answers ledger (a deque), once the prelude is loaded. Kept so the common case, an
/// empty ledger, costs a length check instead of two Python calls per judged call.
fn answers_ledger(py: Python<'_>) -> Option<&Bound<'_, PyAny>> {
    static LEDGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let prelude = crate::prelude::loaded(py)?;
    LEDGER
        .get_or_try_init(py, || prelude.getattr("_answers").map(Bound::unbind))
        .ok()
        .map(|ledger| ledger.bind(py))
}

/// The answers oracle: every object a hostile dunder handed to the code under test since
/// [`forget_answers`] (an `__index__` result, the str an `__fspath__` gave, a `__buffer__` view; see
/// `_handed_out` in the prelude) is released once the call has returned, on every path the conversion
/// took. The argument's own refcount cannot show this: the leaked object is the answer, not the argument.
/// [`check_call`] runs it after the refcount check; call it yourself after a call made outside
/// `check_call`, once any exception of it has been dropped.
pub fn check_answers_released(py: Python<'_>) -> Result<(), OracleFailure> {
    match answers_ledger(py) {
        Some(ledger) if ledger.len().is_ok_and(|n| n > 0) => {}
        _ => return Ok(()),
    }
    let Some(prelude) = crate::prelude::loaded(py) else {
        return Ok(());
    };
    let kept: Vec<String> = prelude
        .call_method0("answers_kept")
        .and_then(|kept| kept.extract())
        .map_err(|e| OracleFailure::from_py(py, "answers", e))?;
    if kept.is_empty() {
        Ok(())
    } else {
        Err(OracleFailure::new(
            "refcount",
            format!(
                "a hostile dunder's answer is still referenced after the call returned: {}",
                kept.join("; ")
            ),
        ))
    }
}

// ---------------------------------------------------------------------------
// Native ledger.

/// Named native counters (live handles, subscriptions, allocations, ...).
pub type Ledger = BTreeMap<String, i64>;

/// Checks that user-supplied native counters return to a baseline after a
/// scenario. The reader is any closure, e.g. one calling a debug export:
///
/// ```no_run
/// # use pyo3::prelude::*;
/// # use ffi_harness::{Ledger, LedgerOracle};
/// let mut ledger = LedgerOracle::new(|py: Python<'_>| -> PyResult<Ledger> {
///     py.import("native")?.call_method0("_debug_counters")?.extract()
/// });
/// ```
pub struct LedgerOracle<F> {
    read: F,
    /// How long counters may take to settle (a notifier thread may still be
    /// tearing down). Default 2 s.
    pub deadline: Duration,
    /// Pause between polls, with the GIL released. Default 10 ms.
    pub poll: Duration,
}

impl<F> LedgerOracle<F>
where
    F: FnMut(Python<'_>) -> PyResult<Ledger>,
{
    /// An oracle reading counters with `read`.
    pub fn new(read: F) -> Self {
        LedgerOracle {
            read,
            deadline: Duration::from_secs(2),
            poll: Duration::from_millis(10),
        }
    }

    /// The same oracle with another settling deadline.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Read the counters now.
    pub fn read(&mut self, py: Python<'_>) -> PyResult<Ledger> {
        (self.read)(py)
    }

    /// Poll `gc.collect()` + read until the counters equal `baseline` or the
    /// deadline passes; on failure report every counter that differs.
    pub fn check_returns_to(
        &mut self,
        py: Python<'_>,
        baseline: &Ledger,
    ) -> Result<(), OracleFailure> {
        let start = Instant::now();
        let mut first = true;
        loop {
            // Already balanced is the common case: a full collection only when it is not.
            if !std::mem::take(&mut first) {
                collect_garbage(py);
            }
            let now = self.read(py).map_err(|e| {
                OracleFailure::new("ledger", format!("reading the ledger failed: {e}"))
            })?;
            if &now == baseline {
                return Ok(());
            }
            if start.elapsed() >= self.deadline {
                return Err(OracleFailure::new(
                    "ledger",
                    ledger_diff(baseline, &now, self.deadline),
                ));
            }
            let pause = self.poll;
            // Release the GIL while waiting so native threads can finish teardown.
            py.detach(|| std::thread::sleep(pause));
        }
    }

    /// Baseline, run `scenario`, then [`LedgerOracle::check_returns_to`]. A scenario
    /// error is reported as is (check exceptions with [`AllowedExceptions`] inside).
    pub fn check_balanced<S>(&mut self, py: Python<'_>, scenario: S) -> Result<(), OracleFailure>
    where
        S: FnOnce(Python<'_>) -> Result<(), OracleFailure>,
    {
        collect_garbage(py);
        let baseline = self
            .read(py)
            .map_err(|e| OracleFailure::new("ledger", format!("reading the ledger failed: {e}")))?;
        scenario(py)?;
        self.check_returns_to(py, &baseline)
    }
}

fn ledger_diff(baseline: &Ledger, now: &Ledger, deadline: Duration) -> String {
    let mut keys: Vec<&String> = baseline.keys().chain(now.keys()).collect();
    keys.sort();
    keys.dedup();
    let lines: Vec<String> = keys
        .into_iter()
        .filter_map(|key| {
            let before = baseline.get(key).copied();
            let after = now.get(key).copied();
            (before != after).then(|| match (before, after) {
                (Some(b), Some(a)) => format!("  {key}: {b} -> {a} ({:+})", a - b),
                (Some(b), None) => format!("  {key}: {b} -> (missing)"),
                (None, Some(a)) => format!("  {key}: (missing) -> {a}"),
                (None, None) => unreachable!(),
            })
        })
        .collect();
    format!(
        "native counters did not return to baseline within {deadline:?} (after gc.collect()):\n{}",
        lines.join("\n")
    )
}
