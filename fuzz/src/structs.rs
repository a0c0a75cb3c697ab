//! `structs`: `native.Options` built from random keyword sets, random mappings and random objects,
//! and handed to `connect`. Oracles: refcount neutrality, only TypeError/ValueError/OverflowError,
//! accepted input round-trips exactly (fields equal the input, to_dict/from_mapping/Options(**d) agree),
//! and rejected input never reaches C (libnative's `calls` counter does not move). libnative's own
//! validator is the judge: options the wrapper accepts must pass `native_options_validate`, and
//! well-typed options it passes must not be refused by the wrapper.

use arbitrary::Arbitrary;
use ffi_harness::{check_call, AllowedExceptions, OracleFailure, PyValue, ReproScript};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict};

use libnative_sys as sys;

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
        let native =
            ffi_harness::imported!(py, "native").map_err(|e| py_failure(py, "import", e))?;
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
                // libnative is the judge of what is valid: well-typed options it accepts must not
                // be refused by the wrapper (a range off by one, a field checked against another's).
                let given = match self {
                    StructCall::Kwargs(f) | StructCall::FromMapping(f) => model_options(f),
                    _ => None,
                };
                match given.map(|o| c_verdict(&o)) {
                    Some(Ok(())) => Err(OracleFailure::new(
                        "validation",
                        format!(
                            "the wrapper refused options libnative accepts: {}",
                            self.source()
                        ),
                    )),
                    _ => Ok(()),
                }
            }
            Some(opts) => {
                round_trip(py, &options, opts.bind(py), &arg)?;
                // ...and everything the wrapper accepts, libnative must accept too (a field the wrapper
                // only type-checks reaches C as a value C refuses, or wraps when stored as u32).
                let accepted = accepted_options(opts.bind(py))
                    .map_err(|e| py_failure(py, "accepted options", e))?;
                c_verdict(&accepted).map_err(|why| {
                    OracleFailure::new(
                        "validation",
                        format!(
                            "the wrapper accepted options libnative refuses ({why}): {}",
                            self.source()
                        ),
                    )
                })
            }
        }
    }
}

/// libnative's own verdict on `opts` (`native_options_validate`): Ok, or its message.
fn c_verdict(opts: &sys::native_options) -> Result<(), String> {
    let mut err = sys::native_error::zeroed();
    // SAFETY: both pointers are to live, initialised locals for the duration of the call; the
    // function only reads `opts` and writes `err`.
    let rc = unsafe { sys::native_options_validate(opts, &mut err) };
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: libnative NUL-terminates `message` within its array (err was zeroed, and C writes a
    // bounded, terminated string).
    let msg = unsafe { std::ffi::CStr::from_ptr(err.message.as_ptr()) };
    Err(msg.to_string_lossy().into_owned())
}

/// libnative's defaults, as its struct.
fn default_options() -> sys::native_options {
    let mut o = sys::native_options {
        create: 0,
        sync: 0,
        max_key_size: 0,
        max_value_size: 0,
        file_mode: 0,
    };
    // SAFETY: `o` is a live, initialised local the function fills in.
    unsafe { sys::native_options_default(&mut o) };
    o
}

/// The C struct a well-typed field list describes (libnative's defaults, then each field in order, the
/// last of a repeated name winning), or `None` when the list is not one C could be asked about: an
/// unknown name, a wrong type (bool fields take bools, int fields non-bool ints), a value no u32 holds,
/// or a hostile object.
fn model_options(given: &[(u8, FieldValue)]) -> Option<sys::native_options> {
    let mut o = default_options();
    for (name, value) in fields(given) {
        let int = || -> Option<u32> {
            match value {
                FieldValue::Int(i) => u32::try_from(*i).ok(),
                FieldValue::Edge(e) => {
                    u32::try_from(INT_EDGES[usize::from(*e) % INT_EDGES.len()].1).ok()
                }
                _ => None,
            }
        };
        let flag = || match value {
            FieldValue::Bool(b) => Some(i32::from(*b)),
            _ => None,
        };
        match name {
            "create" => o.create = flag()?,
            "sync" => o.sync = flag()?,
            "max_key_size" => o.max_key_size = int()?,
            "max_value_size" => o.max_value_size = int()?,
            "file_mode" => o.file_mode = int()?,
            _ => return None,
        }
    }
    Some(o)
}

/// The C struct of options the wrapper accepted, read back through `to_dict()`.
fn accepted_options(opts: &Bound<'_, PyAny>) -> PyResult<sys::native_options> {
    let d = opts.call_method0("to_dict")?;
    let flag =
        |name: &str| -> PyResult<i32> { Ok(i32::from(d.get_item(name)?.extract::<bool>()?)) };
    // A value no u32 holds fails here, which the caller reports: C could not be given it.
    let int = |name: &str| -> PyResult<u32> { d.get_item(name)?.extract::<u32>() };
    Ok(sys::native_options {
        create: flag("create")?,
        sync: flag("sync")?,
        max_key_size: int("max_key_size")?,
        max_value_size: int("max_value_size")?,
        file_mode: int("file_mode")?,
    })
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
        // The validation oracle asks libnative itself; the script states its verdict: the ranges of
        // native.h for what the wrapper accepted, and for a refusal, that C accepts these options.
        let ranges = format!(
            "{{'max_key_size': (1, {}), 'max_value_size': (1, {}), 'file_mode': (0, 0o777)}}",
            sys::NATIVE_MAX_KEY_LIMIT,
            sys::NATIVE_MAX_VALUE_LIMIT
        );
        self.calls.iter().take(8).fold(script, |s, c| {
            let c_accepts = match c {
                StructCall::Kwargs(f) | StructCall::FromMapping(f) => {
                    model_options(f).is_some_and(|o| c_verdict(&o).is_ok())
                }
                _ => false,
            };
            let refused_valid = if c_accepts {
                "\n    raise AssertionError('the wrapper refused options libnative accepts (native_options_validate)')"
            } else {
                ""
            };
            s.step(format!(
                "_calls = native.debug_counters()['calls']\ntry:\n    _o = {}\nexcept (TypeError, ValueError, OverflowError):\n    assert native.debug_counters()['calls'] == _calls, 'rejected input reached C'{refused_valid}\n    raise\nif isinstance(_o, native.Options):\n    for _f, (_lo, _hi) in {ranges}.items():\n        assert _lo <= getattr(_o, _f) <= _hi, f'the wrapper accepted {{_f}}={{getattr(_o, _f)}}, outside libnative\\'s {{_lo}}..={{_hi}}'",
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
