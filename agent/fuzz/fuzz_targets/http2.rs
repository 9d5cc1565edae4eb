//! An HTTP/2 connection (frames, HPACK, gRPC and GraphQL on top) cut into chunks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agent::protocols::http2::fuzzing::connection(data));
