#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use agent_common::{Direction, PayloadPolicy, Role};
use bytes::Bytes;

use super::{Http2Decoder, PREFACE, detect, flag, kind, stream::MAX_OPEN_STREAMS};
use crate::{
    calls::{ApiCall, CallGaps, Side},
    protocols::{
        Decoder, DecoderSettings, ProtocolStage,
        http::{HttpExchange, HttpVersion},
    },
    streams::{Connection, StreamChunk},
    testing::{self, http2_frame as frame},
};

fn connection(role: Role) -> Arc<Connection> {
    testing::connection(9, role)
}

fn settings() -> Vec<u8> {
    // SETTINGS_MAX_CONCURRENT_STREAMS = 100, SETTINGS_INITIAL_WINDOW_SIZE = 65535.
    frame(
        kind::SETTINGS,
        0,
        0,
        &[0, 3, 0, 0, 0, 100, 0, 4, 0, 0, 0xff, 0xff],
    )
}

/// One test connection: the client's and the server's HPACK encoders, and chunks with
/// consecutive offsets and increasing times.
struct Wire {
    connection: Arc<Connection>,
    /// The direction the client sends in, from the traced process's view.
    client_sends: Direction,
    client: loona_hpack::Encoder<'static>,
    server: loona_hpack::Encoder<'static>,
    offsets: [u64; 2],
    ts: u64,
    decoder: Option<Http2Decoder>,
    calls: Vec<ApiCall>,
}

impl Wire {
    /// A server process (requests ingress) whose client has sent its preface.
    fn server() -> Self {
        let mut wire = Self::new(Role::Server, Direction::Ingress);
        let mut first = PREFACE.to_vec();
        first.extend(settings());
        wire.client_bytes(first);
        wire.server_bytes(settings());
        wire
    }

    fn new(role: Role, client_sends: Direction) -> Self {
        Self {
            connection: connection(role),
            client_sends,
            client: loona_hpack::Encoder::new(),
            server: loona_hpack::Encoder::new(),
            offsets: [0, 0],
            ts: 0,
            decoder: None,
            calls: Vec::new(),
        }
    }

    fn server_sends(&self) -> Direction {
        match self.client_sends {
            Direction::Egress => Direction::Ingress,
            Direction::Ingress => Direction::Egress,
        }
    }

    fn chunk_at(&mut self, direction: Direction, offset: u64, len: u64, data: Vec<u8>) {
        self.ts += 1_000;
        let chunk = StreamChunk {
            connection: Arc::clone(&self.connection),
            direction,
            offset,
            len,
            data: Bytes::from(data),
            tls: false,
            gap: false,
            ts_ns: self.ts,
            tid: 1,
            comm: "test".into(),
        };
        let slot = direction as usize;
        self.offsets[slot] = self.offsets[slot].max(offset + len);
        if self.decoder.is_none() {
            let detected = detect(&chunk).expect("detected as HTTP/2");
            self.decoder = Some(Http2Decoder::new(detected, DecoderSettings { body_cap: 8 }));
        }
        self.decoder
            .as_mut()
            .unwrap()
            .on_chunk(&chunk, &mut self.calls);
    }

    fn send(&mut self, direction: Direction, data: Vec<u8>) {
        let offset = self.offsets[direction as usize];
        let len = data.len() as u64;
        self.chunk_at(direction, offset, len, data);
    }

    fn client_bytes(&mut self, data: Vec<u8>) {
        self.send(self.client_sends, data);
    }

    fn server_bytes(&mut self, data: Vec<u8>) {
        self.send(self.server_sends(), data);
    }

    fn request_block(&mut self, method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", method.as_bytes()),
            (b":scheme", b"http"),
            (b":authority", b"api.local:8080"),
            (b":path", path.as_bytes()),
        ];
        fields.extend(extra.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        self.client.encode(fields)
    }

    fn response_block(&mut self, status: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut fields: Vec<(&[u8], &[u8])> = vec![(b":status", status.as_bytes())];
        fields.extend(extra.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        self.server.encode(fields)
    }

    fn headers(&mut self, from_client: bool, stream: u32, end_stream: bool, block: Vec<u8>) {
        let flags = flag::END_HEADERS | if end_stream { flag::END_STREAM } else { 0 };
        let bytes = frame(kind::HEADERS, flags, stream, &block);
        if from_client {
            self.client_bytes(bytes);
        } else {
            self.server_bytes(bytes);
        }
    }

    fn get(&mut self, stream: u32, path: &str) {
        let block = self.request_block("GET", path, &[("user-agent", "t/1")]);
        self.headers(true, stream, true, block);
    }

    fn respond(&mut self, stream: u32, status: &str, body: &[u8]) {
        let block = self.response_block(status, &[("content-type", "text/plain")]);
        self.headers(false, stream, body.is_empty(), block);
        if !body.is_empty() {
            self.server_bytes(frame(kind::DATA, flag::END_STREAM, stream, body));
        }
    }

    fn end(&mut self) -> Vec<ApiCall> {
        let mut decoder = self.decoder.take().unwrap();
        decoder.on_end(self.ts + 1, &mut self.calls);
        assert!(!decoder.wants_more());
        std::mem::take(&mut self.calls)
    }

    fn take(&mut self) -> Vec<ApiCall> {
        std::mem::take(&mut self.calls)
    }
}

fn exchange(call: &ApiCall) -> &HttpExchange {
    call.exchange::<HttpExchange>().expect("an HTTP call")
}

fn status(call: &ApiCall) -> Option<u16> {
    exchange(call).response.as_ref().map(|r| r.status)
}

#[test]
fn detects_the_client_and_the_server_preface() {
    let mut chunk = StreamChunk {
        connection: connection(Role::Unknown),
        direction: Direction::Egress,
        offset: 0,
        len: 24,
        data: Bytes::from_static(PREFACE),
        tls: false,
        gap: false,
        ts_ns: 1,
        tid: 1,
        comm: "t".into(),
    };
    let detected = detect(&chunk).unwrap();
    assert_eq!(detected.orientation.requests(), Direction::Egress);
    assert_eq!(detected.orientation.side(), Side::Client);

    chunk.direction = Direction::Ingress;
    chunk.data = Bytes::from(settings());
    let detected = detect(&chunk).unwrap();
    assert_eq!(detected.orientation.requests(), Direction::Egress);
    assert_eq!(detected.orientation.side(), Side::Client);

    for other in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"PRI * HTTP/1.1\r\n",
    ] {
        chunk.data = Bytes::copy_from_slice(other);
        assert!(detect(&chunk).is_none(), "{other:?}");
    }
    // Not at offset 0 and with no role: the frames do not say which way requests go.
    chunk.offset = 100;
    chunk.data = Bytes::from(settings());
    assert!(detect(&chunk).is_none());
}

#[test]
fn get_and_post_with_body() {
    let mut wire = Wire::server();
    wire.get(1, "/users/1?x=2");
    wire.respond(1, "200", b"hello");
    let calls = wire.take();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.side, Side::Server);
    assert!(call.gaps.is_complete(), "{:?}", call.gaps);
    let http = exchange(call);
    assert_eq!(http.request.method, "GET");
    assert_eq!(http.request.target, "/users/1?x=2");
    assert_eq!(http.request.version, HttpVersion::Http2);
    assert_eq!(http.request.host(), Some(("api.local", Some(8080))));
    assert_eq!(http.request.header_str("user-agent"), Some("t/1"));
    let response = http.response.as_ref().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.version, HttpVersion::Http2);
    assert_eq!(response.body.size, 5);
    assert_eq!(&response.body.captured[..], b"hello");
    assert!(call.start_ns < call.end_ns);

    let block = wire.request_block("POST", "/orders", &[("content-type", "application/json")]);
    wire.headers(true, 3, false, block);
    wire.client_bytes(frame(kind::DATA, 0, 3, b"{\"a\":"));
    wire.client_bytes(frame(kind::DATA, flag::END_STREAM, 3, b"12345}"));
    assert!(wire.take().is_empty());
    wire.respond(3, "201", b"");
    let calls = wire.end();
    assert_eq!(calls.len(), 1);
    let http = exchange(&calls[0]);
    assert_eq!(http.request.method, "POST");
    assert_eq!(http.request.body.size, 11);
    // Only `body_cap` bytes are kept.
    assert_eq!(&http.request.body.captured[..], b"{\"a\":123");
    assert_eq!(status(&calls[0]), Some(201));
    assert!(calls[0].gaps.is_complete());
}

#[test]
fn interleaved_streams_split_everywhere() {
    // The same exchanges fed whole and one byte at a time give the same calls.
    let mut whole = Wire::server();
    let mut client = Vec::new();
    let mut server = Vec::new();
    let b1 = whole.request_block("GET", "/a", &[]);
    let b3 = whole.request_block("GET", "/b", &[]);
    let b5 = whole.request_block("PUT", "/c", &[]);
    client.extend(frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &b1,
    ));
    client.extend(frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        3,
        &b3,
    ));
    client.extend(frame(kind::HEADERS, flag::END_HEADERS, 5, &b5));
    client.extend(frame(kind::DATA, 0, 5, b"xy"));
    let r3 = whole.response_block("404", &[]);
    let r1 = whole.response_block("200", &[]);
    let r5 = whole.response_block("204", &[]);
    server.extend(frame(kind::HEADERS, flag::END_HEADERS, 3, &r3));
    server.extend(frame(kind::HEADERS, flag::END_HEADERS, 1, &r1));
    server.extend(frame(kind::DATA, 0, 1, b"one"));
    server.extend(frame(kind::DATA, flag::END_STREAM, 3, b"three"));
    server.extend(frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]));
    server.extend(frame(kind::DATA, flag::END_STREAM, 1, b"1"));
    client.extend(frame(kind::DATA, flag::END_STREAM, 5, b"z"));
    server.extend(frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        5,
        &r5,
    ));

    let summary = |calls: &[ApiCall]| {
        let mut rows: Vec<_> = calls
            .iter()
            .map(|c| {
                let h = exchange(c);
                (
                    h.request.target.clone(),
                    status(c),
                    h.request.body.size,
                    h.response.as_ref().map(|r| r.body.size),
                    c.gaps,
                )
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    };
    let mut bytewise = Wire::server();
    whole.client_bytes(client.clone());
    whole.server_bytes(server.clone());
    for byte in client {
        bytewise.client_bytes(vec![byte]);
    }
    for byte in server {
        bytewise.server_bytes(vec![byte]);
    }
    let expected = vec![
        ("/a".to_owned(), Some(200), 0, Some(4), CallGaps::default()),
        ("/b".to_owned(), Some(404), 0, Some(5), CallGaps::default()),
        ("/c".to_owned(), Some(204), 3, Some(0), CallGaps::default()),
    ];
    assert_eq!(summary(&whole.end()), expected);
    assert_eq!(summary(&bytewise.end()), expected);
}

#[test]
fn continuation_padding_and_priority() {
    let mut wire = Wire::server();
    let block = wire.request_block("GET", "/long", &[("x-a", "1"), ("x-b", "2")]);
    let (first, rest) = block.split_at(5);
    // HEADERS padded (3 bytes) with a priority, then a CONTINUATION.
    let mut payload = vec![3];
    payload.extend([0, 0, 0, 0, 16]);
    payload.extend(first);
    payload.extend([0, 0, 0]);
    wire.client_bytes(frame(
        kind::HEADERS,
        flag::END_STREAM | flag::PADDED | flag::PRIORITY,
        1,
        &payload,
    ));
    wire.client_bytes(frame(kind::CONTINUATION, flag::END_HEADERS, 1, rest));
    let response = wire.response_block("200", &[]);
    wire.headers(false, 1, false, response);
    // Padded DATA: 2 bytes of padding are not body.
    let mut data = vec![2];
    data.extend(b"abc");
    data.extend([0, 0]);
    wire.server_bytes(frame(kind::DATA, flag::PADDED | flag::END_STREAM, 1, &data));
    let calls = wire.end();
    assert_eq!(calls.len(), 1);
    let http = exchange(&calls[0]);
    assert_eq!(http.request.target, "/long");
    assert_eq!(http.request.header_str("x-b"), Some("2"));
    assert_eq!(http.response.as_ref().unwrap().body.size, 3);
    assert!(calls[0].gaps.is_complete());
}

#[test]
fn trailers_and_interim_responses() {
    let mut wire = Wire::server();
    let block = wire.request_block(
        "POST",
        "/pkg.Svc/Do",
        &[("content-type", "application/grpc")],
    );
    wire.headers(true, 1, false, block);
    wire.client_bytes(frame(kind::DATA, 0, 1, &[0, 0, 0, 0, 1, 7]));
    let trailers = wire.client.encode(vec![(&b"x-checksum"[..], &b"abc"[..])]);
    wire.headers(true, 1, true, trailers);
    let interim = wire.response_block("100", &[]);
    wire.headers(false, 1, false, interim);
    let head = wire.response_block("200", &[("content-type", "application/grpc")]);
    wire.headers(false, 1, false, head);
    wire.server_bytes(frame(kind::DATA, 0, 1, &[0, 0, 0, 0, 0]));
    let trailers = wire.server.encode(vec![(&b"grpc-status"[..], &b"0"[..])]);
    wire.headers(false, 1, true, trailers);
    let calls = wire.take();
    assert_eq!(calls.len(), 1);
    let http = exchange(&calls[0]);
    assert_eq!(http.request.trailers.len(), 1);
    assert_eq!(http.request.trailers[0].name, "x-checksum");
    let response = http.response.as_ref().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.trailers[0].name, "grpc-status");
    assert_eq!(&response.trailers[0].value[..], b"0");
    assert!(calls[0].gaps.is_complete());
}

#[test]
fn rst_stream_and_goaway_end_streams() {
    let mut wire = Wire::server();
    wire.get(1, "/reset");
    wire.client_bytes(frame(kind::RST_STREAM, 0, 1, &[0, 0, 0, 8]));
    let calls = wire.take();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].gaps.response_missing);
    assert_eq!(exchange(&calls[0]).request.target, "/reset");

    wire.get(3, "/kept");
    wire.get(5, "/gone");
    wire.get(7, "/gone-too");
    let mut goaway = 3u32.to_be_bytes().to_vec();
    goaway.extend([0, 0, 0, 0]);
    goaway.extend(b"debug data that is skipped");
    wire.server_bytes(frame(kind::GOAWAY, 0, 0, &goaway));
    let calls = wire.take();
    let targets: Vec<_> = calls
        .iter()
        .map(|c| exchange(c).request.target.clone())
        .collect();
    assert_eq!(targets, ["/gone", "/gone-too"]);
    assert!(calls.iter().all(|c| c.gaps.response_missing));
    wire.respond(3, "200", b"ok");
    let calls = wire.end();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].gaps.is_complete());
}

#[test]
fn push_promise_updates_the_table_and_makes_no_call() {
    let mut wire = Wire::server();
    wire.get(1, "/page");
    let promised = wire.server.encode(vec![
        (&b":method"[..], &b"GET"[..]),
        (b":path", b"/style.css"),
        (b"x-pushed", b"yes"),
    ]);
    let mut payload = 2u32.to_be_bytes().to_vec();
    payload.extend(promised);
    wire.server_bytes(frame(kind::PUSH_PROMISE, flag::END_HEADERS, 1, &payload));
    // The response refers to the entry the promise added to the table.
    let response = wire.response_block("200", &[("x-pushed", "yes")]);
    wire.headers(false, 1, true, response);
    let pushed = wire.response_block("200", &[]);
    wire.headers(false, 2, true, pushed);
    let calls = wire.end();
    assert_eq!(calls.len(), 1);
    let response = exchange(&calls[0]).response.as_ref().unwrap();
    assert_eq!(&response.headers[0].value[..], b"yes");
    assert!(calls[0].gaps.is_complete());
}

#[test]
fn a_gap_in_data_is_counted_and_elsewhere_ends_the_connection() {
    let mut wire = Wire::server();
    let head = wire.response_block("200", &[]);
    wire.get(1, "/big");
    wire.headers(false, 1, false, head);
    // A 100-byte DATA frame of which only the header and 10 bytes are captured.
    let mut data = frame(kind::DATA, flag::END_STREAM, 1, &[b'x'; 100]);
    data.truncate(19);
    let direction = wire.server_sends();
    let offset = wire.offsets[direction as usize];
    wire.chunk_at(direction, offset, 109, data);
    let calls = wire.take();
    assert_eq!(calls.len(), 1);
    let response = exchange(&calls[0]).response.as_ref().unwrap();
    assert_eq!(response.body.size, 100);
    assert!(response.body.incomplete);
    assert!(calls[0].gaps.response_incomplete);

    // A hole between frames: every open stream goes out, and nothing more is decoded.
    wire.get(3, "/lost");
    let offset = wire.offsets[direction as usize] + 50;
    let more = wire.response_block("200", &[]);
    wire.chunk_at(direction, offset, 20, frame(kind::HEADERS, 5, 3, &more));
    let calls = wire.take();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].gaps.response_missing || calls[0].gaps.response_incomplete);
    assert!(!wire.decoder.as_ref().unwrap().wants_more());
}

#[test]
fn hpack_errors_make_the_direction_unknown() {
    let mut wire = Wire::server();
    // Index 70 is past the static table, and the dynamic table is empty.
    wire.headers(true, 1, true, vec![0x82, 0x80 | 70]);
    // The table cannot be trusted any more: even a valid block makes no call.
    wire.get(3, "/after");
    let response = wire.response_block("200", &[]);
    wire.headers(false, 3, true, response);
    assert!(wire.end().is_empty());
}

#[test]
fn too_many_open_streams_are_dropped() {
    let mut wire = Wire::server();
    for i in 0..MAX_OPEN_STREAMS as u32 + 10 {
        wire.get(2 * i + 1, "/s");
    }
    let decoder = wire.decoder.as_ref().unwrap();
    assert_eq!(decoder.open_streams(), MAX_OPEN_STREAMS);
    assert_eq!(decoder.streams.dropped(), 10);
    assert_eq!(wire.end().len(), MAX_OPEN_STREAMS);
}

#[test]
fn oversized_header_blocks_are_dropped() {
    let mut wire = Wire::server();
    let big = "v".repeat(70 * 1024);
    let block = wire.request_block("GET", "/big", &[("x-big", &big)]);
    let chunks: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    for (i, part) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let (frame_kind, flags) = match (i, last) {
            (0, _) => (kind::HEADERS, flag::END_STREAM),
            _ => (kind::CONTINUATION, 0),
        };
        wire.client_bytes(frame(
            frame_kind,
            flags | if last { flag::END_HEADERS } else { 0 },
            1,
            part,
        ));
    }
    let response = wire.response_block("200", &[]);
    wire.headers(false, 1, true, response);
    assert!(wire.end().is_empty());
}

#[test]
fn joining_mid_way() {
    let mut wire = Wire::new(Role::Server, Direction::Ingress);
    // The connection's first bytes were never seen: a fresh encoder still refers only to
    // entries the decoder sees being added.
    let block = wire.request_block("GET", "/joined", &[]);
    let request = frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        41,
        &block,
    );
    let len = request.len() as u64;
    wire.chunk_at(Direction::Ingress, 5_000, len, request);
    let response = wire.response_block("200", &[]);
    let response = frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        41,
        &response,
    );
    let len = response.len() as u64;
    wire.chunk_at(Direction::Egress, 7_000, len, response);
    let calls = wire.end();
    assert_eq!(calls.len(), 1);
    assert_eq!(exchange(&calls[0]).request.target, "/joined");
    assert_eq!(status(&calls[0]), Some(200));
    assert!(calls[0].gaps.after_resync);

    // Fields referring to entries added before the join are unknown, never guessed; the rest
    // of the block is decoded.
    let mut wire = Wire::new(Role::Server, Direction::Ingress);
    // Encoded and never sent: the entry it adds is one the decoder never sees.
    wire.request_block("GET", "/old", &[("x-old", "1")]);
    let block = wire.request_block("GET", "/old", &[("x-old", "1")]);
    let request = frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        3,
        &block,
    );
    let len = request.len() as u64;
    wire.chunk_at(Direction::Ingress, 5_000, len, request);
    let calls = wire.end();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let request = &exchange(&calls[0]).request;
    // `:method GET` is in the static table, `:path` a literal; `x-old` was added before the
    // join.
    assert_eq!(request.method, "GET");
    assert_eq!(request.target, "/old");
    assert!(request.headers.iter().all(|h| h.name != "x-old"));
    assert!(calls[0].gaps.headers_unknown && calls[0].gaps.after_resync);
    assert!(!calls[0].gaps.request_incomplete);
}

#[test]
fn garbage_never_panics() {
    // A deterministic generator: the decoder must survive any bytes after the preface.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..300 {
        let mut wire = Wire::server();
        let mut bytes = Vec::new();
        for _ in 0..(next() % 400) {
            let value = next();
            // Mostly small frame headers, so parsing goes deep.
            bytes.push(if value % 3 == 0 {
                (value >> 8) as u8 % 10
            } else {
                (value >> 16) as u8
            });
        }
        if round % 2 == 0 {
            let block = wire.request_block("GET", "/x", &[]);
            let mut start = frame(kind::HEADERS, flag::END_HEADERS, 1, &block);
            start.extend(bytes);
            bytes = start;
        }
        let split = (next() as usize) % (bytes.len() + 1);
        let (a, b) = bytes.split_at(split);
        wire.client_bytes(a.to_vec());
        wire.server_bytes(b.to_vec());
        wire.client_bytes(b.to_vec());
        wire.end();
    }
}

/// HTTP/1.1 `Upgrade: h2c` answered by `101`: the protocol stage hands the connection to the
/// HTTP/2 decoder, which answers the upgrading request on stream 1; the server's first frames
/// arrive in the same chunk as the `101`.
#[test]
fn h2c_upgrade_continues_as_http2_with_the_request_on_stream_1() {
    let connection = connection(Role::Client);
    let mut stage = ProtocolStage::new(DecoderSettings { body_cap: 8 });
    let mut calls = Vec::new();
    let mut offsets = [0u64; 2];
    let mut feed = |direction: Direction, data: Vec<u8>, calls: &mut Vec<ApiCall>| {
        let offset = offsets[direction as usize];
        offsets[direction as usize] += data.len() as u64;
        let len = data.len() as u64;
        let chunk = testing::chunk(&connection, direction, offset, &data, len, offset + 1);
        stage.on_chunk(&chunk, calls);
    };
    let mut client = loona_hpack::Encoder::new();
    let mut server = loona_hpack::Encoder::new();

    let upgrade = b"GET /up HTTP/1.1\r\nHost: api.local\r\nConnection: Upgrade, HTTP2-Settings\r\n\
        Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
    feed(Direction::Egress, upgrade.to_vec(), &mut calls);
    let mut switched =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec();
    switched.extend(settings());
    let block = server.encode(vec![(&b":status"[..], &b"200"[..])]);
    switched.extend(frame(kind::HEADERS, flag::END_HEADERS, 1, &block));
    switched.extend(frame(kind::DATA, flag::END_STREAM, 1, b"ok"));
    feed(Direction::Ingress, switched, &mut calls);
    assert_eq!(calls.len(), 1, "stream 1 answered: {calls:?}");

    let mut preface = PREFACE.to_vec();
    preface.extend(settings());
    let block = client.encode(vec![
        (&b":method"[..], &b"GET"[..]),
        (b":scheme", b"http"),
        (b":authority", b"api.local"),
        (b":path", b"/second"),
    ]);
    preface.extend(frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        3,
        &block,
    ));
    feed(Direction::Egress, preface, &mut calls);
    let block = server.encode(vec![(&b":status"[..], &b"404"[..])]);
    let reply = frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        3,
        &block,
    );
    feed(Direction::Ingress, reply, &mut calls);
    stage.on_end(connection.id, 100_000, &mut calls);

    let seen: Vec<(&str, &str, Option<u16>, bool)> = calls
        .iter()
        .map(|call| {
            let exchange = exchange(call);
            (
                exchange.request.method.as_str(),
                exchange.request.target.as_str(),
                status(call),
                exchange.upgraded,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("GET", "/up", Some(200), false),
            ("GET", "/second", Some(404), false)
        ]
    );
    let first = exchange(&calls[0]);
    let response = first.response.as_ref().unwrap();
    assert_eq!(response.version, HttpVersion::Http2);
    assert_eq!(response.body.size, 2);
    assert_eq!(calls[0].gaps, CallGaps::default());
    let policies: Vec<PayloadPolicy> = stage
        .take_payload_policies()
        .map(|(_, policy)| policy)
        .collect();
    assert_eq!(policies, [PayloadPolicy::Framed]);
}

/// After a join, a request whose `:method` refers to an entry from before it still makes a
/// call: the method is left empty (unknown), the rest decoded.
#[test]
fn a_joined_request_with_an_unknown_method_still_makes_a_call() {
    let mut wire = Wire::new(Role::Server, Direction::Ingress);
    // Indexed field 62 (the newest dynamic entry, added before the join), then `:path` as a
    // literal with the static name 4.
    let block = [0xbe, 0x04, 0x04, b'/', b'r', b'a', b'w'];
    let request = frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        7,
        &block,
    );
    let len = request.len() as u64;
    wire.chunk_at(Direction::Ingress, 900, len, request);
    let calls = wire.end();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let request = &exchange(&calls[0]).request;
    assert_eq!(
        (request.method.as_str(), request.target.as_str()),
        ("", "/raw")
    );
    assert!(calls[0].gaps.headers_unknown);
}

/// Joining a connection whose role is unknown: the first header block tells which way requests
/// go (`:method` out of this process: a client), and a frame sequence without one is not
/// enough.
#[test]
fn joining_without_a_role_reads_the_direction_from_a_header_block() {
    let connection = connection(Role::Unknown);
    let mut client = loona_hpack::Encoder::new();
    let block = client.encode(vec![(&b":method"[..], &b"POST"[..]), (b":path", b"/svc/M")]);
    let mut data = frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]);
    data.extend(frame(kind::HEADERS, flag::END_HEADERS, 5, &block));
    let len = data.len() as u64;
    let chunk = testing::chunk(&connection, Direction::Egress, 700, &data, len, 1);
    let detected = detect(&chunk).expect("detected as HTTP/2");
    assert_eq!(detected.orientation.requests(), Direction::Egress);
    assert_eq!(detected.orientation.side(), Side::Client);

    let mut server = loona_hpack::Encoder::new();
    let block = server.encode(vec![(&b":status"[..], &b"200"[..])]);
    let data = frame(kind::HEADERS, flag::END_HEADERS, 5, &block);
    let len = data.len() as u64;
    let chunk = testing::chunk(&connection, Direction::Egress, 700, &data, len, 1);
    assert_eq!(
        detect(&chunk).expect("detected").orientation.requests(),
        Direction::Ingress
    );

    let data = frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]);
    let chunk = testing::chunk(&connection, Direction::Egress, 700, &data, 13, 1);
    assert!(detect(&chunk).is_none());
}
