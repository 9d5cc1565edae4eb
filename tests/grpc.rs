//! End-to-end gRPC tests: the real agent (`apiscope run --otlp-endpoint ...`, as root) turns
//! gRPC calls into RPC spans and metrics, exported over OTLP to an in-process receiver
//! (support/otlp.rs). The same six calls (unary, large, server streaming, bidirectional,
//! NOT_FOUND) run between a real grpcio client and server in plaintext
//! (tests/fixtures/grpc_*.py) and between a real @grpc/grpc-js client and server over TLS
//! (tests/fixtures/grpc_node/), both with generic handlers over raw bytes, no generated code.
//!
//! The agent sees every HTTP/2 connection on the host, its own OTLP exports to the receiver
//! among them, so spans are picked by the pids of the fixture processes this test started.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::otlp::{
    self, AttrValue, EXPORT_EVERY_500_MS, FlatMetric, FlatSpan, OtlpReceiver, StatusCode,
    summarize_metrics, summarize_spans,
};
use support::{
    Agent, COMMAND_TIMEOUT, FIXTURE_READY_TIMEOUT, Proc, TempDir, fixture, free_port, make_cert,
    python, run,
};

/// How long the test waits for its spans at the receiver.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(30);
/// The fixtures' service.
const SERVICE: &str = "apiscope.test.Echo";

/// One call of grpc_client.py and what its two spans must say.
struct Expected {
    method: &'static str,
    status: i64,
    requests: i64,
    responses: i64,
    /// The client span is an error (any non-OK status).
    client_error: bool,
    /// The client sent its message gzip-compressed.
    compressed: bool,
}

/// The calls grpc_client.py makes, in order.
const CALLS: [Expected; 6] = [
    Expected {
        method: "Unary",
        status: 0,
        requests: 1,
        responses: 1,
        client_error: false,
        compressed: false,
    },
    // 200 KB each way: frames spread over writes larger than the capture cap.
    Expected {
        method: "Big",
        status: 0,
        requests: 1,
        responses: 1,
        client_error: false,
        compressed: false,
    },
    Expected {
        method: "Zip",
        status: 0,
        requests: 1,
        responses: 1,
        client_error: false,
        compressed: true,
    },
    Expected {
        method: "ServerStream",
        status: 0,
        requests: 1,
        responses: 3,
        client_error: false,
        compressed: false,
    },
    Expected {
        method: "Chat",
        status: 0,
        requests: 4,
        responses: 4,
        client_error: false,
        compressed: false,
    },
    // NOT_FOUND answers the request: an error for the client, not for the server.
    Expected {
        method: "Fail",
        status: 5,
        requests: 1,
        responses: 0,
        client_error: true,
        compressed: false,
    },
];

fn grpc_spans(spans: &[FlatSpan], pid: u32, server: bool) -> Vec<&FlatSpan> {
    spans
        .iter()
        .filter(|s| s.pid() == Some(pid) && s.is_server() == server && s.is_client() != server)
        .collect()
}

/// What is wrong with `span` as the span of `call` on one side.
fn problems(span: &FlatSpan, call: &Expected, server: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expect = |what: &str, ok: bool| {
        if !ok {
            problems.push(what.to_owned());
        }
    };
    expect("name", span.name == format!("{SERVICE}/{}", call.method));
    expect("rpc.system", span.attr_str("rpc.system") == Some("grpc"));
    expect("rpc.service", span.attr_str("rpc.service") == Some(SERVICE));
    expect(
        "rpc.method",
        span.attr_str("rpc.method") == Some(call.method),
    );
    expect(
        "rpc.grpc.status_code",
        span.attr_int("rpc.grpc.status_code") == Some(call.status),
    );
    expect(
        "request message count",
        span.attr_int("apiscope.rpc.request.message.count") == Some(call.requests),
    );
    expect(
        "response message count",
        span.attr_int("apiscope.rpc.response.message.count") == Some(call.responses),
    );
    let error = !server && call.client_error;
    expect(
        "span status",
        span.status_code
            == if error {
                StatusCode::Error
            } else {
                StatusCode::Unset
            },
    );
    expect(
        "error.type",
        span.attr_str("error.type") == error.then_some("NOT_FOUND"),
    );
    expect(
        "no HTTP attributes",
        span.attr("http.request.method").is_none() && span.attr("url.path").is_none(),
    );
    expect("complete", span.attr("apiscope.call.incomplete").is_none());
    expect("duration", span.duration_nanos() > 0);
    // The client's gzip-compressed message marks the call, whatever the reply.
    let compressed = span
        .attr("apiscope.grpc.compressed")
        .and_then(|v| v.as_bool());
    expect(
        "apiscope.grpc.compressed",
        compressed == call.compressed.then_some(true),
    );
    problems
}

#[test]
fn grpcio_calls_are_one_rpc_span_per_side() {
    let receiver = OtlpReceiver::start();
    let port = free_port();
    let server = support::start_python_server("grpc_server.py", port, &[]);
    let agent = receiver.agent(&[], EXPORT_EVERY_500_MS);
    let mut client = Command::new(python());
    client
        .arg("-u")
        .arg(fixture("grpc_client.py"))
        .args(["--port", &port.to_string()])
        .env("PYTHONDONTWRITEBYTECODE", "1");
    check_calls(&receiver, agent, server.pid(), &mut client);
}

/// gRPC over TLS between Node processes: grpc-js runs OpenSSL (linked into the `node`
/// executable) over memory BIOs, so the plaintext is tied to its socket by the ciphertext reads
/// around it rather than by a syscall inside `SSL_read`.
#[test]
fn grpc_js_calls_over_tls_are_one_rpc_span_per_side() {
    let dir = TempDir::new("grpc-js");
    let cert = make_cert(&dir);
    let receiver = OtlpReceiver::start();
    // The agent first, so that the uprobes are on the node executable before it starts.
    let agent = receiver.agent(&[], EXPORT_EVERY_500_MS);
    let port = free_port().to_string();
    let mut server = Proc::spawn(
        "grpc-js server",
        node_fixture("server.js")
            .args(["--port", &port, "--cert"])
            .arg(&cert.cert)
            .arg("--key")
            .arg(&cert.key),
    );
    server.wait_stdout_line("READY", FIXTURE_READY_TIMEOUT, |l| l.trim() == "READY");
    let mut client = node_fixture("client.js");
    client.args(["--port", &port, "--ca"]).arg(&cert.cert);
    check_calls(&receiver, agent, server.pid(), &mut client);
}

/// `node tests/fixtures/grpc_node/<script>`, with the fixture's own `node_modules`.
fn node_fixture(script: &str) -> Command {
    let dir = fixture("grpc_node");
    assert!(
        dir.join("node_modules/@grpc/grpc-js").is_dir(),
        "{} has no node_modules: run `cargo xtask setup --for-tests`",
        dir.display()
    );
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(script)).current_dir(&dir);
    cmd
}

/// Runs `client` (one of the fixture clients, which make [`CALLS`] and print what they saw)
/// against the server `server_pid`, then checks the spans and metrics the agent exported.
fn check_calls(receiver: &OtlpReceiver, mut agent: Agent, server_pid: u32, client: &mut Command) {
    let out = run(client, COMMAND_TIMEOUT);
    assert!(out.status.success(), "gRPC client: {}", out.describe());
    let seen: Vec<(String, String, i64)> = out
        .stdout_text()
        .lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("the gRPC client printed {line:?}: {e}"));
            (
                event["method"].as_str().unwrap_or_default().to_owned(),
                event["status"].as_str().unwrap_or_default().to_owned(),
                event["replies"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    let planned: Vec<(String, String, i64)> = CALLS
        .iter()
        .map(|c| {
            let status = if c.status == 0 { "OK" } else { "NOT_FOUND" };
            (c.method.to_owned(), status.to_owned(), c.responses)
        })
        .collect();
    assert_eq!(seen, planned, "what the client saw");
    let client_pid = out.pid;

    let wanted = |spans: &[FlatSpan]| {
        grpc_spans(spans, server_pid, true).len() >= CALLS.len()
            && grpc_spans(spans, client_pid, false).len() >= CALLS.len()
    };
    if let Err(spans) = receiver.try_wait_for_spans(wanted, EXPORT_TIMEOUT) {
        agent.fail(&format!(
            "the spans of {} gRPC calls did not arrive within {EXPORT_TIMEOUT:?}; got {}",
            CALLS.len(),
            summarize_spans(&spans)
        ));
    }
    // Stopping flushes the last batch and metric collection, so late duplicates show too.
    agent.stop();
    let spans = receiver.spans();
    let ours: Vec<&FlatSpan> = spans
        .iter()
        .filter(|s| s.pid() == Some(server_pid) || s.pid() == Some(client_pid))
        .collect();
    let dump = || summarize_spans(ours.iter().copied());
    for (side, pid, server) in [("server", server_pid, true), ("client", client_pid, false)] {
        let side_spans = grpc_spans(&spans, pid, server);
        assert_eq!(
            side_spans.len(),
            CALLS.len(),
            "{side} spans: one per call; {}",
            dump()
        );
        for call in &CALLS {
            let matching: Vec<&&FlatSpan> = side_spans
                .iter()
                .filter(|s| s.attr_str("rpc.method") == Some(call.method))
                .collect();
            assert_eq!(
                matching.len(),
                1,
                "{side} spans of {}; {}",
                call.method,
                dump()
            );
            let problems = problems(matching[0], call, server);
            assert!(
                problems.is_empty(),
                "{side} span of {}: wrong {problems:?} in {}",
                call.method,
                matching[0]
            );
        }
    }

    // Metrics: the RPC duration histograms count each call once per side, and a gRPC call is
    // not also measured as an HTTP request.
    let metrics = receiver.metrics();
    let mine = |m: &FlatMetric| m.pid() == Some(server_pid) || m.pid() == Some(client_pid);
    let shown = || summarize_metrics(metrics.iter().filter(|m| mine(m)));
    for (name, pid) in [
        ("rpc.server.call.duration", server_pid),
        ("rpc.client.call.duration", client_pid),
    ] {
        let series = otlp::collapse_series(
            metrics
                .iter()
                .filter(|m| m.name == name && m.pid() == Some(pid)),
        );
        for call in &CALLS {
            let count: u64 = series
                .iter()
                .filter(|m| m.attr_str("rpc.method") == Some(call.method))
                .inspect(|m| {
                    assert_eq!(m.unit, "s", "{name} unit");
                    assert_eq!(m.attr_str("rpc.system"), Some("grpc"));
                    assert_eq!(m.attr_str("rpc.service"), Some(SERVICE));
                    assert_eq!(m.attr_int("rpc.grpc.status_code"), Some(call.status));
                })
                .map(|m| m.count)
                .sum();
            assert_eq!(count, 1, "{name} count for {}; {}", call.method, shown());
        }
    }
    assert!(
        !metrics
            .iter()
            .any(|m| mine(m) && m.name.starts_with("http.")),
        "HTTP metrics for gRPC calls: {}",
        shown()
    );
}

/// The parts of a call a span says were not seen (`apiscope.call.incomplete`).
fn incomplete_parts(span: &FlatSpan) -> Vec<&str> {
    match span.attr("apiscope.call.incomplete") {
        Some(AttrValue::Array(parts)) => parts.iter().filter_map(AttrValue::as_str).collect(),
        _ => Vec::new(),
    }
}

/// A gRPC channel opened, and used, before the agent started: its later calls still give one
/// span per call on each side, marked as following a join (`resync`), with what could be
/// decoded and nothing guessed. Header fields that refer to HPACK entries the two warm-up
/// calls added before the agent saw anything are unknown and left out (`headers`).
#[test]
fn a_grpc_channel_opened_before_the_agent_keeps_yielding_spans() {
    let receiver = OtlpReceiver::start();
    let port = free_port();
    let server = support::start_python_server("grpc_server.py", port, &[]);
    let mut client =
        support::spawn_python("grpc_client.py", &["--port", &port.to_string(), "--pause"]);
    client.wait_stdout_line("PAUSED", FIXTURE_READY_TIMEOUT, |l| l.trim() == "PAUSED");
    let mut agent = receiver.agent(&[], EXPORT_EVERY_500_MS);
    client.write_line("go");
    let seen: Vec<String> = (0..CALLS.len())
        .map(|_| {
            let event = support::next_json_event(&mut client, "a call's outcome");
            event["method"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    let planned: Vec<&str> = CALLS.iter().map(|call| call.method).collect();
    assert_eq!(seen, planned, "what the client saw");
    let (server_pid, client_pid) = (server.pid(), client.pid());
    let side_spans = |spans: &[FlatSpan], pid: u32, server: bool| -> usize {
        spans
            .iter()
            .filter(|s| s.pid() == Some(pid) && s.is_server() == server)
            .count()
    };
    let wanted = |spans: &[FlatSpan]| {
        side_spans(spans, server_pid, true) >= CALLS.len()
            && side_spans(spans, client_pid, false) >= CALLS.len()
    };
    if let Err(spans) = receiver.try_wait_for_spans(wanted, EXPORT_TIMEOUT) {
        agent.fail(&format!(
            "the spans of {} calls on a joined connection did not arrive within \
             {EXPORT_TIMEOUT:?}; got {}",
            CALLS.len(),
            summarize_spans(&spans)
        ));
    }
    agent.stop();
    let spans = receiver.spans();
    for (side, pid, server) in [("server", server_pid, true), ("client", client_pid, false)] {
        let mine: Vec<&FlatSpan> = spans
            .iter()
            .filter(|s| s.pid() == Some(pid) && s.is_server() == server && s.is_client() != server)
            .collect();
        let dump = || summarize_spans(mine.iter().copied());
        assert_eq!(
            mine.len(),
            CALLS.len(),
            "{side}: one span per call; {}",
            dump()
        );
        for span in &mine {
            let parts = incomplete_parts(span);
            assert!(
                parts.contains(&"resync"),
                "{side} span not marked as joined: {span}"
            );
            // Whatever was decoded is right: a method is one that was called, with its status.
            let method = span.attr_str("rpc.method").or_else(|| {
                span.attr_str("url.path")?
                    .strip_prefix(&format!("/{SERVICE}/"))
            });
            if let Some(method) = method {
                let call = CALLS.iter().find(|c| c.method == method);
                assert!(
                    call.is_some(),
                    "{side} span of a method never called: {span}"
                );
                if let (Some(call), Some(status)) = (call, span.attr_int("rpc.grpc.status_code")) {
                    assert_eq!(status, call.status, "{side} status: {span}");
                }
            } else {
                assert!(
                    parts.contains(&"headers"),
                    "{side} span lost its method silently: {span}"
                );
            }
        }
    }
}
