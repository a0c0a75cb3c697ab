//! Compiles libnative (libnative/*.c) into the extension exactly as wrapper/build.rs does in a
//! plain (non-fuzz, non-sanitizer) build, so every variant calls the same statically linked
//! `native_add` as `native.add` does.
use std::path::Path;

fn main() {
    let dir = Path::new("../../libnative");
    println!("cargo:rerun-if-changed=../../libnative");
    let mut sources: Vec<_> = std::fs::read_dir(dir)
        .expect("libnative exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.sort();
    cc::Build::new()
        .files(&sources)
        .include(dir)
        .std("c11")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .flag("-pthread")
        .compile("native_c");
    println!("cargo:rustc-link-lib=pthread");
}
