//! Structs in both directions ("Mapping C Structs to Python", "Mapping Python Objects to C
//! Structs"). Python → C: `Options` validates every field before any of it reaches C (type, then
//! range), so half-converted input never crosses the boundary. C → Python: `Stats` is copied out of
//! `native_stats` into a read-only object with repr/==/hash.

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyMapping, PyString};

use crate::sys;

const FIELDS: [&str; 5] = [
    "create",
    "sync",
    "max_key_size",
    "max_value_size",
    "file_mode",
];

/// Options for `native.connect`, validated on construction and immutable afterwards.
#[pyclass(module = "native", frozen, eq)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    #[pyo3(get)]
    create: bool,
    #[pyo3(get)]
    sync: bool,
    #[pyo3(get)]
    max_key_size: u32,
    #[pyo3(get)]
    max_value_size: u32,
    #[pyo3(get)]
    file_mode: u32,
}

/// Mirrors native_options_default() without calling C, so rejected input never causes a native call
/// (the `calls` ledger proves it); `mirror_check.rs` checks the two agree.
impl Default for Options {
    fn default() -> Self {
        Options {
            create: true,
            sync: false,
            max_key_size: 1024,
            max_value_size: 1 << 20,
            file_mode: 0o644,
        }
    }
}

fn bool_field(name: &str, value: &Bound<'_, PyAny>) -> PyResult<bool> {
    // Only real bools: 0/1 or "yes" are a caller's mistake we report instead of guessing.
    match value.cast::<PyBool>() {
        Ok(b) => Ok(b.is_true()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "option {name:?} must be a bool, not {}",
            value.get_type().name()?
        ))),
    }
}

fn int_field(name: &str, value: &Bound<'_, PyAny>, min: u32, max: u32) -> PyResult<u32> {
    // Exact int instances only (bool excluded), so no user-defined __index__ runs during validation.
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "option {name:?} must be an int, not {}",
            value.get_type().name()?
        )));
    }
    let wide: i64 = value.extract().map_err(|_| {
        PyOverflowError::new_err(format!("option {name:?} is far out of range {min}..={max}"))
    })?;
    if wide < i64::from(min) || wide > i64::from(max) {
        return Err(PyValueError::new_err(format!(
            "option {name:?} must be in {min}..={max}, got {wide}"
        )));
    }
    Ok(wide as u32)
}

impl Options {
    fn set(&mut self, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        match name {
            "create" => self.create = bool_field(name, value)?,
            "sync" => self.sync = bool_field(name, value)?,
            "max_key_size" => {
                self.max_key_size = int_field(name, value, 1, sys::NATIVE_MAX_KEY_LIMIT)?
            }
            "max_value_size" => {
                self.max_value_size = int_field(name, value, 1, sys::NATIVE_MAX_VALUE_LIMIT)?
            }
            "file_mode" => self.file_mode = int_field(name, value, 0, 0o777)?,
            other => {
                return Err(PyTypeError::new_err(format!(
                    "unknown option {other:?} (expected one of {})",
                    FIELDS.join(", ")
                )))
            }
        }
        Ok(())
    }

    /// `options=` of connect: an Options, any Mapping of its fields, or None (defaults).
    pub(crate) fn from_arg(value: Option<&Bound<'_, PyAny>>) -> PyResult<Options> {
        match value {
            None => Ok(Options::default()),
            Some(v) if v.is_none() => Ok(Options::default()),
            Some(v) => {
                if let Ok(opts) = v.cast::<Options>() {
                    return Ok(opts.get().clone());
                }
                Options::from_any_mapping(v)
            }
        }
    }

    fn from_any_mapping(value: &Bound<'_, PyAny>) -> PyResult<Options> {
        let mapping = value.cast::<PyMapping>().map_err(|_| {
            PyTypeError::new_err(format!(
                "options must be a native.Options, a mapping or None, not {}",
                value
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        let mut out = Options::default();
        for key in mapping.keys()?.iter() {
            let name = key
                .cast::<PyString>()
                .map_err(|_| PyTypeError::new_err("option names must be str"))?
                .to_str()?
                .to_owned();
            let value = mapping.get_item(&key)?;
            out.set(&name, &value)?;
        }
        Ok(out)
    }

    pub(crate) fn max_key_size(&self) -> u32 {
        self.max_key_size
    }

    pub(crate) fn max_value_size(&self) -> u32 {
        self.max_value_size
    }

    pub(crate) fn sync(&self) -> bool {
        self.sync
    }

    pub(crate) fn to_raw(&self) -> sys::native_options {
        sys::native_options {
            create: self.create as i32,
            sync: self.sync as i32,
            max_key_size: self.max_key_size,
            max_value_size: self.max_value_size,
            file_mode: self.file_mode,
        }
    }
}

#[pymethods]
impl Options {
    #[new]
    #[pyo3(signature = (**kwargs))]
    fn py_new(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let mut out = Options::default();
        if let Some(kwargs) = kwargs {
            for (key, value) in kwargs.iter() {
                out.set(key.cast::<PyString>()?.to_str()?, &value)?;
            }
        }
        Ok(out)
    }

    #[classmethod]
    fn from_mapping(
        _cls: &Bound<'_, pyo3::types::PyType>,
        mapping: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        Options::from_any_mapping(mapping)
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("create", self.create)?;
        d.set_item("sync", self.sync)?;
        d.set_item("max_key_size", self.max_key_size)?;
        d.set_item("max_value_size", self.max_value_size)?;
        d.set_item("file_mode", self.file_mode)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "native.Options(create={}, sync={}, max_key_size={}, max_value_size={}, file_mode=0o{:o})",
            py_bool(self.create),
            py_bool(self.sync),
            self.max_key_size,
            self.max_value_size,
            self.file_mode
        )
    }
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// A snapshot of `native_stats`: plain values, owned by Python, immutable.
#[pyclass(module = "native", frozen, eq, hash)]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Stats {
    #[pyo3(get)]
    keys: u64,
    #[pyo3(get)]
    puts: u64,
    #[pyo3(get)]
    gets: u64,
    #[pyo3(get)]
    deletes: u64,
    #[pyo3(get)]
    file_bytes: u64,
    #[pyo3(get)]
    events_delivered: u64,
    #[pyo3(get)]
    events_dropped: u64,
    /// Queued or being delivered: 0 means every callback of every event so far has returned.
    #[pyo3(get)]
    events_pending: u64,
    #[pyo3(get)]
    subscriptions: u32,
    #[pyo3(get)]
    generation: u32,
}

impl From<sys::native_stats> for Stats {
    fn from(s: sys::native_stats) -> Self {
        Stats {
            keys: s.keys,
            puts: s.puts,
            gets: s.gets,
            deletes: s.deletes,
            file_bytes: s.file_bytes,
            events_delivered: s.events_delivered,
            events_dropped: s.events_dropped,
            events_pending: s.events_pending,
            subscriptions: s.subscriptions,
            generation: s.generation,
        }
    }
}

#[pymethods]
impl Stats {
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("keys", self.keys)?;
        d.set_item("puts", self.puts)?;
        d.set_item("gets", self.gets)?;
        d.set_item("deletes", self.deletes)?;
        d.set_item("file_bytes", self.file_bytes)?;
        d.set_item("events_delivered", self.events_delivered)?;
        d.set_item("events_dropped", self.events_dropped)?;
        d.set_item("events_pending", self.events_pending)?;
        d.set_item("subscriptions", self.subscriptions)?;
        d.set_item("generation", self.generation)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "native.Stats(keys={}, puts={}, gets={}, deletes={}, file_bytes={}, events_delivered={}, \
             events_dropped={}, events_pending={}, subscriptions={}, generation={})",
            self.keys,
            self.puts,
            self.gets,
            self.deletes,
            self.file_bytes,
            self.events_delivered,
            self.events_dropped,
            self.events_pending,
            self.subscriptions,
            self.generation
        )
    }
}
