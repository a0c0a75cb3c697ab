//! `errors`: native failures and how they are translated. Paths of every shape (missing directory,
//! a directory, NUL bytes, hostile os.PathLike objects, bytes), store files corrupted at fuzzed offsets
//! (flipped bytes, truncation, garbage appended), lock contention with hostile timeouts. Oracles: only
//! the documented exception classes, each carrying op/code/message (and errno/filename for
//! ConnectionError); a damaged store is refused exactly when an independent reader of the file format
//! (`_ref_read`, checked against the model of what was written on every undamaged store) refuses it,
//! and otherwise opens holding exactly what that reader finds and stays usable; the native ledger
//! returns to baseline (no handle leaks on error paths). ASan watches the log parser.

use std::borrow::Cow;

use arbitrary::Arbitrary;
use ffi_harness::{AllowedExceptions, OracleFailure, PyValue, ReproScript};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFloat, PyList, PyString, PyTuple};

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
        /// Reopen with this `max_key_size` (1..=8; keys are 2..=5 bytes): every stored key must be
        /// usable through the new handle, or the store refused.
        reopen_key_limit: Option<u8>,
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

/// One argument of a case call: built as a Python object when fuzzing, spelled as a literal in
/// repro.py, from the same value.
enum Arg<'a> {
    Text(&'static str),
    Bytes(Cow<'a, [u8]>),
    Int(u64),
    Float(f64),
    Hostile(&'a PyValue),
    Tuple(Vec<Arg<'a>>),
    List(Vec<Arg<'a>>),
}

impl Arg<'_> {
    fn object<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let items = |args: &[Arg<'_>]| {
            args.iter()
                .map(|a| a.object(py))
                .collect::<PyResult<Vec<_>>>()
        };
        Ok(match self {
            Arg::Text(t) => PyString::new(py, t).into_any(),
            Arg::Bytes(b) => PyBytes::new(py, b).into_any(),
            Arg::Int(i) => i.into_pyobject(py)?.into_any(),
            Arg::Float(f) => PyFloat::new(py, *f).into_any(),
            Arg::Hostile(v) => v.materialise(py)?,
            Arg::Tuple(args) => PyTuple::new(py, items(args)?)?.into_any(),
            Arg::List(args) => PyList::new(py, items(args)?)?.into_any(),
        })
    }

    fn source(&self) -> String {
        let items = |args: &[Arg<'_>]| args.iter().map(Arg::source).collect::<Vec<_>>().join(", ");
        match self {
            Arg::Text(t) => format!("{t:?}"),
            Arg::Bytes(b) => py_bytes(b),
            Arg::Int(i) => i.to_string(),
            Arg::Float(f) if f.is_nan() => "float('nan')".into(),
            Arg::Float(f) => format!("{f:?}"),
            Arg::Hostile(v) => v.to_python_source(),
            Arg::Tuple(args) if args.len() == 1 => format!("({},)", items(args)),
            Arg::Tuple(args) => format!("({})", items(args)),
            Arg::List(args) => format!("[{}]", items(args)),
        }
    }
}

impl TimeoutArg {
    fn arg(&self) -> Arg<'_> {
        match self {
            TimeoutArg::Zero => Arg::Int(0),
            TimeoutArg::Small(ms) => Arg::Float(f64::from(*ms % 20) / 1000.0),
            TimeoutArg::Negative => Arg::Float(-1.0),
            TimeoutArg::Nan => Arg::Float(f64::NAN),
            TimeoutArg::Hostile(v) => Arg::Hostile(v),
        }
    }
}

impl Corruption {
    fn arg(&self) -> Arg<'_> {
        Arg::Tuple(match self {
            Corruption::Flip { offset, mask } => vec![
                Arg::Text("flip"),
                Arg::Int(u64::from(*offset)),
                Arg::Int(u64::from(*mask)),
            ],
            Corruption::Truncate { keep } => {
                vec![Arg::Text("truncate"), Arg::Int(u64::from(*keep))]
            }
            Corruption::Append(b) => vec![Arg::Text("append"), Arg::Bytes(Cow::Borrowed(b))],
            Corruption::Overwrite { offset, bytes } => vec![
                Arg::Text("overwrite"),
                Arg::Int(u64::from(*offset)),
                Arg::Bytes(Cow::Borrowed(bytes)),
            ],
        })
    }
}

impl ErrorCase {
    /// This case as a call of one of `errors_checks.py`'s `case_*` functions: its name and arguments.
    fn call(&self) -> (&'static str, Vec<Arg<'_>>) {
        match self {
            ErrorCase::Path(p) => {
                let kind = match p {
                    PathCase::MissingDirectory => "missing_directory",
                    PathCase::IsDirectory => "is_directory",
                    PathCase::NulByte => "nul_byte",
                    PathCase::Empty => "empty",
                    PathCase::AsBytes => "as_bytes",
                    PathCase::Hostile(v) => {
                        return ("case_path", vec![Arg::Text("hostile"), Arg::Hostile(v)])
                    }
                };
                ("case_path", vec![Arg::Text(kind)])
            }
            ErrorCase::Corrupt {
                records,
                damage,
                reopen_key_limit,
            } => {
                let records = records[..records.len().min(8)]
                    .iter()
                    .map(|(k, v)| {
                        // 2..=5 bytes, so a reopen limit can fall on either side of a stored key.
                        let mut key = vec![b'k'; 1 + usize::from(*k % 4)];
                        key.push(*k);
                        Arg::Tuple(vec![
                            Arg::Bytes(Cow::Owned(key)),
                            Arg::Bytes(Cow::Borrowed(v)),
                        ])
                    })
                    .collect();
                let damage = damage.iter().take(4).map(Corruption::arg).collect();
                let mut args = vec![Arg::List(records), Arg::List(damage)];
                if let Some(limit) = reopen_key_limit {
                    args.push(Arg::Int(u64::from(limit % 8) + 1));
                }
                ("case_corrupt", args)
            }
            ErrorCase::Locked { timeout } => ("case_locked", vec![timeout.arg()]),
        }
    }

    fn source(&self) -> String {
        let (name, args) = self.call();
        format!(
            "{name}({})",
            args.iter().map(Arg::source).collect::<Vec<_>>().join(", ")
        )
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
            // A fresh namespace per input, as a repro.py's (which imports the prelude as `_fh`).
            let globals =
                ffi_harness::prelude_globals(py).map_err(|e| py_failure(py, "prelude", e))?;
            globals
                .set_item("_TMP", scratch.dir.to_string_lossy())
                .map_err(|e| py_failure(py, "setup", e))?;
            // Compiled once per process (compiling the checks took a third of each input's CPU);
            // executed per input, so each input still gets its own `_TMP` and fresh definitions.
            let checks = CHECKS_CODE
                .get_or_try_init(py, || {
                    ffi_harness::imported!(py, "builtins", "compile")?
                        .call1((CHECKS, "errors_checks.py", "exec"))
                        .map(Bound::unbind)
                })
                .map_err(|e| py_failure(py, "setup", e))?;
            ffi_harness::imported!(py, "builtins")
                .and_then(|b| b.getattr("exec"))
                .and_then(|exec| exec.call1((checks.bind(py), &globals)))
                .map_err(|e| py_failure(py, "setup", e))?;
            for (i, case) in self.cases.iter().take(6).enumerate() {
                // The case runs as a call with data (compiling generated source per case took a third
                // of each input's CPU); its repro.py step is the same call spelled as literals.
                let (name, args) = case.call();
                let result = args
                    .iter()
                    .map(|a| a.object(py))
                    .collect::<PyResult<Vec<_>>>()
                    .and_then(|args| {
                        let f = globals
                            .get_item(name)?
                            .expect("errors_checks.py defines case_*");
                        f.call1(PyTuple::new(py, args)?)
                    });
                if let Err(e) = result {
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
