//! `PyValue`: a plain-data description of a Python object that a binding may be
//! handed, from `None` to a `__del__` that runs the garbage collector. Fuzzers and
//! property tests generate `PyValue`s; [`PyValue::materialise`] builds the real
//! object, [`PyValue::to_python_source`] prints a Python expression rebuilding it
//! (for `repro.py`). Both go through the same prelude definitions.

use arbitrary::Arbitrary;

mod describe;
mod generate;
mod materialise;
mod source;

pub use generate::Limits;
pub use source::bytes_literal;
pub(crate) use source::str_literal;

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
    /// A large `bytearray` (`RacedByteArray`: 64 KiB to 256 KiB of `fill`, sized by `size_class`) that
    /// another thread keeps resizing while a call under the prelude's `resized_during` holds it: the
    /// `ffi-harness fuzz` runtime calls that way. A binding that lets go of the export while native code
    /// still reads it (detached) reads freed memory.
    RacedByteArray {
        /// The byte it is filled with.
        fill: u8,
        /// Its size: `65536 * (1 + size_class % 4) + size_class / 4` bytes.
        size_class: u8,
    },
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
    /// C `int` (32 bits) and `unsigned int`: counts and lengths kept in an `int` overflow here.
    IntMax,
    IntMaxPlusOne,
    UIntMax,
    UIntMaxPlusOne,
    /// `SIZE_MAX / k + 1` for an element size k of 16, 8 and 4 bytes: `n * k` wraps to 0 in a `size_t`,
    /// so a size check passes and the allocation is short.
    SizeWrapsTimes16,
    SizeWrapsTimes8,
    SizeWrapsTimes4,
}

impl IntEdge {
    /// Every edge, in declaration order (generators and tests enumerate them from here).
    pub const ALL: [IntEdge; 17] = [
        IntEdge::LongMin,
        IntEdge::LongMinMinusOne,
        IntEdge::LongMinPlusOne,
        IntEdge::LongMax,
        IntEdge::LongMaxMinusOne,
        IntEdge::LongMaxPlusOne,
        IntEdge::U64Max,
        IntEdge::U64MaxPlusOne,
        IntEdge::Pow2To200,
        IntEdge::NegPow2To200,
        IntEdge::IntMax,
        IntEdge::IntMaxPlusOne,
        IntEdge::UIntMax,
        IntEdge::UIntMaxPlusOne,
        IntEdge::SizeWrapsTimes16,
        IntEdge::SizeWrapsTimes8,
        IntEdge::SizeWrapsTimes4,
    ];

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
            IntEdge::IntMax => i32::MAX as i128,
            IntEdge::IntMaxPlusOne => i32::MAX as i128 + 1,
            IntEdge::UIntMax => u32::MAX as i128,
            IntEdge::UIntMaxPlusOne => u32::MAX as i128 + 1,
            IntEdge::SizeWrapsTimes16 => 1 << 60,
            IntEdge::SizeWrapsTimes8 => 1 << 61,
            IntEdge::SizeWrapsTimes4 => 1 << 62,
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
    /// Returns the value for its first `n` calls (1 to 3), then raises: the error path that follows a
    /// partial success (a container half filled with callback results, a reference taken per call).
    ReturnsThenRaises(Box<PyValue>, u8),
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

#[cfg(test)]
mod tests;
