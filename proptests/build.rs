//! The test binaries embed libpython: put its directory on the run path (pyenv's lives outside the
//! loader's search path; with `PYO3_PYTHON=python3.11d` this resolves Debian's libpython3.11d.so).
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
