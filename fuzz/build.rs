fn main() {
    // Resolve libpython from the interpreter PyO3 built against (pyenv's), not a system copy.
    pyo3_build_config::add_libpython_rpath_link_args();
}
