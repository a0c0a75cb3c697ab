//! `PyValue`: a plain-data description of a Python object that a binding may be
//! handed, from `None` to a `__del__` that runs the garbage collector. Fuzzers and
//! property tests generate `PyValue`s; [`PyValue::materialise`] builds the real
//! object, [`PyValue::to_python_source`] prints a Python expression rebuilding it
//! (for `repro.py`). Both go through the same prelude definitions.

use arbitrary::{Arbitrary, Unstructured};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyFloat, PyList, PyString, PyTuple};

use crate::prelude::{PRELUDE_ALIAS, prelude};

/// A Python object to build. See the module docs; every variant is covered by both
/// the `arbitrary` generator and the proptest strategies (`crate::strategies`).
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An `int`, including C-long edges, bignums and a subclass.
    Int(IntValue),
    /// A `float`, including nan, infinities and `-0.0`.
    Float(FloatValue),
    /// A `str`, possibly with lone surrogates, non-BMP characters and NULs.
    Str(StrValue),
    /// `bytes`.
    Bytes(Vec<u8>),
    /// `bytearray` (writable, resizable).
    ByteArray(Vec<u8>),
    /// A `memoryview` over `data` with the layout `kind` names.
    MemoryView {
        /// Layout and flags of the view.
        kind: MemoryViewKind,
        /// The underlying bytes.
        data: Vec<u8>,
    },
    /// `array.array(typecode)` filled from raw bytes (truncated to whole items).
    Array {
        /// The array's item type.
        typecode: ArrayTypecode,
        /// Raw item bytes.
        data: Vec<u8>,
    },
    /// An anonymous `mmap.mmap` holding the bytes (at least one byte: mmap refuses 0).
    Mmap(Vec<u8>),
    /// A `list`.
    List(Vec<PyValue>),
    /// A `tuple`.
    Tuple(Vec<PyValue>),
    /// A `dict` (keys restricted to hashable scalars; later duplicates win, as in Python).
    Dict(Vec<(DictKey, PyValue)>),
    /// An object that misbehaves in one protocol, or in its finaliser.
    Hostile(Hostile),
    /// A callable that raises, returns something odd, or re-enters.
    Callable(CallableValue),
}

/// Integers, chosen to hit the conversions a binding performs.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntValue {
    /// Small values (-5..=256 are shared, cached objects in CPython).
    Small(i8),
    /// Any value that fits a C long (i64 on Linux x86-64).
    Long(i64),
    /// A named edge of the C integer types.
    Edge(IntEdge),
    /// `±(1 << (64 + extra_bits))`: never fits 64 bits.
    Big {
        /// Sign of the value.
        negative: bool,
        /// Bits above 64.
        extra_bits: u8,
    },
    /// `IntSub(n)`, an `int` subclass.
    Subclass(i64),
}

/// Edges of C `long` / `unsigned long` and beyond.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // each name is its value
pub enum IntEdge {
    LongMin,
    LongMinMinusOne,
    LongMinPlusOne,
    LongMax,
    LongMaxMinusOne,
    LongMaxPlusOne,
    U64Max,
    U64MaxPlusOne,
    Pow2To200,
    NegPow2To200,
}

impl IntEdge {
    /// The edge's value, when it fits an i128 (all but the ±2**200 ones).
    pub fn as_i128(self) -> Option<i128> {
        Some(match self {
            IntEdge::LongMin => i64::MIN as i128,
            IntEdge::LongMinMinusOne => i64::MIN as i128 - 1,
            IntEdge::LongMinPlusOne => i64::MIN as i128 + 1,
            IntEdge::LongMax => i64::MAX as i128,
            IntEdge::LongMaxMinusOne => i64::MAX as i128 - 1,
            IntEdge::LongMaxPlusOne => i64::MAX as i128 + 1,
            IntEdge::U64Max => u64::MAX as i128,
            IntEdge::U64MaxPlusOne => u64::MAX as i128 + 1,
            IntEdge::Pow2To200 | IntEdge::NegPow2To200 => return None,
        })
    }
}

/// Floats, with the special values named so generators hit them often.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
pub enum FloatValue {
    /// `float('nan')`.
    Nan,
    /// `float('inf')`.
    Inf,
    /// `float('-inf')`.
    NegInf,
    /// `-0.0`.
    NegZero,
    /// Any f64 (may itself be special).
    Finite(f64),
    /// `FloatSub(x)`, a `float` subclass.
    Subclass(f64),
}

impl FloatValue {
    fn as_f64(self) -> f64 {
        match self {
            FloatValue::Nan => f64::NAN,
            FloatValue::Inf => f64::INFINITY,
            FloatValue::NegInf => f64::NEG_INFINITY,
            FloatValue::NegZero => -0.0,
            FloatValue::Finite(x) | FloatValue::Subclass(x) => x,
        }
    }
}

/// A `str`, as a sequence of pieces so that lone surrogates (which a Rust
/// `String` cannot hold) can be described.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StrValue(pub Vec<StrPiece>);

/// One piece of a [`StrValue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrPiece {
    /// Ordinary text.
    Text(String),
    /// A lone surrogate: `0xD800 + n % 0x800` (not encodable as UTF-8).
    LoneSurrogate(u16),
    /// A character outside the BMP: `0x10000 + n % 0x100000`.
    NonBmp(u32),
    /// An embedded NUL (C strings end there).
    Nul,
}

impl StrPiece {
    fn push_code_points(&self, out: &mut Vec<u32>) {
        match self {
            StrPiece::Text(text) => out.extend(text.chars().map(u32::from)),
            StrPiece::LoneSurrogate(n) => out.push(0xD800 + u32::from(*n) % 0x800),
            StrPiece::NonBmp(n) => out.push(0x10000 + n % 0x10_0000),
            StrPiece::Nul => out.push(0),
        }
    }
}

impl StrValue {
    /// The string's code points (surrogates included).
    pub fn code_points(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for piece in &self.0 {
            piece.push_code_points(&mut out);
        }
        out
    }

    /// The string as UTF-8, if it has no lone surrogate.
    pub fn to_utf8(&self) -> Option<String> {
        self.code_points().into_iter().map(char::from_u32).collect()
    }
}

/// Memoryview layouts that break naive buffer code.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryViewKind {
    /// Writable, C-contiguous bytes.
    Writable,
    /// Read-only (`memoryview(bytes)`).
    ReadOnly,
    /// Non-contiguous: `[::2 + step % 3]`.
    Strided {
        /// Selects the step (2, 3 or 4).
        step: u8,
    },
    /// Non-contiguous, negative stride: `[::-1]`.
    Reversed,
    /// Two-dimensional: `.cast("B", [rows, 1 + cols % 8])`.
    Matrix {
        /// Selects the column count.
        cols: u8,
    },
    /// Itemsize > 1: `.cast("H" | "I" | "d")`.
    Format {
        /// Selects the format.
        format: u8,
    },
    /// A released view: any access raises `ValueError`.
    Released,
}

impl MemoryViewKind {
    fn prelude_args(self) -> (&'static str, u8) {
        match self {
            MemoryViewKind::Writable => ("writable", 0),
            MemoryViewKind::ReadOnly => ("readonly", 0),
            MemoryViewKind::Strided { step } => ("strided", step),
            MemoryViewKind::Reversed => ("reversed", 0),
            MemoryViewKind::Matrix { cols } => ("matrix", cols),
            MemoryViewKind::Format { format } => ("format", format),
            MemoryViewKind::Released => ("released", 0),
        }
    }
}

/// `array.array` typecodes (all but the deprecated `u`).
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // each name is its C type
pub enum ArrayTypecode {
    SignedChar,
    UnsignedChar,
    Short,
    UnsignedShort,
    Int,
    UnsignedInt,
    Long,
    UnsignedLong,
    LongLong,
    UnsignedLongLong,
    Float,
    Double,
}

impl ArrayTypecode {
    /// The one-letter typecode.
    pub fn code(self) -> char {
        match self {
            ArrayTypecode::SignedChar => 'b',
            ArrayTypecode::UnsignedChar => 'B',
            ArrayTypecode::Short => 'h',
            ArrayTypecode::UnsignedShort => 'H',
            ArrayTypecode::Int => 'i',
            ArrayTypecode::UnsignedInt => 'I',
            ArrayTypecode::Long => 'l',
            ArrayTypecode::UnsignedLong => 'L',
            ArrayTypecode::LongLong => 'q',
            ArrayTypecode::UnsignedLongLong => 'Q',
            ArrayTypecode::Float => 'f',
            ArrayTypecode::Double => 'd',
        }
    }
}

/// Hashable dict keys (a list key would make the dict itself unbuildable).
#[derive(Debug, Clone, PartialEq)]
pub enum DictKey {
    /// `None`.
    None,
    /// A bool (note `True == 1`: such keys collide, as in Python).
    Bool(bool),
    /// An int.
    Int(IntValue),
    /// A float (nan keys are distinct objects, hence distinct keys).
    Float(FloatValue),
    /// A str.
    Str(StrValue),
    /// bytes.
    Bytes(Vec<u8>),
}

impl DictKey {
    /// The key as a [`PyValue`].
    pub fn to_value(&self) -> PyValue {
        match self {
            DictKey::None => PyValue::None,
            DictKey::Bool(b) => PyValue::Bool(*b),
            DictKey::Int(i) => PyValue::Int(*i),
            DictKey::Float(f) => PyValue::Float(*f),
            DictKey::Str(s) => PyValue::Str(s.clone()),
            DictKey::Bytes(b) => PyValue::Bytes(b.clone()),
        }
    }
}

/// Objects that misbehave.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// An object implementing only `dunder`, misbehaving as `misbehaviour` says.
    Dunder {
        /// The protocol the object speaks.
        dunder: Dunder,
        /// How it misbehaves.
        misbehaviour: Misbehaviour,
    },
    /// An object whose `__del__` runs code when the last reference goes.
    Del(DelAction),
    /// A list containing itself.
    SelfReferentialList,
}

/// The protocol a hostile object implements.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // each name is its dunder
pub enum Dunder {
    Index,
    Int,
    Float,
    Len,
    /// `__buffer__` is honoured from Python 3.12; on 3.11 the object is simply no buffer.
    Buffer,
    Hash,
    Eq,
    Fspath,
    Bool,
}

impl Dunder {
    fn class_name(self) -> &'static str {
        match self {
            Dunder::Index => "BadIndex",
            Dunder::Int => "BadInt",
            Dunder::Float => "BadFloat",
            Dunder::Len => "BadLen",
            Dunder::Buffer => "BadBuffer",
            Dunder::Hash => "BadHash",
            Dunder::Eq => "BadEq",
            Dunder::Fspath => "BadFspath",
            Dunder::Bool => "BadBool",
        }
    }
}

/// How a hostile dunder misbehaves (see the prelude's `_Misbehaving._answer`).
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Raises `HostileError`.
    Raise,
    /// Returns an object of the wrong type (`"7"` from `__index__`, ...).
    WrongType,
    /// Returns the right type with a hostile value (`2**100`, `-1` from `__len__`, ...).
    OutOfRange,
    /// Calls the re-entrancy hook with `n`, then behaves.
    Reenter(u8),
    /// Behaves (the control case).
    Behave,
}

impl Misbehaviour {
    fn prelude_args(self) -> (&'static str, u8) {
        match self {
            Misbehaviour::Raise => ("raise", 0),
            Misbehaviour::WrongType => ("wrong_type", 0),
            Misbehaviour::OutOfRange => ("out_of_range", 0),
            Misbehaviour::Reenter(n) => ("reenter", n),
            Misbehaviour::Behave => ("behave", 0),
        }
    }
}

/// What a `DelRunsCode` finaliser does.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelAction {
    /// `gc.collect()` from inside a finaliser.
    CollectGarbage,
    /// Raises (reported through `sys.unraisablehook`).
    Raise,
    /// Calls the re-entrancy hook with `n`.
    Reenter(u8),
}

impl DelAction {
    fn prelude_args(self) -> (&'static str, u8) {
        match self {
            DelAction::CollectGarbage => ("gc", 0),
            DelAction::Raise => ("raise", 0),
            DelAction::Reenter(n) => ("reenter", n),
        }
    }
}

/// Callables handed to code that calls back into Python.
#[derive(Debug, Clone, PartialEq)]
pub enum CallableValue {
    /// Raises the named exception whatever the arguments.
    Raises(RaiseKind),
    /// Returns the value (a fresh closure each time).
    Returns(Box<PyValue>),
    /// Calls the re-entrancy hook with `n` and returns its result.
    Reenter(u8),
    /// Accepts no arguments: calling it with any raises `TypeError`.
    NoArguments,
}

/// Exceptions a [`CallableValue::Raises`] raises.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaiseKind {
    /// `HostileError(Exception)`.
    HostileError,
    /// `KeyboardInterrupt` (a `BaseException`).
    KeyboardInterrupt,
    /// `HostileBaseError(BaseException)`.
    BaseException,
    /// `MemoryError`.
    MemoryError,
}

impl RaiseKind {
    fn prelude_arg(self) -> &'static str {
        match self {
            RaiseKind::HostileError => "hostile_error",
            RaiseKind::KeyboardInterrupt => "keyboard_interrupt",
            RaiseKind::BaseException => "base_exception",
            RaiseKind::MemoryError => "memory_error",
        }
    }
}

// ---------------------------------------------------------------------------
// Materialisation.

impl PyValue {
    /// Build the Python object this value describes. Each call builds a new object
    /// (see [`PyValue::is_fresh_heap_object`] for which ones nobody else shares).
    pub fn materialise<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self {
            PyValue::None => py.None().into_bound(py),
            PyValue::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
            PyValue::Int(i) => materialise_int(py, *i)?,
            PyValue::Float(f) => match f {
                FloatValue::Subclass(x) => prelude(py)?.getattr("FloatSub")?.call1((*x,))?,
                other => PyFloat::new(py, other.as_f64()).into_any(),
            },
            PyValue::Str(s) => match s.to_utf8() {
                Some(text) => PyString::new(py, &text).into_any(),
                None => prelude(py)?.call_method1("mk_str", (s.code_points(),))?,
            },
            PyValue::Bytes(b) => PyBytes::new(py, b).into_any(),
            PyValue::ByteArray(b) => PyByteArray::new(py, b).into_any(),
            PyValue::MemoryView { kind, data } => {
                let (kind, param) = kind.prelude_args();
                prelude(py)?.call_method1("mk_memoryview", (kind, PyBytes::new(py, data), param))?
            }
            PyValue::Array { typecode, data } => {
                prelude(py)?.call_method1("mk_array", (typecode.code(), PyBytes::new(py, data)))?
            }
            PyValue::Mmap(data) => {
                prelude(py)?.call_method1("mk_mmap", (PyBytes::new(py, data),))?
            }
            PyValue::List(items) => {
                let items = items
                    .iter()
                    .map(|item| item.materialise(py))
                    .collect::<PyResult<Vec<_>>>()?;
                PyList::new(py, items)?.into_any()
            }
            PyValue::Tuple(items) => {
                let items = items
                    .iter()
                    .map(|item| item.materialise(py))
                    .collect::<PyResult<Vec<_>>>()?;
                PyTuple::new(py, items)?.into_any()
            }
            PyValue::Dict(entries) => {
                let dict = PyDict::new(py);
                for (key, value) in entries {
                    dict.set_item(key.to_value().materialise(py)?, value.materialise(py)?)?;
                }
                dict.into_any()
            }
            PyValue::Hostile(hostile) => materialise_hostile(py, *hostile)?,
            PyValue::Callable(callable) => {
                let prelude = prelude(py)?;
                match callable {
                    CallableValue::Raises(kind) => {
                        prelude.call_method1("mk_raiser", (kind.prelude_arg(),))?
                    }
                    CallableValue::Returns(value) => {
                        prelude.call_method1("mk_returner", (value.materialise(py)?,))?
                    }
                    CallableValue::Reenter(n) => prelude.call_method1("mk_reenterer", (*n,))?,
                    CallableValue::NoArguments => prelude.call_method0("mk_no_arguments")?,
                }
            }
        })
    }

    /// True if [`PyValue::materialise`] returns an object that nobody else holds a
    /// reference to, so that refcount deltas on it are meaningful. False for
    /// singletons and CPython's caches: `None`, bools, small ints (-5..=256), the
    /// empty and one-character str/bytes, the empty tuple.
    pub fn is_fresh_heap_object(&self) -> bool {
        match self {
            PyValue::None | PyValue::Bool(_) => false,
            PyValue::Int(IntValue::Small(n)) => !(-5..=127).contains(n),
            PyValue::Int(IntValue::Long(n)) => !(-5..=256).contains(n),
            PyValue::Int(_) => true,
            PyValue::Float(_) => true,
            PyValue::Str(s) => s.code_points().len() >= 2,
            PyValue::Bytes(b) => b.len() >= 2,
            PyValue::Tuple(items) => !items.is_empty(),
            _ => true,
        }
    }

    /// A Python expression that rebuilds this value in a script where the prelude is
    /// imported as [`PRELUDE_ALIAS`] (`_fh`), as in every generated `repro.py`.
    pub fn to_python_source(&self) -> String {
        let mut out = String::new();
        self.write_source(&mut out);
        out
    }

    fn write_source(&self, out: &mut String) {
        let h = PRELUDE_ALIAS;
        match self {
            PyValue::None => out.push_str("None"),
            PyValue::Bool(true) => out.push_str("True"),
            PyValue::Bool(false) => out.push_str("False"),
            PyValue::Int(i) => out.push_str(&int_source(*i)),
            PyValue::Float(FloatValue::Subclass(x)) => {
                out.push_str(&format!("{h}.FloatSub({})", float_source(*x)))
            }
            PyValue::Float(f) => out.push_str(&float_source(f.as_f64())),
            PyValue::Str(s) => out.push_str(&str_literal(&s.code_points())),
            PyValue::Bytes(b) => out.push_str(&bytes_literal(b)),
            PyValue::ByteArray(b) => out.push_str(&format!("bytearray({})", bytes_literal(b))),
            PyValue::MemoryView { kind, data } => {
                let (kind, param) = kind.prelude_args();
                out.push_str(&format!(
                    "{h}.mk_memoryview('{kind}', {}, {param})",
                    bytes_literal(data)
                ));
            }
            PyValue::Array { typecode, data } => out.push_str(&format!(
                "{h}.mk_array('{}', {})",
                typecode.code(),
                bytes_literal(data)
            )),
            PyValue::Mmap(data) => out.push_str(&format!("{h}.mk_mmap({})", bytes_literal(data))),
            PyValue::List(items) => {
                out.push('[');
                write_items(items.iter(), out);
                out.push(']');
            }
            PyValue::Tuple(items) => {
                out.push('(');
                write_items(items.iter(), out);
                if items.len() == 1 {
                    out.push(',');
                }
                out.push(')');
            }
            PyValue::Dict(entries) => {
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    key.to_value().write_source(out);
                    out.push_str(": ");
                    value.write_source(out);
                }
                out.push('}');
            }
            PyValue::Hostile(Hostile::Dunder {
                dunder,
                misbehaviour,
            }) => {
                let (mode, n) = misbehaviour.prelude_args();
                out.push_str(&format!("{h}.{}('{mode}', {n})", dunder.class_name()));
            }
            PyValue::Hostile(Hostile::Del(action)) => {
                let (mode, n) = action.prelude_args();
                out.push_str(&format!("{h}.DelRunsCode('{mode}', {n})"));
            }
            PyValue::Hostile(Hostile::SelfReferentialList) => {
                out.push_str(&format!("{h}.mk_self_referential_list()"))
            }
            PyValue::Callable(CallableValue::Raises(kind)) => {
                out.push_str(&format!("{h}.mk_raiser('{}')", kind.prelude_arg()))
            }
            PyValue::Callable(CallableValue::Returns(value)) => {
                out.push_str(&format!("{h}.mk_returner("));
                value.write_source(out);
                out.push(')');
            }
            PyValue::Callable(CallableValue::Reenter(n)) => {
                out.push_str(&format!("{h}.mk_reenterer({n})"))
            }
            PyValue::Callable(CallableValue::NoArguments) => {
                out.push_str(&format!("{h}.mk_no_arguments()"))
            }
        }
    }

    /// A short stable name for this value's variant (and sub-variant), e.g.
    /// `"int.edge"` or `"memoryview.strided"`: used to check that generators cover
    /// every entry of [`PyValue::ALL_KINDS`], and handy in failure messages.
    pub fn kind(&self) -> &'static str {
        match self {
            PyValue::None => "none",
            PyValue::Bool(_) => "bool",
            PyValue::Int(IntValue::Small(_)) => "int.small",
            PyValue::Int(IntValue::Long(_)) => "int.long",
            PyValue::Int(IntValue::Edge(_)) => "int.edge",
            PyValue::Int(IntValue::Big { .. }) => "int.big",
            PyValue::Int(IntValue::Subclass(_)) => "int.subclass",
            PyValue::Float(FloatValue::Nan) => "float.nan",
            PyValue::Float(FloatValue::Inf) => "float.inf",
            PyValue::Float(FloatValue::NegInf) => "float.neg_inf",
            PyValue::Float(FloatValue::NegZero) => "float.neg_zero",
            PyValue::Float(FloatValue::Finite(_)) => "float.finite",
            PyValue::Float(FloatValue::Subclass(_)) => "float.subclass",
            PyValue::Str(s) if s.to_utf8().is_none() => "str.surrogate",
            PyValue::Str(_) => "str",
            PyValue::Bytes(_) => "bytes",
            PyValue::ByteArray(_) => "bytearray",
            PyValue::MemoryView { kind, .. } => match kind {
                MemoryViewKind::Writable => "memoryview.writable",
                MemoryViewKind::ReadOnly => "memoryview.readonly",
                MemoryViewKind::Strided { .. } => "memoryview.strided",
                MemoryViewKind::Reversed => "memoryview.reversed",
                MemoryViewKind::Matrix { .. } => "memoryview.matrix",
                MemoryViewKind::Format { .. } => "memoryview.format",
                MemoryViewKind::Released => "memoryview.released",
            },
            PyValue::Array { .. } => "array",
            PyValue::Mmap(_) => "mmap",
            PyValue::List(_) => "list",
            PyValue::Tuple(_) => "tuple",
            PyValue::Dict(_) => "dict",
            PyValue::Hostile(Hostile::Dunder { dunder, .. }) => match dunder {
                Dunder::Index => "hostile.index",
                Dunder::Int => "hostile.int",
                Dunder::Float => "hostile.float",
                Dunder::Len => "hostile.len",
                Dunder::Buffer => "hostile.buffer",
                Dunder::Hash => "hostile.hash",
                Dunder::Eq => "hostile.eq",
                Dunder::Fspath => "hostile.fspath",
                Dunder::Bool => "hostile.bool",
            },
            PyValue::Hostile(Hostile::Del(_)) => "hostile.del",
            PyValue::Hostile(Hostile::SelfReferentialList) => "hostile.self_referential_list",
            PyValue::Callable(CallableValue::Raises(_)) => "callable.raises",
            PyValue::Callable(CallableValue::Returns(_)) => "callable.returns",
            PyValue::Callable(CallableValue::Reenter(_)) => "callable.reenter",
            PyValue::Callable(CallableValue::NoArguments) => "callable.no_arguments",
        }
    }

    /// Every value [`PyValue::kind`] can return.
    pub const ALL_KINDS: &'static [&'static str] = &[
        "none",
        "bool",
        "int.small",
        "int.long",
        "int.edge",
        "int.big",
        "int.subclass",
        "float.nan",
        "float.inf",
        "float.neg_inf",
        "float.neg_zero",
        "float.finite",
        "float.subclass",
        "str",
        "str.surrogate",
        "bytes",
        "bytearray",
        "memoryview.writable",
        "memoryview.readonly",
        "memoryview.strided",
        "memoryview.reversed",
        "memoryview.matrix",
        "memoryview.format",
        "memoryview.released",
        "array",
        "mmap",
        "list",
        "tuple",
        "dict",
        "hostile.index",
        "hostile.int",
        "hostile.float",
        "hostile.len",
        "hostile.buffer",
        "hostile.hash",
        "hostile.eq",
        "hostile.fspath",
        "hostile.bool",
        "hostile.del",
        "hostile.self_referential_list",
        "callable.raises",
        "callable.returns",
        "callable.reenter",
        "callable.no_arguments",
    ];

    /// Call `visit` on this value and every value nested in it (dict keys included).
    pub fn walk(&self, visit: &mut dyn FnMut(&PyValue)) {
        visit(self);
        match self {
            PyValue::List(items) | PyValue::Tuple(items) => {
                items.iter().for_each(|item| item.walk(visit))
            }
            PyValue::Dict(entries) => {
                for (key, value) in entries {
                    key.to_value().walk(visit);
                    value.walk(visit);
                }
            }
            PyValue::Callable(CallableValue::Returns(value)) => value.walk(visit),
            _ => {}
        }
    }
}

fn materialise_int(py: Python<'_>, value: IntValue) -> PyResult<Bound<'_, PyAny>> {
    Ok(match value {
        IntValue::Small(n) => n.into_pyobject(py)?.into_any(),
        IntValue::Long(n) => n.into_pyobject(py)?.into_any(),
        IntValue::Edge(edge) => match edge.as_i128() {
            Some(n) => n.into_pyobject(py)?.into_any(),
            None => {
                let pow = 1i64.into_pyobject(py)?.lshift(200)?;
                if edge == IntEdge::NegPow2To200 {
                    pow.neg()?
                } else {
                    pow
                }
            }
        },
        IntValue::Big {
            negative,
            extra_bits,
        } => {
            let pow = 1i64.into_pyobject(py)?.lshift(64 + u32::from(extra_bits))?;
            if negative { pow.neg()? } else { pow }
        }
        IntValue::Subclass(n) => prelude(py)?.getattr("IntSub")?.call1((n,))?,
    })
}

fn materialise_hostile(py: Python<'_>, hostile: Hostile) -> PyResult<Bound<'_, PyAny>> {
    let prelude = prelude(py)?;
    match hostile {
        Hostile::Dunder {
            dunder,
            misbehaviour,
        } => prelude
            .getattr(dunder.class_name())?
            .call1(misbehaviour.prelude_args()),
        Hostile::Del(action) => prelude.getattr("DelRunsCode")?.call1(action.prelude_args()),
        Hostile::SelfReferentialList => prelude.call_method0("mk_self_referential_list"),
    }
}

fn write_items<'a>(items: impl Iterator<Item = &'a PyValue>, out: &mut String) {
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        item.write_source(out);
    }
}

fn int_source(value: IntValue) -> String {
    match value {
        IntValue::Small(n) => n.to_string(),
        IntValue::Long(n) => n.to_string(),
        IntValue::Edge(IntEdge::Pow2To200) => "2**200".to_owned(),
        IntValue::Edge(IntEdge::NegPow2To200) => "-(2**200)".to_owned(),
        IntValue::Edge(edge) => edge.as_i128().expect("fits i128").to_string(),
        IntValue::Big {
            negative,
            extra_bits,
        } => format!(
            "{}(1 << {})",
            if negative { "-" } else { "" },
            64 + u32::from(extra_bits)
        ),
        IntValue::Subclass(n) => format!("{PRELUDE_ALIAS}.IntSub({n})"),
    }
}

/// `float('…')` with Rust's shortest round-trip rendering, which Python's `float()`
/// parses back to the same bits ("NaN", "inf", "-0.0", "5e-324" included).
fn float_source(x: f64) -> String {
    format!("float('{x:?}')")
}

/// A Python `str` literal using only ASCII: escapes keep lone surrogates, NULs and
/// control characters intact (Python does not pair `\ud83d\ude00` in a literal).
pub(crate) fn str_literal(code_points: &[u32]) -> String {
    let mut out = String::with_capacity(code_points.len() + 2);
    out.push('\'');
    for &cp in code_points {
        match cp {
            0x5C => out.push_str("\\\\"),
            0x27 => out.push_str("\\'"),
            0x20..=0x7E => out.push(char::from_u32(cp).expect("ASCII")),
            0..=0xFF => out.push_str(&format!("\\x{cp:02x}")),
            0x100..=0xFFFF => out.push_str(&format!("\\u{cp:04x}")),
            _ => out.push_str(&format!("\\U{cp:08x}")),
        }
    }
    out.push('\'');
    out
}

/// A Python `bytes` literal (ASCII-only source).
pub(crate) fn bytes_literal(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 3);
    out.push_str("b'");
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\'' => out.push_str("\\'"),
            0x20..=0x7E => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('\'');
    out
}

// ---------------------------------------------------------------------------
// Generation with `arbitrary`, bounded in depth and size.

/// Bounds for generated values: fuzzers feed long inputs, and an unbounded
/// recursive generator would spend them all on one deep list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum container nesting (0: scalars only).
    pub max_depth: u32,
    /// Maximum number of values in one tree (containers count too).
    pub max_nodes: u32,
    /// Maximum elements in one container.
    pub max_items: u32,
    /// Maximum bytes (or characters) in one bytes/str/buffer payload.
    pub max_payload: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 3,
            max_nodes: 48,
            max_items: 6,
            max_payload: 96,
        }
    }
}

impl<'a> Arbitrary<'a> for PyValue {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        PyValue::arbitrary_with(u, &Limits::default())
    }
}

impl PyValue {
    /// Generate a value from fuzzer bytes within `limits`.
    pub fn arbitrary_with(u: &mut Unstructured<'_>, limits: &Limits) -> arbitrary::Result<Self> {
        let mut budget = limits.max_nodes;
        arbitrary_value(u, limits, limits.max_depth, &mut budget)
    }
}

/// Number of non-recursive choices in `arbitrary_value` (variants 0..LEAF_CHOICES).
const LEAF_CHOICES: usize = 14;
/// Recursive choices, tried only while depth and node budget remain.
const CONTAINER_CHOICES: usize = 4;

fn arbitrary_value(
    u: &mut Unstructured<'_>,
    limits: &Limits,
    depth: u32,
    budget: &mut u32,
) -> arbitrary::Result<PyValue> {
    *budget = budget.saturating_sub(1);
    let can_nest = depth > 0 && *budget > 0;
    let choices = LEAF_CHOICES + if can_nest { CONTAINER_CHOICES } else { 0 };
    Ok(match u.choose_index(choices)? {
        0 => PyValue::None,
        1 => PyValue::Bool(u.arbitrary()?),
        2 => PyValue::Int(u.arbitrary()?),
        3 => PyValue::Float(u.arbitrary()?),
        4 => PyValue::Str(arbitrary_str(u, limits)?),
        5 => PyValue::Bytes(arbitrary_payload(u, limits)?),
        6 => PyValue::ByteArray(arbitrary_payload(u, limits)?),
        7 => PyValue::MemoryView {
            kind: u.arbitrary()?,
            data: arbitrary_payload(u, limits)?,
        },
        8 => PyValue::Array {
            typecode: u.arbitrary()?,
            data: arbitrary_payload(u, limits)?,
        },
        9 => PyValue::Mmap(arbitrary_payload(u, limits)?),
        10 => PyValue::Hostile(u.arbitrary()?),
        11 => PyValue::Callable(CallableValue::Raises(u.arbitrary()?)),
        12 => PyValue::Callable(CallableValue::Reenter(u.arbitrary()?)),
        13 => PyValue::Callable(CallableValue::NoArguments),
        14 => PyValue::List(arbitrary_items(u, limits, depth, budget)?),
        15 => PyValue::Tuple(arbitrary_items(u, limits, depth, budget)?),
        16 => {
            let len = arbitrary_len(u, limits, budget)?;
            let mut entries = Vec::with_capacity(len);
            for _ in 0..len {
                let key = arbitrary_dict_key(u, limits)?;
                entries.push((key, arbitrary_value(u, limits, depth - 1, budget)?));
            }
            PyValue::Dict(entries)
        }
        17 => PyValue::Callable(CallableValue::Returns(Box::new(arbitrary_value(
            u,
            limits,
            depth - 1,
            budget,
        )?))),
        _ => unreachable!("choose_index stays below {choices}"),
    })
}

fn arbitrary_len(
    u: &mut Unstructured<'_>,
    limits: &Limits,
    budget: &u32,
) -> arbitrary::Result<usize> {
    let max = limits.max_items.min(*budget);
    Ok(u.int_in_range(0..=max)? as usize)
}

fn arbitrary_items(
    u: &mut Unstructured<'_>,
    limits: &Limits,
    depth: u32,
    budget: &mut u32,
) -> arbitrary::Result<Vec<PyValue>> {
    let len = arbitrary_len(u, limits, budget)?;
    (0..len)
        .map(|_| arbitrary_value(u, limits, depth - 1, budget))
        .collect()
}

fn arbitrary_payload(u: &mut Unstructured<'_>, limits: &Limits) -> arbitrary::Result<Vec<u8>> {
    let len = u.int_in_range(0..=limits.max_payload)? as usize;
    let len = len.min(u.len());
    Ok(u.bytes(len)?.to_vec())
}

fn arbitrary_str(u: &mut Unstructured<'_>, limits: &Limits) -> arbitrary::Result<StrValue> {
    let pieces = u.int_in_range(0..=4u8)?;
    let mut out = Vec::with_capacity(pieces.into());
    for _ in 0..pieces {
        out.push(match u.choose_index(4)? {
            0 => {
                let text: &str = u.arbitrary()?;
                let cap = limits.max_payload as usize;
                StrPiece::Text(text.chars().take(cap).collect())
            }
            1 => StrPiece::LoneSurrogate(u.arbitrary()?),
            2 => StrPiece::NonBmp(u.arbitrary()?),
            _ => StrPiece::Nul,
        });
    }
    Ok(StrValue(out))
}

fn arbitrary_dict_key(u: &mut Unstructured<'_>, limits: &Limits) -> arbitrary::Result<DictKey> {
    Ok(match u.choose_index(6)? {
        0 => DictKey::None,
        1 => DictKey::Bool(u.arbitrary()?),
        2 => DictKey::Int(u.arbitrary()?),
        3 => DictKey::Float(u.arbitrary()?),
        4 => DictKey::Str(arbitrary_str(u, limits)?),
        _ => DictKey::Bytes(arbitrary_payload(u, limits)?),
    })
}

impl<'a> Arbitrary<'a> for StrValue {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        arbitrary_str(u, &Limits::default())
    }
}

impl<'a> Arbitrary<'a> for DictKey {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        arbitrary_dict_key(u, &Limits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_literal_escapes_everything_unusual() {
        assert_eq!(str_literal(&[0x61, 0x27, 0x5C]), r"'a\'\\'");
        assert_eq!(
            str_literal(&[0, 0xD800, 0x1F600]),
            r"'\x00\ud800\U0001f600'"
        );
    }

    #[test]
    fn bytes_literal_is_ascii() {
        assert_eq!(bytes_literal(b"a'\\\x00\xff"), r"b'a\'\\\x00\xff'");
    }

    #[test]
    fn generation_respects_limits() {
        let limits = Limits::default();
        let data: Vec<u8> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut u = Unstructured::new(&data);
        for _ in 0..200 {
            let value = PyValue::arbitrary_with(&mut u, &limits).unwrap();
            let mut nodes = 0;
            value.walk(&mut |_| nodes += 1);
            // Dict keys are generated outside the node budget; allow for them.
            assert!(
                nodes <= 2 * limits.max_nodes as usize,
                "{nodes} nodes in {value:?}"
            );
        }
    }
}
