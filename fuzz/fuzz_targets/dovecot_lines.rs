#![no_main]
//! See `saslauthd_rs::fuzzing::dovecot_lines`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| saslauthd_rs::fuzzing::dovecot_lines(data));
