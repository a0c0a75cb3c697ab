//! Fuzz bytes → a short program of calls over the plan's callables.
//!
//! Decoding never fails: when the bytes run out, `arbitrary` yields zeros, so every input is a
//! program (possibly shorter). Arity follows the plan most of the time (min..=max positional
//! arguments) and sometimes leaves it (one too many, none at all) to exercise argument checking.
use ffi_harness::arbitrary::{Arbitrary, Unstructured};
use ffi_harness::{Limits, PyValue};
use pyo3::prelude::*;

/// Steps per program, at most.
pub const MAX_STEPS: u8 = 8;
/// Positional arguments per call, at most (varargs callables included).
pub const MAX_ARGS: usize = 6;

/// What the engine needs to know of one callable of the plan.
#[derive(Debug, Clone)]
pub struct CallableSpec {
    /// `func`, `Class` (its constructor) or `Class.method`.
    pub name: String,
    /// Fewest positional arguments it takes.
    pub min_args: usize,
    /// Most positional arguments it takes (capped at [`MAX_ARGS`]).
    pub max_args: usize,
    /// Keyword names it accepts.
    pub keywords: Vec<String>,
    /// Called on an instance from the pool (`receiver` selects which).
    pub method: bool,
    /// The class its stub says it returns (`connect() -> Connection`), when that class is planned.
    pub returns: Option<String>,
}

/// Integers of every magnitude: small counts and indices, powers of two and their neighbours up to
/// bignums, round decimal sizes (1000s, 10**6...), raw 64-bit patterns, and their negatives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntArg {
    /// 0..=300.
    Small(u16),
    /// -1..=-300.
    NegSmall(u16),
    /// ±(2**exp + delta), exp 0..=126, delta -1..=1.
    Pow2 { exp: u8, delta: i8, negative: bool },
    /// ±(mantissa * 10**exp + delta), mantissa 1..=9, exp 1..=9, delta -1..=1.
    Decimal {
        mantissa: u8,
        exp: u8,
        delta: i8,
        negative: bool,
    },
    /// Any i64 bit pattern.
    Raw(i64),
}

impl IntArg {
    fn decode(u: &mut Unstructured<'_>) -> IntArg {
        let tag = u8::arbitrary(u).unwrap_or(0);
        let delta = |u: &mut Unstructured<'_>| (u8::arbitrary(u).unwrap_or(1) % 3) as i8 - 1;
        match tag % 8 {
            0..=2 => IntArg::Small(u16::arbitrary(u).unwrap_or(0) % 301),
            3 => IntArg::NegSmall(1 + u16::arbitrary(u).unwrap_or(0) % 300),
            4 => {
                let exp = u8::arbitrary(u).unwrap_or(0) % 127;
                IntArg::Pow2 {
                    exp,
                    delta: delta(u),
                    negative: bool::arbitrary(u).unwrap_or(false),
                }
            }
            5 | 6 => {
                let mantissa = 1 + u8::arbitrary(u).unwrap_or(0) % 9;
                let exp = 1 + u8::arbitrary(u).unwrap_or(0) % 9;
                IntArg::Decimal {
                    mantissa,
                    exp,
                    delta: delta(u),
                    negative: bool::arbitrary(u).unwrap_or(false),
                }
            }
            // Little-endian, as libFuzzer's compare tables insert values seen in the target's compares.
            _ => IntArg::Raw(i64::from_le_bytes(
                <[u8; 8]>::arbitrary(u).unwrap_or([0; 8]),
            )),
        }
    }

    /// The value (every variant fits an i128).
    pub fn value(self) -> i128 {
        match self {
            IntArg::Small(n) => i128::from(n),
            IntArg::NegSmall(n) => -i128::from(n),
            IntArg::Pow2 {
                exp,
                delta,
                negative,
            } => {
                let v = (1i128 << exp) + i128::from(delta);
                if negative {
                    -v
                } else {
                    v
                }
            }
            IntArg::Decimal {
                mantissa,
                exp,
                delta,
                negative,
            } => {
                let v = i128::from(mantissa) * 10i128.pow(u32::from(exp)) + i128::from(delta);
                if negative {
                    -v
                } else {
                    v
                }
            }
            IntArg::Raw(n) => i128::from(n),
        }
    }

    /// A Python int object.
    pub fn materialise(self, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        let v = self.value();
        match i64::try_from(v) {
            Ok(small) => Ok(small.into_pyobject(py)?.into_any()),
            // Beyond i64: let Python parse the digits (no i128 conversion needed under abi3).
            Err(_) => py
                .import("builtins")?
                .getattr("int")?
                .call1((v.to_string(),)),
        }
    }
}

/// One argument of a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// An integer (see [`IntArg`]).
    Int(IntArg),
    /// The same integers as an object that is not an int but has `__index__` (numpy integers,
    /// IntEnum-likes: what `PyNumber_Index` converts), answering a fresh int on each call, which the
    /// runtime's answers oracle follows: a conversion that keeps it, on success or on overflow, leaks.
    Indexable(IntArg),
    /// Any harness value (hostile objects and re-entrant callables included).
    Value(PyValue),
    /// A live instance from the pool (`k` modulo the pool's size).
    Instance(u8),
    /// An earlier step's result (`k` modulo the number of earlier steps).
    Result(u8),
}

impl Arg {
    fn decode(u: &mut Unstructured<'_>) -> Arg {
        let tag = u8::arbitrary(u).unwrap_or(0);
        match tag % 16 {
            0..=4 => Arg::Int(IntArg::decode(u)),
            5 => Arg::Indexable(IntArg::decode(u)),
            // The harness's default bounds, with raced bytearrays: the runtime calls under
            // `resized_during`.
            6..=12 => match PyValue::arbitrary_with(
                u,
                &Limits {
                    raced_bytearrays: true,
                    ..Limits::default()
                },
            ) {
                Ok(v) => Arg::Value(v),
                Err(_) => Arg::Value(PyValue::None),
            },
            13 | 14 => Arg::Instance(u8::arbitrary(u).unwrap_or(0)),
            _ => Arg::Result(u8::arbitrary(u).unwrap_or(0)),
        }
    }

    /// The argument as Python source, in a repro where the prelude is `_fh` and the runtime `_rt`.
    pub fn to_python_source(&self) -> String {
        match self {
            Arg::Int(i) => i.value().to_string(),
            Arg::Indexable(i) => format!("_fh.Indexable({})", i.value()),
            Arg::Value(v) => v.to_python_source(),
            Arg::Instance(k) => format!("_rt.I({k})"),
            Arg::Result(k) => format!("_rt.R({k})"),
        }
    }
}

/// One call.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Index into the plan's callables.
    pub callable: usize,
    /// Selects the receiver among the pool's instances of the method's class.
    pub receiver: u8,
    /// Positional arguments.
    pub args: Vec<Arg>,
    /// Keyword arguments: (index into the callable's keywords, value).
    pub kwargs: Vec<(usize, Arg)>,
}

/// A program: up to [`MAX_STEPS`] calls.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Program {
    /// The calls, in order.
    pub steps: Vec<Step>,
}

impl Program {
    /// Decode fuzz bytes against `specs` (never fails; empty when `specs` is).
    pub fn decode(specs: &[CallableSpec], data: &[u8]) -> Program {
        let mut u = Unstructured::new(data);
        let mut steps = Vec::new();
        if specs.is_empty() {
            return Program { steps };
        }
        let n = 1 + u8::arbitrary(&mut u).unwrap_or(0) % MAX_STEPS;
        for i in 0..n {
            if i > 0 && u.is_empty() {
                break;
            }
            // A quarter of the picks after a step of a class (its constructor or a method) stay in that
            // class: a bug that needs several calls on one object (make it, close it, use it) comes up
            // several times as often as among n**3 uniform picks. Half cost the module's functions too
            // much (the buggy fixture's function bugs came later, some after 45 s; README).
            let pick = usize::from(u16::arbitrary(&mut u).unwrap_or(0));
            let family = steps
                .last()
                .map_or_else(Vec::new, |s: &Step| class_methods(specs, s.callable));
            let callable = if pick & 0xC000 == 0xC000 && !family.is_empty() {
                family[(pick & 0x3fff) % family.len()]
            } else {
                pick % specs.len()
            };
            let spec = &specs[callable];
            let receiver = u8::arbitrary(&mut u).unwrap_or(0);
            let (lo, hi) = (spec.min_args.min(MAX_ARGS), spec.max_args.min(MAX_ARGS));
            let shape = u8::arbitrary(&mut u).unwrap_or(0);
            let nargs = match shape % 16 {
                0 => hi + 1,
                1 => 0,
                _ if hi > lo => lo + usize::from(shape / 16) % (hi - lo + 1),
                _ => lo,
            };
            let args = (0..nargs).map(|_| Arg::decode(&mut u)).collect();
            let mut kwargs = Vec::new();
            if !spec.keywords.is_empty() && shape % 4 == 3 {
                let nkw = 1 + usize::from(u8::arbitrary(&mut u).unwrap_or(0))
                    % spec.keywords.len().min(3);
                for _ in 0..nkw {
                    let k = usize::from(u8::arbitrary(&mut u).unwrap_or(0)) % spec.keywords.len();
                    kwargs.push((k, Arg::decode(&mut u)));
                }
            }
            steps.push(Step {
                callable,
                receiver,
                args,
                kwargs,
            });
        }
        Program { steps }
    }
}

/// The methods of the class callable `of` belongs to (`C` for the constructor `C` and the method `C.m`)
/// and of the class its stub says it returns (`connect` -> `Connection`, `C.cursor` -> `Cursor`), as
/// indices into `specs`; none for a plain function that returns no planned class.
fn class_methods(specs: &[CallableSpec], of: usize) -> Vec<usize> {
    let class_of = |s: &CallableSpec| s.name.rsplit_once('.').map(|(class, _)| class.to_owned());
    let own = if specs[of].method {
        class_of(&specs[of])
    } else {
        Some(specs[of].name.clone())
    };
    let returned = specs[of].returns.clone();
    specs
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            let class = class_of(s);
            s.method && class.is_some() && (class == own || class == returned)
        })
        .map(|(i, _)| i)
        .collect()
}

/// FNV-1a, for stable file names and signature slots.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in data {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs() -> Vec<CallableSpec> {
        vec![CallableSpec {
            name: "f".into(),
            min_args: 1,
            max_args: 2,
            keywords: vec!["k".into()],
            method: false,
            returns: None,
        }]
    }

    #[test]
    fn every_input_decodes() {
        for len in 0..64u8 {
            let data: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37)).collect();
            let p = Program::decode(&specs(), &data);
            assert!(!p.steps.is_empty());
        }
    }

    #[test]
    fn steps_after_a_class_stay_in_it_a_quarter_of_the_time() {
        let spec = |name: &str, method: bool| CallableSpec {
            name: name.into(),
            min_args: 0,
            max_args: 0,
            keywords: vec![],
            method,
            returns: None,
        };
        let mut specs: Vec<CallableSpec> = (0..20).map(|i| spec(&format!("f{i}"), false)).collect();
        specs.extend([spec("C", false), spec("C.close", true), spec("C.use", true)]);
        let c = specs.len() - 3;
        assert_eq!(class_methods(&specs, c), vec![c + 1, c + 2]);
        assert_eq!(class_methods(&specs, c + 2), vec![c + 1, c + 2]);
        assert!(class_methods(&specs, 0).is_empty());
        // Two steps: `C`, then a pick with the two high bits set (a method of C) or clear (any callable).
        let program = |second: u16| {
            let mut data = vec![1u8];
            data.extend((c as u16).to_le_bytes());
            data.extend([0, 1]); // receiver, shape: no arguments
            data.extend(second.to_le_bytes());
            data.extend([0, 1]);
            Program::decode(&specs, &data)
        };
        let in_class = (0..1000u16)
            .filter(|k| program(0xC000 | k).steps[1].callable > c)
            .count();
        assert_eq!(in_class, 1000);
        let anywhere = (0..1000u16)
            .filter(|k| program(*k).steps[1].callable > c)
            .count();
        assert!(anywhere < 200, "{anywhere}");
        // After a plain function, the high bits mean nothing.
        let mut data = vec![1u8, 0, 0, 0, 1];
        data.extend(0xC001u16.to_le_bytes());
        data.extend([0, 0]);
        assert_eq!(
            Program::decode(&specs, &data).steps[1].callable,
            0xC001 % specs.len()
        );
    }

    #[test]
    fn magnitudes() {
        assert_eq!(
            IntArg::Pow2 {
                exp: 63,
                delta: 0,
                negative: false
            }
            .value(),
            1i128 << 63
        );
        assert_eq!(
            IntArg::Decimal {
                mantissa: 5,
                exp: 3,
                delta: 0,
                negative: false
            }
            .value(),
            5000
        );
        assert_eq!(IntArg::NegSmall(300).value(), -300);
    }

    #[test]
    fn steps_after_a_call_that_returns_a_class_stay_among_its_methods() {
        let spec = |name: &str, method: bool, returns: Option<&str>| CallableSpec {
            name: name.into(),
            min_args: 0,
            max_args: 0,
            keywords: vec![],
            method,
            returns: returns.map(Into::into),
        };
        let specs = vec![
            spec("connect", false, Some("Conn")),
            spec("Conn.items", true, Some("Iter")),
            spec("Conn.close", true, None),
            spec("Iter.__next__", true, None),
            spec("other", false, None),
        ];
        assert_eq!(class_methods(&specs, 0), vec![1, 2]); // a function: the class it returns
        assert_eq!(class_methods(&specs, 1), vec![1, 2, 3]); // a method: its class and the one it returns
        assert_eq!(class_methods(&specs, 3), vec![3]);
        assert!(class_methods(&specs, 4).is_empty());
    }
}
