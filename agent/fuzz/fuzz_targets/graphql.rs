//! A GraphQL request: the JSON body of a POST /graphql over HTTP/1.1.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agent::protocols::graphql::fuzzing::exchange(data));
