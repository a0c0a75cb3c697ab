//! `buffers`: checksum/process fed every kind of Python object (hostile ones included) and exact-size
//! writable buffers whose neighbours are watched. Oracles: refcount neutrality of arguments, allowed
//! exceptions only, results equal the Rust reference, nothing written outside the view (ASan catches
//! it inside libnative; the sentinel comparison catches it even where ASan cannot), the export is
//! released after every call (the bytearray can be resized again), and held for the whole call: a
//! long detached call on a bytearray another thread keeps resizing (ASan sees memory freed under it).

use arbitrary::Arbitrary;
use ffi_harness::{check_call, AllowedExceptions, OracleFailure, PyValue, ReproScript};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyInt};

use crate::{
    allowed, py_bytes, ref_fnv, ref_fnv_uniform_then, ref_process, ref_process_uniform_prefix,
    Scenario,
};

/// How an exact buffer is exported: each kind has a different exporter and allocation.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum ExactKind {
    /// `array.array('B', data)`: allocated to exactly len bytes, so ASan sees one byte past.
    ArrayB,
    /// `bytearray(data)`.
    ByteArray,
    /// `memoryview(bytearray(pad + data + pad))[lo:hi]`: writes past the view hit the padding.
    Window { pad: u8 },
    /// `memoryview(array('B', data)).cast('B', (rows, n/rows))`: multi-dimensional, C-contiguous.
    TwoD,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum BufferCall {
    Checksum {
        data: PyValue,
    },
    Process {
        data: PyValue,
        key: PyValue,
        rounds: PyValue,
    },
    ChecksumExact {
        kind: ExactKind,
        data: Vec<u8>,
    },
    ProcessExact {
        kind: ExactKind,
        data: Vec<u8>,
        key: u32,
        rounds: u8,
    },
    AddFastVsAdd {
        a: PyValue,
        b: PyValue,
    },
    /// checksum (or process) of a bytearray just over 64 KiB, long enough to run detached, while another
    /// thread keeps resizing it: the export must be held for the whole call.
    ResizeRace {
        process: bool,
        size: u8,
        fill: u8,
        key: u32,
        rounds: u8,
    },
}

/// The resizing thread of every `ResizeRace` (`_refs.Resizer`): one per process, because starting a
/// thread per call cost more than the call.
static RESIZER: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();

/// What the resizer appends (`_refs.Resizer`), up to twice: once if its append got in before the
/// export, and once more for the other outcome a call that never met the resizer may have seen.
const APPENDED: [u8; 2] = [0x55, 0x55];

/// The length of a `ResizeRace` buffer: at least the wrapper's detach threshold (64 KiB).
fn race_len(size: u8) -> usize {
    (64 << 10) + usize::from(size)
}

#[derive(Arbitrary, Debug, Clone)]
pub struct BuffersInput {
    pub calls: Vec<BufferCall>,
}

/// How a repro spells an exact buffer.
pub fn exact_source(kind: ExactKind, data: &[u8]) -> String {
    let lit = py_bytes(data);
    match kind {
        ExactKind::ArrayB => format!("array.array('B', {lit})"),
        ExactKind::ByteArray => format!("bytearray({lit})"),
        ExactKind::Window { pad } => {
            let pad = usize::from(pad % 16) + 1;
            format!(
                "memoryview(bytearray(b'\\xa5' * {pad} + {lit} + b'\\xa5' * {pad}))[{pad}:{pad} + {}]",
                data.len()
            )
        }
        ExactKind::TwoD if data.is_empty() => format!("memoryview(array.array('B', {lit}))"),
        ExactKind::TwoD => {
            let rows = two_d_rows(data.len());
            format!(
                "memoryview(array.array('B', {lit})).cast('B', ({rows}, {}))",
                data.len() / rows
            )
        }
    }
}

/// The object [`exact_source`] spells, built directly (no compile per input).
pub fn exact_object<'py>(
    py: Python<'py>,
    kind: ExactKind,
    data: &[u8],
) -> PyResult<Bound<'py, PyAny>> {
    let builtins = ffi_harness::imported!(py, "builtins")?;
    let array_b = |bytes: &[u8]| {
        ffi_harness::imported!(py, "array", "array")?.call1(("B", PyBytes::new(py, bytes)))
    };
    match kind {
        ExactKind::ArrayB => array_b(data),
        ExactKind::ByteArray => Ok(PyByteArray::new(py, data).into_any()),
        ExactKind::Window { pad } => {
            let pad = usize::from(pad % 16) + 1;
            let mut padded = vec![0xa5; pad];
            padded.extend_from_slice(data);
            padded.extend(std::iter::repeat_n(0xa5, pad));
            // The slice object is built by Python (`slice`): pyo3's PySlice::new leaks (clippy.toml).
            let window = builtins.getattr("slice")?.call1((pad, pad + data.len()))?;
            builtins
                .getattr("memoryview")?
                .call1((PyByteArray::new(py, &padded),))?
                .get_item(window)
        }
        ExactKind::TwoD if data.is_empty() => {
            builtins.getattr("memoryview")?.call1((array_b(data)?,))
        }
        ExactKind::TwoD => {
            let rows = two_d_rows(data.len());
            builtins
                .getattr("memoryview")?
                .call1((array_b(data)?,))?
                .call_method1("cast", ("B", (rows, data.len() / rows)))
        }
    }
}

fn two_d_rows(len: usize) -> usize {
    (2..=4)
        .rev()
        .find(|r| len > 0 && len.is_multiple_of(*r))
        .unwrap_or(1)
}

/// The whole underlying memory of an exact buffer (to check neighbours), and the view's offset.
fn underlying<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<(Vec<u8>, usize)> {
    let mv = obj.cast::<pyo3::types::PyMemoryView>();
    match mv {
        Ok(view) => {
            let base = view.getattr("obj")?;
            let whole: Vec<u8> = ffi_harness::imported!(py, "builtins", "bytes")?
                .call1((&base,))?
                .extract()?;
            // The view's offset inside its base: padding length for windows, 0 otherwise.
            let start = whole
                .len()
                .saturating_sub(view.getattr("nbytes")?.extract::<usize>()?)
                / 2;
            Ok((whole, start))
        }
        Err(_) => Ok((
            ffi_harness::imported!(py, "builtins", "bytes")?
                .call1((obj,))?
                .extract()?,
            0,
        )),
    }
}

/// The rounds a hostile value may ask for: big valid counts would make one input run for minutes.
fn rounds_is_cheap(value: &Bound<'_, PyAny>) -> bool {
    match value.cast::<PyInt>() {
        Ok(i) => i
            .extract::<i64>()
            .map(|n| !(9..(1 << 32)).contains(&n))
            .unwrap_or(true),
        Err(_) => true,
    }
}

impl BufferCall {
    fn run(&self, py: Python<'_>, allowed: &AllowedExceptions) -> Result<(), OracleFailure> {
        let native =
            ffi_harness::imported!(py, "native").map_err(|e| crate::py_failure(py, "import", e))?;
        let mat = |v: &PyValue| {
            v.materialise(py)
                .map_err(|e| crate::py_failure(py, "materialise", e))
        };
        match self {
            BufferCall::Checksum { data } => {
                let arg = mat(data)?;
                let fresh: Vec<_> = data
                    .is_fresh_heap_object()
                    .then_some(("data", &arg))
                    .into_iter()
                    .collect();
                check_call(py, &fresh, allowed, || {
                    native.call_method1("checksum", (&arg,))?.extract::<u64>()
                })?;
                resizable_after(py, &arg)
            }
            BufferCall::Process { data, key, rounds } => {
                let (arg, k, r) = (mat(data)?, mat(key)?, mat(rounds)?);
                if !rounds_is_cheap(&r) {
                    return Ok(());
                }
                let mut fresh = Vec::new();
                for (label, v, o) in [
                    ("data", data, &arg),
                    ("key", key, &k),
                    ("rounds", rounds, &r),
                ] {
                    if v.is_fresh_heap_object() {
                        fresh.push((label, o));
                    }
                }
                let kw = crate::kwargs(py, &[("key", k.clone()), ("rounds", r.clone())])
                    .map_err(|e| crate::py_failure(py, "kwargs", e))?;
                let read_only = is_read_only(py, &arg);
                let done = check_call(py, &fresh, allowed, || {
                    native
                        .call_method("process", (&arg,), Some(&kw))
                        .map(|_| ())
                })?;
                // process() works in place: an object whose buffer is read-only (bytes, a
                // read-only memoryview or mmap) must be refused, never transformed.
                if done.is_some() && read_only {
                    return Err(OracleFailure::new(
                        "contract",
                        format!("process() accepted a read-only buffer ({})", data.kind()),
                    ));
                }
                resizable_after(py, &arg)
            }
            BufferCall::ChecksumExact { kind, data } => {
                let obj = exact_object(py, *kind, data)
                    .map_err(|e| crate::py_failure(py, "build input", e))?;
                let got = check_call(py, &[("data", &obj)], allowed, || {
                    native.call_method1("checksum", (&obj,))?.extract::<u64>()
                })?;
                if got != Some(ref_fnv(data)) {
                    return Err(OracleFailure::new(
                        "reference",
                        format!("checksum = {got:?}, reference FNV-1a = {}", ref_fnv(data)),
                    ));
                }
                Ok(())
            }
            BufferCall::ProcessExact {
                kind,
                data,
                key,
                rounds,
            } => {
                let rounds = u32::from(rounds % 3) + 1;
                let obj = exact_object(py, *kind, data)
                    .map_err(|e| crate::py_failure(py, "build input", e))?;
                let (before, start) =
                    underlying(py, &obj).map_err(|e| crate::py_failure(py, "underlying", e))?;
                let kw = crate::kwargs(
                    py,
                    &[
                        ("key", key.into_pyobject(py).unwrap().into_any()),
                        ("rounds", rounds.into_pyobject(py).unwrap().into_any()),
                    ],
                )
                .map_err(|e| crate::py_failure(py, "kwargs", e))?;
                check_call(py, &[("data", &obj)], allowed, || {
                    native
                        .call_method("process", (&obj,), Some(&kw))
                        .map(|_| ())
                })?;
                let (after, _) =
                    underlying(py, &obj).map_err(|e| crate::py_failure(py, "underlying", e))?;
                let mut expected = before.clone();
                ref_process(&mut expected[start..start + data.len()], *key, rounds);
                if after != expected {
                    let first = after
                        .iter()
                        .zip(&expected)
                        .position(|(a, b)| a != b)
                        .unwrap_or(0);
                    return Err(OracleFailure::new(
                        "reference",
                        format!(
                            "process wrote wrong bytes: first difference at byte {first} of the underlying buffer \
                             (view is bytes {start}..{}): got {:#04x}, expected {:#04x}",
                            start + data.len(),
                            after.get(first).copied().unwrap_or(0),
                            expected.get(first).copied().unwrap_or(0)
                        ),
                    ));
                }
                resizable_after(py, &obj)
            }
            BufferCall::ResizeRace {
                process,
                size,
                fill,
                key,
                rounds,
            } => {
                let base = vec![*fill; race_len(*size)];
                let rounds = u32::from(rounds % 3) + 1;
                let race = || -> PyResult<_> {
                    let call = if *process {
                        let kw = crate::kwargs(
                            py,
                            &[
                                ("key", key.into_pyobject(py)?.into_any()),
                                ("rounds", rounds.into_pyobject(py)?.into_any()),
                            ],
                        )?;
                        ffi_harness::imported!(py, "functools", "partial")?
                            .call((native.getattr("process")?,), Some(&kw))?
                    } else {
                        native.getattr("checksum")?
                    };
                    let (outcome, result, ba): (
                        Bound<'_, PyAny>,
                        Bound<'_, PyAny>,
                        Bound<'_, PyByteArray>,
                    ) = RESIZER
                        .get_or_try_init(py, || {
                            native_testkit::REFS
                                .module(py)?
                                .call_method0("Resizer")
                                .map(Bound::unbind)
                        })?
                        .bind(py)
                        .call_method1("during", (PyBytes::new(py, &base), call))?
                        .extract()?;
                    let state: Option<String> =
                        outcome.call_method1("get", ("state",))?.extract()?;
                    Ok((state, result, ba))
                };
                // Any exception is a finding: the arguments are valid.
                let (state, result, ba) =
                    race().map_err(|e| crate::py_failure(py, "resize race", e))?;
                // The bytes the call saw: with "extra" the resizer's append got in before the export,
                // with "plain" it did not. With no state the resizer never ran into the export: the
                // whole call fell between one of its appends and the pop after it, or outside them
                // (the soak found this under load), so the call saw either. process() is position-wise,
                // so the bytes left after the pop are the same either way; only the checksum differs.
                let extra = usize::from(state.as_deref() == Some("extra"));
                let mut original = base;
                original.extend_from_slice(&APPENDED[..extra]);
                let seen_either = state.is_none();
                let got = ba.to_vec();
                let (want, what) = if *process {
                    (
                        ref_process_uniform_prefix(&original, *key, rounds),
                        "process",
                    )
                } else {
                    let sum = result.extract::<u64>().ok();
                    let reference = |appended| {
                        ref_fnv_uniform_then(*fill, race_len(*size), &APPENDED[..appended])
                    };
                    if sum != Some(reference(extra))
                        && !(seen_either && sum == Some(reference(extra + 1)))
                    {
                        return Err(OracleFailure::new(
                            "reference",
                            format!(
                                "checksum during a resize race = {sum:?}, reference = {}",
                                reference(extra)
                            ),
                        ));
                    }
                    (original, "checksum")
                };
                if got != want {
                    return Err(OracleFailure::new(
                        "reference",
                        format!("{what} during a resize race: the buffer holds other bytes than the reference"),
                    ));
                }
                resizable_after(py, ba.as_any())
            }
            BufferCall::AddFastVsAdd { a, b } => {
                let (x, y) = (mat(a)?, mat(b)?);
                ffi_harness::forget_answers(py)?;
                let slow = native.call_method1("add", (&x, &y));
                let fast = native.call_method1("add_fast", (&x, &y));
                compare_outcomes(py, "add vs add_fast", slow, fast, allowed)?;
                // Both outcomes (and their exceptions) are gone: every __index__ answer is released.
                ffi_harness::check_answers_released(py)
            }
        }
    }

    fn to_python(&self) -> String {
        match self {
            BufferCall::Checksum { data } => format!("native.checksum({})", data.to_python_source()),
            BufferCall::Process { data, key, rounds } => format!(
                "_d = {}\n_ro = _read_only(_d)\nnative.process(_d, key={}, rounds={})\n\
                 assert not _ro, 'process() accepted a read-only buffer'",
                data.to_python_source(),
                key.to_python_source(),
                rounds.to_python_source()
            ),
            BufferCall::ChecksumExact { kind, data } => format!(
                "_b = {}\nassert native.checksum(_b) == _ref_fnv({}), 'checksum differs from the reference'",
                exact_source(*kind, data),
                py_bytes(data)
            ),
            BufferCall::ProcessExact { kind, data, key, rounds } => format!(
                "_b = {src}\n_whole = _b.obj if isinstance(_b, memoryview) else _b\n_before = bytes(_whole)\n\
                 native.process(_b, key={key}, rounds={r})\n_start = (len(_before) - {n}) // 2 if isinstance(_b, memoryview) else 0\n\
                 _expected = _before[:_start] + _ref_process(_before[_start:_start + {n}], {key}, {r}) + _before[_start + {n}:]\n\
                 assert bytes(_whole) == _expected, 'process wrote outside the view or wrong bytes'",
                src = exact_source(*kind, data),
                r = u32::from(rounds % 3) + 1,
                n = data.len()
            ),
            BufferCall::ResizeRace { process, size, fill, key, rounds } => {
                let (n, r) = (race_len(*size), u32::from(rounds % 3) + 1);
                let (call, check) = if *process {
                    (
                        format!("lambda b: native.process(b, key={key}, rounds={r})"),
                        format!("bytes(_ba) == _ref_process(_orig, {key}, {r})"),
                    )
                } else {
                    (
                        "native.checksum".into(),
                        // No state: the call may have seen the resizer's extra byte (see run()).
                        "(_r == _ref_fnv(_orig) or ('state' not in _o and _r == _ref_fnv(_orig + b'\\x55'))) \
                         and bytes(_ba) == _orig"
                            .into(),
                    )
                };
                format!(
                    "_o, _r, _ba = _refs.resize_during(bytes([{fill}]) * {n}, {call})\n\
                     _orig = bytes([{fill}]) * {n} + (b'\\x55' if _o.get('state') == 'extra' else b'')\n\
                     assert {check}, 'wrong result during a resize race'\n\
                     _ba.append(1)\n_ba.pop()"
                )
            }
            BufferCall::AddFastVsAdd { a, b } => format!(
                "_x, _y = {}, {}\n_fh.forget_answers()\ntry:\n    _slow = ('ok', native.add(_x, _y))\nexcept Exception as e:\n    _slow = ('err', type(e))\n\
                 try:\n    _fast = ('ok', native.add_fast(_x, _y))\nexcept Exception as e:\n    _fast = ('err', type(e))\n\
                 assert _slow == _fast, (_slow, _fast)\n_kept = _fh.answers_kept()\nassert not _kept, _kept",
                a.to_python_source(),
                b.to_python_source()
            ),
        }
    }
}

/// Buffers: once a call returns, its export must be released, so a bytearray can change size again.
fn resizable_after(py: Python<'_>, obj: &Bound<'_, PyAny>) -> Result<(), OracleFailure> {
    if let Ok(ba) = obj.cast::<PyByteArray>() {
        // Grow by one byte, then shrink back. (Not `del ba[len:len + 1]`: pyo3 0.30.1's `PySlice::new`
        // leaks its three ints, which LeakSanitizer reports at exit once len > 256.)
        ba.call_method1("extend", (PyBytes::new(py, b"x"),))
            .and_then(|_| ba.call_method0("pop"))
            .map_err(|e| {
                OracleFailure::new(
                    "export released",
                    format!("bytearray still exported after the call: {e}"),
                )
            })?;
    }
    Ok(())
}

/// Two paths that promise the same contract must agree: same value, or same exception type.
pub fn compare_outcomes(
    py: Python<'_>,
    what: &str,
    a: PyResult<Bound<'_, PyAny>>,
    b: PyResult<Bound<'_, PyAny>>,
    allowed: &AllowedExceptions,
) -> Result<(), OracleFailure> {
    match (a, b) {
        (Ok(x), Ok(y)) => {
            if x.eq(&y).unwrap_or(false) {
                Ok(())
            } else {
                Err(OracleFailure::new(
                    "differential",
                    format!("{what}: {x} != {y}"),
                ))
            }
        }
        (Err(e1), Err(e2)) => {
            allowed.check(py, &e1)?;
            allowed.check(py, &e2)?;
            if e1.get_type(py).is(e2.get_type(py)) {
                Ok(())
            } else {
                Err(OracleFailure::new(
                    "differential",
                    format!("{what}: raised {} vs {}", e1.get_type(py), e2.get_type(py)),
                ))
            }
        }
        (Ok(x), Err(e)) | (Err(e), Ok(x)) => Err(OracleFailure::new(
            "differential",
            format!("{what}: one returned {x}, the other raised {e}"),
        )),
    }
}

impl BuffersInput {
    /// The calls an input makes: its first 8, keeping only the first `ResizeRace` (a race costs more
    /// than the rest of an input, and one per input finds what the race is for).
    fn calls(&self) -> impl Iterator<Item = (usize, &BufferCall)> {
        let mut raced = false;
        self.calls.iter().take(8).enumerate().filter(move |(_, c)| {
            let race = matches!(c, BufferCall::ResizeRace { .. });
            let keep = !(race && raced);
            raced |= race;
            keep
        })
    }
}

impl Scenario for BuffersInput {
    type State<'py> = ();

    fn run<'py>(&self, py: Python<'py>, _: &mut ()) -> Result<(), OracleFailure> {
        let allowed = Self::allowed();
        for (i, call) in self.calls() {
            call.run(py, &allowed)
                .map_err(|f| f.context(format_args!("call #{i} {call:?}")))?;
        }
        Ok(())
    }

    fn repro(&self, script: ReproScript) -> ReproScript {
        self.calls().fold(script, |s, (_, c)| s.step(c.to_python()))
    }
}

impl BuffersInput {
    /// The exceptions this target's inputs may raise (documented ones and hostile values' own).
    pub fn allowed() -> AllowedExceptions {
        allowed(&[])
    }
}

/// The `buffers` fuzz target (`fuzz_targets/buffers.rs`).
pub static TARGET: std::sync::LazyLock<ffi_harness::FuzzTarget> =
    std::sync::LazyLock::new(|| crate::target("buffers", &BuffersInput::allowed()));

/// Does `obj` export a read-only buffer? (False when it exports none: process() refuses it anyway.)
fn is_read_only(py: Python<'_>, obj: &Bound<'_, PyAny>) -> bool {
    let probe = || -> PyResult<bool> {
        let view = ffi_harness::imported!(py, "builtins", "memoryview")?.call1((obj,))?;
        let read_only = view.getattr("readonly")?.extract()?;
        view.call_method0("release")?;
        Ok(read_only)
    };
    // A hostile object may raise anything from its buffer export; that is not a finding here.
    probe().unwrap_or(false)
}
