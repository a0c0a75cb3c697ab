//! Crashes become reported outcomes, in a forked child or a python subprocess.
//! One test per route: fork is safest with few threads around.

use std::time::Duration;

use ffi_harness::*;
use pyo3::prelude::*;

fn run_py(py: Python<'_>, code: &std::ffi::CStr) -> Result<(), String> {
    py.run(code, None, None).map_err(|e| e.to_string())
}

#[test]
fn forked_scenarios_report_success_failure_panic_crash_and_timeout() {
    Python::attach(|py| {
        let ok = run_in_fork(py, None, |py| run_py(py, c"x = sum(range(10))")).unwrap();
        assert!(ok.is_success(), "{ok}");

        let failed = run_in_fork(py, None, |py| run_py(py, c"raise ValueError('nope')")).unwrap();
        assert_eq!(failed.termination, Termination::Exited(1));
        assert!(failed.stderr.contains("ValueError: nope"), "{failed}");

        let panicked = run_in_fork(py, None, |_| panic!("boom")).unwrap();
        assert_eq!(panicked.termination, Termination::Exited(101));
        assert!(panicked.stderr.contains("boom"), "{panicked}");

        let crashed = run_in_fork(py, None, |py| {
            run_py(py, c"import ctypes; ctypes.string_at(0)")
        })
        .unwrap();
        assert_eq!(crashed.crash_signal(), Some("SIGSEGV"), "{crashed}");
        let failure = crashed.into_result().unwrap_err();
        assert!(
            failure.to_string().contains("killed by SIGSEGV"),
            "{failure}"
        );

        let aborted = run_in_fork(py, None, |py| run_py(py, c"import os; os.abort()")).unwrap();
        assert_eq!(aborted.crash_signal(), Some("SIGABRT"), "{aborted}");

        // Stuck: the main thread holds a pthread mutex and sleeps in a Python function; a second
        // thread blocks on that mutex. The report has both Python stacks and names the holder.
        let hung = run_in_fork(py, Some(Duration::from_millis(1500)), |py| {
            run_py(
                py,
                cr#"
import ctypes, threading, time
libc = ctypes.CDLL(None)
mutex = ctypes.create_string_buffer(64)  # all zero: PTHREAD_MUTEX_INITIALIZER on glibc
libc.pthread_mutex_lock(mutex)
threading.Thread(target=lambda: libc.pthread_mutex_lock(mutex), name="waiter").start()
def sleeps_holding_the_mutex():
    time.sleep(30)
sleeps_holding_the_mutex()
"#,
            )
        })
        .unwrap();
        assert_eq!(
            hung.termination,
            Termination::TimedOut(Duration::from_millis(1500))
        );
        let report = hung.to_string();
        assert!(report.contains("STUCK"), "{report}");
        assert!(
            report.contains("sleeps_holding_the_mutex"),
            "no Python stack: {report}"
        );
        assert!(
            report.contains("waits for the mutex"),
            "no lock owner: {report}"
        );
        // gdb attaches where Yama allows a parent's descendants (scope 0 or 1, or no Yama).
        let yama =
            std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").unwrap_or_default();
        if std::process::Command::new("gdb")
            .arg("--version")
            .output()
            .is_ok()
            && matches!(yama.trim(), "" | "0" | "1")
        {
            assert!(
                report.contains("pthread_mutex_lock"),
                "no native stack: {report}"
            );
        }

        // The parent's interpreter is unharmed.
        assert_eq!(
            py.eval(c"1 + 1", None, None)
                .unwrap()
                .extract::<i32>()
                .unwrap(),
            2
        );
    });
}

#[test]
fn python_subprocess_reports_exit_status_and_signals() {
    Python::attach(|py| {
        let ok = run_python_isolated(py, "print('hello')").unwrap();
        assert!(ok.is_success() && ok.stdout.contains("hello"), "{ok}");

        let exited = run_python_isolated(py, "import sys; sys.exit(3)").unwrap();
        assert_eq!(exited.termination, Termination::Exited(3));

        let crashed = run_python_isolated(py, "import ctypes; ctypes.string_at(0)").unwrap();
        assert_eq!(crashed.crash_signal(), Some("SIGSEGV"), "{crashed}");
        // faulthandler is off by default; the signal is what we report.

        let raised = run_python_isolated(py, "raise KeyError('k')").unwrap();
        assert_eq!(raised.termination, Termination::Exited(1));
        assert!(raised.stderr.contains("KeyError: 'k'"), "{raised}");
    });
    let interpreter = Python::attach(|py| ffi_harness::isolate::python_interpreter(py).unwrap());
    let hung = run_python_script(
        &interpreter,
        "import time; time.sleep(30)",
        Some(Duration::from_millis(300)),
    )
    .unwrap();
    assert!(
        matches!(hung.termination, Termination::TimedOut(_)),
        "{hung}"
    );
}
