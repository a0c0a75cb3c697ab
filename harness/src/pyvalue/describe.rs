//! What a value is, without building it: its kind name, whether the object it builds is fresh
//! (refcount deltas on it mean something), and a walk over nested values.

use super::*;

impl PyValue {
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
            PyValue::RacedByteArray { .. } => "bytearray.raced",
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
            PyValue::Callable(CallableValue::ReturnsThenRaises(..)) => {
                "callable.returns_then_raises"
            }
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
        "bytearray.raced",
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
        "callable.returns_then_raises",
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
            PyValue::Callable(
                CallableValue::Returns(value) | CallableValue::ReturnsThenRaises(value, _),
            ) => value.walk(visit),
            _ => {}
        }
    }
}
