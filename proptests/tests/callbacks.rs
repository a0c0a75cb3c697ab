//! Callbacks:
//!
//! - ownership: a subscribed callable is owned by the wrapper (a weakref to it stays alive after the
//!   caller drops it), and released once its subscription is gone: right after `cancel()` (or the
//!   subscription's `__exit__`) returns, or after the connection is closed or dropped (weakref dead,
//!   polled with `gc.collect()`); the ledger returns to baseline;
//! - no call after cancel: while Python threads race puts against `cancel()`, the callback never
//!   runs after `cancel()` has returned.
//!
//! Callables are harness `CallableValue`s (raising, returning, re-entering, wrong arity) and
//! recorder objects; every case runs in a forked child.

use ffi_harness::strategies::leaf_callable;
use ffi_harness::{CallableValue, PyValue};
use native_testkit::{Scratch, ledger, run_python, settled_ledger};
use proptest::prelude::*;
use proptests::{config, isolated, ledger_returns_to, regressions, with_python};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// How a subscription is let go of.
#[derive(Debug, Clone, Copy)]
enum Release {
    Cancel,
    CancelTwice,
    ExitContext,
    /// Left subscribed: released by closing (or dropping) the connection at the end.
    AtEnd,
}

#[derive(Debug, Clone)]
enum CallbackKind {
    Recorder,
    Harness(CallableValue),
}

fn release() -> impl Strategy<Value = Release> {
    prop_oneof![
        Just(Release::Cancel),
        Just(Release::CancelTwice),
        Just(Release::ExitContext),
        Just(Release::AtEnd),
    ]
}

fn callback_kind() -> impl Strategy<Value = CallbackKind> {
    prop_oneof![
        2 => Just(CallbackKind::Recorder),
        2 => leaf_callable().prop_map(CallbackKind::Harness),
        1 => ffi_harness::strategies::scalar_value()
            .prop_map(|v| CallbackKind::Harness(CallableValue::Returns(Box::new(v)))),
    ]
}

const HELPERS: &str = include_str!("py/callbacks_ownership.py");

fn ownership_scenario(
    py: Python<'_>,
    plan: &[(CallbackKind, Release)],
    puts: u8,
    close_at_end: bool,
) -> Result<(), String> {
    let fail = |e: PyErr| native_testkit::describe(py, &e);
    let h = run_python(py, HELPERS, &[]).map_err(fail)?;
    let helper = |name: &str| h.get_item(name).unwrap().unwrap();
    // The callback behind weakref `w` dies within 2 s (gc.collect polled).
    let dead_within = |w: &Bound<'_, PyAny>| {
        helper("dead_within")
            .call1((w,))
            .and_then(|r| r.is_truthy())
            .map_err(fail)
    };
    ffi_harness::set_reenter_hook(py, &py.None().into_bound(py)).map_err(fail)?;
    let baseline = settled_ledger(py).map_err(fail)?;
    let dir = Scratch::new();
    let weakref = py
        .import("weakref")
        .map_err(fail)?
        .getattr("ref")
        .map_err(fail)?;
    {
        let conn = py
            .import("native")
            .and_then(|m| m.call_method1("connect", (dir.path("cb.db"),)))
            .map_err(fail)?;
        let mut subs = Vec::new();
        for (i, (kind, _)) in plan.iter().enumerate() {
            let callback = match kind {
                CallbackKind::Recorder => helper("Recorder").call0().map_err(fail)?,
                CallbackKind::Harness(c) => {
                    PyValue::Callable(c.clone()).materialise(py).map_err(fail)?
                }
            };
            let sub = conn.call_method1("subscribe", (&callback,)).map_err(fail)?;
            let w = weakref.call1((&callback,)).map_err(fail)?;
            drop(callback);
            py.import("gc")
                .map_err(fail)?
                .call_method0("collect")
                .map_err(fail)?;
            if w.call0().map_err(fail)?.is_none() {
                return Err(format!(
                    "callback #{i} ({kind:?}) died while subscribed: not owned"
                ));
            }
            subs.push((sub, w));
        }
        for n in 0..puts {
            conn.call_method1(
                "put",
                (PyBytes::new(py, &[b'k', n]), PyBytes::new(py, b"v")),
            )
            .map_err(fail)?;
        }
        let expected = plan.len() * usize::from(puts);
        let delivered = helper("delivered_within")
            .call1((&conn, expected))
            .and_then(|r| r.is_truthy())
            .map_err(fail)?;
        if !delivered {
            return Err(format!(
                "{expected} callback calls were not delivered within 5 s"
            ));
        }
        for (i, ((kind, how), (sub, w))) in plan.iter().zip(&subs).enumerate() {
            match how {
                Release::Cancel => sub.call_method0("cancel").map(drop),
                Release::CancelTwice => sub
                    .call_method0("cancel")
                    .and_then(|_| sub.call_method0("cancel"))
                    .map(drop),
                Release::ExitContext => sub
                    .call_method1("__exit__", (py.None(), py.None(), py.None()))
                    .map(drop),
                Release::AtEnd => continue,
            }
            .map_err(fail)?;
            let dead = dead_within(w)?;
            if !dead {
                return Err(format!(
                    "callback #{i} ({kind:?}) still alive after {how:?} returned (and gc): \
                     the wrapper kept its reference"
                ));
            }
        }
        let weakrefs: Vec<_> = subs.iter().map(|(_, w)| w.clone()).collect();
        if close_at_end {
            conn.call_method0("close").map_err(fail)?;
        }
        drop(subs);
        drop(conn);
        for (i, w) in weakrefs.iter().enumerate() {
            let dead = dead_within(w)?;
            if !dead {
                return Err(format!(
                    "callback #{i} ({:?}) still alive after the connection was {} (and gc)",
                    plan[i].0,
                    if close_at_end { "closed" } else { "dropped" }
                ));
            }
        }
    }
    ledger_returns_to(py, &baseline).map_err(|f| f.to_string())
}

proptest! {
    #![proptest_config(config(48, regressions!("callbacks")))]

    #[test]
    fn callbacks_are_owned_while_subscribed_and_released_after(
        plan in proptest::collection::vec((callback_kind(), release()), 1..5),
        puts in 0..4u8,
        close_at_end in any::<bool>(),
    ) {
        let result = with_python(|py| isolated(py, |py| ownership_scenario(py, &plan, puts, close_at_end)));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

const RACE: &str = include_str!("py/callbacks_race.py");

fn race_scenario(
    py: Python<'_>,
    writers: u8,
    calls_before_cancel: u16,
    pause: bool,
) -> Result<(), String> {
    let fail = |e: PyErr| native_testkit::describe(py, &e);
    let baseline = ledger(py).map_err(fail)?;
    let dir = Scratch::new();
    let ns = run_python(py, RACE, &[]).map_err(fail)?;
    let native = py.import("native").map_err(fail)?;
    let pause = if pause { 0.0002 } else { 0.0 };
    ns.get_item("race")
        .map_err(fail)?
        .unwrap()
        .call1((
            native,
            dir.path("race.db"),
            writers,
            calls_before_cancel,
            pause,
            3,
        ))
        .map_err(fail)?;
    ledger_returns_to(py, &baseline).map_err(|f| f.to_string())
}

proptest! {
    #![proptest_config(config(6, regressions!("callbacks")))]

    #[test]
    fn no_callback_runs_after_cancel_returns_while_threads_race_puts(
        writers in 1..=3u8,
        calls_before_cancel in 1..40u16,
        pause in any::<bool>(),
    ) {
        let result = with_python(|py| isolated(py, |py| race_scenario(py, writers, calls_before_cancel, pause)));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}
