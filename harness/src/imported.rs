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

    fn native_id(py: Python<'_>) -> usize {
        crate::imported!(py, "sys").unwrap().as_ptr() as usize
    }

    #[test]
    fn a_call_site_imports_once_and_returns_the_same_object() {
        Python::attach(|py| {
            let first = native_id(py);
            assert_eq!(first, py.import("sys").unwrap().as_ptr() as usize);
            assert_eq!(native_id(py), first);
            let join = crate::imported!(py, "os.path", "join").unwrap();
            assert_eq!(
                join.call1(("a", "b")).unwrap().extract::<String>().unwrap(),
                "a/b"
            );
        });
    }

    #[test]
    fn a_failed_import_is_an_error_not_a_cached_none() {
        Python::attach(|py| {
            for _ in 0..2 {
                let err = crate::imported!(py, "no_such_module_here").unwrap_err();
                assert!(err.is_instance_of::<pyo3::exceptions::PyModuleNotFoundError>(py));
            }
        });
    }
}
