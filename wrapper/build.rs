fn main() {
    // The `Py_3_13`-style cfgs of the interpreter PyO3 builds for: thread_state.rs asks CPython whether
    // it is finalizing, a function whose name changed in 3.13.
    pyo3_build_config::use_pyo3_cfgs();
}
