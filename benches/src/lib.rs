//! Support for the `ffi` bench (benches/ffi.rs): the embedded interpreter's set-up, the bench's own
//! tiny PyO3 module (the 0/1/5-argument shapes `native` does not have), the bare-C declarations of the
//! floor, and the recorder that turns criterion samples into the Markdown table and the SVG plot.

use std::ffi::c_long;
use std::path::{Path, PathBuf};

use pyo3::prelude::*;

pub mod report;

/// The C the floor calls directly: libnative (libnative-sys) and capi/shapes.c (linked by build.rs).
pub mod floor {
    use super::*;
    pub use libnative_sys::{native_add, native_checksum};
    extern "C" {
        pub fn shapes_zero() -> c_long;
        pub fn shapes_one(a: c_long) -> c_long;
        pub fn shapes_five(a: c_long, b: c_long, c: c_long, d: c_long, e: c_long) -> c_long;
    }
}

/// Idiomatic `#[pyfunction]`s for the shapes `native` lacks, built exactly like `native.add`.
mod shapes {
    use super::*;

    #[pyfunction]
    pub fn zero() -> c_long {
        // SAFETY: a pure C function without arguments.
        unsafe { floor::shapes_zero() }
    }

    #[pyfunction]
    pub fn one(a: c_long) -> c_long {
        // SAFETY: a pure C function of plain values.
        unsafe { floor::shapes_one(a) }
    }

    #[pyfunction]
    pub fn five(a: c_long, b: c_long, c: c_long, d: c_long, e: c_long) -> c_long {
        // SAFETY: a pure C function of plain values.
        unsafe { floor::shapes_five(a, b, c, d, e) }
    }
}

/// The bench's own PyO3 module (`bench_shapes`), created in the embedded interpreter.
pub fn shapes_module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let m = PyModule::new(py, "bench_shapes")?;
    m.add_function(wrap_pyfunction!(shapes::zero, &m)?)?;
    m.add_function(wrap_pyfunction!(shapes::one, &m)?)?;
    m.add_function(wrap_pyfunction!(shapes::five, &m)?)?;
    Ok(m)
}

/// Paths of the repo and of what build.rs built.
pub struct Paths {
    pub repo: PathBuf,
    pub benches: PathBuf,
    pub venv: PathBuf,
    pub py_build: PathBuf,
    pub libnative: PathBuf,
}

impl Paths {
    pub fn new() -> Self {
        let benches = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let repo = benches
            .parent()
            .expect("benches/ is in the repo")
            .to_path_buf();
        let venv = std::env::var_os("BENCH_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join(".venv"));
        Paths {
            repo,
            benches,
            venv,
            py_build: PathBuf::from(env!("BENCH_PY_DIR")),
            libnative: PathBuf::from(env!("BENCH_LIBNATIVE")),
        }
    }
}

impl Default for Paths {
    fn default() -> Self {
        Self::new()
    }
}

/// Puts the venv's site-packages (with its .pth files: `native` is an editable install) in front of
/// sys.path, then the built extensions and benches/py. Nothing is hard-coded to one checkout.
pub fn setup_sys_path(py: Python<'_>, paths: &Paths) -> PyResult<()> {
    let sys = py.import("sys")?;
    let (major, minor): (u8, u8) = sys
        .getattr("version_info")?
        .extract::<(u8, u8, u8, String, u8)>()
        .map(|v| (v.0, v.1))?;
    let site_packages = paths
        .venv
        .join(format!("lib/python{major}.{minor}/site-packages"));
    if !site_packages.is_dir() {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
            "{} missing: create the venv first (benches/README.md)",
            site_packages.display()
        )));
    }
    let code = c"
def setup(site_packages, *front):
    import site, sys
    before = list(sys.path)
    site.addsitedir(site_packages)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = list(front) + added + before
";
    let m = PyModule::from_code(py, code, c"bench_setup.py", c"bench_setup")?;
    m.getattr("setup")?.call1((
        path_str(&site_packages),
        path_str(&paths.py_build),
        path_str(&paths.benches.join("py")),
    ))?;
    Ok(())
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
