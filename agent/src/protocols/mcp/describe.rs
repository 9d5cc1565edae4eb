//! MCP exchanges in the terms of the GenAI semantic conventions for the Model Context
//! Protocol: the span is named `{mcp.method.name} {target}`, and carries the method, the
//! JSON-RPC request id, the session, the protocol version and the tool or prompt.
//!
//! The session id is the bearer of a streamable-HTTP session (whoever holds it can send on the
//! session), so only a digest of it leaves the host: enough to group a session's spans.

use opentelemetry::KeyValue;

use super::{McpCall, McpOutcome};
use crate::{
    calls::{
        ApiCall, CallDescription, DescribeContext, Instrument, Layer, description::ERROR_TYPE,
    },
    digest::sha256_hex_prefix,
    protocols::genai::describe::GEN_AI_OPERATION_NAME,
    streams::Transport,
};

/// `mcp.method.name`.
pub const MCP_METHOD_NAME: &str = "mcp.method.name";
/// `mcp.session.id`: here a digest of the session id (the first 16 bytes of its SHA-256, hex).
pub const MCP_SESSION_ID: &str = "mcp.session.id";
/// `mcp.protocol.version`.
pub const MCP_PROTOCOL_VERSION: &str = "mcp.protocol.version";
/// `jsonrpc.request.id`, in its string form.
pub const JSONRPC_REQUEST_ID: &str = "jsonrpc.request.id";
/// `jsonrpc.protocol.version`.
pub const JSONRPC_PROTOCOL_VERSION: &str = "jsonrpc.protocol.version";
/// `rpc.response.status_code`: a JSON-RPC error's code, as a string.
pub const RPC_RESPONSE_STATUS_CODE: &str = "rpc.response.status_code";
/// `gen_ai.tool.name`: the tool of a `tools/call`.
pub const GEN_AI_TOOL_NAME: &str = "gen_ai.tool.name";
/// `gen_ai.prompt.name`: the prompt of a `prompts/get`.
pub const GEN_AI_PROMPT_NAME: &str = "gen_ai.prompt.name";
/// `network.transport`: `pipe` for stdio, `tcp` for streamable HTTP.
pub const NETWORK_TRANSPORT: &str = "network.transport";
/// apiscope's own: the server's name from its `initialize` answer.
pub const APISCOPE_MCP_SERVER_NAME: &str = "apiscope.mcp.server.name";
/// apiscope's own: how many tools a `tools/list` answer listed.
pub const APISCOPE_MCP_TOOL_COUNT: &str = "apiscope.mcp.tool.count";
/// apiscope's own: a message was cut, so fields it held may be missing (set only when true).
pub const APISCOPE_MCP_INCOMPLETE: &str = "apiscope.mcp.incomplete";

/// The MCP conventions' buckets for operation durations, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// `mcp.{server,client}.operation.duration`.
static DURATION: [&Instrument; 2] = [
    &Instrument {
        name: "mcp.server.operation.duration",
        unit: "s",
        description: "Duration of MCP requests and notifications on the server.",
        boundaries: &DURATION_BUCKETS,
    },
    &Instrument {
        name: "mcp.client.operation.duration",
        unit: "s",
        description: "Duration of MCP requests and notifications on the client.",
        boundaries: &DURATION_BUCKETS,
    },
];

impl Layer for McpCall {
    /// Over streamable HTTP the HTTP attributes and measures stay, as those of the transport;
    /// over pipes there is no carrier protocol to report.
    fn describe(
        &self,
        call: &ApiCall,
        _context: DescribeContext<'_>,
        description: &mut CallDescription,
    ) {
        let over_pipes = call.connection.transport == Transport::Stdio;
        describe(self, if over_pipes { "pipe" } else { "tcp" }, description);
        if over_pipes {
            description.summary = format!("mcp {}", description.name);
            description.outcome = Some(self.outcome.as_str().into_owned());
        } else {
            description.summary = format!("{} mcp {}", description.summary, description.name);
        }
    }
}

fn describe(call: &McpCall, transport: &'static str, description: &mut CallDescription) {
    let mut identity = vec![
        KeyValue::new(MCP_METHOD_NAME, call.method.clone()),
        KeyValue::new(NETWORK_TRANSPORT, transport),
    ];
    if let Some(version) = &call.protocol_version {
        identity.push(KeyValue::new(MCP_PROTOCOL_VERSION, version.clone()));
    }
    if let Some(target) = &call.target {
        let key = match call.method.as_str() {
            "prompts/get" => GEN_AI_PROMPT_NAME,
            _ => GEN_AI_TOOL_NAME,
        };
        identity.push(KeyValue::new(key, target.clone()));
    }
    if call.method == "tools/call" {
        identity.push(KeyValue::new(GEN_AI_OPERATION_NAME, "execute_tool"));
    }
    let error = match &call.outcome {
        McpOutcome::ToolError => Some("tool_error".to_owned()),
        McpOutcome::RpcError(code) => {
            identity.push(KeyValue::new(RPC_RESPONSE_STATUS_CODE, code.to_string()));
            Some(code.to_string())
        }
        _ => description.error.clone(),
    };
    if let Some(error) = &error {
        identity.push(KeyValue::new(ERROR_TYPE, error.clone()));
    }
    let attributes = &mut description.span_attributes;
    attributes.retain(|attribute| attribute.key.as_str() != ERROR_TYPE);
    attributes.extend(identity.iter().cloned());
    attributes.push(KeyValue::new(JSONRPC_PROTOCOL_VERSION, "2.0"));
    if let Some(id) = &call.request_id {
        attributes.push(KeyValue::new(JSONRPC_REQUEST_ID, id.clone()));
    }
    if let Some(session) = &call.session_id {
        attributes.push(KeyValue::new(MCP_SESSION_ID, session_digest(session)));
    }
    if let Some((name, _)) = &call.server_info {
        attributes.push(KeyValue::new(APISCOPE_MCP_SERVER_NAME, name.clone()));
    }
    if call.method == "tools/list" && call.outcome == McpOutcome::Result {
        let count = i64::try_from(call.tools.len()).unwrap_or(i64::MAX);
        attributes.push(KeyValue::new(APISCOPE_MCP_TOOL_COUNT, count));
    }
    if call.incomplete {
        attributes.push(KeyValue::new(APISCOPE_MCP_INCOMPLETE, true));
    }
    description.error = error;
    let duration = description.duration_seconds;
    description.measure(DURATION, duration, identity);
    description.name = match &call.target {
        Some(target) => format!("{} {target}", call.method),
        None => call.method.clone(),
    };
}

/// The exported form of a session id: the first 16 bytes of its SHA-256, hex.
pub fn session_digest(session: &str) -> String {
    sha256_hex_prefix(session.as_bytes(), 16)
}
