//! HTTP/1 decoder throughput on recorded streams: many small keep-alive calls, large chunked
//! bodies, and a pipelined batch.

use std::{hint::black_box, sync::Arc};

use agent::{
    protocols::{Decoder, DecoderSettings, http1},
    streams::{Connection, StreamChunk},
};
use agent_common::{Direction, Role};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// The agent's allocator, so the numbers are the agent's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Body bytes kept per message, as a typical configuration would.
const BODY_CAP: usize = 4096;

/// A recorded connection: its chunks in capture order, requests ingress (a server).
struct Recording {
    name: &'static str,
    chunks: Vec<StreamChunk>,
    bytes: u64,
    calls: u64,
}

/// Builds chunks with consecutive offsets per direction and increasing times.
struct Recorder {
    connection: Arc<Connection>,
    offsets: [u64; 2],
    chunks: Vec<StreamChunk>,
}

impl Recorder {
    fn new() -> Self {
        Self {
            connection: agent::testing::connection(1, Role::Server),
            offsets: [0, 0],
            chunks: Vec::new(),
        }
    }

    fn push(&mut self, direction: Direction, data: Vec<u8>) {
        let slot = direction as usize;
        let len = data.len() as u64;
        let ts_ns = self.chunks.len() as u64 * 1_000;
        self.chunks.push(StreamChunk {
            connection: Arc::clone(&self.connection),
            direction,
            offset: self.offsets[slot],
            len,
            data: Bytes::from(data),
            tls: false,
            gap: false,
            ts_ns,
            tid: 1,
            comm: "bench".into(),
        });
        self.offsets[slot] += len;
    }

    fn finish(self, name: &'static str, calls: u64) -> Recording {
        let bytes = self.chunks.iter().map(|chunk| chunk.len).sum();
        Recording {
            name,
            chunks: self.chunks,
            bytes,
            calls,
        }
    }
}

fn request(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: api.internal:8080\r\nUser-Agent: bench/1.0\r\n\
         Accept: application/json\r\nX-Request-Id: 3f2a9c4e-8d1b-4a7e-9c3f-1b2a3c4d5e6f\r\n\r\n"
    )
    .into_bytes()
}

fn response(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn keep_alive(calls: u64) -> Recording {
    let mut recorder = Recorder::new();
    for index in 0..calls {
        recorder.push(
            Direction::Ingress,
            request(&format!("/users/{index}?fields=name")),
        );
        recorder.push(
            Direction::Egress,
            response(&format!("{{\"id\":{index},\"name\":\"user\"}}")),
        );
    }
    recorder.finish("keep_alive_1000_gets", calls)
}

fn chunked_bodies(calls: u64) -> Recording {
    const PIECE: usize = 16 * 1024;
    const BODY: usize = 1024 * 1024;
    let mut recorder = Recorder::new();
    let piece: Vec<u8> = (0..PIECE).map(|index| b'a' + (index % 26) as u8).collect();
    for index in 0..calls {
        recorder.push(Direction::Ingress, request(&format!("/blobs/{index}")));
        recorder.push(
            Direction::Egress,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
        );
        for _ in 0..BODY / PIECE {
            let mut chunk = format!("{PIECE:x}\r\n").into_bytes();
            chunk.extend_from_slice(&piece);
            chunk.extend_from_slice(b"\r\n");
            recorder.push(Direction::Egress, chunk);
        }
        recorder.push(Direction::Egress, b"0\r\n\r\n".to_vec());
    }
    recorder.finish("chunked_1mib_bodies", calls)
}

fn pipelined(calls: u64) -> Recording {
    let mut recorder = Recorder::new();
    let requests = (0..calls).flat_map(|index| request(&format!("/batch/{index}")));
    recorder.push(Direction::Ingress, requests.collect());
    let responses = (0..calls).flat_map(|index| response(&format!("{{\"n\":{index}}}")));
    recorder.push(Direction::Egress, responses.collect());
    recorder.finish("pipelined_100", calls)
}

fn recordings() -> Vec<Recording> {
    vec![keep_alive(1_000), chunked_bodies(4), pipelined(100)]
}

/// Decodes a whole recording, returning the number of calls.
fn decode(recording: &Recording) -> usize {
    let Some(first) = recording.chunks.first() else {
        return 0;
    };
    let Some(detected) = http1::detect(first) else {
        return 0;
    };
    let mut decoder = http1::Http1Decoder::new(detected, DecoderSettings { body_cap: BODY_CAP });
    let mut calls = Vec::new();
    for chunk in &recording.chunks {
        decoder.on_chunk(chunk, &mut calls);
    }
    decoder.on_end(u64::MAX, &mut calls);
    black_box(&calls);
    calls.len()
}

fn bench(criterion: &mut Criterion) {
    let recordings = recordings();
    for recording in &recordings {
        assert_eq!(
            decode(recording) as u64,
            recording.calls,
            "{}",
            recording.name
        );
    }
    let mut bytes = criterion.benchmark_group("http1_bytes");
    for recording in &recordings {
        bytes.throughput(Throughput::Bytes(recording.bytes));
        bytes.bench_function(recording.name, |bencher| bencher.iter(|| decode(recording)));
    }
    bytes.finish();
    let mut calls = criterion.benchmark_group("http1_calls");
    for recording in &recordings {
        calls.throughput(Throughput::Elements(recording.calls));
        calls.bench_function(recording.name, |bencher| bencher.iter(|| decode(recording)));
    }
    calls.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
