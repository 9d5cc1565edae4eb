//! MCP's streamable HTTP transport: each JSON-RPC message is POSTed to the server's endpoint,
//! which answers with one JSON document or a server-sent event stream holding the response
//! (and maybe messages of its own first). The session id travels in `Mcp-Session-Id`, the
//! negotiated version in `MCP-Protocol-Version`.

use std::sync::Arc;

use super::McpCall;
use crate::{
    calls::{ApiCall, Layer},
    protocols::{
        DecoderSettings,
        http::{HttpExchange, header},
        json_documents::documents,
    },
};

/// The MCP exchange an HTTP exchange carries, as its layer: the HTTP layer table's entry for
/// MCP over streamable HTTP.
pub fn find(
    _call: &ApiCall,
    http: &HttpExchange,
    settings: DecoderSettings,
) -> Vec<Arc<dyn Layer>> {
    describe(http, settings.body_cap)
        .map(|call| Arc::new(call) as Arc<dyn Layer>)
        .into_iter()
        .collect()
}

/// The MCP exchange `http` carries, if it carries one.
pub fn describe(http: &HttpExchange, output_cap: usize) -> Option<McpCall> {
    let request = &http.request;
    if request.method != "POST" {
        return None;
    }
    let header_text = |headers, name| {
        header(headers, name).map(|found| String::from_utf8_lossy(&found.value).into_owned())
    };
    let session = header_text(&request.headers, "mcp-session-id");
    let version = header_text(&request.headers, "mcp-protocol-version");
    let said_by_headers = session.is_some() || version.is_some();
    // A batch (allowed by the 2025-03-26 revision) is reported by its first message.
    let message = documents(&request.body.captured)
        .into_iter()
        .next()
        .map(|document| match document {
            serde_json::Value::Array(mut batch) if !batch.is_empty() => batch.swap_remove(0),
            other => other,
        })?;
    message.get("jsonrpc")?;
    let mut call = super::request(&message)?;
    if !said_by_headers && !super::is_mcp_method(&call.method) {
        return None;
    }
    call.incomplete = request.body.is_cut();
    call.protocol_version = version.or(call.protocol_version);
    let response = http.response.as_ref();
    // `initialize`'s answer assigns the session.
    call.session_id = session
        .or_else(|| response.and_then(|response| header_text(&response.headers, "mcp-session-id")));
    let (Some(id), Some(response)) = (call.request_id.clone(), response) else {
        return Some(call);
    };
    let body = &response.body;
    let answer = documents(&body.captured)
        .into_iter()
        .chain(documents(&body.tail))
        .find(|document| super::answers(document, &id));
    match answer {
        Some(answer) => super::read_answer(&answer, &mut call, output_cap),
        None if body.is_cut() => {
            super::read_cut_answer(&body.captured, &mut call);
        }
        // An HTTP error without a JSON-RPC one (a 404 for an expired session).
        None => {}
    }
    Some(call)
}
