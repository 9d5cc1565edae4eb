//! An HTTP/1 connection (and what it upgrades to) cut into chunks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agent::protocols::http1::fuzzing::connection(data));
