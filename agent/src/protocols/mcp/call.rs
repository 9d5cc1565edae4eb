//! A Model Context Protocol exchange: one JSON-RPC 2.0 request (or notification) and its
//! answer, between an AI agent and a tool server, over streamable HTTP or stdio.

/// Bytes of a tool call's arguments kept for analysis.
pub const MAX_ARGUMENTS: usize = 4096;

/// How an MCP request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpOutcome {
    /// A result came back.
    Result,
    /// A `tools/call` result with `isError: true`: the tool ran and failed.
    ToolError,
    /// A JSON-RPC error object, with its code.
    RpcError(i64),
    /// A notification: nothing is answered.
    Notification,
    /// No answer was seen (the stream ended, or the answer was lost).
    Unanswered,
}

impl McpOutcome {
    /// A short name: `result`, `tool_error`, the JSON-RPC error code, `notification` or
    /// `unanswered`.
    pub fn as_str(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Self::Result => "result".into(),
            Self::ToolError => "tool_error".into(),
            Self::RpcError(code) => code.to_string().into(),
            Self::Notification => "notification".into(),
            Self::Unanswered => "unanswered".into(),
        }
    }
}

/// One tool as a `tools/list` result described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpTool {
    /// Its name.
    pub name: String,
    /// SHA-256 of its description and its input schema (as sent), hex: a change in either
    /// after the tool was first seen is a "rug pull".
    pub digest: String,
    /// Its description, kept for analysis (hidden directives), never exported.
    pub description: String,
}

/// One MCP exchange, read from the JSON-RPC messages. A field the seen bytes did not hold is
/// `None`, never guessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpCall {
    /// `mcp.method.name`: `initialize`, `tools/list`, `tools/call`, ...
    pub method: String,
    /// `jsonrpc.request.id` in its string form; `None` for a notification.
    pub request_id: Option<String>,
    /// The session id (`Mcp-Session-Id`), raw: exported only as a digest, since it is the
    /// session's bearer on streamable HTTP.
    pub session_id: Option<String>,
    /// `mcp.protocol.version`: from the `MCP-Protocol-Version` header or the `initialize`
    /// exchange.
    pub protocol_version: Option<String>,
    /// The tool of a `tools/call` (`gen_ai.tool.name`), the prompt of a `prompts/get`
    /// (`gen_ai.prompt.name`).
    pub target: Option<String>,
    /// How it ended.
    pub outcome: McpOutcome,
    /// The server's name and version from an `initialize` result's `serverInfo`.
    pub server_info: Option<(String, Option<String>)>,
    /// The tools a `tools/list` result described.
    pub tools: Vec<McpTool>,
    /// The arguments of a `tools/call`, as JSON text (at most [`MAX_ARGUMENTS`] bytes), kept for
    /// analysis (destructive operations), never exported.
    pub arguments: String,
    /// The text a `tools/call` result returned to the agent (its text content items, up to the
    /// body cap), kept for analysis (indirect prompt injection), never exported.
    pub tool_output: String,
    /// A message was cut or lost, so fields it would have held may be missing.
    pub incomplete: bool,
}

impl McpCall {
    /// A call of `method` with nothing else known yet.
    pub fn new(method: String) -> Self {
        Self {
            method,
            request_id: None,
            session_id: None,
            protocol_version: None,
            target: None,
            outcome: McpOutcome::Unanswered,
            server_info: None,
            tools: Vec::new(),
            arguments: String::new(),
            tool_output: String::new(),
            incomplete: false,
        }
    }
}
