#![no_main]
//! Drives `native` through native_fuzz::handles (see that module for what it covers and its oracles).
use libfuzzer_sys::fuzz_target;
use native_fuzz::handles::HandlesInput;

fuzz_target!(init: native_fuzz::init(), |input: HandlesInput| native_fuzz::handles::TARGET.fuzz_one(&input));
