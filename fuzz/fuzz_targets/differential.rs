#![no_main]
//! Drives `native` through native_fuzz::differential (see that module for what it covers and its oracles).
use libfuzzer_sys::fuzz_target;
use native_fuzz::differential::DifferentialInput;

fuzz_target!(init: native_fuzz::init(), |input: DifferentialInput| native_fuzz::differential::TARGET.fuzz_one(&input));
