#![no_main]
//! See `saslauthd_rs::fuzzing::saslauthd_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| saslauthd_rs::fuzzing::saslauthd_request(data));
