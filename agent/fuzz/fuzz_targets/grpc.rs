//! Four gRPC calls on one HTTP/2 connection: their messages, cut anywhere, and statuses.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agent::protocols::grpc::fuzzing::connection(data));
