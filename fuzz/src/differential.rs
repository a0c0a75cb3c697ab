//! `differential`: the same inputs through the PyO3 wrapper (`add` and the METH_FASTCALL `add_fast`),
//! ctypes, cffi ABI mode and cffi API mode (pytests/bindings) must agree: same values, or exceptions
//! of the same category. The comparison itself is Python shared with repro.py.

use arbitrary::Arbitrary;
use ffi_harness::{AllowedExceptions, OracleFailure, ReproScript};
use pyo3::prelude::*;

use native_testkit::PySource;

use crate::{allowed, py_bytes, py_failure, Scenario, Scratch};

/// The Python side of this target, shared with repro.py.
pub static HELPERS: PySource = PySource::new(
    include_str!("differential_helpers.py"),
    c"fuzz_differential.py",
    c"fuzz_differential",
);
/// An add operand: raw values, the edges of C long and just past them, and wrong types.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Operand {
    Raw(i64),
    Edge(u8),
    Float(i16),
    Text,
}

const EDGES: [&str; 8] = [
    "-9223372036854775808",
    "9223372036854775807",
    "0",
    "-1",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "2**100",
];

impl Operand {
    fn source(self) -> String {
        match self {
            Operand::Raw(v) => v.to_string(),
            Operand::Edge(e) => EDGES[usize::from(e) % EDGES.len()].to_owned(),
            Operand::Float(f) => format!("{f}.5"),
            Operand::Text => "'7'".to_owned(),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum StoreOp {
    Put(u8, Vec<u8>),
    Get(u8),
    Delete(u8),
    Len,
    Items,
}

impl StoreOp {
    fn source(&self) -> String {
        let key = |k: &u8| py_bytes(&[b'k', b'a' + k % 5]);
        match self {
            StoreOp::Put(k, v) => format!("('put', {}, {})", key(k), py_bytes(v)),
            StoreOp::Get(k) => format!("('get', {})", key(k)),
            StoreOp::Delete(k) => format!("('delete', {})", key(k)),
            StoreOp::Len => "('len',)".into(),
            StoreOp::Items => "('items',)".into(),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum DiffCall {
    Add(Operand, Operand),
    Checksum(Vec<u8>),
    Process(Vec<u8>, u32, u8),
    Store(Vec<StoreOp>),
}

impl DiffCall {
    fn source(&self) -> String {
        match self {
            DiffCall::Add(a, b) => format!("('add', {}, {})", a.source(), b.source()),
            DiffCall::Checksum(d) => format!("('checksum', {})", py_bytes(d)),
            DiffCall::Process(d, k, r) => format!(
                "('process', {}, {k}, {})",
                py_bytes(d),
                u32::from(r % 3) + 1
            ),
            DiffCall::Store(ops) => {
                let ops: Vec<String> = ops.iter().take(16).map(StoreOp::source).collect();
                format!("('store', [{}])", ops.join(", "))
            }
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub struct DifferentialInput {
    pub calls: Vec<DiffCall>,
}

impl DifferentialInput {
    fn calls_source(&self) -> String {
        let calls: Vec<String> = self.calls.iter().take(8).map(DiffCall::source).collect();
        format!("[{}]", calls.join(", "))
    }
}

impl Scenario for DifferentialInput {
    type State<'py> = ();

    fn run<'py>(&self, py: Python<'py>, _: &mut ()) -> Result<(), OracleFailure> {
        let h = HELPERS
            .module(py)
            .map_err(|e| py_failure(py, "helpers", e))?;
        let scratch = Scratch::new();
        // The calls go through Python source, exactly as repro.py spells them.
        let code = std::ffi::CString::new(self.calls_source()).expect("no NUL in generated source");
        let calls = py
            .eval(&code, None, None)
            .map_err(|e| py_failure(py, "build calls", e))?;
        let problems: Vec<String> = h
            .call_method1("run_calls", (calls, scratch.dir.to_string_lossy().as_ref()))
            .and_then(|p| p.extract())
            .map_err(|e| py_failure(py, "run_calls", e))?;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(OracleFailure::new("differential", problems.join("\n")))
        }
    }

    fn repro(&self, script: ReproScript) -> ReproScript {
        let script = script.setup(&format!(
            "import sys as _sys\n_sys.path.insert(0, {:?})\n{}",
            crate::repo_root()
                .join("pytests/bindings")
                .to_string_lossy(),
            HELPERS.embed_as("_diff"),
        ));
        script.step(format!(
            "_problems = _diff.run_calls({}, _TMP)\nassert not _problems, '\\n'.join(_problems)",
            self.calls_source()
        ))
    }
}

impl DifferentialInput {
    /// The exceptions this target's inputs may raise (documented ones and hostile values' own).
    pub fn allowed() -> AllowedExceptions {
        allowed(&[])
    }
}

/// The `differential` fuzz target (`fuzz_targets/differential.rs`).
pub static TARGET: std::sync::LazyLock<ffi_harness::FuzzTarget> =
    std::sync::LazyLock::new(|| crate::target("differential", &DifferentialInput::allowed()));
