//! The per-event and per-call userspace paths: ring-buffer record decoding with stream
//! assembly, checking a call against the default security rules, and turning a decoded call
//! into its convention attributes and span.

use std::{hint::black_box, sync::Arc};

use agent::{
    analysis::{
        AnalyzedCall,
        security::{
            FindingCounts, SecurityAnalyzer,
            principal::PrincipalKeyer,
            rules::{ActiveRules, watch::RuleHandle},
        },
    },
    calls::Side,
    capture::CaptureEvent,
    export::otlp::{SpanIdentity, encode_span},
    protocols::http::HttpExchange,
    streams::{StreamOutput, StreamSettings, StreamTable},
    testing::{self, header},
};
use agent_common::{ConnectionEvent, DataHeader, Direction, EventKind, Role};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// The agent's allocator, so the numbers are the agent's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const REQUEST: &[u8] = b"GET /users/42 HTTP/1.1\r\nHost: api.local\r\nUser-Agent: bench\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";

fn as_bytes<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: the record types are plain repr(C) data.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn data_record(direction: Direction, payload: &[u8], offset: u64) -> Vec<u8> {
    let header = DataHeader {
        kind: EventKind::Data as u32,
        direction: direction as u32,
        flags: 0,
        tgid: u32::MAX,
        tid: 1,
        fd: 3,
        sock: 7,
        len: payload.len() as u64,
        captured: payload.len() as u32,
        reserved: 0,
        offset,
        ts_ns: 1,
        comm: *b"bench\0\0\0\0\0\0\0\0\0\0\0",
    };
    let mut record = as_bytes(&header);
    record.extend_from_slice(payload);
    record
}

/// A connection record then 1,000 request/response records, as the kernel writes them.
fn recorded_connection() -> Vec<Vec<u8>> {
    let connection = ConnectionEvent {
        kind: EventKind::Connection as u32,
        role: Role::Server as u32,
        tgid: u32::MAX,
        fd: 3,
        sock: 7,
        family: 2,
        local_port: 8080,
        peer_port: 50000,
        reserved: 0,
        local_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        peer_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ts_ns: 1,
        comm: *b"bench\0\0\0\0\0\0\0\0\0\0\0",
    };
    let mut records = vec![as_bytes(&connection)];
    for i in 0..1_000u64 {
        records.push(data_record(
            Direction::Ingress,
            REQUEST,
            i * REQUEST.len() as u64,
        ));
        records.push(data_record(
            Direction::Egress,
            RESPONSE,
            i * RESPONSE.len() as u64,
        ));
    }
    records
}

fn decode_and_assemble(c: &mut Criterion) {
    let records = recorded_connection();
    let mut group = c.benchmark_group("records");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("decode_and_assemble", |b| {
        b.iter(|| {
            let mut table = StreamTable::new(StreamSettings {
                max_connections: 1024,
                idle_timeout: std::time::Duration::MAX,
            });
            let mut out = StreamOutput::default();
            for record in &records {
                if let Ok(event) = CaptureEvent::decode(record) {
                    table.apply(event, &mut out);
                }
            }
            black_box(out.chunks.len())
        })
    });
    group.finish();
}

/// A served `GET /users/42?page=2` answered `200` with a 2-byte body.
fn analyzed_call() -> AnalyzedCall {
    let headers = vec![header("host", "api.local"), header("user-agent", "bench")];
    let mut analyzed = testing::call(Side::Server, 200, headers);
    let http = analyzed
        .call
        .call
        .exchange_mut::<HttpExchange>()
        .expect("the call is HTTP");
    http.request.method = "GET".into();
    http.request.target = "/users/42?page=2".into();
    http.request.body.size = 0;
    if let Some(response) = &mut http.response {
        response.body.size = 2;
    }
    analyzed
}

fn describe_and_build_span(c: &mut Criterion) {
    let call = analyzed_call();
    let mut group = c.benchmark_group("calls");
    group.throughput(Throughput::Elements(1));
    group.bench_function("describe_and_build_span", |b| {
        b.iter(|| {
            let description = testing::describe(black_box(&call.call.call), call.route.as_deref());
            let identity = SpanIdentity::of(&description);
            black_box(encode_span(&call.call.call, description, &[], &identity))
        })
    });
    group.finish();
}

/// One served call through every rule of the default pack: an ordinary request, and one whose
/// query carries SQL injection (the detectors' slow path: decoding, libinjection, a finding).
fn security_rules(c: &mut Criterion) {
    let rules = ActiveRules::load(&[] as &[&str]).expect("the default pack loads");
    let handle = RuleHandle::new(rules);
    let mut analyzer = SecurityAnalyzer::new(
        handle,
        PrincipalKeyer::random(),
        Arc::new(FindingCounts::default()),
    );
    let ordinary = analyzed_call();
    let mut attack = analyzed_call();
    let http = attack
        .call
        .call
        .exchange_mut::<HttpExchange>()
        .expect("the attack call is HTTP");
    http.request.target = "/users/42?q=1%27%20OR%20%271%27%3D%271%27%20--".into();
    let mut group = c.benchmark_group("security");
    group.throughput(Throughput::Elements(1));
    let mut now_ms = 1_700_000_000_000u64;
    for (name, call) in [("ordinary_call", &ordinary), ("sqli_call", &attack)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                now_ms += 1;
                black_box(analyzer.assess(black_box(&call.call), Some("/users/{id}"), 0, now_ms))
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    decode_and_assemble,
    security_rules,
    describe_and_build_span
);
criterion_main!(benches);
