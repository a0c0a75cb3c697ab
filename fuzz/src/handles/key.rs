//! The keys of the fixed-shape ops: a small key space so ops collide.

use arbitrary::Arbitrary;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::py_bytes;

/// Small key space so ops collide: keys are `k` + one byte of a 6-letter alphabet.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum KeyArg {
    Bytes(u8),
    ByteArray(u8),
    MemoryView(u8),
}

impl KeyArg {
    pub(super) fn bytes(self) -> Vec<u8> {
        let c = match self {
            KeyArg::Bytes(c) | KeyArg::ByteArray(c) | KeyArg::MemoryView(c) => c,
        };
        vec![b'k', b'a' + c % 6]
    }

    pub(super) fn source(self) -> String {
        let lit = py_bytes(&self.bytes());
        match self {
            KeyArg::Bytes(_) => lit,
            KeyArg::ByteArray(_) => format!("bytearray({lit})"),
            KeyArg::MemoryView(_) => format!("memoryview({lit})"),
        }
    }

    pub(super) fn materialise<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let b = PyBytes::new(py, &self.bytes());
        match self {
            KeyArg::Bytes(_) => Ok(b.into_any()),
            KeyArg::ByteArray(_) => Ok(pyo3::types::PyByteArray::new(py, &self.bytes()).into_any()),
            KeyArg::MemoryView(_) => Ok(pyo3::types::PyMemoryView::from(&b.into_any())?.into_any()),
        }
    }
}
