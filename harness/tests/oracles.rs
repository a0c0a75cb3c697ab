//! Each oracle fails on a deliberately wrong scenario and passes on a balanced one.

use std::ffi::CString;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ffi_harness::*;
use pyo3::prelude::*;

/// A fresh Python module from source (unique name per call, tests run in parallel).
fn module<'py>(py: Python<'py>, code: &str) -> Bound<'py, PyModule> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!("oracle_test_{}", N.fetch_add(1, Ordering::Relaxed));
    let code = CString::new(code).unwrap();
    let file = CString::new(format!("{name}.py")).unwrap();
    let name = CString::new(name).unwrap();
    PyModule::from_code(py, &code, &file, &name).unwrap()
}

const TARGETS: &str = r#"
_kept = []
def stores_argument(x):
    _kept.append(x)          # a "binding" that forgets a decref
def balanced(x):
    return len(x)
def raises_value_error(x):
    raise ValueError(f"rejected {len(x)} bytes")   # traceback frames hold x
def raises_system_error(x):
    raise SystemError("error return without exception set")
def raises_key_error(x):
    raise KeyError("undocumented")
def returns_fresh(x):
    return [x]
def returns_kept(x):
    out = [x]
    _kept.append(out)
    return out
"#;

/// Call `m.name(arg)` under the refcount and exception oracles; the result is
/// summarised as its repr (and dropped) inside the checked call.
fn call<'py>(
    m: &Bound<'py, PyModule>,
    name: &str,
    arg: &Bound<'py, PyAny>,
    allowed: &AllowedExceptions,
) -> Result<Option<String>, OracleFailure> {
    let f = m.getattr(name).unwrap();
    check_call(m.py(), &[("data", arg)], allowed, || {
        Ok(f.call1((arg,))?.repr()?.to_string())
    })
}

#[test]
fn refcount_oracle_catches_a_kept_reference_and_passes_a_balanced_call() {
    Python::attach(|py| {
        let m = module(py, TARGETS);
        let allowed = AllowedExceptions::new(["ValueError"]);
        let value = PyValue::ByteArray(b"payload".to_vec());
        assert!(value.is_fresh_heap_object());

        let arg = value.materialise(py).unwrap();
        let failure = call(&m, "stores_argument", &arg, &allowed).unwrap_err();
        assert_eq!(failure.oracle, "refcount");
        assert!(
            failure.message.contains("data: refcount delta +1"),
            "{failure}"
        );

        let arg = value.materialise(py).unwrap();
        assert!(call(&m, "balanced", &arg, &allowed).unwrap().is_some());

        // An allowed exception whose traceback references the argument is not a leak.
        let arg = value.materialise(py).unwrap();
        assert!(
            call(&m, "raises_value_error", &arg, &allowed)
                .unwrap()
                .is_none()
        );
    });
}

#[test]
fn refcount_snapshot_reports_over_release() {
    Python::attach(|py| {
        let holder = py.eval(c"[bytearray(b'x')]", None, None).unwrap();
        let obj = holder.get_item(0).unwrap();
        let mut snapshot = RefcountSnapshot::new();
        snapshot.track("item", &obj);
        holder.call_method0("clear").unwrap(); // someone else's reference disappears
        let failure = snapshot.check(py).unwrap_err();
        assert!(
            failure.message.contains("delta -1 (over-released"),
            "{failure}"
        );
    });
}

#[test]
fn sole_owner_check() {
    Python::attach(|py| {
        let m = module(py, TARGETS);
        let allowed = AllowedExceptions::default();
        let arg = PyValue::Bytes(b"abc".to_vec()).materialise(py).unwrap();
        let fresh = m.getattr("returns_fresh").unwrap().call1((&arg,)).unwrap();
        check_sole_owner("result", &fresh).unwrap();
        let kept = m.getattr("returns_kept").unwrap().call1((&arg,)).unwrap();
        let failure = check_sole_owner("result", &kept).unwrap_err();
        assert!(failure.message.contains("refcount 2"), "{failure}");

        // Inside check_call: inspect the result, return plain data.
        let verdict = check_call(py, &[], &allowed, || {
            let result = m.getattr("returns_kept")?.call1((&arg,))?;
            Ok(check_sole_owner("result", &result))
        });
        assert!(verdict.unwrap().unwrap().is_err());
    });
}

#[test]
fn exception_oracle() {
    Python::attach(|py| {
        let m = module(py, TARGETS);
        let arg = PyValue::Bytes(b"abc".to_vec()).materialise(py).unwrap();

        // SystemError fails even when listed, even via a listed base class.
        let allowed = AllowedExceptions::new(["SystemError", "Exception"]);
        let failure = call(&m, "raises_system_error", &arg, &allowed).unwrap_err();
        assert_eq!(failure.oracle, "exception");
        assert!(
            failure.message.contains("SystemError always fails"),
            "{failure}"
        );

        // Undocumented types fail, with the traceback in the message.
        let allowed = AllowedExceptions::new(["ValueError", "json.JSONDecodeError"]);
        let failure = call(&m, "raises_key_error", &arg, &allowed).unwrap_err();
        assert!(
            failure.message.contains("KeyError: 'undocumented'"),
            "{failure}"
        );
        assert!(failure.message.contains("raises_key_error"), "{failure}");

        // Documented types (and subclasses) pass.
        assert!(
            call(&m, "raises_value_error", &arg, &allowed)
                .unwrap()
                .is_none()
        );

        // A name that is no type is a configuration error, reported as such.
        let allowed = AllowedExceptions::new(["NoSuchError"]);
        let failure = call(&m, "raises_value_error", &arg, &allowed).unwrap_err();
        assert!(
            failure.message.contains("does not name a type"),
            "{failure}"
        );
    });
}

const LEDGER: &str = r#"
import threading
counters = {"handles": 0, "allocations": 0}
def open_handle():
    counters["handles"] += 1
def close_later(delay):
    def close():
        counters["handles"] -= 1
    threading.Timer(delay, close).start()
"#;

fn read_counters(m: &Bound<'_, PyModule>) -> impl FnMut(Python<'_>) -> PyResult<Ledger> + use<> {
    let counters = m.getattr("counters").unwrap().unbind();
    move |py| counters.bind(py).extract()
}

#[test]
fn ledger_oracle_fails_on_a_leaked_handle_and_waits_for_async_teardown() {
    Python::attach(|py| {
        let m = module(py, LEDGER);
        let mut ledger =
            LedgerOracle::new(read_counters(&m)).with_deadline(Duration::from_millis(300));

        let failure = ledger
            .check_balanced(py, |_| {
                m.call_method0("open_handle").unwrap();
                Ok(())
            })
            .unwrap_err();
        assert_eq!(failure.oracle, "ledger");
        assert!(
            failure.message.contains("handles: 0 -> 1 (+1)"),
            "{failure}"
        );

        // Reset, then: closed 50 ms after the scenario returns, on another thread.
        m.getattr("counters")
            .unwrap()
            .set_item("handles", 0)
            .unwrap();
        ledger
            .check_balanced(py, |_| {
                m.call_method0("open_handle").unwrap();
                m.call_method1("close_later", (0.05,)).unwrap();
                Ok(())
            })
            .unwrap();
    });
}

/// "Bindings" that ask a hostile object for its answer the way C code calls a slot (the raw answer,
/// before any check of it), and either let it go or keep it, as a missing decref would.
const CONVERTERS: &str = r#"
import ffi_harness_prelude as _fh
_kept = []
_SLOT = {"BadIndex": "__index__", "BadInt": "__int__", "BadFloat": "__float__", "BadLen": "__len__",
         "BadBuffer": "__buffer__", "BadHash": "__hash__", "BadEq": "__eq__", "BadFspath": "__fspath__",
         "BadBool": "__bool__"}
def _answer(x):
    slot = getattr(type(x), _SLOT[type(x).__name__])
    return slot(x, 0) if _SLOT[type(x).__name__] in ("__buffer__", "__eq__") else slot(x)
def releases(x):
    a = _answer(x)
    if not isinstance(a, (int, float)):
        raise TypeError("wrong type")
def keeps_on_refusal(x):
    a = _answer(x)
    if not isinstance(a, (int, float)) or a != a or abs(a) > 2**63:
        _kept.append(a)
        raise TypeError("refused")
"#;

#[test]
fn answers_oracle_catches_a_kept_dunder_answer_and_passes_released_ones() {
    Python::attach(|py| {
        let prelude = prelude(py).unwrap();
        let m = module(py, CONVERTERS);
        let allowed = AllowedExceptions::new(["TypeError"]);
        let hostile =
            |class: &str, mode: &str| prelude.getattr(class).unwrap().call1((mode,)).unwrap();
        let run = |name: &str, arg: &Bound<'_, PyAny>| {
            let f = m.getattr(name).unwrap();
            check_call(py, &[], &allowed, || f.call1((arg,)).map(drop))
        };
        let classes = [
            "BadIndex",
            "BadInt",
            "BadFloat",
            "BadLen",
            "BadBuffer",
            "BadHash",
            "BadEq",
            "BadFspath",
            "BadBool",
        ];
        for class in classes {
            for mode in ["behave", "wrong_type", "out_of_range"] {
                let arg = hostile(class, mode);
                run("releases", &arg).unwrap_or_else(|f| panic!("{class}({mode}) released: {f}"));
            }
        }
        // Answers made for the call alone, kept on a refusal path: each is reported.
        for (class, mode) in [
            ("BadIndex", "out_of_range"),
            ("BadFloat", "out_of_range"),
            ("BadFspath", "behave"),
            ("BadEq", "wrong_type"),
            ("BadBuffer", "behave"),
            ("BadBool", "wrong_type"),
        ] {
            let failure = run("keeps_on_refusal", &hostile(class, mode)).unwrap_err();
            assert_eq!(failure.oracle, "refcount", "{class}({mode}): {failure}");
            assert!(
                failure.message.contains("answer") && failure.message.contains("+1 reference"),
                "{class}({mode}): {failure}"
            );
        }
        // An answer kept before the judged call is not that call's to release.
        let outside = m.getattr("keeps_on_refusal").unwrap();
        outside
            .call1((hostile("BadIndex", "out_of_range"),))
            .unwrap_err();
        run("releases", &hostile("BadInt", "behave")).unwrap();
    });
}
