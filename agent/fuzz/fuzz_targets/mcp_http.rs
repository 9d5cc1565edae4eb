//! An MCP message over streamable HTTP: a JSON-RPC POST answered by JSON or an event stream.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agent::protocols::mcp::fuzzing::http_exchange(data));
