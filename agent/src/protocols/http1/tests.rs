#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use agent_common::{Direction, Role};
use bytes::Bytes;

use super::{Http1Decoder, detect, message::MAX_HEAD, pairing::MAX_WAITING};
use crate::{
    calls::{ApiCall, CallGaps, Side},
    protocols::{
        Decoder, DecoderSettings,
        http::{HttpExchange, HttpVersion, header},
    },
    streams::{Connection, StreamChunk},
    testing::{self, chunk},
};

const CAP: usize = 1024;

fn connection(role: Role) -> Arc<Connection> {
    testing::connection(7, role)
}

/// One connection seen by the decoder, fed chunk by chunk like the protocol stage does.
struct Wire {
    connection: Arc<Connection>,
    requests: Direction,
    offsets: [u64; 2],
    ts: u64,
    decoder: Http1Decoder,
    calls: Vec<ApiCall>,
}

impl Wire {
    /// A connection of a process with `role`, whose requests travel `requests`.
    fn new(role: Role, requests: Direction) -> Self {
        Self::with_cap(role, requests, CAP)
    }

    /// The same, keeping `body_cap` bytes of each body.
    fn with_cap(role: Role, requests: Direction, body_cap: usize) -> Self {
        let connection = connection(role);
        // Detection runs on a request line in the request direction, so that tests may start
        // with anything, as a capture joining mid-stream does.
        let detected = detect(&chunk(&connection, requests, 0, &get("/"), 0, 0)).unwrap();
        assert_eq!(detected.requests(), requests);
        Self {
            connection,
            requests,
            offsets: [0, 0],
            ts: 0,
            decoder: Http1Decoder::new(detected, DecoderSettings { body_cap }),
            calls: Vec::new(),
        }
    }

    /// A server: requests come in.
    fn server() -> Self {
        Self::new(Role::Server, Direction::Ingress)
    }

    fn responses(&self) -> Direction {
        match self.requests {
            Direction::Egress => Direction::Ingress,
            Direction::Ingress => Direction::Egress,
        }
    }

    fn feed(&mut self, chunk: StreamChunk) {
        self.decoder.on_chunk(&chunk, &mut self.calls);
    }

    /// `data` moved in `direction` and was captured, `len` bytes moved in all.
    fn send_len(&mut self, direction: Direction, data: &[u8], len: u64) {
        self.ts += 10;
        let slot = direction as usize;
        let chunk = chunk(
            &self.connection,
            direction,
            self.offsets[slot],
            data,
            len,
            self.ts,
        );
        self.offsets[slot] += len;
        self.feed(chunk);
    }

    fn request(&mut self, data: &[u8]) {
        self.send_len(self.requests, data, data.len() as u64);
    }

    fn response(&mut self, data: &[u8]) {
        self.send_len(self.responses(), data, data.len() as u64);
    }

    /// `count` bytes moved in `direction` without any chunk for them.
    fn lose(&mut self, direction: Direction, count: u64) {
        self.offsets[direction as usize] += count;
    }

    /// A `sendfile` of `len` bytes.
    fn gap_chunk(&mut self, direction: Direction, len: u64) {
        self.ts += 10;
        let slot = direction as usize;
        let mut chunk = chunk(
            &self.connection,
            direction,
            self.offsets[slot],
            &[],
            len,
            self.ts,
        );
        chunk.gap = true;
        self.offsets[slot] += len;
        self.feed(chunk);
    }

    fn end(&mut self) {
        self.decoder.on_end(self.ts + 1, &mut self.calls);
    }

    fn wants_more(&self) -> bool {
        self.decoder.wants_more()
    }

    fn take(&mut self) -> Vec<ApiCall> {
        std::mem::take(&mut self.calls)
    }
}

fn http(call: &ApiCall) -> &HttpExchange {
    match call.exchange::<HttpExchange>() {
        Some(exchange) => exchange,
        None => panic!("not HTTP/1: {:?}", call.exchange),
    }
}

fn target(call: &ApiCall) -> &str {
    &http(call).request.target
}

fn status(call: &ApiCall) -> Option<u16> {
    http(call).response.as_ref().map(|response| response.status)
}

fn response_body(call: &ApiCall) -> &[u8] {
    &http(call).response.as_ref().unwrap().body.captured
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: api.local\r\n\r\n").into_bytes()
}

/// A response whose body names the request it answers, so pairs can be checked.
fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn complete() -> CallGaps {
    CallGaps::default()
}

#[test]
fn get_keep_alive_three() {
    let mut wire = Wire::server();
    for path in ["/a", "/b?x=1", "/c"] {
        wire.request(&get(path));
        wire.response(&ok(path));
    }
    let calls = wire.take();
    assert_eq!(calls.len(), 3);
    for (call, path) in calls.iter().zip(["/a", "/b?x=1", "/c"]) {
        assert_eq!(target(call), path);
        assert_eq!(response_body(call), path.as_bytes());
        assert_eq!(call.gaps, complete());
        assert_eq!(call.side, Side::Server);
        assert_eq!(call.connection.id, 7);
        let exchange = http(call);
        assert_eq!(exchange.request.method, "GET");
        assert_eq!(exchange.request.version, HttpVersion::Http11);
        assert_eq!(exchange.request.host(), Some(("api.local", None)));
        assert!(!exchange.upgraded);
    }
    // Times: the request chunk, then the response chunk.
    assert_eq!((calls[0].start_ns, calls[0].end_ns), (10, 20));
    assert_eq!((calls[2].start_ns, calls[2].end_ns), (50, 60));
    wire.end();
    assert!(wire.take().is_empty());
}

#[test]
fn pipelined_requests_pair_in_order() {
    let mut wire = Wire::new(Role::Client, Direction::Egress);
    let requests: Vec<u8> = ["/1", "/2", "/3"]
        .iter()
        .flat_map(|path| get(path))
        .collect();
    wire.request(&requests);
    let responses: Vec<u8> = ["/1", "/2", "/3"]
        .iter()
        .flat_map(|path| ok(path))
        .collect();
    wire.response(&responses);
    let calls = wire.take();
    assert_eq!(calls.len(), 3);
    for (call, path) in calls.iter().zip(["/1", "/2", "/3"]) {
        assert_eq!(target(call), path);
        assert_eq!(response_body(call), path.as_bytes());
        assert_eq!(call.gaps, complete());
        assert_eq!(call.side, Side::Client);
    }
}

#[test]
fn chunked_response_with_extensions_and_trailers() {
    let mut wire = Wire::server();
    wire.request(&get("/stream"));
    wire.response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;name=value\r\nhello\r\n7 ; ext=\"q\"\r\n, world\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n",
    );
    wire.request(&get("/next"));
    wire.response(&ok("/next"));
    let calls = wire.take();
    assert_eq!(calls.len(), 2);
    let response = http(&calls[0]).response.as_ref().unwrap();
    assert_eq!(response.body.size, 12);
    assert_eq!(&response.body.captured[..], b"hello, world");
    assert!(!response.body.incomplete);
    assert_eq!(response.trailers.len(), 2);
    assert_eq!(
        header(&response.trailers, "x-checksum").unwrap().value,
        "abc"
    );
    assert_eq!(calls[0].gaps, complete());
    assert_eq!(response_body(&calls[1]), b"/next");
}

#[test]
fn chunked_request_body_split_everywhere() {
    let mut wire = Wire::server();
    let request = b"POST /upload HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
        3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
    for byte in request.chunks(1) {
        wire.request(byte);
    }
    wire.response(&ok("done"));
    let calls = wire.take();
    assert_eq!(calls.len(), 1);
    let body = &http(&calls[0]).request.body;
    assert_eq!(body.size, 19);
    assert_eq!(&body.captured[..], b"abc0123456789abcdef");
    assert!(http(&calls[0]).request.trailers.is_empty());
    assert_eq!(calls[0].gaps, complete());
    // The first request byte went in the first chunk.
    assert_eq!(calls[0].start_ns, 10);
}

#[test]
fn head_response_has_no_body() {
    let mut wire = Wire::server();
    wire.request(b"HEAD /file HTTP/1.1\r\nHost: a\r\n\r\n");
    wire.response(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n");
    wire.request(&get("/after"));
    wire.response(&ok("/after"));
    let calls = wire.take();
    assert_eq!(calls.len(), 2);
    assert_eq!(http(&calls[0]).request.method, "HEAD");
    let response = http(&calls[0]).response.as_ref().unwrap();
    assert_eq!(response.body.size, 0);
    assert_eq!(calls[0].gaps, complete());
    assert_eq!(response_body(&calls[1]), b"/after");
}

#[test]
fn no_content_and_not_modified_have_no_body() {
    let mut wire = Wire::server();
    wire.request(&get("/204"));
    wire.response(b"HTTP/1.1 204 No Content\r\n\r\n");
    wire.request(&get("/304"));
    wire.response(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"x\"\r\n\r\n");
    wire.request(&get("/200"));
    wire.response(&ok("/200"));
    let calls = wire.take();
    assert_eq!(calls.len(), 3);
    assert_eq!(status(&calls[0]), Some(204));
    assert_eq!(status(&calls[1]), Some(304));
    assert_eq!(response_body(&calls[2]), b"/200");
    assert!(calls.iter().all(|call| call.gaps == complete()));
}

#[test]
fn continue_then_final_response() {
    let mut wire = Wire::new(Role::Client, Direction::Egress);
    wire.request(b"POST /upload HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n");
    wire.response(b"HTTP/1.1 100 Continue\r\n\r\n");
    assert!(wire.take().is_empty());
    wire.request(b"hello world");
    wire.response(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
    let calls = wire.take();
    assert_eq!(calls.len(), 1);
    assert_eq!(status(&calls[0]), Some(201));
    assert_eq!(&http(&calls[0]).request.body.captured[..], b"hello world");
    assert_eq!(calls[0].gaps, complete());
    assert_eq!((calls[0].start_ns, calls[0].end_ns), (10, 40));
}

#[test]
fn early_response_waits_for_the_request_end() {
    let mut wire = Wire::server();
    wire.request(b"POST /big HTTP/1.1\r\nContent-Length: 6\r\n\r\nabc");
    wire.response(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n");
    assert!(wire.take().is_empty());
    wire.request(b"def");
    let calls = wire.take();
    assert_eq!(calls.len(), 1);
    assert_eq!(status(&calls[0]), Some(413));
    assert_eq!(calls[0].end_ns, 30);
    assert_eq!(calls[0].gaps, complete());
}

#[test]
fn response_until_close_completes_at_end() {
    let mut wire = Wire::server();
    wire.request(b"GET /old HTTP/1.0\r\n\r\n");
    wire.response(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst ");
    wire.response(b"second");
    assert!(wire.take().is_empty());
    wire.end();
    let calls = wire.take();
    assert_eq!(calls.len(), 1);
    let response = http(&calls[0]).response.as_ref().unwrap();
    assert_eq!(response.version, HttpVersion::Http10);
    assert_eq!(&response.body.captured[..], b"first second");
    assert_eq!(calls[0].gaps, complete());
    // The last data, not the close.
    assert_eq!(calls[0].end_ns, 30);
    assert!(!wire.wants_more());
}

#[test]
fn connection_close() {
    let mut wire = Wire::server();
    wire.request(b"GET /bye HTTP/1.1\r\nConnection: close\r\n\r\n");
    wire.response(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye");
    let calls = wire.take();
    assert_eq!(calls.len(), 1);
    assert_eq!(response_body(&calls[0]), b"bye");
    assert_eq!(calls[0].gaps, complete());
    wire.end();
    assert!(wire.take().is_empty());
}

#[test]
fn websocket_upgrade_stops_decoding() {
    let mut wire = Wire::new(Role::Client, Direction::Egress);
    wire.request(
        b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    wire.response(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello",
    );
    let calls = wire.take();
    assert_eq!(calls.len(), 1);
    assert!(http(&calls[0]).upgraded);
    assert_eq!(status(&calls[0]), Some(101));
    assert_eq!(calls[0].gaps, complete());
    assert!(!wire.wants_more());
    wire.request(b"\x81\x85\x00\x00\x00\x00hello");
    wire.response(b"GET /not-http HTTP/1.1\r\n\r\n");
    wire.end();
    assert!(wire.take().is_empty());
}

#[test]
fn connect_tunnel_stops_decoding() {
    let mut wire = Wire::new(Role::Client, Direction::Egress);
    wire.request(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    wire.response(b"HTTP/1.1 200 Connection Established\r\n\r\n");
    let calls = wire.take();
    assert_eq!(calls.len(), 1);
    assert!(http(&calls[0]).upgraded);
    assert_eq!(target(&calls[0]), "example.com:443");
    assert!(!wire.wants_more());
    // A CONNECT refused is an ordinary response.
    let mut wire = Wire::new(Role::Client, Direction::Egress);
    wire.request(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n");
    wire.response(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n");
    wire.request(&get("/x"));
    wire.response(&ok("/x"));
    let calls = wire.take();
    assert_eq!(calls.len(), 2);
    assert!(!http(&calls[0]).upgraded);
    assert!(wire.wants_more());
}

#[test]
fn body_split_across_chunks_and_capped() {
    let mut wire = Wire::with_cap(Role::Server, Direction::Ingress, 100);
    let body: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
    wire.request(b"POST /data HTTP/1.1\r\nContent-Length: 1000\r\n\r\n");
    for piece in body.chunks(37) {
        wire.request(piece);
    }
    wire.response(&ok("stored"));
    let calls = wire.take();
    assert_eq!(calls.len(), 1);
    let request = &http(&calls[0]).request;
    assert_eq!(request.body.size, 1000);
    assert_eq!(&request.body.captured[..], &body[..100]);
    assert!(!request.body.incomplete);
    assert_eq!(calls[0].gaps, complete());
}

#[test]
fn gap_inside_content_length_body_keeps_sync() {
    let mut wire = Wire::server();
    wire.request(b"POST /a HTTP/1.1\r\nContent-Length: 100\r\n\r\n0123456789");
    wire.lose(Direction::Ingress, 80);
    wire.request(b"abcdefghij");
    wire.response(&ok("/a"));
    wire.request(&get("/b"));
    // The response body goes out with sendfile.
    wire.response(b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n");
    wire.gap_chunk(Direction::Egress, 4096);
    // And a response whose body is truncated by the capture cap.
    wire.request(&get("/c"));
    wire.send_len(
        Direction::Egress,
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        49,
    );
    let calls = wire.take();
    assert_eq!(calls.len(), 3);
    let request = &http(&calls[0]).request;
    assert_eq!(request.body.size, 100);
    assert_eq!(&request.body.captured[..], b"0123456789");
    assert!(request.body.incomplete);
    assert!(calls[0].gaps.request_incomplete);
    assert_eq!(response_body(&calls[0]), b"/a");
    assert!(!calls[0].gaps.after_resync);
    assert_eq!(target(&calls[1]), "/b");
    let response = http(&calls[1]).response.as_ref().unwrap();
    assert_eq!(response.body.size, 4096);
    assert!(calls[1].gaps.response_incomplete);
    assert!(!calls[1].gaps.request_incomplete);
    assert_eq!(target(&calls[2]), "/c");
    assert_eq!(response_body(&calls[2]), b"abc");
    assert!(calls[2].gaps.response_incomplete);
}

#[test]
fn gap_swallowing_a_keep_alive_request_never_mispairs() {
    let mut wire = Wire::server();
    wire.request(&get("/1"));
    wire.response(&ok("/1"));
    // The whole second request is lost.
    wire.lose(Direction::Ingress, get("/2").len() as u64);
    wire.response(&ok("/2"));
    wire.request(&get("/3"));
    wire.response(&ok("/3"));
    let calls = wire.take();
    assert_eq!(calls.len(), 2);
    assert_eq!(target(&calls[0]), "/1");
    assert_eq!(calls[0].gaps, complete());
    assert_eq!(target(&calls[1]), "/3");
    assert_eq!(response_body(&calls[1]), b"/3");
    assert!(calls[1].gaps.after_resync);
    assert!(!calls[1].gaps.response_missing);
}

#[test]
fn gap_swallowing_a_pipelined_request_never_mispairs() {
    let mut wire = Wire::server();
    let mut requests = get("/1");
    requests.extend(get("/2"));
    wire.request(&requests);
    // The third request is lost, the fourth comes after the responses to the first three
    // began.
    wire.lose(Direction::Ingress, get("/3").len() as u64);
    wire.response(&ok("/1"));
    wire.response(&ok("/2"));
    wire.response(&ok("/3"));
    wire.request(&get("/4"));
    wire.response(&ok("/4"));
    let calls = wire.take();
    let pairs: Vec<(&str, &[u8])> = calls
        .iter()
        .map(|call| (target(call), response_body(call)))
        .collect();
    assert_eq!(pairs, [("/1", &b"/1"[..]), ("/2", b"/2"), ("/4", b"/4")]);
    assert!(calls[2].gaps.after_resync);
    assert!(!calls[0].gaps.after_resync);
}

#[test]
fn response_gap_reports_waiting_requests_missing() {
    let mut wire = Wire::server();
    wire.request(&get("/0"));
    wire.response(&ok("/0"));
    let mut requests = get("/1");
    requests.extend(get("/2"));
    wire.request(&requests);
    // The start of the response to /1 is lost: its head cannot be parsed, and how many
    // responses the gap held is unknown.
    let first = ok("/1");
    wire.lose(Direction::Egress, 5);
    wire.response(&first[5..]);
    // The response to /2 is recognised but answers a request given up on: dropped.
    wire.response(&ok("/2"));
    wire.request(&get("/3"));
    wire.response(&ok("/3"));
    let calls = wire.take();
    assert_eq!(calls.len(), 4);
    assert_eq!(calls[0].gaps, complete());
    assert_eq!(
        (target(&calls[1]), calls[1].gaps.response_missing),
        ("/1", true)
    );
    assert_eq!(
        (target(&calls[2]), calls[2].gaps.response_missing),
        ("/2", true)
    );
    assert_eq!(target(&calls[3]), "/3");
    assert_eq!(response_body(&calls[3]), b"/3");
    assert!(calls[3].gaps.after_resync);
    assert!(!calls[3].gaps.response_missing);
}

#[test]
fn truncated_head_resynchronises() {
    let mut wire = Wire::server();
    wire.request(&get("/1"));
    wire.response(&ok("/1"));
    // Only the first 10 bytes of the second request were captured.
    let second = b"GET /2 HTTP/1.1\r\nHost: a\r\nX-Long: 0123456789\r\n\r\n";
    wire.send_len(Direction::Ingress, &second[..10], second.len() as u64);
    wire.response(&ok("/2"));
    wire.request(&get("/3"));
    wire.response(&ok("/3"));
    let calls = wire.take();
    let pairs: Vec<(&str, &[u8])> = calls
        .iter()
        .map(|call| (target(call), response_body(call)))
        .collect();
    assert_eq!(pairs, [("/1", &b"/1"[..]), ("/3", b"/3")]);
    assert!(calls[1].gaps.after_resync);
}

#[test]
fn chunked_framing_gap_cuts_the_message() {
    let mut wire = Wire::server();
    wire.request(&get("/1"));
    wire.response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n");
    // Lost: chunk framing and possibly more.
    wire.lose(Direction::Egress, 20);
    wire.response(b"5\r\nhello\r\n0\r\n\r\n");
    wire.request(&get("/2"));
    wire.response(&ok("/2"));
    let calls = wire.take();
    assert_eq!(calls.len(), 2);
    assert_eq!(target(&calls[0]), "/1");
    assert!(calls[0].gaps.response_incomplete);
    assert_eq!(response_body(&calls[0]), b"abcd");
    assert_eq!(response_body(&calls[1]), b"/2");
    assert!(calls[1].gaps.after_resync);
}

#[test]
fn joining_mid_stream_drops_the_orphan_response() {
    // The capture joined while a response was going out: the first bytes the decoder sees are
    // a response to a request it never saw.
    let mut wire = Wire::new(Role::Unknown, Direction::Ingress);
    wire.offsets = [5000, 3000];
    wire.response(&ok("/old"));
    wire.request(&get("/new"));
    wire.response(&ok("/new"));
    let calls = wire.take();
    assert_eq!(calls.len(), 1);
    assert_eq!(target(&calls[0]), "/new");
    assert_eq!(response_body(&calls[0]), b"/new");
    assert_eq!(calls[0].side, Side::Server);

    // Joined in the middle of a request body: skipped up to the next request.
    let mut wire = Wire::server();
    wire.offsets = [0, 777];
    wire.response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    wire.request(b"tail of a body\r\nmore body");
    wire.request(b"\r\nGET /next HTTP/1.1\r\n\r\n");
    wire.response(&ok("/next"));
    let calls = wire.take();
    assert_eq!(calls.len(), 1);
    assert_eq!(response_body(&calls[0]), b"/next");
    assert!(calls[0].gaps.after_resync);
}

#[test]
fn unanswered_requests_at_end() {
    let mut wire = Wire::server();
    wire.request(&get("/1"));
    wire.request(b"POST /2 HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345");
    wire.end();
    let calls = wire.take();
    assert_eq!(calls.len(), 2);
    assert!(calls[0].gaps.response_missing && !calls[0].gaps.request_incomplete);
    assert!(calls[1].gaps.response_missing && calls[1].gaps.request_incomplete);
    assert_eq!(calls[1].end_ns, 20);
    assert!(!wire.wants_more());
}

#[test]
fn queue_bound_skips_the_responses_of_requests_sent_early() {
    let mut wire = Wire::new(Role::Client, Direction::Egress);
    let total = MAX_WAITING + 6;
    for index in 0..total {
        wire.request(&get(&format!("/{index}")));
    }
    let early = wire.take();
    assert_eq!(early.len(), 6);
    assert!(early.iter().all(|call| call.gaps.response_missing));
    assert_eq!(target(&early[0]), "/0");
    for index in 0..total {
        wire.response(&ok(&format!("/{index}")));
    }
    let calls = wire.take();
    assert_eq!(calls.len(), MAX_WAITING);
    for call in &calls {
        assert_eq!(target(call).as_bytes(), response_body(call));
        assert_eq!(call.gaps, complete());
    }
}

#[test]
fn oversized_head_is_a_parse_failure() {
    let mut wire = Wire::server();
    let mut huge = b"GET /huge HTTP/1.1\r\n".to_vec();
    while huge.len() <= MAX_HEAD {
        huge.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
    }
    huge.extend_from_slice(b"\r\n");
    for piece in huge.chunks(4096) {
        wire.request(piece);
    }
    wire.response(&ok("/huge"));
    wire.request(&get("/small"));
    wire.response(&ok("/small"));
    let calls = wire.take();
    assert_eq!(calls.len(), 1);
    assert_eq!(response_body(&calls[0]), b"/small");
}

#[test]
fn role_unknown_is_inferred_from_the_request_direction() {
    let unknown = connection(Role::Unknown);
    let outgoing = chunk(&unknown, Direction::Egress, 0, &get("/"), 30, 1);
    let detected = detect(&outgoing).unwrap();
    assert_eq!(
        (detected.side(), detected.requests()),
        (Side::Client, Direction::Egress)
    );
    let incoming = chunk(&unknown, Direction::Ingress, 0, &get("/"), 30, 1);
    assert_eq!(detect(&incoming).unwrap().side(), Side::Server);
    // A response first: requests travel the other way.
    let response = chunk(&unknown, Direction::Ingress, 0, &ok("x"), 40, 1);
    let detected = detect(&response).unwrap();
    assert_eq!(
        (detected.side(), detected.requests()),
        (Side::Client, Direction::Egress)
    );
    // A known role wins.
    let server = connection(Role::Server);
    let outgoing = chunk(&server, Direction::Egress, 0, &get("/"), 30, 1);
    assert_eq!(detect(&outgoing).unwrap().side(), Side::Server);
}

#[test]
fn detect_rejects_what_is_not_http1() {
    let connection = connection(Role::Client);
    let rejected: [&[u8]; 8] = [
        // TLS ClientHello.
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x00\x01\x02garbage",
        b"GET",
        b"GET / HTTP/2.0\r\n",
        b"HTTP/2 200\r\n",
        b"get / HTTP/1.1\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
    ];
    for data in rejected {
        let candidate = chunk(
            &connection,
            Direction::Egress,
            0,
            data,
            data.len() as u64,
            1,
        );
        assert!(detect(&candidate).is_none(), "{data:?}");
    }
    let accepted: [&[u8]; 4] = [
        b"GET ",
        b"OPTIONS * HTTP/1.1\r\n",
        b"DELETE /x HTTP/1.0\r\nHost: a\r\n\r\n",
        b"HTTP/1.0 404 Not Found\r\n",
    ];
    for data in accepted {
        let candidate = chunk(
            &connection,
            Direction::Egress,
            0,
            data,
            data.len() as u64,
            1,
        );
        assert!(detect(&candidate).is_some(), "{data:?}");
    }
}

/// A keep-alive conversation exercising each framing, as (direction, bytes) in capture order
/// (requests ingress).
fn conversation() -> Vec<(Direction, Vec<u8>)> {
    vec![
        (Direction::Ingress, get("/one")),
        (Direction::Egress, ok("/one")),
        (
            Direction::Ingress,
            b"POST /two HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n0\r\nT: v\r\n\r\n"
                .to_vec(),
        ),
        (
            Direction::Egress,
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".to_vec(),
        ),
        (Direction::Ingress, b"HEAD /three HTTP/1.1\r\n\r\n".to_vec()),
        (Direction::Egress, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n".to_vec()),
        (
            Direction::Ingress,
            b"PUT /four HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n".to_vec(),
        ),
        (Direction::Egress, b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()),
        (Direction::Ingress, b"data".to_vec()),
        (Direction::Egress, b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()),
        (Direction::Ingress, b"\r\nGET /five HTTP/1.0\r\n\r\n".to_vec()),
        (Direction::Egress, b"HTTP/1.0 200 OK\r\n\r\nuntil close".to_vec()),
    ]
}

type Summary = (Side, u64, u64, CallGaps, HttpExchange);

fn summarize(calls: &[ApiCall]) -> Vec<Summary> {
    calls
        .iter()
        .map(|call| {
            (
                call.side,
                call.start_ns,
                call.end_ns,
                call.gaps,
                http(call).clone(),
            )
        })
        .collect()
}

/// Feeds `pieces` (direction, bytes, time) and ends the connection.
fn run(pieces: &[(Direction, &[u8], u64)]) -> Vec<Summary> {
    let mut wire = Wire::server();
    for (direction, data, ts) in pieces {
        let slot = *direction as usize;
        let chunk = chunk(
            &wire.connection,
            *direction,
            wire.offsets[slot],
            data,
            data.len() as u64,
            *ts,
        );
        wire.offsets[slot] += data.len() as u64;
        wire.feed(chunk);
    }
    wire.ts = pieces.last().map_or(0, |piece| piece.2);
    wire.end();
    summarize(&wire.take())
}

#[test]
fn every_split_gives_the_same_calls() {
    let messages = conversation();
    let whole: Vec<(Direction, &[u8], u64)> = messages
        .iter()
        .enumerate()
        .map(|(index, (direction, data))| (*direction, &data[..], index as u64 * 10))
        .collect();
    let expected = run(&whole);
    assert_eq!(expected.len(), 5);
    assert!(expected.iter().all(|summary| summary.3 == complete()));

    // Every message split at every byte boundary.
    for (index, (direction, data, ts)) in whole.iter().enumerate() {
        for split in 0..=data.len() {
            let mut pieces = whole.clone();
            pieces.splice(
                index..=index,
                [
                    (*direction, &data[..split], *ts),
                    (*direction, &data[split..], *ts),
                ],
            );
            assert_eq!(run(&pieces), expected, "message {index} split at {split}");
        }
    }

    // Each direction's whole stream in two chunks, split everywhere (requests pipelined).
    let stream = |wanted: Direction| -> Vec<u8> {
        messages
            .iter()
            .filter(|(direction, _)| *direction == wanted)
            .flat_map(|(_, data)| data.clone())
            .collect()
    };
    let (requests, responses) = (stream(Direction::Ingress), stream(Direction::Egress));
    let pipelined = run(&[
        (Direction::Ingress, &requests, 1),
        (Direction::Egress, &responses, 2),
    ]);
    assert_eq!(pipelined.len(), 5);
    for split in 0..=requests.len() {
        let pieces = [
            (Direction::Ingress, &requests[..split], 1),
            (Direction::Ingress, &requests[split..], 1),
            (Direction::Egress, &responses[..], 2),
        ];
        assert_eq!(run(&pieces), pipelined, "requests split at {split}");
    }
    for split in 0..=responses.len() {
        let pieces = [
            (Direction::Ingress, &requests[..], 1),
            (Direction::Egress, &responses[..split], 2),
            (Direction::Egress, &responses[split..], 2),
        ];
        assert_eq!(run(&pieces), pipelined, "responses split at {split}");
    }
}

/// A tiny deterministic PRNG for the fuzz test.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// Pieces the fuzz test splices in, so that it also meets what is not HTTP.
const FRAGMENTS: [&[u8]; 12] = [
    b"Content-Length: 18446744073709551615\r\n",
    b"Content-Length: x\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"\r\n",
    b"\n",
    b"fffffffffffffffff\r\n",
    b"0\r\nT: 1\r\n\r\n",
    b"1;ext\r\n",
    b"\x00\xff\r",
    b"PRI * HTTP/2.0\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
];

/// A plausible message: a start line, framing headers (sometimes contradicting the body), and
/// a body.
fn random_message(rng: &mut XorShift, request: bool) -> Vec<u8> {
    const METHODS: [&str; 5] = ["GET", "POST", "HEAD", "CONNECT", "PUT"];
    const STATUSES: [u16; 8] = [200, 200, 204, 304, 100, 101, 404, 500];
    let mut message = if request {
        let method = METHODS[rng.below(METHODS.len())];
        format!("{method} /p HTTP/1.{}\r\n", rng.below(2)).into_bytes()
    } else {
        let status = STATUSES[rng.below(STATUSES.len())];
        format!("HTTP/1.{} {status} X\r\n", rng.below(2)).into_bytes()
    };
    let body: Vec<u8> = (0..rng.below(40))
        .map(|_| b'a' + rng.below(26) as u8)
        .collect();
    match rng.below(4) {
        0 => {}
        1 => {
            let length = if rng.below(8) == 0 {
                rng.below(50)
            } else {
                body.len()
            };
            message.extend(format!("Content-Length: {length}\r\n\r\n").bytes());
            message.extend(&body);
            return message;
        }
        2 => {
            message.extend(b"Transfer-Encoding: chunked\r\n\r\n");
            for piece in body.chunks(1 + rng.below(16)) {
                message.extend(format!("{:x};e=1\r\n", piece.len()).bytes());
                message.extend(piece);
                message.extend(b"\r\n");
            }
            message.extend(b"0\r\n");
            if rng.below(2) == 0 {
                message.extend(b"Trailer-Name: v\r\n");
            }
            message.extend(b"\r\n");
            return message;
        }
        _ => message.extend(b"Connection: close\r\n"),
    }
    message.extend(b"\r\n");
    message
}

/// A stream of messages of one direction, with corruption now and then.
fn random_stream(rng: &mut XorShift, requests: bool) -> Vec<u8> {
    let mut stream = Vec::new();
    for _ in 0..rng.below(8) {
        match rng.below(10) {
            0 => stream.extend((0..rng.below(16)).map(|_| rng.next() as u8)),
            1 => stream.extend_from_slice(FRAGMENTS[rng.below(FRAGMENTS.len())]),
            _ => stream.extend(random_message(rng, requests)),
        }
    }
    if !stream.is_empty() && rng.below(4) == 0 {
        let at = rng.below(stream.len());
        stream[at] = rng.next() as u8;
    }
    stream
}

#[test]
fn random_input_never_panics_and_stays_bounded() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let connection = connection(Role::Unknown);
    for _ in 0..3000 {
        let requests = if rng.below(2) == 0 {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        // Slot 0 is egress.
        let egress_requests = requests == Direction::Egress;
        let streams = [
            random_stream(&mut rng, egress_requests),
            random_stream(&mut rng, !egress_requests),
        ];
        let detected = detect(&chunk(
            &connection,
            requests,
            0,
            b"GET / HTTP/1.1\r\n",
            16,
            0,
        ))
        .expect("a request line");
        let body_cap = rng.below(64);
        let mut decoder = Http1Decoder::new(detected, DecoderSettings { body_cap });
        let mut positions = [0usize, 0usize];
        let mut offsets = [0u64, 0u64];
        let mut calls = Vec::new();
        let mut ts = 0;
        while positions[0] < streams[0].len() || positions[1] < streams[1].len() {
            let slot = rng.below(2);
            let stream = &streams[slot];
            let start = positions[slot];
            if start >= stream.len() {
                continue;
            }
            let end = (start + 1 + rng.below(40)).min(stream.len());
            positions[slot] = end;
            ts += 1 + rng.below(3) as u64;
            let direction = if slot == 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            let mut piece = chunk(
                &connection,
                direction,
                offsets[slot],
                &stream[start..end],
                0,
                ts,
            );
            piece.len = (end - start) as u64;
            match rng.below(30) {
                // Bytes lost before this chunk.
                0 => piece.offset += rng.below(20) as u64,
                // Captured only in part.
                1 => piece.data.truncate(rng.below(end - start)),
                // Moved in-kernel.
                2 => {
                    piece.data = Bytes::new();
                    piece.gap = true;
                }
                _ => {}
            }
            offsets[slot] = piece.offset + piece.len;
            decoder.on_chunk(&piece, &mut calls);
            let (bytes, entries) = decoder.retained();
            assert!(
                bytes <= 4 * MAX_HEAD + 2 * body_cap,
                "{bytes} bytes retained"
            );
            assert!(entries <= MAX_WAITING + 1100, "{entries} entries queued");
            for call in &calls {
                let exchange = http(call);
                assert!(exchange.request.body.captured.len() <= body_cap);
                assert!(call.start_ns <= call.end_ns);
            }
            calls.clear();
        }
        decoder.on_end(ts + 1, &mut calls);
        assert_eq!(decoder.retained(), (0, 0));
        assert!(!decoder.wants_more());
    }
}

/// A message of the keep-alive property test: a request naming `id` in its target, or a
/// response naming it in a header, with a body of either framing.
fn tagged_message(rng: &mut XorShift, id: usize, request: bool) -> Vec<u8> {
    let body: Vec<u8> = (0..rng.below(300))
        .map(|_| b'a' + rng.below(26) as u8)
        .collect();
    let mut message = if request {
        let method = if body.is_empty() { "GET" } else { "POST" };
        format!("{method} /{id} HTTP/1.1\r\nHost: a\r\n").into_bytes()
    } else {
        format!("HTTP/1.1 200 OK\r\nX-Id: {id}\r\n").into_bytes()
    };
    if rng.below(2) == 0 {
        message.extend(format!("Content-Length: {}\r\n\r\n", body.len()).bytes());
        message.extend(&body);
    } else {
        message.extend(b"Transfer-Encoding: chunked\r\n\r\n");
        for piece in body.chunks(1 + rng.below(64)) {
            message.extend(format!("{:x}\r\n", piece.len()).bytes());
            message.extend(piece);
            message.extend(b"\r\n");
        }
        message.extend(b"0\r\n\r\n");
    }
    message
}

#[test]
fn random_gaps_never_mispair_keep_alive_calls() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let (mut paired, mut lost) = (0, 0);
    for _ in 0..300 {
        let mut wire = Wire::server();
        for id in 0..20 {
            for request in [true, false] {
                let message = tagged_message(&mut rng, id, request);
                let direction = if request {
                    wire.requests
                } else {
                    wire.responses()
                };
                // Each message in one to three writes, some of them lost or cut.
                let mut rest = &message[..];
                while !rest.is_empty() {
                    let take = if rng.below(2) == 0 {
                        rest.len()
                    } else {
                        1 + rng.below(rest.len())
                    };
                    let (piece, after) = rest.split_at(take);
                    rest = after;
                    match rng.below(25) {
                        0 => wire.lose(direction, piece.len() as u64),
                        1 => wire.send_len(
                            direction,
                            &piece[..rng.below(piece.len())],
                            piece.len() as u64,
                        ),
                        2 => wire.gap_chunk(direction, piece.len() as u64),
                        _ => wire.send_len(direction, piece, piece.len() as u64),
                    }
                }
            }
        }
        wire.end();
        for call in wire.take() {
            let Some(response) = &http(&call).response else {
                lost += 1;
                continue;
            };
            let id = header(&response.headers, "x-id").unwrap();
            assert_eq!(&target(&call).as_bytes()[1..], &id.value[..], "{call:?}");
            paired += 1;
        }
    }
    // Most calls survive the losses.
    assert!(
        paired > 4 * lost,
        "{paired} paired, {lost} without response"
    );
}

/// Whether `part` lies in the buffer of `whole`.
fn shares(whole: &Bytes, part: &[u8]) -> bool {
    let start = whole.as_ptr().addr();
    let part_start = part.as_ptr().addr();
    part_start >= start && part_start + part.len() <= start + whole.len()
}

#[test]
fn heads_and_bodies_in_one_chunk_share_its_bytes() {
    let connection = connection(Role::Server);
    let request = b"GET / HTTP/1.1\r\nhost: a\r\nX-Custom: b\r\n\r\n";
    let request = chunk(
        &connection,
        Direction::Ingress,
        0,
        request,
        request.len() as u64,
        1,
    );
    let response = ok("body");
    let response = chunk(
        &connection,
        Direction::Egress,
        0,
        &response,
        response.len() as u64,
        2,
    );
    let mut decoder =
        Http1Decoder::new(detect(&request).unwrap(), DecoderSettings { body_cap: CAP });
    let mut calls = Vec::new();
    decoder.on_chunk(&request, &mut calls);
    decoder.on_chunk(&response, &mut calls);
    assert_eq!(calls.len(), 1);
    let exchange = http(&calls[0]);
    let headers = &exchange.request.headers;
    assert_eq!(
        (&headers[0].name, &headers[1].name),
        (&"host".into(), &"x-custom".into())
    );
    assert!(
        headers
            .iter()
            .all(|header| shares(&request.data, &header.value))
    );
    let answer = exchange.response.as_ref().unwrap();
    assert!(shares(&response.data, &answer.headers[0].value));
    assert_eq!(&answer.body.captured[..], b"body");
    assert!(shares(&response.data, &answer.body.captured));
}
