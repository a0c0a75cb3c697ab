#![no_main]
//! Drives `native` through native_fuzz::structs (see that module for what it covers and its oracles).
use libfuzzer_sys::fuzz_target;
use native_fuzz::structs::StructsInput;

fuzz_target!(init: native_fuzz::init(), |input: StructsInput| native_fuzz::structs::TARGET.fuzz_one(&input));
