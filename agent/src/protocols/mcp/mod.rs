//! The Model Context Protocol: JSON-RPC 2.0 messages between AI agents and tool servers, read
//! into [`McpCall`]s over both of its transports: streamable HTTP ([`http`], a layer found in
//! decoded HTTP exchanges like GraphQL) and stdio ([`stdio`], a decoder of its own for the
//! newline-delimited messages on a server process's standard input and output).
//!
//! What a message says is read from it as sent; a message cut by the body cap or the capture
//! still gives what its whole leading part says (a listing's complete tools, an id), and the
//! call is marked incomplete.

mod call;
pub mod describe;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod stdio;

use ring::digest::{SHA256, digest};
use serde_json::Value;

pub use call::{MAX_ARGUMENTS, McpCall, McpOutcome, McpTool};

/// Tools read per listing: a listing of more is still bounded work.
const MAX_TOOLS: usize = 256;

/// Namespaces and methods of MCP, for telling it from other JSON-RPC on HTTP when no MCP header
/// says so.
const MCP_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/",
    "resources/",
    "prompts/",
    "notifications/",
    "completion/",
    "logging/",
    "sampling/",
    "elicitation/",
    "roots/",
    "server/discover",
    "subscriptions/",
];

/// True for a method MCP defines.
pub fn is_mcp_method(method: &str) -> bool {
    MCP_METHODS.iter().any(|known| {
        if known.ends_with('/') {
            method.starts_with(known)
        } else {
            method == *known
        }
    })
}

/// The call a JSON-RPC request or notification starts; `None` for anything else (a response,
/// a document that is not JSON-RPC).
pub fn request(message: &Value) -> Option<McpCall> {
    let method = message.get("method")?.as_str()?;
    let mut call = McpCall::new(method.to_owned());
    call.request_id = message.get("id").and_then(id_string);
    call.outcome = match call.request_id {
        Some(_) => McpOutcome::Unanswered,
        None => McpOutcome::Notification,
    };
    let params = message.get("params");
    let param = |key: &str| params.and_then(|params| params.get(key)?.as_str());
    call.target = match method {
        "tools/call" | "prompts/get" => param("name").map(str::to_owned),
        _ => None,
    };
    if method == "initialize" {
        call.protocol_version = param("protocolVersion").map(str::to_owned);
    }
    if method == "tools/call"
        && let Some(arguments) = params.and_then(|params| params.get("arguments"))
    {
        call.arguments = arguments.to_string();
        call.arguments
            .truncate(call.arguments.floor_char_boundary(MAX_ARGUMENTS));
    }
    Some(call)
}

/// The string form of a JSON-RPC id (a string or a number); `None` for `null` and others.
pub fn id_string(id: &Value) -> Option<String> {
    match id {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// True when `message` is a response (a result or an error) to the request `id`.
pub fn answers(message: &Value, id: &str) -> bool {
    let is_response = message.get("result").is_some() || message.get("error").is_some();
    is_response && message.get("id").and_then(id_string).as_deref() == Some(id)
}

/// Reads the response `message` into `call`: its outcome, and what the result says for the
/// call's method (the server of an `initialize`, the tools of a `tools/list`, the output of a
/// `tools/call`). `output_cap` bounds the tool output kept.
pub fn read_answer(message: &Value, call: &mut McpCall, output_cap: usize) {
    if let Some(error) = message.get("error") {
        let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
        call.outcome = McpOutcome::RpcError(code);
        return;
    }
    let Some(result) = message.get("result") else {
        return;
    };
    call.outcome = McpOutcome::Result;
    match call.method.as_str() {
        "initialize" => {
            if let Some(version) = result.get("protocolVersion").and_then(Value::as_str) {
                call.protocol_version = Some(version.to_owned());
            }
            call.server_info = result.get("serverInfo").and_then(|info| {
                let name = info.get("name")?.as_str()?.to_owned();
                let version = info.get("version").and_then(Value::as_str);
                Some((name, version.map(str::to_owned)))
            });
        }
        "tools/list" => {
            if let Some(tools) = result.get("tools").and_then(Value::as_array) {
                call.tools = tools.iter().take(MAX_TOOLS).filter_map(tool).collect();
            }
        }
        "tools/call" => {
            if result.get("isError").and_then(Value::as_bool) == Some(true) {
                call.outcome = McpOutcome::ToolError;
            }
            call.tool_output = tool_output(result, output_cap);
        }
        _ => {}
    }
}

/// One tool of a listing; `None` when it has no name.
fn tool(described: &Value) -> Option<McpTool> {
    let name = described.get("name")?.as_str()?.to_owned();
    let description = described
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    // serde_json's maps are ordered by key, so the schema's text is canonical.
    let schema = described
        .get("inputSchema")
        .map(Value::to_string)
        .unwrap_or_default();
    let mut hashed = Vec::with_capacity(description.len() + schema.len() + 1);
    hashed.extend_from_slice(description.as_bytes());
    hashed.push(0);
    hashed.extend_from_slice(schema.as_bytes());
    let digest = hex::encode(digest(&SHA256, &hashed));
    Some(McpTool {
        name,
        digest,
        description,
    })
}

/// The text items of a tool result's content, joined by newlines, at most `cap` bytes.
fn tool_output(result: &Value, cap: usize) -> String {
    let mut output = String::new();
    let items = result.get("content").and_then(Value::as_array);
    for text in items
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("text")?.as_str())
    {
        if !output.is_empty() {
            if output.len() + 1 >= cap {
                break;
            }
            output.push('\n');
        }
        let room = cap.saturating_sub(output.len());
        output.push_str(&text[..text.floor_char_boundary(room)]);
        if output.len() >= cap {
            break;
        }
    }
    output
}

/// Reads what the leading bytes of a cut response `message` still say into `call`, which is
/// marked incomplete: a listing's complete tools.
pub fn read_cut_answer(message: &[u8], call: &mut McpCall) {
    call.incomplete = true;
    if call.method == "tools/list" {
        call.tools = tools_of_cut_listing(message);
        if !call.tools.is_empty() {
            call.outcome = McpOutcome::Result;
        }
    }
}

/// The tools a `tools/list` response cut short still lists whole: each complete element of
/// its `"tools"` array, read from the leading bytes of the cut JSON message.
fn tools_of_cut_listing(message: &[u8]) -> Vec<McpTool> {
    let Some(start) = array_after_key(message, b"\"tools\"") else {
        return Vec::new();
    };
    let mut rest = message.get(start..).unwrap_or_default();
    let mut tools = Vec::new();
    while tools.len() < MAX_TOOLS {
        rest = rest.trim_ascii_start();
        rest = rest.strip_prefix(b",").unwrap_or(rest);
        let mut elements = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
        let Some(Ok(element)) = elements.next() else {
            break;
        };
        let used = elements.byte_offset();
        tools.extend(tool(&element));
        rest = rest.get(used..).unwrap_or_default();
    }
    tools
}

/// Where the elements of the array `key` holds start in `message` (just past its `[`).
fn array_after_key(message: &[u8], key: &[u8]) -> Option<usize> {
    let at = message
        .windows(key.len())
        .position(|window| window == key)?;
    let mut index = at + key.len();
    let mut expected = [b':', b'['].into_iter();
    let mut want = expected.next();
    while let (Some(byte), Some(wanted)) = (message.get(index), want) {
        index += 1;
        if byte.is_ascii_whitespace() {
            continue;
        }
        if *byte != wanted {
            return None;
        }
        want = expected.next();
    }
    want.is_none().then_some(index)
}

#[cfg(test)]
mod tests;
