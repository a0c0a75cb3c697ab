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
use proptests::{StoreDir, deep, ledger, run_python, with_python};
use pyo3::prelude::*;

const SCENARIOS: &str = r#"
import array, gc, mmap, os, sys, native

sys.unraisablehook = lambda args: None

class Callback:
    def __init__(self):
        self.n = 0
    def __call__(self, ev):
        self.n += 1

def connection(path):
    with native.connect(path) as conn:
        for i in range(20):
            conn.put(b"key%d" % i, b"value%d" % i * 3)
        for i in range(20):
            conn.get(b"key%d" % i)
        assert len(list(conn.items())) == 20 and len(list(conn.keys())) == 20
        b"key3" in conn
        conn.delete(b"key3")
        conn.stats()
        conn.flush()
        cb = Callback()
        sub = conn.subscribe(cb)
        with conn.subscribe(lambda ev: None):
            conn.put(b"k", b"v")
        conn.put(b"k2", b"v")
        sub.cancel()
        sub.cancel()
        conn.subscribe(Callback())        # left to close()
    os.remove(path)
    # dropped without close, with a subscription whose callback references the connection (cycle)
    conn = native.connect(path)
    cycle = Callback()
    cycle.conn = conn
    conn.subscribe(cycle)
    conn.put(b"x", b"y")
    del conn, cycle
    gc.collect()
    os.remove(path)

def buffers(path):
    ba = bytearray(b"abcdefgh" * 64)
    native.checksum(b"bytes" * 10)
    native.checksum(ba)
    native.checksum(memoryview(ba).cast("B", [16, 32]))
    native.checksum(array.array("d", [1.0, 2.0, 3.0]))
    m = mmap.mmap(-1, 4096)
    native.checksum(m)
    native.process(m, key=3)
    m.close()
    native.process(ba, key=0xDEADBEEF, rounds=2)
    native.process(memoryview(ba)[8:], key=1)
    native.process(bytearray(70000), key=5)          # over the GIL-release threshold
    native.checksum(bytes(70000))

def options(path):
    native.Options()
    o = native.Options.from_mapping({"create": True, "sync": False, "max_key_size": 16})
    o.to_dict()
    native.Options(**o.to_dict()) == o
    repr(o)
    with native.connect(path, options={"max_key_size": 8, "max_value_size": 64}) as conn:
        conn.put(b"k", b"v")
    os.remove(path)

def errors(path):
    bad = [
        lambda: native.checksum("str"),
        lambda: native.checksum(memoryview(b"abcdef")[::2]),
        lambda: native.process(b"read-only"),
        lambda: native.process(bytearray(3), rounds=0),
        lambda: native.process(bytearray(3), key=-1),
        lambda: native.add(2**63, 1),
        lambda: native.add(2**62, 2**62),
        lambda: native.Options(max_key_size=0),
        lambda: native.Options(create=1),
        lambda: native.Options.from_mapping({"bogus": 1}),
        lambda: native.Options.from_mapping({"file_mode": 2**70}),
        lambda: native.connect(path, options={"max_key_size": "8"}),
        lambda: native.connect(path + "/missing/dir/x.db"),
        lambda: native.connect(path, timeout="soon"),
    ]
    for call in bad:
        try:
            call()
        except (TypeError, ValueError, OverflowError, native.Error):
            pass
        else:
            raise AssertionError("an error path did not raise")
    with native.connect(path) as conn:
        for call in (lambda: conn.get(b"absent"), lambda: conn.delete(b"absent"),
                     lambda: conn.put(b"", b"v"), lambda: conn.put("str", b"v")):
            try:
                call()
            except (KeyError, ValueError, TypeError):
                pass
        conn.put(b"a", b"1")
        it = conn.items()
        conn.put(b"b", b"2")
        try:
            next(it)
        except native.InvalidStateError:
            pass
    try:
        conn.put(b"a", b"1")
    except native.InvalidStateError:
        pass
    os.remove(path)
"#;

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
        let dir = StoreDir::new();
        let path = dir.store("leak.db");
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
        .unwrap_or_else(|e| panic!("scenario {name} failed: {}", proptests::describe(py, &e)));
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
