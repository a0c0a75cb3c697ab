//! Builds everything the benchmarks call, so `cargo bench` needs nothing but the README's one-time set-up:
//! - `make -C ../libnative`: libnative.so, which ctypes, cffi and the C-API extension load;
//! - capi/shapes.c compiled statically into the bench binary (cc crate): with libnative (linked through
//!   the libnative-sys dependency) the bare-C floor and the C side of the bench's own PyO3 shapes module;
//! - `py/build_ext.py` run by the venv python: libbenchshapes.so, the C-API extension `_capi_bench`
//!   and the cffi API-mode module `_bench_cffi`, into $OUT_DIR/py (exported as BENCH_PY_DIR);
//! - an rpath to the libpython PyO3 links, so the binary does not depend on LD_LIBRARY_PATH.
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed with {status}");
}

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let repo = here
        .parent()
        .expect("benches/ lives in the repo root")
        .to_path_buf();
    let native = repo.join("libnative");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    for p in [
        "capi",
        "py/build_ext.py",
        "py/bench_cdef.py",
        "../libnative/Makefile",
    ] {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-env-changed=BENCH_PYTHON");

    // 1. libnative.so (its Makefile is the single source of its flags).
    run(Command::new("make").arg("-s").arg("-C").arg(&native));
    let libnative = native.join("build/libnative.so");

    // 2. The floor: the shapes linked statically, called directly from Rust (libnative itself comes
    //    from the libnative-sys dependency, compiled by its build script).
    let include =
        std::env::var("DEP_NATIVE_INCLUDE").expect("libnative-sys exports its include dir");
    cc::Build::new()
        .file(here.join("capi/shapes.c"))
        .include(&include)
        .include(here.join("capi"))
        .std("c11")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .compile("bench_shapes");

    // 3. Python-side extensions, built by the venv interpreter (its headers, its EXT_SUFFIX, its cffi).
    let python = std::env::var_os("BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join(".venv/bin/python"));
    assert!(
        python.exists(),
        "{} not found: run the one-time set-up in benches/README.md (ci/setup, maturin develop)",
        python.display()
    );
    // The PyO3 rows measure the `native` installed in that venv: say so now, not as an ImportError
    // from the bench binary after everything else is built.
    let probe = Command::new(&python)
        .args(["-c", "import native._native"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    if !probe.status.success() {
        panic!(
            "\n\nthe benchmarks measure the `native` wrapper installed in {venv}, and `import native` \
             fails there:\n{err}\nInstall it first (from the repository root):\n    \
             VIRTUAL_ENV={venv} {venv}/bin/maturin develop --release -m wrapper/Cargo.toml\n\
             (or run `bash ci/test`, which builds it), then run cargo bench again.\n",
            venv = python
                .parent()
                .and_then(Path::parent)
                .unwrap_or(Path::new(".venv"))
                .display(),
            err = String::from_utf8_lossy(&probe.stderr).trim_end(),
        );
    }
    let py_dir = out.join("py");
    run(Command::new(&python)
        .arg(here.join("py/build_ext.py"))
        .arg(&py_dir)
        .arg(&libnative));
    println!("cargo:rustc-env=BENCH_PY_DIR={}", py_dir.display());
    println!("cargo:rustc-env=BENCH_LIBNATIVE={}", libnative.display());

    // 4. libpython: rpath to the one PyO3 links (pyenv's shared build), checked against the venv's.
    pyo3_build_config::add_libpython_rpath_link_args();
    let cfg = pyo3_build_config::get();
    let venv_libdir = Command::new(&python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))",
        ])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if let (Some(lib_dir), Some(venv)) = (cfg.lib_dir(), venv_libdir.as_deref()) {
        if Path::new(lib_dir) != Path::new(venv) {
            println!(
                "cargo:warning=PyO3 links libpython from {lib_dir} but the venv's is in {venv}: \
                 set PYO3_PYTHON={} and rebuild",
                python.display()
            );
        }
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    println!(
        "cargo:rustc-env=BENCH_RUSTC={}",
        String::from_utf8_lossy(&version).trim()
    );
}
