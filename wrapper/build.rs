//! Compiles libnative (wrapper/native/*.c) into the extension with the same strict warnings as its
//! Makefile. `NATIVE_CC` / `NATIVE_CFLAGS` let the fuzz and sanitizer builds instrument the C side too
//! (e.g. clang-19 with -fsanitize=address,fuzzer-no-link), so ASan sees C-side overflows.
use std::path::Path;

fn main() {
    let dir = Path::new("native");
    println!("cargo:rerun-if-changed=native");
    println!("cargo:rerun-if-env-changed=NATIVE_CC");
    println!("cargo:rerun-if-env-changed=NATIVE_CFLAGS");
    let mut sources: Vec<_> = std::fs::read_dir(dir)
        .expect("wrapper/native exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.sort();
    let mut build = cc::Build::new();
    if let Ok(cc) = std::env::var("NATIVE_CC") {
        build.compiler(cc);
    }
    build
        .files(&sources)
        .include(dir)
        .std("c11")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .flag("-pthread");
    if let Ok(flags) = std::env::var("NATIVE_CFLAGS") {
        for f in flags.split_whitespace() {
            build.flag(f);
        }
    }
    build.compile("native_c");
    println!("cargo:rustc-link-lib=pthread");
}
