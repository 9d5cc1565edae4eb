//! An MCP message over streamable HTTP: a JSON-RPC POST answered by JSON or an event stream.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agent::protocols::fuzzing::mcp_http_exchange(data));
