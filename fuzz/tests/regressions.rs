//! Inputs that once found a bug, replayed by `cargo test` (as regex keeps its `fuzz/regressions`):
//! every file under `fuzz/regressions/<target>/` is decoded and run exactly as the fuzz target does,
//! oracles included. A failing oracle panics, so the test fails with the oracle's message and a
//! `repro.py`; an input that hangs past the per-input bound aborts with every thread's stack.
//!
//! The seed corpora (`fuzz/corpus/`) are minimised with `cargo fuzz cmin` and may drop any input whose
//! coverage another one has; an input that mattered is kept here instead, named for what it found.

use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};
use native_fuzz::buffers::BuffersInput;
use native_fuzz::callbacks::CallbacksInput;
use native_fuzz::differential::DifferentialInput;
use native_fuzz::errors::ErrorsInput;
use native_fuzz::handles::HandlesInput;
use native_fuzz::structs::StructsInput;

/// Each input runs this many times: the bugs these inputs found include races (the callbacks
/// deadlock of close() in a callback against cancel(): re-injected as mutant 30, it hangs within
/// 11-166 replays, and 1,000 clean replays take about 3 s).
const REPLAYS: usize = 1000;

/// Decodes `bytes` the way `libfuzzer_sys::fuzz_target!` does; `None` if the fuzzer would skip it.
fn decode<T: for<'a> Arbitrary<'a>>(bytes: &[u8]) -> Option<T> {
    T::arbitrary_take_rest(Unstructured::new(bytes)).ok()
}

fn replay(target: &str, file: &Path) {
    let bytes = std::fs::read(file).expect("a regression input");
    let name = file.display();
    let decoded = match target {
        "buffers" => {
            decode::<BuffersInput>(&bytes).map(|i| native_fuzz::buffers::TARGET.fuzz_one(&i))
        }
        "callbacks" => {
            decode::<CallbacksInput>(&bytes).map(|i| native_fuzz::callbacks::TARGET.fuzz_one(&i))
        }
        "differential" => decode::<DifferentialInput>(&bytes)
            .map(|i| native_fuzz::differential::TARGET.fuzz_one(&i)),
        "errors" => decode::<ErrorsInput>(&bytes).map(|i| native_fuzz::errors::TARGET.fuzz_one(&i)),
        "handles" => {
            decode::<HandlesInput>(&bytes).map(|i| native_fuzz::handles::TARGET.fuzz_one(&i))
        }
        "structs" => {
            decode::<StructsInput>(&bytes).map(|i| native_fuzz::structs::TARGET.fuzz_one(&i))
        }
        other => panic!("fuzz/regressions/{other}/ names no fuzz target"),
    };
    assert!(decoded.is_some(), "{name} no longer decodes as a {target} input: the input format changed, so it tests nothing");
}

#[test]
fn every_regression_input_still_passes() {
    // `init` re-executes a libFuzzer binary once to add its default flags; a test binary is not one.
    std::env::set_var(
        "FFI_HARNESS_FLAGS_ADDED",
        "none (a cargo test, not libFuzzer)",
    );
    native_fuzz::init();
    let root = native_fuzz::repo_root().join("fuzz").join("regressions");
    let mut replayed = 0;
    let mut targets: Vec<_> = std::fs::read_dir(&root)
        .expect("fuzz/regressions")
        .flatten()
        .collect();
    targets.sort_by_key(|e| e.file_name());
    for target in targets {
        let mut files: Vec<_> = std::fs::read_dir(target.path())
            .unwrap()
            .flatten()
            .collect();
        files.sort_by_key(|e| e.file_name());
        for file in files {
            for _ in 0..REPLAYS {
                replay(&target.file_name().to_string_lossy(), &file.path());
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no regression input under {}", root.display());
}
