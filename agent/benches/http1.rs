//! HTTP/1 decoder throughput on recorded streams: many small keep-alive calls, large chunked
//! bodies, and a pipelined batch.

mod support;

use agent::protocols::http1;
use agent_common::Direction;
use criterion::{Criterion, criterion_group, criterion_main};

use self::support::{Recorder, Recording};

/// The agent's allocator, so the numbers are the agent's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

fn bench(criterion: &mut Criterion) {
    support::bench_recordings(criterion, "http1", http1::decoder, &recordings());
}

criterion_group!(benches, bench);
criterion_main!(benches);
