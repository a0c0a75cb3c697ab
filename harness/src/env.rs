//! Environment for programs that embed Python (fuzz targets, proptest binaries).
//!
//! Two things an embedded interpreter does not do by itself:
//!
//! - **`PYTHONMALLOC=malloc`**: CPython's pymalloc recycles freed objects inside
//!   its own arenas, so an over-decref (use-after-free) reads valid-looking
//!   memory and ASan/valgrind see nothing. With every allocation going through
//!   malloc, the same bug is a heap-use-after-free report. Python reads the
//!   variable once, at start-up, so it must be set before the interpreter starts.
//! - **the venv**: `sys.path` is derived from the running executable, which is the
//!   Rust binary, not `.venv/bin/python`; the venv's site-packages (where maturin
//!   installed your module) is missing. Either set `PYTHONPATH` before start-up
//!   ([`prepare_embedded_python_env`]) or call [`add_venv_site_packages`] after.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use pyo3::prelude::*;

/// The venv to use: `$FFI_HARNESS_VENV`, else `$VIRTUAL_ENV` (set by `activate`).
pub fn venv_dir() -> Option<PathBuf> {
    ["FFI_HARNESS_VENV", "VIRTUAL_ENV"]
        .into_iter()
        .filter_map(std::env::var_os)
        .find(|value| !value.is_empty())
        .map(PathBuf::from)
}

/// The venv's `lib/python3.X/site-packages` directories (normally one).
pub fn venv_site_packages(venv: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(venv.join("lib")) {
        for entry in entries.flatten() {
            let is_python_dir = entry.file_name().to_string_lossy().starts_with("python");
            let site = entry.path().join("site-packages");
            if is_python_dir && site.is_dir() {
                found.push(site);
            }
        }
    }
    found.sort();
    found
}

/// What [`prepare_embedded_python_env`] would set, without setting anything:
/// `(name, value)` pairs, e.g. to pass to a `Command` instead.
///
/// - `PYTHONMALLOC=malloc` unless `PYTHONMALLOC` is already set;
/// - `PYTHONPATH` = the venv's site-packages, prepended to any existing value;
/// - `FFI_HARNESS_PYTHON` = the venv's python (used by
///   [`crate::run_python_isolated`] to run reproducers), unless already set.
pub fn embedded_env_plan() -> Vec<(&'static str, OsString)> {
    let mut plan = Vec::new();
    if std::env::var_os("PYTHONMALLOC").is_none() {
        plan.push(("PYTHONMALLOC", OsString::from("malloc")));
    }
    if let Some(venv) = venv_dir() {
        let existing: Vec<PathBuf> = std::env::var_os("PYTHONPATH")
            .map(|value| std::env::split_paths(&value).collect())
            .unwrap_or_default();
        let missing: Vec<PathBuf> = venv_site_packages(&venv)
            .into_iter()
            .filter(|site| !existing.contains(site))
            .collect();
        if !missing.is_empty() {
            let joined = std::env::join_paths(missing.into_iter().chain(existing))
                .expect("site-packages paths contain no ':'");
            plan.push(("PYTHONPATH", joined));
        }
        let python = venv.join("bin").join("python");
        if std::env::var_os("FFI_HARNESS_PYTHON").is_none() && python.exists() {
            plan.push(("FFI_HARNESS_PYTHON", python.into_os_string()));
        }
    }
    plan
}

/// Set up the process environment for an embedded interpreter (see the module
/// docs and [`embedded_env_plan`]); returns what it set. Call it first thing, in
/// `main` or in `fuzz_target!(init: ...)`, before the interpreter starts.
///
/// # Safety
///
/// Modifies the process environment, so no other thread may be running (other
/// threads may read the environment through libc at any time, and glibc's
/// `setenv` is not thread-safe). Call it before spawning threads; in particular
/// not from inside a `cargo test` test function, where the harness runs tests
/// in parallel threads (set the variables in the shell, or use
/// [`add_venv_site_packages`], there).
pub unsafe fn prepare_embedded_python_env() -> Vec<(&'static str, OsString)> {
    let plan = embedded_env_plan();
    for (key, value) in &plan {
        // SAFETY: the caller guarantees that no other thread is running (see
        // `# Safety`), so nothing reads the environment concurrently.
        unsafe { std::env::set_var(key, value) };
    }
    plan
}

/// After start-up: add the venv's site-packages to `sys.path` with
/// `site.addsitedir` (which also processes its `.pth` files, as maturin's
/// editable installs need). Returns the directories added.
pub fn add_venv_site_packages(py: Python<'_>) -> PyResult<Vec<PathBuf>> {
    let Some(venv) = venv_dir() else {
        return Ok(Vec::new());
    };
    let site = py.import("site")?;
    let dirs = venv_site_packages(&venv);
    for dir in &dirs {
        site.call_method1("addsitedir", (dir,))?;
    }
    Ok(dirs)
}
