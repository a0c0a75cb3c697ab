//! `ffi_harness._engine`: the compiled half of the `ffi-harness` command (not written yet).
use pyo3::prelude::*;

#[pymodule]
fn _engine(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
