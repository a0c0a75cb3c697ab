//! Generators shared by several properties: keys from a small pool (so lookups hit), Options
//! mappings with an exact model of what `native.Options` must do with them, and safe `rounds`.

use std::collections::BTreeMap;

use ffi_harness::strategies::{int_value, pyvalue_strategy};
use ffi_harness::{ArrayTypecode, IntValue, MemoryViewKind, PyValue};
use proptest::prelude::*;
use proptest::sample::select;

/// Keys every case's connection is populated with (`POOL[i]` -> `b"value-<i>"`).
pub const POOL: [&[u8]; 4] = [b"k0", b"k1", b"key-two", b"k3"];

/// A pool key in one of the buffer shapes a key may take (all C-contiguous bytes).
pub fn pool_key() -> impl Strategy<Value = PyValue> {
    (0..POOL.len(), 0..6u8).prop_map(|(i, shape)| {
        let data = POOL[i].to_vec();
        match shape {
            0 | 1 => PyValue::Bytes(data),
            2 => PyValue::ByteArray(data),
            3 => PyValue::MemoryView {
                kind: MemoryViewKind::ReadOnly,
                data,
            },
            4 => PyValue::Array {
                typecode: ArrayTypecode::UnsignedChar,
                data,
            },
            _ => PyValue::Mmap(data),
        }
    })
}

/// Mostly pool keys, sometimes anything at all.
pub fn key_arg() -> impl Strategy<Value = PyValue> {
    prop_oneof![3 => pool_key(), 2 => pyvalue_strategy(2)]
}

/// `rounds=` values that cannot make `process` run for minutes: no int above 8 that fits a u32.
pub fn safe_rounds(value: &PyValue) -> bool {
    let small = |n: i64| n <= 8 || n > i64::from(u32::MAX);
    match value {
        PyValue::Int(IntValue::Long(n)) | PyValue::Int(IntValue::Subclass(n)) => small(*n),
        PyValue::Int(IntValue::Edge(_)) | PyValue::Int(IntValue::Big { .. }) => true,
        PyValue::Int(IntValue::Small(n)) => *n <= 8,
        // Containers never convert to u32; hostile __index__ returns 7 or 2**100 at most.
        _ => true,
    }
}

/// Option field names and their (min, max) for the integer ones.
pub const FIELDS: [(&str, Option<(i128, i128)>); 5] = [
    ("create", None),
    ("sync", None),
    ("max_key_size", Some((1, 65535))),
    ("max_value_size", Some((1, 1 << 30))),
    ("file_mode", Some((0, 0o777))),
];

/// Defaults of `native.Options()`.
pub fn default_options() -> BTreeMap<String, OptValue> {
    BTreeMap::from([
        ("create".to_owned(), OptValue::Bool(true)),
        ("sync".to_owned(), OptValue::Bool(false)),
        ("max_key_size".to_owned(), OptValue::Int(1024)),
        ("max_value_size".to_owned(), OptValue::Int(1 << 20)),
        ("file_mode".to_owned(), OptValue::Int(0o644)),
    ])
}

/// A field value as `to_dict()` must give it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptValue {
    /// An exact `bool`.
    Bool(bool),
    /// An exact `int`.
    Int(i128),
}

/// The exception `native.Options` must raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Wrong type, unknown or non-str name.
    Type,
    /// Out of range (fits 64 bits).
    Value,
    /// Out of range beyond 64 bits: ValueError or OverflowError.
    Overflow,
}

impl Rejection {
    /// The Python exception types acceptable for this rejection.
    pub fn python_names(self) -> &'static [&'static str] {
        match self {
            Rejection::Type => &["TypeError"],
            Rejection::Value => &["ValueError"],
            Rejection::Overflow => &["ValueError", "OverflowError"],
        }
    }
}

/// Interesting values for an option field: edges of every range, wrong types, hostile objects.
pub fn field_value() -> impl Strategy<Value = PyValue> {
    let edges: Vec<i64> = vec![
        -1,
        0,
        1,
        7,
        0o644,
        0o777,
        0o1000,
        1024,
        65535,
        65536,
        1 << 20,
        1 << 30,
        (1 << 30) + 1,
        1 << 32,
        (1 << 32) + 1024,
        i64::MAX,
        i64::MIN,
    ];
    prop_oneof![
        3 => any::<bool>().prop_map(PyValue::Bool),
        4 => select(edges).prop_map(|n| PyValue::Int(IntValue::Long(n))),
        2 => int_value().prop_map(PyValue::Int),
        2 => pyvalue_strategy(1),
    ]
}

/// A field name: mostly a real one, sometimes a near miss.
pub fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(FIELDS.iter().map(|(n, _)| *n).collect::<Vec<_>>()).prop_map(str::to_owned),
        1 => "[a-z_]{1,14}",
        1 => Just("max_keysize".to_owned()),
    ]
}

/// Options entries with distinct names, in insertion order.
pub fn options_entries() -> impl Strategy<Value = Vec<(String, PyValue)>> {
    proptest::collection::vec((field_name(), field_value()), 0..=6).prop_map(|mut entries| {
        let mut seen = std::collections::HashSet::new();
        entries.retain(|(name, _)| seen.insert(name.clone()));
        entries
    })
}

/// The exact value of an int-typed `PyValue` (exact int or int subclass), `None` beyond i128.
fn int_of(value: &PyValue) -> Option<Option<i128>> {
    match value {
        PyValue::Int(IntValue::Small(n)) => Some(Some(i128::from(*n))),
        PyValue::Int(IntValue::Long(n)) | PyValue::Int(IntValue::Subclass(n)) => {
            Some(Some(i128::from(*n)))
        }
        PyValue::Int(IntValue::Edge(edge)) => Some(edge.as_i128()),
        PyValue::Int(IntValue::Big { .. }) => Some(None),
        _ => None,
    }
}

/// What `native.Options.from_mapping(dict(entries))` must do: the full `to_dict()` or the first
/// entry's rejection (validation runs in insertion order and stops at the first bad field).
pub fn expected_options(
    entries: &[(String, PyValue)],
) -> Result<BTreeMap<String, OptValue>, Rejection> {
    let mut out = default_options();
    for (name, value) in entries {
        let Some((_, range)) = FIELDS.iter().find(|(n, _)| n == name) else {
            return Err(Rejection::Type);
        };
        let parsed = match range {
            None => match value {
                PyValue::Bool(b) => OptValue::Bool(*b),
                _ => return Err(Rejection::Type),
            },
            Some((min, max)) => match int_of(value) {
                None => return Err(Rejection::Type),
                Some(None) => return Err(Rejection::Overflow),
                Some(Some(n)) if n < i128::from(i64::MIN) || n > i128::from(i64::MAX) => {
                    return Err(Rejection::Overflow);
                }
                Some(Some(n)) if n < *min || n > *max => return Err(Rejection::Value),
                Some(Some(n)) => OptValue::Int(n),
            },
        };
        out.insert(name.clone(), parsed);
    }
    Ok(out)
}
