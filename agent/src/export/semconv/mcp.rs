//! MCP exchanges in the terms of the GenAI semantic conventions for the Model Context
//! Protocol: the span is named `{mcp.method.name} {target}`, and carries the method, the
//! JSON-RPC request id, the session, the protocol version and the tool or prompt.
//!
//! The session id is the bearer of a streamable-HTTP session (whoever holds it can send on the
//! session), so only a digest of it leaves the host: enough to group a session's spans.

use opentelemetry::KeyValue;

use super::{
    APISCOPE_CALL_INCOMPLETE, CallDescription, CarrierMetric, ERROR_TYPE, GEN_AI_OPERATION_NAME,
    Kind, incomplete_parts, string_array,
};
use crate::{
    analysis::AnalyzedCall,
    calls::{McpCall, McpOutcome, Side},
    digest::sha256_hex_prefix,
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

/// Names the span after the MCP exchange an HTTP call carried and adds its attributes; the
/// HTTP attributes stay, as those of the transport.
pub(super) fn describe_on_http(call: &McpCall, description: &mut CallDescription) {
    describe(call, "tcp", description);
}

/// Describes an MCP exchange over stdio, which has no carrier protocol of its own.
pub(super) fn describe_on_stdio(analyzed: &AnalyzedCall, call: &McpCall) -> CallDescription {
    let api_call = &analyzed.call.call;
    let mut description = CallDescription {
        kind: match api_call.side {
            Side::Server => Kind::Server,
            Side::Client => Kind::Client,
        },
        carrier: CarrierMetric::None,
        name: String::new(),
        span_attributes: Vec::new(),
        metric_attributes: Vec::new(),
        error: None,
        request_body_size: None,
        response_body_size: None,
        duration_seconds: api_call.end_ns.saturating_sub(api_call.start_ns) as f64 / 1e9,
        traceparent: None,
        tracestate: None,
        genai: None,
        mcp: None,
    };
    let gaps = incomplete_parts(api_call);
    if !gaps.is_empty() {
        description
            .span_attributes
            .push(KeyValue::new(APISCOPE_CALL_INCOMPLETE, string_array(gaps)));
    }
    describe(call, "pipe", &mut description);
    description
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
    description.mcp = Some(identity);
    description.name = match &call.target {
        Some(target) => format!("{} {target}", call.method),
        None => call.method.clone(),
    };
}

/// The exported form of a session id: the first 16 bytes of its SHA-256, hex.
pub fn session_digest(session: &str) -> String {
    sha256_hex_prefix(session.as_bytes(), 16)
}
