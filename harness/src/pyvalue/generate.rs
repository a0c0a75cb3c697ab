//! Generation with `arbitrary`, bounded in depth and size.

use arbitrary::{Arbitrary, Unstructured};

use super::*;

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
    /// Make one `bytearray` in eight a [`PyValue::RacedByteArray`]: only for callers that call under
    /// the prelude's `resized_during` (`ffi-harness fuzz`'s runtime); elsewhere it would be just a large
    /// bytearray.
    pub raced_bytearrays: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 3,
            max_nodes: 48,
            max_items: 6,
            max_payload: 96,
            raced_bytearrays: false,
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
        // One bytearray in eight is a large raced one: a race costs a thread wake-up and a long call.
        6 if limits.raced_bytearrays && u.ratio(1u8, 8u8)? => PyValue::RacedByteArray {
            fill: u.arbitrary()?,
            size_class: u.arbitrary()?,
        },
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
        // One returner in four raises once it has returned `n` times.
        17 if u.ratio(1u8, 4u8)? => {
            let n = u.int_in_range(1..=3)?;
            let value = arbitrary_value(u, limits, depth - 1, budget)?;
            PyValue::Callable(CallableValue::ReturnsThenRaises(Box::new(value), n))
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
