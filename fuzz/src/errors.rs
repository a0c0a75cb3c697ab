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
const CHECKS: &str = r#"
def _unsafe_path(p):
    # Fuzzed text becomes a real path and we may run as root: a path that would create or open a
    # file anywhere but this input's scratch directory is not tried (types and hostile objects are).
    try:
        s = os.fspath(p)
    except BaseException:
        return False
    if isinstance(s, bytes):
        s = os.fsdecode(s)
    if not isinstance(s, str):
        return False
    return not (os.path.isabs(s) and s.startswith(_TMP + os.sep)) or ".." in s

def _check_store(c):
    try:
        items = list(c.items())
        assert len(items) == len(c) == c.stats().keys, "opened store is inconsistent"
        assert len({k for k, _ in items}) == len(items), "duplicate keys after replay"
        c.put(b"after", b"corruption")
        assert c.get(b"after") == b"corruption"
    finally:
        c.close()

import struct as _struct, zlib as _zlib

def _ref_read(data, max_key_size=1024):
    """An independent reading of libnative's file format (store.c's layout comment): the dict of what
    the file holds, or why a correct reader must refuse it. Forged records with valid checksums are
    read as the library reads them, so comparing with it is never a false alarm."""
    if not data:
        return {}  # an empty file is a new store
    if len(data) < 20:
        return "truncated header"
    committed, size = _struct.unpack_from("<Q", data, 8)[0], len(data)
    header_ok = data[:4] == b"NKV1" and _zlib.crc32(data[:16]) == _struct.unpack_from("<I", data, 16)[0]
    if header_ok and 20 <= committed < size:
        size = committed  # bytes after the committed length are not part of the store
    if data[:4] != b"NKV1" or _struct.unpack_from("<I", data, 4)[0] != 2 or not header_ok:
        return "bad header"
    store, off = {}, 20
    while off < size:
        if size - off < 9:
            return "truncated record"
        kind, klen, vlen = _struct.unpack_from("<BII", data, off)
        end = off + 9 + klen + vlen
        if end + 4 > size:
            return "truncated record"
        if _zlib.crc32(data[off:end]) != _struct.unpack_from("<I", data, end)[0]:
            return "bad record checksum"
        if kind not in (1, 2) or klen == 0 or klen > 65535 or vlen > 1 << 30 or (kind == 2 and vlen):
            return "malformed record"
        key = data[off + 9 : off + 9 + klen]
        if kind == 1:
            store[key] = data[off + 9 + klen : end]
        else:
            store.pop(key, None)
        off = end + 4
    if committed > len(data):
        return "truncated log"
    if any(len(k) > max_key_size for k in store):
        return "key over max_key_size"
    return store

def _check_model(data, model):
    # The reference reader is itself checked on every undamaged store: it must read back the model.
    got = _ref_read(data)
    assert got == model, f"reference reader: {got!r}, model of what was written: {model!r}"

def _check_against_reference(p, data):
    """A damaged store either is refused, as the reference refuses it, or opens holding exactly what the
    reference reads from the same bytes: never other data, never silently less."""
    want = _ref_read(data)
    try:
        c = native.connect(p)
    except (native.Error, ValueError) as e:
        assert not isinstance(want, dict), f"refused a store the reference reads ({len(want)} keys): {e!r}"
        raise
    try:
        assert isinstance(want, dict), f"opened a store the reference refuses ({want})"
        got = dict(c.items())
        assert got == want, f"reopened store {got!r}, the file holds {want!r}"
    except BaseException:
        c.close()
        raise
    _check_store(c)

def _check_error(fn):
    try:
        fn()
    except native.Error as e:
        assert isinstance(e.op, str) and e.op, f"{type(e).__name__} without op: {e!r}"
        assert isinstance(e.code, str) and e.code.startswith("NATIVE_"), f"bad code {e.code!r}"
        assert isinstance(e.message, str) and e.message, f"{type(e).__name__} without message"
        if isinstance(e, native.ConnectionError):
            assert isinstance(e.errno, int) and e.errno > 0, f"ConnectionError without errno: {e!r}"
            assert e.filename is not None, f"ConnectionError without filename: {e!r}"
        raise
"#;

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
            let globals = pyo3::types::PyDict::new(py);
            ffi_harness::prelude(py).map_err(|e| py_failure(py, "prelude", e))?;
            let setup = format!(
                "import os, native\nimport ffi_harness_prelude as _fh\n_TMP = {:?}\n{CHECKS}",
                scratch.dir.to_string_lossy()
            );
            let code = std::ffi::CString::new(setup).unwrap();
            py.run(&code, Some(&globals), None)
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
