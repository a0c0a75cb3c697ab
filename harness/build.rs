//! Lets this crate's own tests and examples (which embed Python) find libpython
//! at run time: pyenv installs it outside the loader's default search path.
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
