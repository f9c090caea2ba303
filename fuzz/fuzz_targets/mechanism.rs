#![no_main]
//! See `saslauthd_rs::fuzzing::mechanism`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| saslauthd_rs::fuzzing::mechanism(data));
