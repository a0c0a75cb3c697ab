//! Links libFuzzer (clang's compiler-rt `libclang_rt.fuzzer_no_main`) into the engine.
//!
//! The engine calls `LLVMFuzzerRunDriver` itself, inside the user's interpreter, so the archive without
//! `main` is the one we want. It is C++ (needs libstdc++). clang is found through `$FFI_HARNESS_CLANG`,
//! else the first of clang-19, clang-20, clang-18, clang on PATH.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=FFI_HARNESS_CLANG");
    println!("cargo:rerun-if-changed=build.rs");
    let candidates: Vec<String> = match std::env::var("FFI_HARNESS_CLANG") {
        Ok(c) if !c.is_empty() => vec![c],
        _ => ["clang-19", "clang-20", "clang-18", "clang"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let mut tried = Vec::new();
    for clang in &candidates {
        let Ok(out) = Command::new(clang).arg("-print-resource-dir").output() else {
            tried.push(format!("{clang}: not found"));
            continue;
        };
        if !out.status.success() {
            tried.push(format!("{clang}: -print-resource-dir failed"));
            continue;
        }
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("lib/linux");
        let lib = dir.join(format!("libclang_rt.fuzzer_no_main-{arch}.a"));
        if lib.is_file() {
            println!("cargo:rerun-if-changed={}", lib.display());
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rustc-link-lib=static=clang_rt.fuzzer_no_main-{arch}");
            println!("cargo:rustc-link-lib=dylib=stdc++");
            return;
        }
        tried.push(format!("{clang}: no {}", lib.display()));
    }
    panic!(
        "ffi-harness engine: libFuzzer (libclang_rt.fuzzer_no_main) was not found. Install clang and its \
         compiler-rt (Debian: apt-get install clang-19 libclang-rt-19-dev) or set FFI_HARNESS_CLANG to a clang \
         whose -print-resource-dir holds lib/linux/libclang_rt.fuzzer_no_main-<arch>.a. Tried: {}",
        tried.join("; ")
    );
}
