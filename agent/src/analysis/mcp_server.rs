//! Which MCP server an exchange went to, named the same from both ends and across restarts:
//! the rug-pull rule compares a tool with what the same server listed before, and the
//! inventory lists servers per workload.

use crate::{calls::Side, enrich::EnrichedCall, protocols::http::HttpExchange};

/// The MCP server an exchange went to, the same from both ends: the Host and path of a
/// streamable-HTTP endpoint, or for stdio the server's service and a digest of its command
/// line (so that a restarted server is the same one, and two servers run by one interpreter
/// are not).
pub fn identity(call: &EnrichedCall) -> String {
    let connection = &call.call.connection;
    if let Some(http) = call.call.exchange::<HttpExchange>() {
        let address = match call.call.side {
            Side::Server => connection.local,
            Side::Client => connection.peer,
        };
        let host = http
            .request
            .header_str("host")
            .map(str::to_owned)
            .or_else(|| address.map(|address| address.to_string()))
            .unwrap_or_default();
        return format!("{host}{}", http.request.path());
    }
    let process = &call.workload.process;
    let command_line = process.command_line_digest.as_deref().unwrap_or("unknown");
    format!("stdio:{}:{command_line}", call.workload.service_name)
}
