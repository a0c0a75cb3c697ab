//! `errors`: native failures and how they are translated. Paths of every shape (missing directory,
//! a directory, NUL bytes, hostile os.PathLike objects, bytes), store files corrupted at fuzzed offsets
//! (flipped bytes, truncation, garbage appended), lock contention with hostile timeouts. Oracles: only
//! the documented exception classes, each carrying op/code/message (and errno/filename for
//! ConnectionError); a damaged store is refused exactly when an independent reader of the file format
//! (`_ref_read`, checked against the model of what was written on every undamaged store) refuses it,
//! and otherwise opens holding exactly what that reader finds and stays usable; the native ledger
//! returns to baseline (no handle leaks on error paths). ASan watches the log parser.

use arbitrary::Arbitrary;
use ffi_harness::{AllowedExceptions, OracleFailure, PyValue, ReproScript};
use pyo3::prelude::*;

use crate::{allowed, py_bytes, py_failure, with_ledger, Scenario, Scratch};

#[derive(Arbitrary, Debug, Clone)]
pub enum PathCase {
    MissingDirectory,
    IsDirectory,
    NulByte,
    Empty,
    AsBytes,
    Hostile(PyValue),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Corruption {
    Flip { offset: u16, mask: u8 },
    Truncate { keep: u16 },
    Append(Vec<u8>),
    Overwrite { offset: u16, bytes: Vec<u8> },
}

#[derive(Arbitrary, Debug, Clone)]
pub enum ErrorCase {
    Path(PathCase),
    Corrupt {
        records: Vec<(u8, Vec<u8>)>,
        damage: Vec<Corruption>,
    },
    Locked {
        timeout: TimeoutArg,
    },
}

#[derive(Arbitrary, Debug, Clone)]
pub enum TimeoutArg {
    Zero,
    Small(u8),
    Negative,
    Nan,
    Hostile(PyValue),
}

impl TimeoutArg {
    fn source(&self) -> String {
        match self {
            TimeoutArg::Zero => "0".into(),
            TimeoutArg::Small(ms) => format!("{}", f64::from(*ms % 20) / 1000.0),
            TimeoutArg::Negative => "-1.0".into(),
            TimeoutArg::Nan => "float('nan')".into(),
            TimeoutArg::Hostile(v) => v.to_python_source(),
        }
    }

    /// A hostile value that is a valid large timeout would make the input wait for minutes.
    fn is_slow(&self, py: Python<'_>) -> bool {
        if let TimeoutArg::Hostile(v) = self {
            if let Ok(obj) = v.materialise(py) {
                if obj.is_none() {
                    return true; // None waits forever
                }
                if let Ok(f) = obj.extract::<f64>() {
                    return f.is_finite() && f > 0.05 || f == f64::INFINITY;
                }
            }
        }
        false
    }
}

fn path_source(case: &PathCase) -> String {
    match case {
        PathCase::MissingDirectory => "os.path.join(_TMP, 'missing', 'x.db')".into(),
        PathCase::IsDirectory => "_TMP".into(),
        PathCase::NulByte => "os.path.join(_TMP, 'nul\\x00.db')".into(),
        PathCase::Empty => "''".into(),
        PathCase::AsBytes => "os.fsencode(os.path.join(_TMP, 'bytes.db'))".into(),
        PathCase::Hostile(v) => v.to_python_source(),
    }
}

impl ErrorCase {
    fn source(&self) -> String {
        match self {
            ErrorCase::Path(p) => format!(
                "_path = {}\nif not _unsafe_path(_path):\n    _check_error(lambda: native.connect(_path).close())",
                path_source(p)
            ),
            ErrorCase::Corrupt { records, damage } => {
                let records = &records[..records.len().min(8)];
                let puts: Vec<String> =
                    records.iter().map(|(k, v)| format!("_c.put({}, {})", py_bytes(&[b'k', *k]), py_bytes(v))).collect();
                // The model of what was written: the last value put under each key.
                let model: std::collections::BTreeMap<[u8; 2], &Vec<u8>> =
                    records.iter().map(|(k, v)| ([b'k', *k], v)).collect();
                let model: Vec<String> =
                    model.iter().map(|(k, v)| format!("{}: {}", py_bytes(k), py_bytes(v))).collect();
                let damage: Vec<String> = damage.iter().take(4).map(damage_source).collect();
                format!(
                    "_p = os.path.join(_TMP, 'c.db')\nif os.path.exists(_p):\n    os.remove(_p)  # a fresh store per case: the model is this case's puts\n_c = native.connect(_p)\n{}\n_c.close()\n_data = bytearray(open(_p, 'rb').read())\n_check_model(bytes(_data), {{{}}})\n{}\nopen(_p, 'wb').write(_data)\n_check_error(lambda: _check_against_reference(_p, bytes(_data)))",
                    if puts.is_empty() { "pass".into() } else { puts.join("\n") },
                    model.join(", "),
                    if damage.is_empty() { "pass".into() } else { damage.join("\n") }
                )
            }
            ErrorCase::Locked { timeout } => format!(
                "_p = os.path.join(_TMP, 'l.db')\n_holder = native.connect(_p)\ntry:\n    _check_error(lambda: native.connect(_p, timeout={}).close())\nfinally:\n    _holder.close()",
                timeout.source()
            ),
        }
    }
}

fn damage_source(d: &Corruption) -> String {
    match d {
        Corruption::Flip { offset, mask } => format!(
            "if _data:\n    _data[{offset} % len(_data)] ^= {}",
            mask.max(&1)
        ),
        Corruption::Truncate { keep } => format!("del _data[{keep} % (len(_data) + 1):]"),
        Corruption::Append(b) => format!("_data += {}", py_bytes(b)),
        Corruption::Overwrite { offset, bytes } => {
            format!(
                "_o = {offset} % (len(_data) + 1)\n_data[_o:_o + {}] = {}",
                bytes.len(),
                py_bytes(bytes)
            )
        }
    }
}

/// Python checks shared by the fuzzer and repro.py: documented classes and complete error objects.
const CHECKS: &str = include_str!("errors_checks.py");
static CHECKS_CODE: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();

#[derive(Arbitrary, Debug, Clone)]
pub struct ErrorsInput {
    pub cases: Vec<ErrorCase>,
}

impl Scenario for ErrorsInput {
    type State<'py> = ();

    fn run<'py>(&self, py: Python<'py>, _: &mut ()) -> Result<(), OracleFailure> {
        let allowed = Self::allowed();
        with_ledger(py, |py| {
            let scratch = Scratch::new();
            // The cases' source spells hostile values with the prelude as `_fh`.
            let globals =
                ffi_harness::prelude_globals(py).map_err(|e| py_failure(py, "prelude", e))?;
            globals
                .set_item("_TMP", scratch.dir.to_string_lossy())
                .map_err(|e| py_failure(py, "setup", e))?;
            // Compiled once per process (compiling the checks took a third of each input's CPU);
            // executed per input, so each input still gets its own `_TMP` and fresh definitions.
            let checks = CHECKS_CODE
                .get_or_try_init(py, || {
                    py.import("builtins")?
                        .getattr("compile")?
                        .call1((CHECKS, "errors_checks.py", "exec"))
                        .map(Bound::unbind)
                })
                .map_err(|e| py_failure(py, "setup", e))?;
            py.import("builtins")
                .and_then(|b| b.getattr("exec"))
                .and_then(|exec| exec.call1((checks.bind(py), &globals)))
                .map_err(|e| py_failure(py, "setup", e))?;
            for (i, case) in self.cases.iter().take(6).enumerate() {
                if let ErrorCase::Locked { timeout } = case {
                    if timeout.is_slow(py) {
                        continue;
                    }
                }
                let code =
                    std::ffi::CString::new(case.source()).expect("no NUL in generated source");
                if let Err(e) = py.run(&code, Some(&globals), None) {
                    allowed
                        .check(py, &e)
                        .map_err(|f| f.context(format_args!("case #{i} {case:?}")))?;
                }
            }
            Ok(())
        })
    }

    fn repro(&self, script: ReproScript) -> ReproScript {
        self.cases
            .iter()
            .take(6)
            .fold(script.setup(CHECKS), |s, c| s.step(c.source()))
    }
}

impl ErrorsInput {
    /// The exceptions this target's inputs may raise (documented ones and hostile values' own).
    pub fn allowed() -> AllowedExceptions {
        allowed(&[
            "native.ConnectionError",
            "native.ProtocolError",
            "native.TimeoutError",
        ])
    }
}

/// The `errors` fuzz target (`fuzz_targets/errors.rs`).
pub static TARGET: std::sync::LazyLock<ffi_harness::FuzzTarget> =
    std::sync::LazyLock::new(|| crate::target("errors", &ErrorsInput::allowed()));
