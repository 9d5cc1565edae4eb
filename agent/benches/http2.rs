//! HTTP/2 decoder throughput on recorded streams: many small calls one after another on one
//! connection, 100 streams interleaved, and large bodies in 16 KiB DATA frames, with header
//! blocks from `loona-hpack`'s encoder (it indexes repeated fields and never uses Huffman
//! coding); and responses whose four values are Huffman-coded literals, as nginx sends them
//! (it never indexes), since decoding a Huffman string is what costs most.

mod support;

use agent::{protocols::http2, testing::http2_frame as frame};
use agent_common::Direction;
use criterion::{Criterion, criterion_group, criterion_main};

use self::support::{Recorder, Recording};

/// The agent's allocator, so the numbers are the agent's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

/// Records an HTTP/2 connection from its prefaces on, encoding header blocks with one encoder
/// per direction, as peers do.
struct H2Recorder {
    wire: Recorder,
    client: loona_hpack::Encoder<'static>,
    server: loona_hpack::Encoder<'static>,
}

impl H2Recorder {
    fn new() -> Self {
        let mut wire = Recorder::new();
        let mut first = PREFACE.to_vec();
        first.extend(frame(SETTINGS, 0, 0, &[]));
        wire.push(Direction::Ingress, first);
        wire.push(Direction::Egress, frame(SETTINGS, 0, 0, &[]));
        Self {
            wire,
            client: loona_hpack::Encoder::new(),
            server: loona_hpack::Encoder::new(),
        }
    }

    fn push(&mut self, direction: Direction, data: Vec<u8>) {
        self.wire.push(direction, data);
    }

    fn finish(self, name: &'static str, calls: u64) -> Recording {
        self.wire.finish(name, calls)
    }

    fn request(&mut self, stream: u32, path: &str) -> Vec<u8> {
        let block = self.client.encode(vec![
            (&b":method"[..], &b"GET"[..]),
            (b":scheme", b"https"),
            (b":authority", b"api.internal:8443"),
            (b":path", path.as_bytes()),
            (b"user-agent", b"bench/1.0"),
            (b"accept", b"application/json"),
            (b"x-request-id", b"3f2a9c4e-8d1b-4a7e-9c3f-1b2a3c4d5e6f"),
        ]);
        frame(HEADERS, END_HEADERS | END_STREAM, stream, &block)
    }

    fn response(&mut self, stream: u32, body: &[u8]) -> Vec<u8> {
        let length = body.len().to_string();
        let block = self.server.encode(vec![
            (&b":status"[..], &b"200"[..]),
            (b"content-type", b"application/json"),
            (b"content-length", length.as_bytes()),
            (b"date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
        ]);
        let mut out = frame(HEADERS, END_HEADERS, stream, &block);
        out.extend(frame(DATA, END_STREAM, stream, body));
        out
    }
}

fn sequential(calls: u64) -> Recording {
    let mut recorder = H2Recorder::new();
    for index in 0..calls as u32 {
        let stream = 2 * index + 1;
        let request = recorder.request(stream, &format!("/users/{index}?fields=name"));
        recorder.push(Direction::Ingress, request);
        let body = format!("{{\"id\":{index},\"name\":\"user\"}}");
        let response = recorder.response(stream, body.as_bytes());
        recorder.push(Direction::Egress, response);
    }
    recorder.finish("sequential_1000_gets", calls)
}

fn interleaved(calls: u64) -> Recording {
    let mut recorder = H2Recorder::new();
    let streams: Vec<u32> = (0..calls as u32).map(|index| 2 * index + 1).collect();
    let requests: Vec<u8> = streams
        .iter()
        .flat_map(|stream| recorder.request(*stream, &format!("/batch/{stream}")))
        .collect();
    recorder.push(Direction::Ingress, requests);
    let responses: Vec<u8> = streams
        .iter()
        .rev()
        .flat_map(|stream| recorder.response(*stream, format!("{{\"n\":{stream}}}").as_bytes()))
        .collect();
    recorder.push(Direction::Egress, responses);
    recorder.finish("interleaved_100_streams", calls)
}

fn large_bodies(calls: u64) -> Recording {
    const PIECE: usize = 16 * 1024;
    const BODY: usize = 1024 * 1024;
    let mut recorder = H2Recorder::new();
    let piece: Vec<u8> = (0..PIECE).map(|index| b'a' + (index % 26) as u8).collect();
    for index in 0..calls as u32 {
        let stream = 2 * index + 1;
        let request = recorder.request(stream, &format!("/blobs/{index}"));
        recorder.push(Direction::Ingress, request);
        let head = recorder.response(stream, b"");
        // The response head without its empty DATA frame, then 64 DATA frames.
        recorder.push(Direction::Egress, head[..head.len() - 9].to_vec());
        for piece_index in 0..BODY / PIECE {
            let flags = if piece_index + 1 == BODY / PIECE {
                END_STREAM
            } else {
                0
            };
            recorder.push(Direction::Egress, frame(DATA, flags, stream, &piece));
        }
    }
    recorder.finish("data_1mib_bodies", calls)
}

/// A response head as nginx writes it: every field a literal without indexing, with an indexed
/// name and a Huffman-coded value (the values of RFC 7541 appendix C.6.1: `302`, `private`, a
/// date and a location).
const HUFFMAN_RESPONSE: &[u8] = &[
    0x08, 0x82, 0x64, 0x02, // :status
    0x0f, 0x09, 0x85, 0xae, 0xc3, 0x77, 0x1a, 0x4b, // cache-control
    0x0f, 0x12, 0x96, 0xd0, 0x7a, 0xbe, 0x94, 0x10, 0x54, 0xd4, 0x44, 0xa8, 0x20, 0x05, 0x95, 0x04,
    0x0b, 0x81, 0x66, 0xe0, 0x82, 0xa6, 0x2d, 0x1b, 0xff, // date
    0x0f, 0x1f, 0x91, 0x9d, 0x29, 0xad, 0x17, 0x18, 0x63, 0xc7, 0x8f, 0x0b, 0x97, 0xc8, 0xe9, 0xae,
    0x82, 0xae, 0x43, 0xd3, // location
];

fn huffman_responses(calls: u64) -> Recording {
    let mut recorder = H2Recorder::new();
    for index in 0..calls as u32 {
        let stream = 2 * index + 1;
        let request = recorder.request(stream, &format!("/users/{index}"));
        recorder.push(Direction::Ingress, request);
        let response = frame(HEADERS, END_HEADERS | END_STREAM, stream, HUFFMAN_RESPONSE);
        recorder.push(Direction::Egress, response);
    }
    recorder.finish("huffman_coded_responses_100", calls)
}

fn recordings() -> Vec<Recording> {
    vec![
        sequential(1_000),
        interleaved(100),
        large_bodies(4),
        huffman_responses(100),
    ]
}

fn bench(criterion: &mut Criterion) {
    support::bench_recordings(criterion, "http2", http2::decoder, &recordings());
}

criterion_group!(benches, bench);
criterion_main!(benches);
