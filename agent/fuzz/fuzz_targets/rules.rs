//! A rule pack file's text.
#![no_main]

use agent::analysis::security::rules::fuzzing::rule_pack;

libfuzzer_sys::fuzz_target!(|data: &[u8]| rule_pack(data));
