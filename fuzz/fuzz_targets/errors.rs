#![no_main]
//! Drives `native` through native_fuzz::errors (see that module for what it covers and its oracles).
use libfuzzer_sys::fuzz_target;
use native_fuzz::errors::ErrorsInput;

fuzz_target!(init: native_fuzz::init(), |input: ErrorsInput| native_fuzz::errors::TARGET.fuzz_one(&input));
