//! Calls: the decoded API exchanges every later stage works on. Each protocol fills its own
//! payload type; the fields common to all of them live on [`ApiCall`].

pub mod genai;
pub mod graphql;
pub mod grpc;
pub mod http;
pub mod mcp;
pub mod secrets;

use std::sync::Arc;

use crate::streams::Connection;

pub use genai::{GenAiCall, GenAiOperation};
pub use graphql::{GraphqlOperation, GraphqlOperationType};
pub use grpc::GrpcCall;
pub use http::{Header, HeaderName, HttpBody, HttpExchange, HttpRequest, HttpResponse};
pub use mcp::{McpCall, McpOutcome, McpTool};

/// Which end of the exchange the traced process was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// It sent the request.
    Client,
    /// It received the request.
    Server,
}

/// What could not be seen of a call. Every flag set means the call is reported as far as it
/// was seen, never completed by guessing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallGaps {
    /// Some request bytes were not captured (a gap, a lost record, or the capture cap).
    pub request_incomplete: bool,
    /// No response was seen (connection closed, reset, or the response was lost).
    pub response_missing: bool,
    /// Some response bytes were not captured.
    pub response_incomplete: bool,
    /// The call follows a point where the decoder lost track of message boundaries and found
    /// them again.
    pub after_resync: bool,
    /// Some header fields could not be decoded (HTTP/2 fields that refer to compression-table
    /// entries added before the capture joined the connection): they are left out, never
    /// guessed.
    pub headers_unknown: bool,
}

impl CallGaps {
    /// True when nothing is missing.
    pub fn is_complete(&self) -> bool {
        *self == Self::default()
    }
}

/// The protocol-specific part of a call.
#[derive(Debug, Clone, PartialEq)]
// Nearly every call is HTTP: boxing the exchange would cost an allocation per call to save
// bytes on the rare stdio MCP exchange.
#[allow(clippy::large_enum_variant)]
pub enum Payload {
    /// HTTP/1.x or HTTP/2, with the layers found inside (gRPC, GraphQL, model calls, MCP).
    Http(HttpExchange),
    /// An MCP exchange over stdio, the pipes between an agent and its tool server process.
    Mcp(McpCall),
}

/// One API exchange (a request and its response) as seen by one process.
#[derive(Debug, Clone)]
pub struct ApiCall {
    /// The connection it travelled on.
    pub connection: Arc<Connection>,
    /// Which end the process was.
    pub side: Side,
    /// `CLOCK_MONOTONIC` time of the syscall that carried the first request byte.
    pub start_ns: u64,
    /// `CLOCK_MONOTONIC` time of the syscall that carried the last response byte (or the last
    /// request byte when there is no response).
    pub end_ns: u64,
    /// The bytes were TLS plaintext.
    pub tls: bool,
    /// What was not seen.
    pub gaps: CallGaps,
    /// Protocol-specific content.
    pub payload: Payload,
}
