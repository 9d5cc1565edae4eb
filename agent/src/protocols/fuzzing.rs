//! What the fuzz targets (`agent/fuzz`) run: arbitrary bytes, cut into the chunks of one
//! connection, through the protocol stage as capture would feed it. The targets of the layers
//! inside HTTP (gRPC, GraphQL, MCP, model APIs) frame their bytes in valid HTTP, so that the
//! fuzzer spends its time on the layer rather than on the framing the `http1` and `http2`
//! targets cover. The harnesses of the other stages are in their own `fuzzing` modules; the
//! seed corpora of every target also run through these in the unit tests, so the harnesses
//! are checked by every `cargo test`.
//!
//! Nothing here asserts anything of the calls: the property under test is that no input makes
//! a decoder panic, allocate without bound or loop.

use std::sync::Arc;

use agent_common::{Direction, Role};
use bytes::Bytes;

use super::{DecoderSettings, ProtocolStage, opposite};
use crate::{
    calls::{ApiCall, DescribeContext, DescribeSettings, Redact},
    streams::{Connection, StreamChunk, Transport},
};

/// The client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HTTP/2 frame types and flags the harnesses write.
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// The request head of the gRPC calls, as a grpc-go client sends it.
const GRPC_REQUEST: &[(&str, &str)] = &[
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/helloworld.Greeter/SayHello"),
    (":authority", "localhost:50051"),
    ("content-type", "application/grpc"),
    ("user-agent", "grpc-go/1.64.0"),
    ("te", "trailers"),
    ("grpc-timeout", "9998m"),
];

/// The response head of the gRPC calls.
const GRPC_RESPONSE: &[(&str, &str)] = &[(":status", "200"), ("content-type", "application/grpc")];

/// The session header of the MCP exchanges: the server assigns it, the client sends it back.
const MCP_SESSION: &str = "Mcp-Session-Id: 1868a90c-3ae4-4ffc-9e1d-4e2b7f0c5a31\r\n";

/// The model API endpoints the `genai` target picks from: (host, request target).
const GENAI_ENDPOINTS: [(&str, &str); 8] = [
    ("api.openai.com", "/v1/chat/completions"),
    ("api.openai.com", "/v1/responses"),
    ("api.openai.com", "/v1/completions"),
    ("api.openai.com", "/v1/embeddings"),
    ("api.anthropic.com", "/v1/messages"),
    (
        "generativelanguage.googleapis.com",
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
    ),
    ("localhost:11434", "/api/chat"),
    ("localhost:11434", "/api/generate"),
];

/// One connection being fed to a protocol stage, chunk by chunk.
struct Feed {
    stage: ProtocolStage,
    connection: Arc<Connection>,
    offsets: [u64; 2],
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
    fn new(transport: Transport, role: Role, opened_unseen: bool, offset: u64) -> Self {
        Self {
            stage: ProtocolStage::new(DecoderSettings { body_cap: 1024 }),
            connection: Arc::new(Connection {
                id: 1,
                sock: 0,
                pid: 1,
                fd: 3,
                role,
                opened_unseen,
                tls_client_ja4: None,
                transport,
                local: None,
                peer: None,
                comm: "fuzz".into(),
            }),
            offsets: [offset; 2],
            ts_ns: 0,
            calls: Vec::new(),
        }
    }

    /// A chunk of `direction` that moved `len` bytes, of which `data` was captured.
    fn chunk(&mut self, direction: Direction, data: &[u8], len: u64) {
        let slot = direction as usize & 1;
        self.ts_ns += 1_000;
        let chunk = StreamChunk {
            connection: Arc::clone(&self.connection),
            direction,
            offset: self.offsets[slot],
            len,
            data: Bytes::copy_from_slice(data),
            tls: false,
            gap: false,
            ts_ns: self.ts_ns,
            tid: 1,
            comm: "fuzz".into(),
        };
        self.offsets[slot] = self.offsets[slot].saturating_add(len);
        self.stage.on_chunk(&chunk, &mut self.calls);
        self.hand_on();
    }

    /// A chunk of `direction` whose bytes were all captured.
    fn whole(&mut self, direction: Direction, data: &[u8]) {
        self.chunk(direction, data, data.len() as u64);
    }

    /// Cuts `data` into the chunks [`records`] gives: bit 0 of the control byte picks egress
    /// or ingress, bit 1 says the chunk lost bytes past what it carries.
    fn chunks(&mut self, data: &[u8]) {
        for (control, payload) in records(data) {
            let direction = if control & 1 == 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            self.chunk(direction, payload, payload.len() as u64 + lost(control));
        }
    }

    fn end(mut self) {
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
fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
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
fn lost(control: u8) -> u64 {
    if control & 2 != 0 { 1_000 } else { 0 }
}

/// The role and the start of a connection, from a byte.
fn role_of(byte: u8) -> Role {
    match byte % 3 {
        0 => Role::Client,
        1 => Role::Server,
        _ => Role::Unknown,
    }
}

/// The direction a process with `role` sends requests in (a client's, for an unknown role).
fn requests_of(role: Role) -> Direction {
    if role == Role::Server {
        Direction::Ingress
    } else {
        Direction::Egress
    }
}

/// Appends an HTTP/2 frame to `out`; a payload longer than a frame can be is cut to one.
fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let payload = payload
        .get(..payload.len().min(0xff_ffff))
        .unwrap_or_default();
    let len = u32::try_from(payload.len()).unwrap_or(0).to_be_bytes();
    out.extend_from_slice(&[len[1], len[2], len[3], kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// An HTTP/2 connection: after the first byte (the role; bit 7: joined mid-way, otherwise the
/// client preface opens it), the chunks [`Feed::chunks`] cuts from the rest, to whichever
/// decoder the first of them selects.
pub fn http2_connection(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let role = role_of(first);
    let joined = first & 0x80 != 0;
    let mut feed = Feed::new(Transport::Tcp, role, joined, if joined { 5_000 } else { 0 });
    if !joined {
        feed.whole(requests_of(role), PREFACE);
    }
    feed.chunks(rest);
    feed.end();
}

/// One header block through each direction's HPACK decoder: after the first byte (the role;
/// bit 7: joined mid-way, so decoded against placeholders), the rest is the block of a
/// HEADERS frame on stream 1 from the client, then of one from the server.
pub fn hpack_block(data: &[u8]) {
    let Some((&first, block)) = data.split_first() else {
        return;
    };
    let joined = first & 0x80 != 0;
    let mut feed = Feed::new(
        Transport::Tcp,
        Role::Client,
        joined,
        if joined { 5_000 } else { 0 },
    );
    if !joined {
        feed.whole(Direction::Egress, PREFACE);
    }
    let mut frame_bytes = Vec::new();
    frame(
        &mut frame_bytes,
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        block,
    );
    feed.whole(Direction::Egress, &frame_bytes);
    feed.whole(Direction::Ingress, &frame_bytes);
    feed.end();
}

/// An HTTP/1 connection: after the first byte (the role), the chunks [`Feed::chunks`] cuts
/// from the rest.
pub fn http1_connection(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut feed = Feed::new(Transport::Tcp, role_of(first), false, 0);
    feed.chunks(rest);
    feed.end();
}

/// Four gRPC calls on one HTTP/2 connection (opened by the client preface): after the first
/// byte (the role), each of the records [`records`] cuts from the rest is one chunk holding
/// one DATA frame of one call, preceded by that side's HEADERS when it is the first of its
/// side of the call. The DATA payloads are gRPC's length-prefixed messages, cut anywhere.
/// Control bits: 0, the server sends it (else the client); 1, the chunk lost bytes past what
/// it carries; 2 and 3, which call (streams 1, 3, 5 and 7); 4, it ends its side of the call:
/// the client's DATA frame carries END_STREAM, the server's payload is instead the
/// `grpc-status` of the trailers that end the response.
pub fn grpc_connection(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let role = role_of(first);
    let mut feed = Feed::new(Transport::Tcp, role, false, 0);
    let client_sends = requests_of(role);
    feed.whole(client_sends, PREFACE);
    // The client's and the server's: each side's blocks update its peer's table.
    let mut encoders = [loona_hpack::Encoder::new(), loona_hpack::Encoder::new()];
    let mut headers_sent = [[false; 2]; 4];
    for (control, payload) in records(rest) {
        let side = usize::from(control & 1);
        let call = usize::from(control >> 2 & 3);
        let stream = 1 + 2 * call as u32;
        let ends = control & 0x10 != 0;
        let mut bytes = Vec::new();
        let sent = &mut headers_sent[call][side];
        if !*sent {
            *sent = true;
            let head = if side == 0 {
                GRPC_REQUEST
            } else {
                GRPC_RESPONSE
            };
            let block = encoders[side].encode(
                head.iter()
                    .map(|(name, value)| (name.as_bytes(), value.as_bytes())),
            );
            frame(&mut bytes, HEADERS, END_HEADERS, stream, &block);
        }
        if side == 1 && ends {
            let block = encoders[1].encode([(b"grpc-status".as_slice(), payload)]);
            frame(
                &mut bytes,
                HEADERS,
                END_HEADERS | END_STREAM,
                stream,
                &block,
            );
        } else {
            let flags = if ends { END_STREAM } else { 0 };
            frame(&mut bytes, DATA, flags, stream, payload);
        }
        let direction = if side == 0 {
            client_sends
        } else {
            opposite(client_sends)
        };
        feed.chunk(direction, &bytes, bytes.len() as u64 + lost(control));
    }
    feed.end();
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
fn http1_exchange(data: &[u8], request_head: &str, response_headers: &str) {
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

/// A GraphQL request: the exchange of [`http1_exchange`], a `POST /graphql` whose body is the
/// JSON request (a document and its operation name, or a batch of them).
pub fn graphql_exchange(data: &[u8]) {
    http1_exchange(
        data,
        "POST /graphql HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\n\
         Accept: application/graphql-response+json, application/json\r\n",
        "",
    );
}

/// An MCP message over the streamable HTTP transport: after the first byte (bit 0: the
/// request carries the session and version headers, so any JSON-RPC method is read as MCP),
/// the exchange of [`http1_exchange`], a `POST /mcp` of a JSON-RPC message answered by one
/// JSON document or an event stream.
pub fn mcp_http_exchange(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let session = if first & 1 != 0 {
        format!("{MCP_SESSION}MCP-Protocol-Version: 2025-06-18\r\n")
    } else {
        String::new()
    };
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost:8000\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\n{session}"
    );
    http1_exchange(rest, &head, MCP_SESSION);
}

/// The MCP messages of a stdio connection (a tool server's standard input and output): the
/// chunks [`Feed::chunks`] cuts from the bytes, newline-delimited JSON-RPC cut anywhere.
pub fn mcp_stdio_connection(data: &[u8]) {
    let mut feed = Feed::new(Transport::Stdio, Role::Server, false, 0);
    feed.chunks(data);
    feed.end();
}

/// A model API call: after the first byte (bits 0 to 2: the endpoint, one of
/// [`GENAI_ENDPOINTS`]), the exchange of [`http1_exchange`], a `POST` of the JSON request
/// answered by one JSON document or an event stream of them. The prompts and answers of each
/// model call are read too, as the opt-in content export reads them.
pub fn genai_exchange(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let (host, target) = GENAI_ENDPOINTS[usize::from(first & 7)];
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Authorization: Bearer sk-fuzz\r\n"
    );
    http1_exchange(rest, &head, "");
}

#[cfg(test)]
mod tests {
    use std::{panic, path::Path};

    use super::*;

    /// What a fuzz target runs.
    type Harness = fn(&[u8]);

    /// Every fuzz target, as agent/fuzz/Cargo.toml names it, and the harness it runs.
    const TARGETS: &[(&str, Harness)] = &[
        ("http2", http2_connection),
        ("hpack", hpack_block),
        ("http1", http1_connection),
        ("grpc", grpc_connection),
        ("graphql", graphql_exchange),
        ("mcp_http", mcp_http_exchange),
        ("mcp_stdio", mcp_stdio_connection),
        ("genai", genai_exchange),
        ("streams", crate::streams::fuzzing::capture_events),
        (
            "rules",
            crate::analysis::security::rules::fuzzing::rule_pack,
        ),
        ("config", crate::config::fuzzing::config_file),
    ];

    /// Runs every file of `agent/fuzz/corpus/<target>` through `harness`.
    fn run_corpus(target: &str, harness: Harness) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("no seed corpus at {}: {e}", dir.display()));
        let mut seeds = 0;
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            let seed = std::fs::read(&path).expect("corpus file");
            if panic::catch_unwind(|| harness(&seed)).is_err() {
                panic!("seed {} panicked", path.display());
            }
            seeds += 1;
        }
        assert!(seeds > 0, "empty seed corpus at {}", dir.display());
    }

    #[test]
    fn every_target_of_the_fuzz_crate_has_its_harness_here() {
        let manifest =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml"))
                .expect("agent/fuzz/Cargo.toml");
        let mut declared: Vec<&str> = manifest
            .split("[[bin]]")
            .skip(1)
            .filter_map(|bin| {
                bin.lines()
                    .find_map(|line| line.strip_prefix("name = "))
                    .map(|name| name.trim_matches('"'))
            })
            .collect();
        let mut known: Vec<&str> = TARGETS.iter().map(|(target, _)| *target).collect();
        declared.sort_unstable();
        known.sort_unstable();
        assert_eq!(declared, known);
    }

    #[test]
    fn every_seed_decodes_without_panic() {
        for (target, harness) in TARGETS {
            run_corpus(target, *harness);
        }
    }
}
