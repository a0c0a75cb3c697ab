//! The leak hunt flags steady growth of each metric and passes a balanced
//! scenario. One test function: metrics are process-wide, so no other test may
//! run Python concurrently in this binary.

use std::ffi::CString;

use ffi_harness::*;
use pyo3::prelude::*;

const LEAKY: &str = r#"
import os
_kept = []
def leak_objects():
    _kept.append([len(_kept)])
def leak_fd():
    _kept.append(os.open(os.devnull, os.O_RDONLY))
def balanced():
    data = [bytearray(100) for _ in range(10)]
    return sum(map(len, data))
counters = {"handles": 0}
def leak_handle():
    counters["handles"] += 1
"#;

#[test]
fn leak_hunt_flags_steady_growth_and_passes_a_balanced_scenario() {
    Python::attach(|py| {
        let m =
            PyModule::from_code(py, &CString::new(LEAKY).unwrap(), c"leaky.py", c"leaky").unwrap();

        let report = LeakHunt::default()
            .run(py, |_| m.call_method0("leak_objects").map(drop))
            .unwrap();
        println!("{report}");
        assert!(report.is_leaking(), "{report}");
        let leaking: Vec<&str> = report.leaking().iter().map(|s| s.name.as_str()).collect();
        assert!(leaking.contains(&"gc_objects"), "{report}");
        let failure = report.check().unwrap_err();
        assert_eq!(failure.oracle, "leak-hunt");
        assert!(failure.message.contains("LEAK"), "{failure}");

        let report = LeakHunt::default()
            .run(py, |_| m.call_method0("leak_fd").map(drop))
            .unwrap();
        assert!(
            report.leaking().iter().any(|s| s.name == "open_fds"),
            "{report}"
        );

        let report = LeakHunt::default()
            .with_ledger(counters(&m))
            .run(py, |_| m.call_method0("leak_handle").map(drop))
            .unwrap();
        assert!(
            report.leaking().iter().any(|s| s.name == "ledger:handles"),
            "{report}"
        );

        let report = LeakHunt {
            rounds: 6,
            ..LeakHunt::default()
        }
        .with_ledger(counters(&m))
        .run(py, |_| m.call_method0("balanced").map(drop))
        .unwrap();
        println!("{report}");
        report.check().unwrap();
    });
}

fn counters(m: &Bound<'_, PyModule>) -> impl FnMut(Python<'_>) -> PyResult<Ledger> + use<> {
    let counters = m.getattr("counters").unwrap().unbind();
    move |py| counters.bind(py).extract()
}
