//! Capture events through stream assembly and on to the protocol stage.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agent::fuzzing::streams::capture_events(data));
