#![no_main]
//! Drives `native` through native_fuzz::buffers (see that module for what it covers and its oracles).
use libfuzzer_sys::fuzz_target;
use native_fuzz::buffers::BuffersInput;

fuzz_target!(init: native_fuzz::init(), |input: BuffersInput| native_fuzz::buffers::TARGET.fuzz_one(&input));
