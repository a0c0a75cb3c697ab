//! write_repro produces a script that python runs and that reproduces the failure;
//! crash artifacts decode back to the same input.

use arbitrary::Arbitrary;
use ffi_harness::*;
use pyo3::prelude::*;

/// A stateful target made of the stdlib: a Python list, driven by ops.
#[derive(Arbitrary, Debug, Clone, PartialEq)]
enum ListOp {
    Append(PyValue),
    Pop,
    Clear,
}

impl ListOp {
    fn call(&self, py: Python<'_>, items: &Py<PyAny>) -> PyResult<()> {
        let items = items.bind(py);
        match self {
            ListOp::Append(value) => items.call_method1("append", (value.materialise(py)?,))?,
            ListOp::Pop => items.call_method0("pop")?,
            ListOp::Clear => items.call_method0("clear")?,
        };
        Ok(())
    }
}

impl Scenario for ListOp {
    type State<'py> = Py<PyAny>;

    fn run<'py>(&self, py: Python<'py>, items: &mut Py<PyAny>) -> Result<(), OracleFailure> {
        AllowedExceptions::new(["TypeError"])
            .check_result(py, self.call(py, items))
            .map(drop)
    }

    fn repro(&self, script: ReproScript) -> ReproScript {
        script.step(match self {
            ListOp::Append(value) => format!("items.append({})", value.to_python_source()),
            ListOp::Pop => "items.pop()".to_owned(),
            ListOp::Clear => "items.clear()".to_owned(),
        })
    }
}

fn run_script(script: &ReproScript) -> Outcome {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "ffi-harness-repro-test-{}-{}.py",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    write_repro(&path, script).unwrap();
    let interpreter = Python::attach(|py| ffi_harness::isolate::python_interpreter(py).unwrap());
    let outcome =
        run_python_script(&interpreter, &std::fs::read_to_string(&path).unwrap(), None).unwrap();
    let _ = std::fs::remove_file(&path);
    outcome
}

#[test]
fn repro_reproduces_an_undocumented_exception_from_values() {
    let config = ReproConfig::new("import json\nimport operator")
        .allow(&AllowedExceptions::new(["TypeError"]))
        .note("target: json.loads");
    let args = [
        PyValue::Bytes(b"{not json".to_vec()),
        PyValue::Hostile(Hostile::Dunder {
            dunder: Dunder::Index,
            misbehaviour: Misbehaviour::WrongType,
        }),
    ];

    // Step 0 raises an allowed TypeError (operator.index rejects "257"), step 1 an
    // undocumented JSONDecodeError: the script must get past the first and die on
    // the second.
    let script = ReproScript::new(&config)
        .failure("[exception oracle] undocumented exception escaped: JSONDecodeError")
        .bind_args(&args)
        .step("operator.index(arg1)")
        .step("json.loads(arg0)");
    let text = script.render();
    assert!(
        text.contains("arg1 = _fh.BadIndex('wrong_type', 0)"),
        "{text}"
    );
    let outcome = run_script(&script);
    assert_eq!(outcome.termination, Termination::Exited(1), "{outcome}");
    assert!(outcome.stdout.contains("allowed TypeError"), "{outcome}");
    assert!(
        outcome.stderr.contains("json.decoder.JSONDecodeError"),
        "{outcome}"
    );

    // The same script with the exception documented runs clean.
    let config = config.allow(&AllowedExceptions::new(["TypeError", "ValueError"]));
    let script = ReproScript::new(&config)
        .bind_args(&args)
        .step("json.loads(arg0)");
    let outcome = run_script(&script);
    assert!(outcome.is_success(), "{outcome}");
}

#[test]
fn repro_never_allows_system_error() {
    let config = ReproConfig::new("").allow(&AllowedExceptions::new(["SystemError", "Exception"]));
    let script = ReproScript::new(&config).step("raise SystemError('bad error return')");
    let outcome = run_script(&script);
    assert_eq!(outcome.termination, Termination::Exited(1), "{outcome}");
    assert!(
        outcome.stderr.contains("SystemError: bad error return"),
        "{outcome}"
    );
}

#[test]
fn op_sequence_fails_in_rust_and_in_its_repro() {
    let ops = OpSeq::new(vec![
        ListOp::Append(PyValue::Str(StrValue(vec![StrPiece::LoneSurrogate(1)]))),
        ListOp::Append(PyValue::Callable(CallableValue::Returns(Box::new(
            PyValue::Float(FloatValue::Nan),
        )))),
        ListOp::Clear,
        ListOp::Pop,
    ]);
    let allowed = AllowedExceptions::new(["TypeError"]);
    let failure = Python::attach(|py| {
        let mut items = pyo3::types::PyList::empty(py).into_any().unbind();
        ops.run(py, &mut items).unwrap_err()
    });
    assert!(failure.message.starts_with("op #3 Pop: "), "{failure}");
    assert!(
        failure.message.contains("IndexError: pop from empty list"),
        "{failure}"
    );

    let config = ReproConfig::new("items = []")
        .allow(&allowed)
        .python_debug_malloc();
    let script = ReproScript::new(&config).failure(&failure).scenario(&ops);
    let text = script.render();
    assert!(
        text.contains("#   PYTHONMALLOC=debug PYTHONFAULTHANDLER=1 python repro.py"),
        "{text}"
    );
    let outcome = run_script(&script);
    assert_eq!(outcome.termination, Termination::Exited(1), "{outcome}");
    assert!(outcome.stdout.contains("step 3: items.pop()"), "{outcome}");
    assert!(
        outcome.stderr.contains("IndexError: pop from empty list"),
        "{outcome}"
    );
}

#[test]
fn crash_artifacts_decode_to_the_fuzz_input() {
    let artifact: Vec<u8> = (0..=255u8)
        .cycle()
        .take(3000)
        .map(|b| b.wrapping_mul(37))
        .collect();
    let a: OpSeq<ListOp> = input_from_artifact(&artifact).unwrap();
    let b: OpSeq<ListOp> = input_from_artifact(&artifact).unwrap();
    assert_eq!(a, b);
    // Exactly libFuzzer's decoding.
    let c =
        <OpSeq<ListOp> as Arbitrary>::arbitrary_take_rest(arbitrary::Unstructured::new(&artifact))
            .unwrap();
    assert_eq!(a, c);
    assert!(a.ops.len() <= OpSeq::<ListOp>::MAX_LEN);

    let path = std::env::temp_dir().join(format!("ffi-harness-crash-{}", std::process::id()));
    std::fs::write(&path, &artifact).unwrap();
    let d: OpSeq<ListOp> = read_artifact(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(a, d);
}
