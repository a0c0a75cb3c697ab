#![no_main]
//! Drives `native` through native_fuzz::callbacks (see that module for what it covers and its oracles).
use libfuzzer_sys::fuzz_target;
use native_fuzz::callbacks::CallbacksInput;

fuzz_target!(init: native_fuzz::init(), |input: CallbacksInput| native_fuzz::callbacks::TARGET.fuzz_one(&input));
