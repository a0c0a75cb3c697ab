//! A `handles` repro.py checks what the fuzz target checked: each op is a call of the Python model in
//! fuzz/src/handles_repro.py, a second copy of the target's Rust model. These tests hold the two
//! together. The repro.py of every seed input must pass against the clean `native` (the Python copy
//! is no stricter than the Rust one). The repro of a short input must fail when the store lies
//! (the Python copy catches what the Rust one does). Each script runs in this process, against the
//! in-binary `native`, as the fuzz target would.

use std::ffi::CString;

use arbitrary::Arbitrary;

use native_fuzz::handles::{HandleOp, HandlesInput, KeyArg, TARGET};
use pyo3::prelude::*;
use pyo3::types::PyDict;

fn init() {
    // `init` re-executes a libFuzzer binary once to add its default flags; a test binary is not one.
    std::env::set_var(
        "FFI_HARNESS_FLAGS_ADDED",
        "none (a cargo test, not libFuzzer)",
    );
    native_fuzz::init();
}

/// One repro at a time: each compares the native ledger with its own baseline, and the tests run on
/// parallel threads.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs repro.py source as `__main__` in this process; `native.connect` is put back afterwards.
fn run_repro(src: &str) -> Result<(), String> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    Python::attach(|py| {
        let native = py.import("native").unwrap();
        let connect = native.getattr("connect").unwrap();
        let globals = PyDict::new(py);
        globals.set_item("__name__", "__main__").unwrap();
        let code = CString::new(src).expect("a repro has no NUL byte");
        let result = py.run(&code, Some(&globals), None);
        native.setattr("connect", connect).unwrap();
        let result = result.map_err(|e| e.to_string());
        // The script's scratch directory: its atexit hook removes it when a process ends, not this one.
        if let Ok(Some(tmp)) = globals.get_item("_TMP") {
            let shutil = py.import("shutil").unwrap();
            shutil.call_method1("rmtree", (tmp, true)).unwrap();
        }
        // A failed script's frames still hold its connections; the next one's baseline must not.
        drop(globals);
        py.import("gc").unwrap().call_method0("collect").unwrap();
        result
    })
}

/// Python inserted before a repro's steps: `native.connect` returns a store that answers `mode`
/// wrong (`get`: another value, `len`: one more, `connect`: refuses a free store).
fn liar(mode: &str) -> String {
    format!(
        r#"
_real_connect = native.connect
class _Liar:
    def __init__(self, c):
        self._c = c
    def __getattr__(self, name):
        return getattr(self._c, name)
    def __len__(self):
        return len(self._c) + ({mode:?} == "len")
    def get(self, key):
        return b"wrong" if {mode:?} == "get" else self._c.get(key)
def _lying_connect(*args, **kwargs):
    if {mode:?} == "connect":
        raise native.TimeoutError("a free store refused on purpose")
    return _Liar(_real_connect(*args, **kwargs))
native.connect = _lying_connect
"#
    )
}

fn script(input: &HandlesInput) -> String {
    TARGET.script(input, None).render()
}

#[test]
fn repros_of_the_seed_inputs_pass_on_the_clean_tree() {
    init();
    let dir = native_fuzz::repo_root().join("fuzz/corpus/handles");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fuzz/corpus/handles")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let mut ran = 0;
    // A spread of the corpus, not all of it: each repro starts a temporary directory and two stores.
    for file in files.iter().step_by(files.len().div_ceil(60).max(1)) {
        let bytes = std::fs::read(file).unwrap();
        // Decoded as `fuzz_target!` does.
        let Ok(input) = HandlesInput::arbitrary_take_rest(arbitrary::Unstructured::new(&bytes))
        else {
            continue;
        };
        if input.ops.is_empty() {
            continue;
        }
        if let Err(e) = run_repro(&script(&input)) {
            panic!(
                "repro.py of {} fails on the clean tree: {e}",
                file.display()
            );
        }
        ran += 1;
    }
    assert!(
        ran >= 20,
        "only {ran} seed inputs decoded with ops under {}",
        dir.display()
    );
}

#[test]
fn a_repro_fails_where_the_store_answers_wrong() {
    init();
    let input = HandlesInput {
        ops: vec![
            HandleOp::Connect {
                slot: 0,
                file: false,
            },
            HandleOp::Put {
                slot: 0,
                key: KeyArg::Bytes(0),
                value: b"v".to_vec(),
            },
            HandleOp::Get {
                slot: 0,
                key: KeyArg::Bytes(0),
            },
            HandleOp::Len { slot: 0 },
        ],
    };
    let honest = script(&input);
    run_repro(&honest).expect("the repro passes against the honest store");
    for mode in ["get", "len", "connect"] {
        let lying = honest.replacen(
            "# --- steps ---",
            &format!("{}\n# --- steps ---", liar(mode)),
            1,
        );
        assert_ne!(
            lying, honest,
            "the steps marker moved: the liar was not inserted"
        );
        match run_repro(&lying) {
            Ok(()) => panic!("the repro passed against a store that lies about {mode}"),
            Err(e) => assert!(
                e.contains("AssertionError"),
                "{mode}: not the model's verdict: {e}"
            ),
        }
    }
}
