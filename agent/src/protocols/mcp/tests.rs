use serde_json::json;

use super::McpOutcome;
use super::{http, is_mcp_method, read_answer, request, tools_of_cut_listing};
use crate::{
    protocols::http::{Header, HttpExchange},
    testing::{header, post},
};

fn exchange(
    request_headers: Vec<Header>,
    sent: &str,
    answer: Option<(&str, &str)>,
) -> HttpExchange {
    let answer = answer.map(|(content_type, text)| {
        let headers = vec![
            header("content-type", content_type),
            header("mcp-session-id", "session-from-initialize"),
        ];
        (headers, text)
    });
    post("/mcp", request_headers, sent, answer)
}

#[test]
fn a_tool_call_answered_in_an_event_stream_is_read_with_its_session() {
    let sent = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3}}}"#;
    let answer = "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\r\n\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"5\"}],\"isError\":false}}\r\n\r\n";
    let headers = vec![
        header("mcp-session-id", "abc123"),
        header("mcp-protocol-version", "2025-06-18"),
    ];
    let http = exchange(headers, sent, Some(("text/event-stream", answer)));
    let call = http::describe(&http, 4096).expect("an MCP call");
    assert_eq!(call.method, "tools/call");
    assert_eq!(call.request_id.as_deref(), Some("7"));
    assert_eq!(call.target.as_deref(), Some("add"));
    assert_eq!(call.session_id.as_deref(), Some("abc123"));
    assert_eq!(call.protocol_version.as_deref(), Some("2025-06-18"));
    assert_eq!(call.outcome, McpOutcome::Result);
    assert_eq!(call.tool_output, "5");
    assert!(!call.incomplete);
}

#[test]
fn initialize_takes_its_session_from_the_answer_and_its_server_from_the_result() {
    let sent = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#;
    let answer = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"tools","version":"1.2"}}}"#;
    let http = exchange(Vec::new(), sent, Some(("application/json", answer)));
    let call = http::describe(&http, 4096).expect("an MCP call");
    assert_eq!(call.session_id.as_deref(), Some("session-from-initialize"));
    assert_eq!(
        call.server_info,
        Some(("tools".to_owned(), Some("1.2".to_owned())))
    );
    assert_eq!(call.protocol_version.as_deref(), Some("2025-06-18"));
}

#[test]
fn other_json_rpc_is_not_mcp_unless_a_header_says_so() {
    let sent = r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#;
    assert!(http::describe(&exchange(Vec::new(), sent, None), 4096).is_none());
    let said = vec![header("mcp-protocol-version", "2025-06-18")];
    assert!(http::describe(&exchange(said, sent, None), 4096).is_some());
    assert!(http::describe(&exchange(Vec::new(), "{\"method\":\"x\"}", None), 4096).is_none());
    assert!(http::describe(&exchange(Vec::new(), "not json", None), 4096).is_none());
    assert!(is_mcp_method("tools/list") && is_mcp_method("notifications/initialized"));
    assert!(!is_mcp_method("toolsy") && !is_mcp_method("initialized"));
}

#[test]
fn errors_and_tool_errors_are_told_apart() {
    let mut call =
        request(&json!({"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"fail"}}))
            .unwrap();
    read_answer(
        &json!({"jsonrpc":"2.0","id":"a","result":{"content":[],"isError":true}}),
        &mut call,
        64,
    );
    assert_eq!(call.outcome, McpOutcome::ToolError);
    read_answer(
        &json!({"jsonrpc":"2.0","id":"a","error":{"code":-32602,"message":"bad"}}),
        &mut call,
        64,
    );
    assert_eq!(call.outcome, McpOutcome::RpcError(-32602));
    let notification =
        request(&json!({"jsonrpc":"2.0","method":"notifications/initialized"})).unwrap();
    assert_eq!(notification.outcome, McpOutcome::Notification);
    assert_eq!(notification.request_id, None);
}

#[test]
fn a_tool_digest_follows_its_description_and_schema_only() {
    let listing = |description: &str, kind: &str| {
        let mut call = request(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"})).unwrap();
        let answer = json!({"jsonrpc":"2.0","id":1,"result":{"tools":[
            {"name":"read","description":description,"inputSchema":{"type":"object","properties":{"path":{"type":kind}}},"title":"anything"}
        ]}});
        read_answer(&answer, &mut call, 64);
        call.tools.remove(0)
    };
    let first = listing("Reads a file.", "string");
    assert_eq!(first.name, "read");
    assert_eq!(first.digest.len(), 64);
    assert_eq!(first.digest, listing("Reads a file.", "string").digest);
    assert_ne!(
        first.digest,
        listing("Reads a file, then mails it.", "string").digest
    );
    assert_ne!(first.digest, listing("Reads a file.", "integer").digest);
}

#[test]
fn a_cut_listing_keeps_its_whole_tools() {
    let whole = r#"{"jsonrpc":"2.0","id":1,"result":{"tools": [ {"name":"a","description":"first"}, {"name":"b","description":"second"}, {"name":"c","descr"#;
    let tools = tools_of_cut_listing(whole.as_bytes());
    let names: Vec<_> = tools.iter().map(|tool| tool.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(tools_of_cut_listing(b"{\"tools\": 5}").is_empty());
    assert!(tools_of_cut_listing(b"").is_empty());
}

#[test]
fn tool_output_is_bounded_on_a_character_boundary() {
    let mut call =
        request(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}))
            .unwrap();
    let answer = json!({"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ééééé"},{"type":"text","text":"more"}]}});
    read_answer(&answer, &mut call, 5);
    assert_eq!(call.tool_output, "éé");
}
