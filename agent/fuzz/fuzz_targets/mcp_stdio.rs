//! The newline-delimited JSON-RPC of an MCP stdio connection, cut into chunks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agent::protocols::mcp::fuzzing::stdio_connection(data));
