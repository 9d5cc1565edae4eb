//! MCP's stdio transport: an agent starts a tool server as a child process and exchanges
//! newline-delimited JSON-RPC messages over its standard input and output. Capture follows
//! the selected server processes' fd 0 and fd 1 as one connection, requests coming in and
//! responses going out (and the server's own requests, such as sampling, the other way).
//!
//! Requests wait for their response by id, within a bound; a message cut by the capture (a
//! gap, a read longer than the capture cap, a line longer than [`MAX_LINE`]) is read for what
//! its leading part says, and the bytes up to the next newline, whose start is unknown, are
//! skipped.

use std::{collections::VecDeque, sync::Arc};

use agent_common::Direction;
use serde_json::Value;

use super::{McpCall, McpOutcome};
use crate::{
    calls::{ApiCall, CallDescription, CallGaps, DescribeContext, Exchange, Side},
    protocols::{Decoder, DecoderSettings, opposite},
    streams::{Connection, PerDirection, StreamChunk, Transport},
};

/// The exchange of an MCP message pair over pipes: newline-delimited JSON-RPC has nothing of
/// its own to report beyond the MCP layer it carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StdioExchange;

impl Exchange for StdioExchange {
    fn describe(&self, call: &ApiCall, _context: DescribeContext<'_>) -> CallDescription {
        CallDescription::of(call)
    }
}

/// A decoder for a stdio connection, whatever its first bytes: the connection protocol
/// table's entry for MCP over stdio (only selected MCP server processes have one).
pub fn decoder(chunk: &StreamChunk, settings: DecoderSettings) -> Option<Box<dyn Decoder>> {
    (chunk.connection.transport == Transport::Stdio)
        .then(|| Box::new(StdioDecoder::new(settings)) as Box<dyn Decoder>)
}

/// Longest message line kept: a longer one is read as cut. Only selected server processes
/// have a stdio connection, so this bounds a few buffers, not one per socket.
pub const MAX_LINE: usize = 256 * 1024;
/// Requests awaiting their response at once; beyond it the oldest is reported unanswered.
const MAX_PENDING: usize = 1024;

/// One direction's line being assembled.
#[derive(Debug, Default)]
struct LineBuffer {
    /// Where the next byte of this direction is expected.
    next_offset: u64,
    bytes: Vec<u8>,
    /// When the line's first byte was seen.
    start_ns: u64,
    /// Bytes are dropped up to the next newline: the line they end started in lost bytes.
    skipping: bool,
}

/// A request waiting for its response.
#[derive(Debug)]
struct Pending {
    /// The direction the request travelled in.
    direction: Direction,
    call: McpCall,
    start_ns: u64,
    request_cut: bool,
}

/// Decodes the MCP messages of one stdio connection.
pub struct StdioDecoder {
    settings: DecoderSettings,
    connection: Option<Arc<Connection>>,
    lines: PerDirection<LineBuffer>,
    pending: VecDeque<Pending>,
    /// A whole line was read: the stream is known to carry JSON-RPC.
    seen_message: bool,
    /// The first whole line was not JSON-RPC: this is not MCP.
    not_jsonrpc: bool,
}

impl StdioDecoder {
    /// A decoder for a stdio connection whose bytes start now.
    pub fn new(settings: DecoderSettings) -> Self {
        Self {
            settings,
            connection: None,
            lines: Default::default(),
            pending: VecDeque::new(),
            seen_message: false,
            not_jsonrpc: false,
        }
    }

    fn on_line(
        &mut self,
        direction: Direction,
        line: &[u8],
        cut: bool,
        (start_ns, end_ns): (u64, u64),
        calls: &mut Vec<ApiCall>,
    ) {
        let message = if cut {
            None
        } else {
            serde_json::from_slice::<Value>(line.trim_ascii()).ok()
        };
        match message {
            Some(message) if message.get("jsonrpc").is_some() => {
                self.seen_message = true;
                self.on_message(direction, &message, (start_ns, end_ns), calls);
            }
            Some(_) | None if !cut => {
                if !self.seen_message && !line.trim_ascii().is_empty() {
                    self.not_jsonrpc = true;
                }
            }
            _ => self.on_cut_message(direction, line, (start_ns, end_ns), calls),
        }
    }

    fn on_message(
        &mut self,
        direction: Direction,
        message: &Value,
        (start_ns, end_ns): (u64, u64),
        calls: &mut Vec<ApiCall>,
    ) {
        if let Some(call) = super::request(message) {
            self.on_request(direction, call, start_ns, false, calls);
            return;
        }
        let Some(id) = message.get("id").and_then(super::id_string) else {
            return;
        };
        let Some(mut pending) = self.take_pending(direction, &id) else {
            return;
        };
        super::read_answer(message, &mut pending.call, self.settings.body_cap);
        let gaps = CallGaps {
            request_incomplete: pending.request_cut,
            ..CallGaps::default()
        };
        self.emit(pending, end_ns, gaps, calls);
    }

    /// A message of which only the leading part was seen: its id and method, and a cut
    /// listing's complete tools.
    fn on_cut_message(
        &mut self,
        direction: Direction,
        line: &[u8],
        (start_ns, end_ns): (u64, u64),
        calls: &mut Vec<ApiCall>,
    ) {
        let id = leading_value(line, b"\"id\"").and_then(|id| super::id_string(&id));
        let method = leading_value(line, b"\"method\"");
        if let Some(method) = method.as_ref().and_then(Value::as_str) {
            let mut call = McpCall::new(method.to_owned());
            call.outcome = match id {
                Some(_) => McpOutcome::Unanswered,
                None => McpOutcome::Notification,
            };
            call.request_id = id;
            call.incomplete = true;
            self.on_request(direction, call, start_ns, true, calls);
            return;
        }
        let Some(mut pending) = id.and_then(|id| self.take_pending(direction, &id)) else {
            return;
        };
        super::read_cut_answer(line, &mut pending.call);
        let gaps = CallGaps {
            request_incomplete: pending.request_cut,
            response_incomplete: true,
            ..CallGaps::default()
        };
        self.emit(pending, end_ns, gaps, calls);
    }

    fn on_request(
        &mut self,
        direction: Direction,
        call: McpCall,
        start_ns: u64,
        request_cut: bool,
        calls: &mut Vec<ApiCall>,
    ) {
        let pending = Pending {
            direction,
            call,
            start_ns,
            request_cut,
        };
        if pending.call.request_id.is_none() {
            let gaps = CallGaps {
                request_incomplete: request_cut,
                ..CallGaps::default()
            };
            self.emit(pending, start_ns, gaps, calls);
            return;
        }
        if self.pending.len() >= MAX_PENDING
            && let Some(oldest) = self.pending.pop_front()
        {
            self.emit_unanswered(oldest, start_ns, calls);
        }
        self.pending.push_back(pending);
    }

    /// The request a response travelling in `direction` answers.
    fn take_pending(&mut self, direction: Direction, id: &str) -> Option<Pending> {
        let request_direction = opposite(direction);
        let index = self.pending.iter().position(|pending| {
            pending.direction == request_direction && pending.call.request_id.as_deref() == Some(id)
        })?;
        self.pending.remove(index)
    }

    fn emit_unanswered(&self, pending: Pending, end_ns: u64, calls: &mut Vec<ApiCall>) {
        let gaps = CallGaps {
            request_incomplete: pending.request_cut,
            response_missing: true,
            ..CallGaps::default()
        };
        self.emit(pending, end_ns, gaps, calls);
    }

    fn emit(&self, pending: Pending, end_ns: u64, gaps: CallGaps, calls: &mut Vec<ApiCall>) {
        let Some(connection) = &self.connection else {
            return;
        };
        // A request the traced process received is one it serves.
        let side = match pending.direction {
            Direction::Ingress => Side::Server,
            Direction::Egress => Side::Client,
        };
        calls.push(ApiCall {
            connection: Arc::clone(connection),
            side,
            start_ns: pending.start_ns,
            end_ns: end_ns.max(pending.start_ns),
            tls: false,
            gaps,
            exchange: Arc::new(StdioExchange),
            layer: Some(Arc::new(pending.call)),
        });
    }
}

impl Decoder for StdioDecoder {
    fn on_chunk(&mut self, chunk: &StreamChunk, calls: &mut Vec<ApiCall>) {
        if self.connection.is_none() {
            self.connection = Some(Arc::clone(&chunk.connection));
        }
        let mut buffer = std::mem::take(self.lines.get_mut(chunk.direction));
        if chunk.gap || chunk.offset > buffer.next_offset {
            self.line_lost(chunk.direction, &mut buffer, chunk.ts_ns, calls);
        }
        buffer.next_offset = chunk.offset.saturating_add(chunk.len);
        if !chunk.gap {
            let mut rest = &chunk.data[..];
            while !rest.is_empty() {
                if buffer.bytes.is_empty() && !buffer.skipping {
                    buffer.start_ns = chunk.ts_ns;
                }
                let mut pieces = rest.splitn(2, |byte| *byte == b'\n');
                let (Some(line_end), Some(after)) = (pieces.next(), pieces.next()) else {
                    if !buffer.skipping {
                        buffer.bytes.extend_from_slice(rest);
                        if buffer.bytes.len() > MAX_LINE {
                            self.line_lost(chunk.direction, &mut buffer, chunk.ts_ns, calls);
                        }
                    }
                    break;
                };
                if buffer.skipping {
                    buffer.skipping = false;
                } else {
                    buffer.bytes.extend_from_slice(line_end);
                    let line = std::mem::take(&mut buffer.bytes);
                    let times = (buffer.start_ns, chunk.ts_ns);
                    self.on_line(chunk.direction, &line, false, times, calls);
                    buffer.bytes = line;
                    buffer.bytes.clear();
                }
                rest = after;
            }
            if (chunk.data.len() as u64) < chunk.len {
                // The read's end was past the capture cap.
                self.line_lost(chunk.direction, &mut buffer, chunk.ts_ns, calls);
            }
        }
        if buffer.bytes.capacity() > MAX_LINE {
            buffer.bytes = Vec::new();
        }
        *self.lines.get_mut(chunk.direction) = buffer;
    }

    fn on_end(&mut self, ts_ns: u64, calls: &mut Vec<ApiCall>) {
        while let Some(pending) = self.pending.pop_front() {
            self.emit_unanswered(pending, ts_ns, calls);
        }
    }

    fn wants_more(&self) -> bool {
        !self.not_jsonrpc
    }
}

impl StdioDecoder {
    /// The line being assembled lost bytes: what was seen of it is read as a cut message, and
    /// the rest, up to the next newline, is skipped.
    fn line_lost(
        &mut self,
        direction: Direction,
        buffer: &mut LineBuffer,
        end_ns: u64,
        calls: &mut Vec<ApiCall>,
    ) {
        if !buffer.bytes.is_empty() {
            let line = std::mem::take(&mut buffer.bytes);
            self.on_line(direction, &line, true, (buffer.start_ns, end_ns), calls);
        }
        buffer.skipping = true;
    }
}

/// The JSON value after the first occurrence of `key` in a cut message: JSON-RPC writers put
/// `id` and `method` before `params` and `result`, so the first occurrence is the message's
/// own. `None` when the value is not whole in the seen bytes.
fn leading_value(message: &[u8], key: &[u8]) -> Option<Value> {
    let at = message
        .windows(key.len())
        .position(|window| window == key)?;
    let after = message.get(at + key.len()..)?.trim_ascii_start();
    let value = after.strip_prefix(b":")?;
    serde_json::Deserializer::from_slice(value)
        .into_iter::<Value>()
        .next()?
        .ok()
}

#[cfg(test)]
mod tests;
