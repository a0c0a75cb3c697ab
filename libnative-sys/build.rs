//! The only Rust build script that compiles libnative (libnative/*.c): a static library with the same
//! strict warnings as its Makefile, linked into every crate that depends on libnative-sys. Under
//! `cargo fuzz` (which passes `--cfg fuzzing` and `-Zsanitizer=address`) the C side is instrumented
//! too, with clang-19: ASan sees C-side overflows and libFuzzer gets C coverage, with no
//! environment to remember. `NATIVE_CC` / `NATIVE_CFLAGS` override (the sanitizer CI builds use them).
use std::path::Path;
use std::process::Command;

fn main() {
    let dir = Path::new("../libnative");
    println!("cargo:rerun-if-changed=../libnative");
    for var in [
        "NATIVE_CC",
        "NATIVE_CFLAGS",
        "CARGO_CFG_FUZZING",
        "CARGO_CFG_SANITIZE",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let mut sources: Vec<_> = std::fs::read_dir(dir)
        .expect("libnative exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.sort();

    let fuzzing = std::env::var_os("CARGO_CFG_FUZZING").is_some();
    let sanitize = std::env::var("CARGO_CFG_SANITIZE").unwrap_or_default();
    let clang_available = Command::new("clang-19")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let compiler = std::env::var("NATIVE_CC")
        .ok()
        .or_else(|| (fuzzing && clang_available).then(|| "clang-19".to_owned()));

    let mut build = cc::Build::new();
    if let Some(cc) = &compiler {
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
    match std::env::var("NATIVE_CFLAGS") {
        Ok(flags) => {
            for f in flags.split_whitespace() {
                build.flag(f);
            }
        }
        Err(_) => {
            if sanitize.split(',').any(|s| s == "address") {
                build.flag("-fsanitize=address");
            }
            if fuzzing && compiler.as_deref().is_some_and(|c| c.contains("clang")) {
                build.flag("-fsanitize=fuzzer-no-link");
            }
        }
    }
    build.compile("native_c");
    println!("cargo:rustc-link-lib=pthread");
    // DEP_NATIVE_INCLUDE for dependents that compile their own C against native.h (benches/capi).
    println!(
        "cargo:include={}",
        dir.canonicalize().expect("libnative exists").display()
    );
}
