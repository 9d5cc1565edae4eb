//! What the protocols' fuzz harnesses share: a connection fed chunk by chunk to the protocol
//! stage as capture would feed it ([`Feed`]), the ways they cut the fuzzer's bytes into
//! chunks, and HTTP framing for the layers carried inside HTTP (gRPC, GraphQL, MCP, model
//! APIs), so that the fuzzer spends its time on the layer rather than on the framing the
//! `http1` and `http2` targets cover. Each protocol's own harness is in its folder's
//! `fuzzing` module, registered with the protocol in its table; `crate::fuzzing` lists every
//! target.
//!
//! Nothing here asserts anything of the calls: the property under test is that no input makes
//! a decoder panic, allocate without bound or loop.

use std::sync::Arc;

use agent_common::{Direction, Role};
use bytes::Bytes;

use super::{DecoderSettings, ProtocolStage, opposite};
use crate::{
    calls::{ApiCall, DescribeContext, DescribeSettings, Redact},
    streams::{Connection, PerDirection, StreamChunk, Transport},
};

/// The client connection preface.
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HTTP/2 frame types and flags the harnesses write.
pub(crate) const DATA: u8 = 0x0;
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const END_STREAM: u8 = 0x1;
pub(crate) const END_HEADERS: u8 = 0x4;

/// One connection being fed to a protocol stage, chunk by chunk.
pub(crate) struct Feed {
    stage: ProtocolStage,
    connection: Arc<Connection>,
    offsets: PerDirection<u64>,
    ts_ns: u64,
    calls: Vec<ApiCall>,
}

/// Stands in for the sensitive-data scan, so that the harnesses also read the content of the
/// calls that carry some, as its opt-in export does.
#[derive(Debug)]
struct KeepAll;

impl Redact for KeepAll {
    fn redact(&self, text: &str) -> String {
        text.to_owned()
    }
}

impl Feed {
    /// A connection over `transport` of a process with `role`, its start seen or not; offsets
    /// start at `offset`.
    pub(crate) fn new(transport: Transport, role: Role, opened_unseen: bool, offset: u64) -> Self {
        Self {
            stage: ProtocolStage::new(DecoderSettings { body_cap: 1024 }),
            connection: Arc::new(Connection {
                opened_unseen,
                transport,
                ..crate::testing::bare_connection(1, role)
            }),
            offsets: PerDirection {
                egress: offset,
                ingress: offset,
            },
            ts_ns: 0,
            calls: Vec::new(),
        }
    }

    /// A chunk of `direction` that moved `len` bytes, of which `data` was captured.
    pub(crate) fn chunk(&mut self, direction: Direction, data: &[u8], len: u64) {
        self.ts_ns += 1_000;
        let offset = self.offsets.get_mut(direction);
        let chunk = StreamChunk {
            connection: Arc::clone(&self.connection),
            direction,
            offset: *offset,
            len,
            data: Bytes::copy_from_slice(data),
            tls: false,
            gap: false,
            ts_ns: self.ts_ns,
            tid: 1,
            comm: "fuzz".into(),
        };
        *offset = offset.saturating_add(len);
        self.stage.on_chunk(&chunk, &mut self.calls);
        self.hand_on();
    }

    /// A chunk of `direction` whose bytes were all captured.
    pub(crate) fn whole(&mut self, direction: Direction, data: &[u8]) {
        self.chunk(direction, data, data.len() as u64);
    }

    /// Cuts `data` into the chunks [`records`] gives: bit 0 of the control byte picks egress
    /// or ingress, bit 1 says the chunk lost bytes past what it carries.
    pub(crate) fn chunks(&mut self, data: &[u8]) {
        for (control, payload) in records(data) {
            let direction = if control & 1 == 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            self.chunk(direction, payload, payload.len() as u64 + lost(control));
        }
    }

    /// The connection's end, completing what it completes.
    pub(crate) fn end(mut self) {
        self.stage
            .on_end(self.connection.id, self.ts_ns + 1, &mut self.calls);
        self.hand_on();
    }

    /// Describes and drops the calls completed so far, as the pipeline hands them on: the
    /// description reads what each protocol found, its content included.
    fn hand_on(&mut self) {
        let settings = DescribeSettings {
            content: Some(Arc::new(KeepAll)),
            ..DescribeSettings::default()
        };
        for call in self.calls.drain(..) {
            let context = DescribeContext {
                route: call.path(),
                settings: &settings,
            };
            // Kept from the optimiser, which would otherwise drop a result nobody reads.
            std::hint::black_box(call.describe(context));
        }
    }
}

/// Records of a control byte and a payload: each is the control byte, a 2-byte big-endian
/// payload length, then that payload (cut short by the end of `data`).
pub(crate) fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let [control, high, low, rest @ ..] = data else {
            return None;
        };
        let take = usize::from(u16::from_be_bytes([*high, *low])).min(rest.len());
        let (payload, after) = rest.split_at(take);
        data = after;
        Some((*control, payload))
    })
}

/// The bytes a record's chunk lost past its payload: some when bit 1 of its control byte is
/// set.
pub(crate) fn lost(control: u8) -> u64 {
    if control & 2 != 0 { 1_000 } else { 0 }
}

/// The role and the start of a connection, from a byte.
pub(crate) fn role_of(byte: u8) -> Role {
    match byte % 3 {
        0 => Role::Client,
        1 => Role::Server,
        _ => Role::Unknown,
    }
}

/// The direction a process with `role` sends requests in (a client's, for an unknown role).
pub(crate) fn requests_of(role: Role) -> Direction {
    if role == Role::Server {
        Direction::Ingress
    } else {
        Direction::Egress
    }
}

/// One HTTP/1.1 exchange carrying a layer read from bodies: `request_head` (its lines, each
/// ending in CRLF, without `Content-Length` and the blank line) with a body, answered `200`
/// with `response_headers` (lines as `request_head`'s) and a body, then the connection's end.
///
/// After the first byte of `data` come a 2-byte big-endian length, that many bytes of request
/// body, and the rest, the response body. Bits of the first byte: 0, the response is an event
/// stream in chunked coding (else one JSON document); 1, the traced process serves (else it is
/// the client); 2, the request's chunk was captured only up to half its body; 3, each response
/// chunk after the first was captured only up to half; 4 to 7, the response's bytes per chunk
/// (and per HTTP chunk), in steps of 64.
pub(crate) fn http1_exchange(data: &[u8], request_head: &str, response_headers: &str) {
    let [flags, high, low, rest @ ..] = data else {
        return;
    };
    let request_len = usize::from(u16::from_be_bytes([*high, *low])).min(rest.len());
    let (request_body, response_body) = rest.split_at(request_len);
    let role = if flags & 2 != 0 {
        Role::Server
    } else {
        Role::Client
    };
    let mut feed = Feed::new(Transport::Tcp, role, false, 0);
    let requests = requests_of(role);

    let mut request = format!("{request_head}Content-Length: {request_len}\r\n\r\n").into_bytes();
    let captured = if flags & 4 != 0 {
        request.len() + request_len / 2
    } else {
        request.len() + request_len
    };
    request.extend_from_slice(request_body);
    let request_captured = request.get(..captured).unwrap_or_default();
    feed.chunk(requests, request_captured, request.len() as u64);

    let step = 64 * (1 + usize::from(flags >> 4));
    let mut response = b"HTTP/1.1 200 OK\r\n".to_vec();
    response.extend_from_slice(response_headers.as_bytes());
    if flags & 1 != 0 {
        response.extend_from_slice(
            b"Content-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        for piece in response_body.chunks(step) {
            response.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            response.extend_from_slice(piece);
            response.extend_from_slice(b"\r\n");
        }
        response.extend_from_slice(b"0\r\n\r\n");
    } else {
        let head = format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            response_body.len()
        );
        response.extend_from_slice(head.as_bytes());
        response.extend_from_slice(response_body);
    }
    for (index, piece) in response.chunks(step).enumerate() {
        let captured = if index > 0 && flags & 8 != 0 {
            piece.len() / 2
        } else {
            piece.len()
        };
        let piece_captured = piece.get(..captured).unwrap_or_default();
        feed.chunk(opposite(requests), piece_captured, piece.len() as u64);
    }
    feed.end();
}

/// A fuzz target: the name agent/fuzz/Cargo.toml gives it and the harness it runs.
#[derive(Debug, Clone, Copy)]
pub struct FuzzTarget {
    /// The `[[bin]]` name, also its seed corpus's folder (`agent/fuzz/corpus/<name>`).
    pub name: &'static str,
    /// What it runs on each input.
    pub harness: fn(&[u8]),
}
