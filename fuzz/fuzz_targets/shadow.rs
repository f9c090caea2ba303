#![no_main]
//! See `saslauthd_rs::fuzzing::shadow`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| saslauthd_rs::fuzzing::shadow(data));
