//! Go's function table, build information and machine code, as found in executables.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agent::capture::fuzzing::go_binary_tables(data));
