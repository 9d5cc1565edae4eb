//! The per-event and per-call userspace paths: ring-buffer record decoding with stream
//! assembly, checking a call against the default security rules, turning a decoded call
//! into its convention attributes and span, and the replay of recorded ring-buffer records
//! through every stage of one stream worker (issue 27: calls per second per worker).

use std::{
    hint::black_box,
    sync::{Arc, Mutex},
};

use agent::{
    analysis::sensitive::SensitiveScanner,
    analysis::{
        AnalyzedCall, Analyzer,
        inventory::{Inventory, InventorySettings},
        routes::RouteSettings,
        security::{
            FindingCounts, SecurityAnalyzer,
            principal::PrincipalKeyer,
            rules::{ActiveRules, watch::RuleHandle},
        },
    },
    calls::{DescribeSettings, Side},
    capture::CaptureEvent,
    enrich::{Enricher, ProcessRegistry},
    export::otlp::{SpanIdentity, encode_span},
    protocols::{DecoderSettings, ProtocolStage, http::HttpExchange},
    streams::{StreamOutput, StreamSettings, StreamTable},
    testing::{self, header},
};
use agent_common::{ConnectionEvent, DataHeader, Direction, EventKind, Role};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// The agent's allocator, so the numbers are the agent's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const REQUEST: &[u8] = b"GET /users/42 HTTP/1.1\r\nHost: api.local\r\nUser-Agent: bench\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";

fn as_bytes<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: the record types are plain repr(C) data.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn data_record(fd: i32, sock: u64, direction: Direction, payload: &[u8], offset: u64) -> Vec<u8> {
    let header = DataHeader {
        kind: EventKind::Data as u32,
        direction: direction as u32,
        flags: 0,
        tgid: u32::MAX,
        tid: 1,
        fd,
        sock,
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

/// A connection record then `exchanges` request/response records, as the kernel writes them:
/// the server's end (requests in, responses out) or the client's.
fn recorded_connection(role: Role, fd: i32, exchanges: u64) -> Vec<Vec<u8>> {
    let (local_port, peer_port) = match role {
        Role::Server => (8080, 50_000 + fd as u32),
        _ => (50_000 + fd as u32, 8080),
    };
    let (request, response) = match role {
        Role::Server => (Direction::Ingress, Direction::Egress),
        _ => (Direction::Egress, Direction::Ingress),
    };
    let sock = 0x1000 + fd as u64;
    let connection = ConnectionEvent {
        kind: EventKind::Connection as u32,
        role: role as u32,
        tgid: u32::MAX,
        fd,
        sock,
        family: 2,
        local_port,
        peer_port,
        reserved: 0,
        local_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        peer_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ts_ns: 1,
        comm: *b"bench\0\0\0\0\0\0\0\0\0\0\0",
    };
    let mut records = vec![as_bytes(&connection)];
    for i in 0..exchanges {
        records.push(data_record(
            fd,
            sock,
            request,
            REQUEST,
            i * REQUEST.len() as u64,
        ));
        records.push(data_record(
            fd,
            sock,
            response,
            RESPONSE,
            i * RESPONSE.len() as u64,
        ));
    }
    records
}

fn decode_and_assemble(c: &mut Criterion) {
    let records = recorded_connection(Role::Server, 3, 1_000);
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

/// Connections of the replay and exchanges on each: both ends of 16 keep-alive connections,
/// like issue 27's `wrk -c16` against a local server.
const REPLAY_CONNECTIONS: i32 = 16;
const REPLAY_EXCHANGES: u64 = 256;

/// Records of the replay, interleaved one exchange of each connection at a time as the kernel
/// would write them under load.
fn replay_records() -> Vec<Vec<u8>> {
    let ends: Vec<Vec<Vec<u8>>> = (0..REPLAY_CONNECTIONS)
        .flat_map(|n| {
            [
                recorded_connection(Role::Server, 10 + n, REPLAY_EXCHANGES),
                recorded_connection(Role::Client, 100 + n, REPLAY_EXCHANGES),
            ]
        })
        .collect();
    let longest = ends.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| ends.iter().filter_map(move |end| end.get(i).cloned()))
        .collect()
}

/// The stages of one stream worker, fresh.
struct Worker {
    table: StreamTable,
    protocols: ProtocolStage,
    analyzer: Analyzer,
    enricher: Enricher,
}

impl Worker {
    fn new(rules: &Arc<RuleHandle>, scanner: &Arc<SensitiveScanner>) -> Self {
        let inventory = Inventory::new(
            InventorySettings::default(),
            Vec::new(),
            Arc::clone(scanner),
            1_700_000_000_000,
        );
        let security = SecurityAnalyzer::new(
            Arc::clone(rules),
            PrincipalKeyer::random(),
            Arc::new(FindingCounts::default()),
        );
        Self {
            table: StreamTable::new(StreamSettings {
                max_connections: 1024,
                idle_timeout: std::time::Duration::MAX,
            }),
            protocols: ProtocolStage::new(DecoderSettings::default()),
            analyzer: Analyzer::new(&RouteSettings::default(), DescribeSettings::default())
                .with_inventory(Arc::new(Mutex::new(inventory)))
                .with_security(security),
            enricher: Enricher::new(Arc::new(ProcessRegistry::default()), None),
        }
    }

    /// Replays `records` in batches of 512, as the reader hands them over: the calls decoded
    /// and the bytes of their spans.
    fn replay(mut self, records: &[Vec<u8>]) -> (u64, usize) {
        let mut out = StreamOutput::default();
        let mut decoded = Vec::new();
        let (mut calls, mut span_bytes) = (0, 0);
        for batch in records.chunks(512) {
            for record in batch {
                if let Ok(event) = CaptureEvent::decode(record) {
                    self.table.apply(event, &mut out);
                }
            }
            for chunk in &out.chunks {
                self.protocols.on_chunk(chunk, &mut decoded);
            }
            for connection in &out.connected {
                self.analyzer.connected(connection);
            }
            for call in decoded.drain(..) {
                let analyzed = self.analyzer.analyze(self.enricher.enrich(call));
                let identity = SpanIdentity::of(&analyzed.description);
                calls += 1;
                span_bytes += encode_span(
                    &analyzed.call.call,
                    analyzed.description,
                    &analyzed.events,
                    &identity,
                )
                .len();
            }
            out.clear();
        }
        (calls, span_bytes)
    }
}

/// Recorded ring-buffer records through one stream worker: decoding, stream assembly, HTTP/1,
/// enrichment, analysis (routes, inventory with the sensitive-data scan, every default security
/// rule) and the span's encoding, as fast as one core goes. What it leaves out is the export
/// task's work (batching, gzip, the network) and the metrics SDK.
fn replay(c: &mut Criterion) {
    let records = replay_records();
    let calls = 2 * REPLAY_CONNECTIONS as u64 * REPLAY_EXCHANGES;
    let rules = ActiveRules::load(&[] as &[&str]).expect("the default pack loads");
    let handle = RuleHandle::new(rules);
    let mut group = c.benchmark_group("stream_worker");
    group.throughput(Throughput::Elements(calls));
    group.sample_size(20);
    let scanner = Arc::new(SensitiveScanner::new());
    let (replayed, _) = Worker::new(&handle, &scanner).replay(&records);
    assert_eq!(
        replayed, calls,
        "every recorded exchange is a call on each end"
    );
    // Building the stages (the rules' and the scanner's automata) is start-up, not per call.
    group.bench_function("replay_calls", |b| {
        b.iter_batched(
            || Worker::new(&handle, &scanner),
            |worker| black_box(worker.replay(&records)),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    decode_and_assemble,
    security_rules,
    describe_and_build_span,
    replay
);
criterion_main!(benches);
