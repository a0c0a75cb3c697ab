//! [`PyValue::to_python_source`]: the Python expression that rebuilds a value in a `repro.py`.

use super::*;
use crate::prelude::PRELUDE_ALIAS;

impl PyValue {
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
            PyValue::RacedByteArray { fill, size_class } => {
                out.push_str(&format!("{h}.mk_raced_bytearray({fill}, {size_class})"))
            }
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
            PyValue::Callable(CallableValue::ReturnsThenRaises(value, n)) => {
                out.push_str(&format!("{h}.mk_returner_then_raiser("));
                value.write_source(out);
                out.push_str(&format!(", {n})"));
            }
            PyValue::Callable(CallableValue::Reenter(n)) => {
                out.push_str(&format!("{h}.mk_reenterer({n})"))
            }
            PyValue::Callable(CallableValue::NoArguments) => {
                out.push_str(&format!("{h}.mk_no_arguments()"))
            }
        }
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
pub fn bytes_literal(bytes: &[u8]) -> String {
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
