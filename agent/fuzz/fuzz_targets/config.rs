//! The configuration file's text.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agent::config::fuzzing::config_file(data));
