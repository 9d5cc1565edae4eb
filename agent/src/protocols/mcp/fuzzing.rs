//! The MCP fuzz targets: messages over the streamable HTTP transport (`mcp_http`) and over a tool server's standard input and output (`mcp_stdio`).

use agent_common::Role;

use crate::protocols::fuzzing::{Feed, http1_exchange};
use crate::streams::Transport;

/// The session header of the MCP exchanges: the server assigns it, the client sends it back.
const MCP_SESSION: &str = "Mcp-Session-Id: 1868a90c-3ae4-4ffc-9e1d-4e2b7f0c5a31\r\n";

/// An MCP message over the streamable HTTP transport: after the first byte (bit 0: the
/// request carries the session and version headers, so any JSON-RPC method is read as MCP),
/// the exchange of [`http1_exchange`], a `POST /mcp` of a JSON-RPC message answered by one
/// JSON document or an event stream.
pub fn http_exchange(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let session = if first & 1 != 0 {
        format!("{MCP_SESSION}MCP-Protocol-Version: 2025-06-18\r\n")
    } else {
        String::new()
    };
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost:8000\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\n{session}"
    );
    http1_exchange(rest, &head, MCP_SESSION);
}

/// The MCP messages of a stdio connection (a tool server's standard input and output): the
/// chunks [`Feed::chunks`] cuts from the bytes, newline-delimited JSON-RPC cut anywhere.
pub fn stdio_connection(data: &[u8]) {
    let mut feed = Feed::new(Transport::Stdio, Role::Server, false, 0);
    feed.chunks(data);
    feed.end();
}
