//! Leak hunt (regrtest -R style, ffi-harness `LeakHunt`): warm up, then repeat each scenario for N
//! rounds; fail if total refs (debug CPython: `sys.gettotalrefcount`), allocated blocks, gc objects,
//! open fds or a ledger count (live handles, subscriptions, native_alloc blocks) grows in EVERY
//! round. Each test prints its per-round table (`cargo test ... -- --nocapture` shows it;
//! `ci/leak-hunt` runs this binary on the normal and on Debian's debug interpreter).
//!
//! `FFI_HARNESS_LEAK_ROUNDS` (default 5; 8 under `FFI_HARNESS_DEEP=1`) and
//! `FFI_HARNESS_LEAK_RUNS` (scenario runs per round, default 10) tune it. PYTHONMALLOC is left
//! alone: under `PYTHONMALLOC=malloc` allocated_blocks is always 0 and would hide block leaks.

use ffi_harness::{LeakHunt, LeakReport};
use native_testkit::{Scratch, ledger, run_python};
use proptests::{deep, with_python};
use pyo3::prelude::*;

const SCENARIOS: &str = include_str!("py/leak_hunt_scenarios.py");

fn rounds() -> usize {
    std::env::var("FFI_HARNESS_LEAK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if deep() { 8 } else { 5 })
}

fn runs_per_round() -> usize {
    std::env::var("FFI_HARNESS_LEAK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// Hunt `scenario` (a function of SCENARIOS), print the table, return the report.
fn hunt(name: &str) -> LeakReport {
    with_python(|py| {
        let dir = Scratch::new();
        let path = dir.path("leak.db");
        let ns = run_python(py, SCENARIOS, &[]).expect("scenarios compile");
        let scenario = ns.get_item(name).unwrap().expect("scenario exists");
        let report = LeakHunt {
            warmup: 3,
            rounds: rounds(),
            runs_per_round: runs_per_round(),
            ..LeakHunt::default()
        }
        .with_ledger(ledger)
        .run(py, |_py| scenario.call1((&path,)).map(drop))
        .unwrap_or_else(|e| {
            panic!(
                "scenario {name} failed: {}",
                native_testkit::describe(py, &e)
            )
        });
        let build = py
            .import("sys")
            .and_then(|s| s.hasattr("gettotalrefcount"))
            .map(|debug| {
                if debug {
                    "debug CPython"
                } else {
                    "release CPython"
                }
            })
            .unwrap_or("?");
        println!("== leak hunt: {name} ({build}) ==\n{report}");
        record_verdict(name, build, &report);
        report
    })
}

/// Appends the scenario's verdict as one JSON line to `$FFI_HARNESS_LEAK_VERDICTS` when set: summaries
/// (ci/main) read verdicts, never the words of the printed table.
fn record_verdict(name: &str, build: &str, report: &LeakReport) {
    let Ok(path) = std::env::var("FFI_HARNESS_LEAK_VERDICTS") else {
        return;
    };
    let deltas: Vec<String> = report
        .metrics
        .iter()
        .filter(|m| m.samples.is_some())
        .map(|m| format!("{:?}: {:?}", m.name, m.deltas()))
        .collect();
    let leaking: Vec<String> = report
        .leaking()
        .iter()
        .map(|m| format!("{:?}", m.name))
        .collect();
    let line = format!(
        "{{\"scenario\": {name:?}, \"build\": {build:?}, \"leaking\": [{}], \"deltas\": {{{}}}}}\n",
        leaking.join(", "),
        deltas.join(", ")
    );
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    file.write_all(line.as_bytes())
        .unwrap_or_else(|e| panic!("{path}: {e}"));
}

fn assert_no_leak(name: &str) {
    let report = hunt(name);
    if let Err(failure) = report.check() {
        panic!("scenario {name}: {failure}");
    }
}

#[test]
fn leak_hunt_connection_lifecycle() {
    assert_no_leak("connection");
}

#[test]
fn leak_hunt_buffers() {
    assert_no_leak("buffers");
}

#[test]
fn leak_hunt_options() {
    assert_no_leak("options");
}

#[test]
fn leak_hunt_error_paths() {
    assert_no_leak("errors");
}
