//! `structs`: `native.Options` built from random keyword sets, random mappings and random objects,
//! and handed to `connect`. Oracles: refcount neutrality, only TypeError/ValueError/OverflowError,
//! accepted input round-trips exactly (fields equal the input, to_dict/from_mapping/Options(**d) agree),
//! and rejected input never reaches C (libnative's `calls` counter does not move).

use arbitrary::Arbitrary;
use ffi_harness::{check_call, AllowedExceptions, OracleFailure, PyValue, ReproScript};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict};

use crate::{allowed, native_calls, py_failure, with_ledger, Scenario, Scratch};

const FIELDS: [&str; 6] = [
    "create",
    "sync",
    "max_key_size",
    "max_value_size",
    "file_mode",
    "unknown_field",
];

/// A field value: mostly plausible (right type, near the range edges), sometimes any PyValue.
#[derive(Arbitrary, Debug, Clone)]
pub enum FieldValue {
    Bool(bool),
    Int(i64),
    Edge(u8),
    Any(PyValue),
}

/// The integer edges of the fields' ranges: the repro's spelling and the value.
const INT_EDGES: [(&str, i128); 10] = [
    ("0", 0),
    ("1", 1),
    ("511", 511),
    ("512", 512),
    ("65535", 65535),
    ("65536", 65536),
    ("1073741824", 1 << 30),
    ("1073741825", (1 << 30) + 1),
    ("-1", -1),
    ("2**64", 1 << 64),
];

impl FieldValue {
    fn source(&self) -> String {
        match self {
            FieldValue::Bool(b) => if *b { "True" } else { "False" }.into(),
            FieldValue::Int(i) => i.to_string(),
            FieldValue::Edge(e) => INT_EDGES[usize::from(*e) % INT_EDGES.len()].0.into(),
            FieldValue::Any(v) => v.to_python_source(),
        }
    }

    /// The object [`Self::source`] spells, built directly (no compile per input).
    fn object<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self {
            FieldValue::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
            FieldValue::Int(i) => i.into_pyobject(py)?.into_any(),
            FieldValue::Edge(e) => INT_EDGES[usize::from(*e) % INT_EDGES.len()]
                .1
                .into_pyobject(py)?
                .into_any(),
            FieldValue::Any(v) => v.materialise(py)?,
        })
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum StructCall {
    Kwargs(Vec<(u8, FieldValue)>),
    FromMapping(Vec<(u8, FieldValue)>),
    FromObject(PyValue),
    Connect(Vec<(u8, FieldValue)>),
}

/// The fields a call passes: at most 8, as (name, value).
fn fields(given: &[(u8, FieldValue)]) -> impl Iterator<Item = (&'static str, &FieldValue)> {
    given
        .iter()
        .take(8)
        .map(|(f, v)| (FIELDS[usize::from(*f) % FIELDS.len()], v))
}

/// The repro's spelling of the dict [`dict_object`] builds.
pub fn dict_source(given: &[(u8, FieldValue)]) -> String {
    let items: Vec<String> = fields(given)
        .map(|(name, v)| format!("{name:?}: {}", v.source()))
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// The dict, built in the order its literal would evaluate (a repeated name keeps its last value).
pub fn dict_object<'py>(
    py: Python<'py>,
    given: &[(u8, FieldValue)],
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (name, v) in fields(given) {
        d.set_item(name, v.object(py)?)?;
    }
    Ok(d)
}

impl StructCall {
    fn source(&self) -> String {
        match self {
            StructCall::Kwargs(f) => format!("native.Options(**{})", dict_source(f)),
            StructCall::FromMapping(f) => {
                format!("native.Options.from_mapping({})", dict_source(f))
            }
            StructCall::FromObject(v) => {
                format!("native.Options.from_mapping({})", v.to_python_source())
            }
            StructCall::Connect(f) => format!(
                "native.connect(os.path.join(_TMP, 's.db'), options={}).close()",
                dict_source(f)
            ),
        }
    }

    fn run(
        &self,
        py: Python<'_>,
        allowed: &AllowedExceptions,
        scratch: &std::cell::OnceCell<Scratch>,
    ) -> Result<(), OracleFailure> {
        let native = py
            .import("native")
            .map_err(|e| py_failure(py, "import", e))?;
        let options = native
            .getattr("Options")
            .map_err(|e| py_failure(py, "Options", e))?;
        let build = |given: &[(u8, FieldValue)]| {
            dict_object(py, given).map_err(|e| py_failure(py, "build input", e))
        };
        let calls_before = native_calls(py).map_err(|e| py_failure(py, "counters", e))?;
        let (arg, result) = match self {
            StructCall::Kwargs(f) => {
                let kw = build(f)?;
                let r = check_call(py, &[("kwargs", kw.as_any())], allowed, || {
                    options.call((), Some(&kw)).map(|o| o.unbind())
                })?;
                (kw.into_any(), r)
            }
            StructCall::FromMapping(f) => {
                let d = build(f)?.into_any();
                let r = check_call(py, &[("mapping", &d)], allowed, || {
                    options
                        .call_method1("from_mapping", (&d,))
                        .map(|o| o.unbind())
                })?;
                (d, r)
            }
            StructCall::FromObject(v) => {
                let o = v
                    .materialise(py)
                    .map_err(|e| py_failure(py, "materialise", e))?;
                let fresh: Vec<_> = v
                    .is_fresh_heap_object()
                    .then_some(("mapping", &o))
                    .into_iter()
                    .collect();
                let r = check_call(py, &fresh, allowed, || {
                    options
                        .call_method1("from_mapping", (&o,))
                        .map(|o| o.unbind())
                })?;
                (o, r)
            }
            StructCall::Connect(f) => {
                let d = build(f)?.into_any();
                let kw = crate::kwargs(py, &[("options", d.clone())]).unwrap();
                let path = scratch.get_or_init(Scratch::new).path("s.db");
                let r = check_call(py, &[("options", &d)], allowed, || {
                    let c = native.call_method("connect", (&path,), Some(&kw))?;
                    c.call_method0("close")?;
                    Ok(())
                })?;
                let _ = std::fs::remove_file(&path);
                // connect may fail in C for valid options (e.g. create=False on a missing file): only a
                // rejection by validation must leave the counter alone, and that is checked by Kwargs.
                let _ = r;
                return Ok(());
            }
        };
        match result {
            None => {
                let after = native_calls(py).map_err(|e| py_failure(py, "counters", e))?;
                if after != calls_before {
                    return Err(OracleFailure::new(
                        "no native call",
                        format!(
                            "rejected Options input made {} libnative call(s)",
                            after - calls_before
                        ),
                    ));
                }
                Ok(())
            }
            Some(opts) => round_trip(py, &options, opts.bind(py), &arg),
        }
    }
}

/// Accepted options must come back exactly: every given field as given, and the dict forms agree.
fn round_trip(
    py: Python<'_>,
    options: &Bound<'_, PyAny>,
    opts: &Bound<'_, PyAny>,
    given: &Bound<'_, PyAny>,
) -> Result<(), OracleFailure> {
    let fail = |m: String| OracleFailure::new("round trip", m);
    let d = opts
        .call_method0("to_dict")
        .map_err(|e| py_failure(py, "to_dict", e))?;
    if let Ok(given) = given.cast::<PyDict>() {
        for (k, v) in given.iter() {
            let got = opts
                .getattr(k.str().unwrap().to_str().unwrap())
                .map_err(|e| py_failure(py, "getattr", e))?;
            // Bool fields take only bools and int fields never take bools, so == is exact here.
            if !got.eq(&v).unwrap_or(false) {
                return Err(fail(format!("field {k} = {got:?}, given {v:?}")));
            }
        }
    }
    let again = options
        .call_method1("from_mapping", (&d,))
        .map_err(|e| py_failure(py, "from_mapping(to_dict)", e))?;
    let kw = d.cast::<PyDict>().unwrap();
    let again2 = options
        .call((), Some(kw))
        .map_err(|e| py_failure(py, "Options(**to_dict)", e))?;
    if !again.eq(opts).unwrap_or(false) || !again2.eq(opts).unwrap_or(false) {
        return Err(fail(format!(
            "{opts:?} does not survive to_dict/from_mapping"
        )));
    }
    Ok(())
}

#[derive(Arbitrary, Debug, Clone)]
pub struct StructsInput {
    pub calls: Vec<StructCall>,
}

impl Scenario for StructsInput {
    type State<'py> = ();

    fn run<'py>(&self, py: Python<'py>, _: &mut ()) -> Result<(), OracleFailure> {
        let allowed = Self::allowed();
        with_ledger(py, |py| {
            // Only connect() needs a directory: most inputs never make one.
            let scratch = std::cell::OnceCell::new();
            for (i, call) in self.calls.iter().take(8).enumerate() {
                call.run(py, &allowed, &scratch)
                    .map_err(|f| f.context(format_args!("call #{i} {call:?}")))?;
            }
            Ok(())
        })
    }

    fn repro(&self, script: ReproScript) -> ReproScript {
        self.calls.iter().take(8).fold(script, |s, c| {
            s.step(format!(
                "_calls = native.debug_counters()['calls']\ntry:\n    _o = {}\nexcept (TypeError, ValueError, OverflowError):\n    assert native.debug_counters()['calls'] == _calls, 'rejected input reached C'\n    raise",
                c.source()
            ))
        })
    }
}

impl StructsInput {
    /// The exceptions this target's inputs may raise (documented ones and hostile values' own).
    pub fn allowed() -> AllowedExceptions {
        // connect() with valid options can still fail natively (create=False on a missing file).
        allowed(&["native.ConnectionError"])
    }
}

/// The `structs` fuzz target (`fuzz_targets/structs.rs`).
pub static TARGET: std::sync::LazyLock<ffi_harness::FuzzTarget> =
    std::sync::LazyLock::new(|| crate::target("structs", &StructsInput::allowed()));
