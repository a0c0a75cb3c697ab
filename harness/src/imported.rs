//! [`imported!`]: a module, or one of its attributes, looked up once per process.
//!
//! A fuzz input that calls `py.import("native")` per call pays CPython's whole import path each time:
//! `PyImport_Import` goes through `builtins.__import__`, and checking that the module is not half
//! initialised asks `__spec__._initializing`, which raises and formats an `AttributeError` when it is
//! absent. Under ASan with `PYTHONMALLOC=malloc` every one of those objects pays the sanitizer's
//! allocator: the `buffers` target spent a fifth of its per-input time in imports (see
//! `benches/results/fuzz-where-the-time-goes.md`). Like PyO3's `intern!` for strings, the macro keeps
//! one cell per call site, so afterwards a lookup is a load.

/// `imported!(py, "module")` is `py.import("module")`, and `imported!(py, "module", "attr")` is
/// `py.import("module")?.getattr("attr")`, each done once per process per call site and returned as
/// `PyResult<&Bound<'py, _>>` afterwards (a failed import is retried next time). The names must be
/// literals: the cell belongs to the call site, so a name computed at run time would get the first
/// one's module forever.
///
/// ```
/// use pyo3::prelude::*;
/// Python::attach(|py| -> PyResult<()> {
///     let len = ffi_harness::imported!(py, "builtins", "len")?.call1(("abc",))?;
///     assert_eq!(len.extract::<usize>()?, 3);
///     ffi_harness::imported!(py, "gc")?.call_method0("collect")?;
///     Ok(())
/// })
/// .unwrap();
/// ```
#[macro_export]
macro_rules! imported {
    ($py:expr, $module:literal) => {{
        static CELL: $crate::__pyo3::sync::PyOnceLock<
            $crate::__pyo3::Py<$crate::__pyo3::types::PyModule>,
        > = $crate::__pyo3::sync::PyOnceLock::new();
        let py: $crate::__pyo3::Python<'_> = $py;
        CELL.get_or_try_init(py, || py.import($module).map($crate::__pyo3::Bound::unbind))
            .map(|module| module.bind(py))
    }};
    ($py:expr, $module:literal, $attr:literal) => {{
        static CELL: $crate::__pyo3::sync::PyOnceLock<$crate::__pyo3::Py<$crate::__pyo3::PyAny>> =
            $crate::__pyo3::sync::PyOnceLock::new();
        CELL.import($py, $module, $attr)
    }};
}

#[cfg(test)]
mod tests {
    use pyo3::prelude::*;
    use pyo3::types::PyModule;

    /// One call site, as a fuzz target would have it.
    fn probe<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyModule>> {
        crate::imported!(py, "ffi_harness_imported_probe").map(|m| m.clone())
    }

    fn install<'py>(py: Python<'py>, name: &str) -> Bound<'py, PyModule> {
        let module = PyModule::new(py, name).unwrap();
        py.import("sys")
            .unwrap()
            .getattr("modules")
            .unwrap()
            .set_item("ffi_harness_imported_probe", &module)
            .unwrap();
        module
    }

    #[test]
    fn a_failed_import_is_retried_then_the_module_is_kept_for_the_call_site() {
        Python::attach(|py| {
            // Not importable yet: an error each time, nothing cached.
            for _ in 0..2 {
                let err = probe(py).unwrap_err();
                assert!(err.is_instance_of::<pyo3::exceptions::PyModuleNotFoundError>(py));
            }
            let first = install(py, "first");
            assert!(
                probe(py).unwrap().is(&first),
                "retried once it can be imported"
            );
            // sys.modules now holds another module under the name: the call site keeps the one it
            // imported (it looks the name up once), as a plain py.import would not.
            let second = install(py, "second");
            assert!(py.import("ffi_harness_imported_probe").unwrap().is(&second));
            assert!(
                probe(py).unwrap().is(&first),
                "imported again instead of once"
            );
        });
    }

    #[test]
    fn the_attribute_form_returns_the_attribute() {
        Python::attach(|py| {
            let join = crate::imported!(py, "os.path", "join").unwrap();
            assert_eq!(
                join.call1(("a", "b")).unwrap().extract::<String>().unwrap(),
                "a/b"
            );
        });
    }
}
