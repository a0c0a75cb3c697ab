//! [`PyValue::materialise`]: the real Python object, built from the prelude's definitions.

use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyFloat, PyList, PyString, PyTuple};

use super::*;
use crate::prelude::prelude;

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
            PyValue::RacedByteArray { fill, size_class } => {
                prelude(py)?.call_method1("mk_raced_bytearray", (*fill, *size_class))?
            }
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
                    CallableValue::ReturnsThenRaises(value, n) => prelude
                        .call_method1("mk_returner_then_raiser", (value.materialise(py)?, *n))?,
                    CallableValue::Reenter(n) => prelude.call_method1("mk_reenterer", (*n,))?,
                    CallableValue::NoArguments => prelude.call_method0("mk_no_arguments")?,
                }
            }
        })
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
