//! One header block through both directions' HPACK decoders, fresh and joined mid-way.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agent::protocols::http2::fuzzing::hpack_block(data));
