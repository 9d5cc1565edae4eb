//! End-to-end OpenTelemetry tests: the real agent (`apiscope run
//! --otlp-endpoint ...`, as root) turns real HTTP/1.1 calls between curl (or
//! a raw-socket Python client) and the Python fixtures into spans and
//! metrics, exported over OTLP to an in-process receiver
//! (support/otlp.rs), directly or through a real collector (rotel,
//! support/rotel.rs).
//!
//! Every test starts its own receiver, servers and agent, and finds its own
//! spans by the pids of the processes it started (the resource's
//! `process.pid`): each agent sees all traffic on the host, so tests may run
//! in parallel. A test waits until the spans it expects have arrived, then
//! stops the agent (which flushes spans and metrics on SIGTERM) and checks
//! everything that was exported, so duplicates sent late are caught too.
//!
//! The tests without the agent (`otlp_receiver_round_trip`,
//! `rotel_starts_and_forwards`) need neither root nor the agent binary.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value,
};
use opentelemetry_proto::tonic::metrics::v1::{
    Histogram, HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics, metric,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;
use serde_json::Value;
use support::otlp::{
    self, AggregationTemporality, AttrValue, EXPORT_EVERY_500_MS, FlatMetric, FlatSpan, MetricKind,
    OtlpReceiver, SpanKind, StatusCode, summarize_metrics, summarize_spans,
};
use support::rotel::Rotel;
use support::{
    Agent, COMMAND_TIMEOUT, Finished, TempDir, find, fixture, python, random_hex, run,
    start_python_server,
};

/// How long a test waits for its spans (or metrics) at the receiver.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(20);
/// Slack between the agent's clock (kernel timestamps converted to Unix
/// time) and the test's wall clock.
const CLOCK_TOLERANCE_NS: u64 = 5_000_000;
// ---------------------------------------------------------------------------
// Environment facts
// ---------------------------------------------------------------------------

fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// The basename of /proc/PID/exe (the real executable, e.g. `python3.11`
/// behind a `python3` symlink).
fn exe_name_of_pid(pid: u32) -> String {
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/exe: {e}"));
    basename(&exe)
}

fn basename(path: &Path) -> String {
    path.file_name()
        .unwrap_or_else(|| panic!("{} has no file name", path.display()))
        .to_string_lossy()
        .into_owned()
}

/// The executable `name` runs as when found on PATH, symlinks resolved.
fn exe_name_on_path(name: &str) -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            let real: PathBuf = fs::canonicalize(&candidate)
                .unwrap_or_else(|e| panic!("canonicalize {}: {e}", candidate.display()));
            return basename(&real);
        }
    }
    panic!("{name} is not on PATH");
}

/// curl's executable name (its resource's `service.name`).
fn curl_exe() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| exe_name_on_path("curl"))
}

/// curl's default User-Agent, `curl/VERSION`.
fn curl_user_agent() -> &'static str {
    static UA: OnceLock<String> = OnceLock::new();
    UA.get_or_init(|| {
        let out = run(Command::new("curl").arg("--version"), COMMAND_TIMEOUT);
        assert!(out.status.success(), "curl --version: {}", out.describe());
        let text = out.stdout_text();
        let version = text
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("cannot parse `curl --version`: {text}"));
        format!("curl/{version}")
    })
}

fn host_name() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/hostname")
            .expect("read /proc/sys/kernel/hostname")
            .trim()
            .to_owned()
    })
}

// ---------------------------------------------------------------------------
// Servers, agent
// ---------------------------------------------------------------------------

/// A fixture server the test started.
struct Server {
    proc: support::Proc,
    scheme: &'static str,
    port: u16,
    exe: String,
    _cert_dir: Option<TempDir>,
}

impl Server {
    fn plain() -> Server {
        let port = support::free_port();
        let proc = start_python_server("http_server.py", port, &[]);
        let exe = exe_name_of_pid(proc.pid());
        Server {
            proc,
            scheme: "http",
            port,
            exe,
            _cert_dir: None,
        }
    }

    fn tls() -> Server {
        let dir = TempDir::new("otlp-tls");
        let port = support::free_port();
        let proc = support::start_https_server(&dir, port, &[]);
        let exe = exe_name_of_pid(proc.pid());
        Server {
            proc,
            scheme: "https",
            port,
            exe,
            _cert_dir: Some(dir),
        }
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    fn base(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }
}

/// `apiscope run --otlp-endpoint ENDPOINT --otlp-protocol PROTOCOL`, with
/// exports every 500 ms.
fn start_agent(endpoint: &str, protocol: &str) -> Agent {
    Agent::start_exporting(
        &["--otlp-endpoint", endpoint, "--otlp-protocol", protocol],
        EXPORT_EVERY_500_MS,
    )
}

/// Waits at `receiver` until `pred` holds; on timeout fails with the spans
/// received and the agent's log.
fn wait_spans(
    receiver: &OtlpReceiver,
    agent: &mut Agent,
    what: &str,
    pred: impl FnMut(&[FlatSpan]) -> bool,
) -> Vec<FlatSpan> {
    match receiver.try_wait_for_spans(pred, EXPORT_TIMEOUT) {
        Ok(spans) => spans,
        Err(spans) => agent.fail(&format!(
            "{what}: the expected spans did not reach the receiver within {EXPORT_TIMEOUT:?}; \
             got {}",
            summarize_spans(&spans)
        )),
    }
}

fn server_spans(spans: &[FlatSpan], server_pid: u32) -> Vec<&FlatSpan> {
    spans
        .iter()
        .filter(|s| s.is_server() && s.pid() == Some(server_pid))
        .collect()
}

fn client_spans<'a>(spans: &'a [FlatSpan], client_pids: &[u32]) -> Vec<&'a FlatSpan> {
    spans
        .iter()
        .filter(|s| s.is_client() && s.pid().is_some_and(|p| client_pids.contains(&p)))
        .collect()
}

/// Every span of these processes, whatever its kind (for messages).
fn spans_of<'a>(spans: &'a [FlatSpan], pids: &[u32]) -> Vec<&'a FlatSpan> {
    spans
        .iter()
        .filter(|s| s.pid().is_some_and(|p| pids.contains(&p)))
        .collect()
}

// ---------------------------------------------------------------------------
// curl calls and what their spans must say
// ---------------------------------------------------------------------------

/// One HTTP transfer of a curl run.
#[derive(Clone)]
struct Transfer {
    method: &'static str,
    /// Path and query, e.g. `/users/42?page=2`.
    target: String,
    body: Option<String>,
    headers: Vec<String>,
}

impl Transfer {
    fn get(target: &str) -> Transfer {
        Transfer {
            method: "GET",
            target: target.to_owned(),
            body: None,
            headers: Vec::new(),
        }
    }

    fn head(target: &str) -> Transfer {
        Transfer {
            method: "HEAD",
            ..Transfer::get(target)
        }
    }

    fn post(target: &str, body: &str) -> Transfer {
        Transfer {
            method: "POST",
            body: Some(body.to_owned()),
            ..Transfer::get(target)
        }
    }

    fn header(mut self, header: &str) -> Transfer {
        self.headers.push(header.to_owned());
        self
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
}

/// What curl reported for one transfer (`-w`).
#[derive(Clone, Copy, Debug)]
struct Outcome {
    status: i64,
    local_port: u16,
    size_download: i64,
    size_upload: i64,
}

/// One curl process, its transfers, and the wall-clock window around it.
struct CurlRun {
    pid: u32,
    start_ns: u64,
    end_ns: u64,
    outcomes: Vec<Outcome>,
    out: Finished,
}

const WRITE_OUT: &str = "\n@@%{http_code} %{local_port} %{size_download} %{size_upload}\n";

/// Runs ONE curl process making `transfers` (joined by `--next`, so they
/// share a keep-alive connection) to `base`, HTTP/1.1 only.
fn curl_run(base: &str, transfers: &[Transfer]) -> CurlRun {
    let mut cmd = Command::new("curl");
    for (n, t) in transfers.iter().enumerate() {
        if n > 0 {
            cmd.arg("--next");
        }
        cmd.args(["-s", "-k", "--http1.1", "--max-time", "30"]);
        for h in &t.headers {
            cmd.args(["-H", h]);
        }
        match (t.method, &t.body) {
            ("HEAD", _) => {
                cmd.arg("-I");
            }
            ("GET", None) => {}
            (method, Some(body)) => {
                cmd.args(["-X", method, "-H", "Content-Type: text/plain"])
                    .arg("--data-binary")
                    .arg(body);
            }
            (method, None) => {
                cmd.args(["-X", method]);
            }
        }
        cmd.args(["-w", WRITE_OUT])
            .arg(format!("{base}{}", t.target));
    }
    let start_ns = now_unix_nanos();
    let out = run(&mut cmd, COMMAND_TIMEOUT);
    let end_ns = now_unix_nanos();
    assert!(out.status.success(), "curl failed: {}", out.describe());
    let outcomes: Vec<Outcome> = out
        .stdout_text()
        .lines()
        .filter_map(|l| l.strip_prefix("@@"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let num = |i: usize| -> i64 {
                f.get(i)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("bad curl -w line {l:?}"))
            };
            Outcome {
                status: num(0),
                local_port: u16::try_from(num(1)).expect("port"),
                size_download: num(2),
                size_upload: num(3),
            }
        })
        .collect();
    assert_eq!(
        outcomes.len(),
        transfers.len(),
        "curl -w lines: {}",
        out.describe()
    );
    CurlRun {
        pid: out.pid,
        start_ns,
        end_ns,
        outcomes,
        out,
    }
}

/// Everything one call's SERVER and CLIENT spans must say.
#[derive(Clone, Debug)]
struct Expect {
    scheme: &'static str,
    method: String,
    path: String,
    /// The exported `url.query`, values redacted; None: no query.
    query: Option<String>,
    route: String,
    status: i64,
    /// None: no request body.
    req_body: Option<i64>,
    /// None: no response body.
    resp_body: Option<i64>,
    user_agent: String,
    server_port: u16,
    server_pid: u32,
    server_exe: String,
    client_pid: u32,
    client_exe: String,
    client_port: u16,
    /// Wall-clock window around the client process (Unix ns).
    window: (u64, u64),
}

impl Expect {
    fn from_curl(
        server: &Server,
        run: &CurlRun,
        n: usize,
        transfer: &Transfer,
        route: &str,
    ) -> Expect {
        let o = run.outcomes[n];
        Expect {
            scheme: server.scheme,
            method: transfer.method.to_owned(),
            path: transfer.path().to_owned(),
            query: transfer.query().map(redact_query),
            route: route.to_owned(),
            status: o.status,
            req_body: transfer.body.as_ref().map(|_| o.size_upload),
            resp_body: (o.size_download > 0).then_some(o.size_download),
            user_agent: curl_user_agent().to_owned(),
            server_port: server.port,
            server_pid: server.pid(),
            server_exe: server.exe.clone(),
            client_pid: run.pid,
            client_exe: curl_exe().to_owned(),
            client_port: o.local_port,
            window: (run.start_ns, run.end_ns),
        }
    }

    fn span_name(&self) -> String {
        format!("{} {}", self.method, self.route)
    }

    fn describe(&self) -> String {
        format!(
            "{} {}://…{}{} (status {}, client pid {} port {})",
            self.method,
            self.scheme,
            self.path,
            self.query
                .as_deref()
                .map_or(String::new(), |q| format!("?{q}")),
            self.status,
            self.client_pid,
            self.client_port
        )
    }
}

/// `a=1&b=2` -> `a=REDACTED&b=REDACTED`.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) => format!("{k}=REDACTED"),
            None => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Server,
    Client,
}

/// Collects what is wrong with `span` as the `side` span of call `e`.
fn check_span(span: &FlatSpan, e: &Expect, side: Side, problems: &mut Vec<String>) {
    let mut bad =
        |what: String| problems.push(format!("{side:?} span of {}: {what}", e.describe()));
    let want_kind = match side {
        Side::Server => SpanKind::Server,
        Side::Client => SpanKind::Client,
    };
    if span.kind != want_kind {
        bad(format!("kind {:?}, expected {want_kind:?}", span.kind));
    }

    // Resource.
    let (pid, exe) = match side {
        Side::Server => (e.server_pid, &e.server_exe),
        Side::Client => (e.client_pid, &e.client_exe),
    };
    let resource_expect: [(&str, AttrValue); 4] = [
        ("service.name", otlp::s(exe)),
        ("host.name", otlp::s(host_name())),
        ("process.pid", otlp::i(i64::from(pid))),
        ("process.executable.name", otlp::s(exe)),
    ];
    for (key, want) in resource_expect {
        match span.resource.get(key) {
            Some(got) if *got == want => {}
            got => bad(format!("resource {key} = {}, expected {want}", shown(got))),
        }
    }

    // Name and route.
    match (side, span.attr("http.route")) {
        (Side::Server, _) | (Side::Client, Some(_)) => {
            if span.name != e.span_name() {
                bad(format!(
                    "name {:?}, expected {:?}",
                    span.name,
                    e.span_name()
                ));
            }
            if span.attr_str("http.route") != Some(e.route.as_str()) {
                bad(format!(
                    "http.route = {}, expected {:?}",
                    shown(span.attr("http.route")),
                    e.route
                ));
            }
        }
        (Side::Client, None) => {
            if span.name != e.method {
                bad(format!(
                    "name {:?}, expected {:?} (no http.route on it)",
                    span.name, e.method
                ));
            }
        }
    }

    // Attributes with exact values.
    let mut expect: Vec<(&str, AttrValue)> = vec![
        ("http.request.method", otlp::s(&e.method)),
        ("url.path", otlp::s(&e.path)),
        ("url.scheme", otlp::s(e.scheme)),
        ("http.response.status_code", otlp::i(e.status)),
        ("server.address", otlp::s("127.0.0.1")),
        ("server.port", otlp::i(i64::from(e.server_port))),
        ("network.peer.address", otlp::s("127.0.0.1")),
        ("network.protocol.version", otlp::s("1.1")),
        ("user_agent.original", otlp::s(&e.user_agent)),
    ];
    match side {
        Side::Server => {
            expect.push(("client.address", otlp::s("127.0.0.1")));
            expect.push(("network.peer.port", otlp::i(i64::from(e.client_port))));
        }
        Side::Client => {
            expect.push(("network.peer.port", otlp::i(i64::from(e.server_port))));
        }
    }
    if let Some(q) = &e.query {
        expect.push(("url.query", otlp::s(q)));
    }
    if let Some(n) = e.req_body {
        expect.push(("http.request.body.size", otlp::i(n)));
    }
    if let Some(n) = e.resp_body {
        expect.push(("http.response.body.size", otlp::i(n)));
    }
    for (key, want) in expect {
        match span.attr(key) {
            Some(got) if *got == want => {}
            got => bad(format!("{key} = {}, expected {want}", shown(got))),
        }
    }
    if e.query.is_none() && span.attr("url.query").is_some() {
        bad(format!(
            "url.query = {} but the request had no query",
            shown(span.attr("url.query"))
        ));
    }
    // No body: the size is absent (or 0).
    for (key, expected) in [
        ("http.request.body.size", e.req_body),
        ("http.response.body.size", e.resp_body),
    ] {
        if expected.is_none()
            && let Some(got) = span.attr(key)
            && *got != otlp::i(0)
        {
            bad(format!("{key} = {got} but there was no body"));
        }
    }

    // Status.
    let error = match side {
        Side::Server => e.status >= 500,
        Side::Client => e.status >= 400,
    };
    let want_status = if error {
        StatusCode::Error
    } else {
        StatusCode::Unset
    };
    if span.status_code != want_status {
        bad(format!(
            "status {:?}, expected {want_status:?} for HTTP {}",
            span.status_code, e.status
        ));
    }

    // Ids.
    if !valid_id(&span.trace_id, 32) {
        bad(format!("trace id {:?} is not valid", span.trace_id));
    }
    if !valid_id(&span.span_id, 16) {
        bad(format!("span id {:?} is not valid", span.span_id));
    }

    // Kernel timestamps inside the wall-clock window of the client process.
    let (lo, hi) = e.window;
    let (start, end) = (span.start_unix_nano, span.end_unix_nano);
    if start + CLOCK_TOLERANCE_NS < lo {
        bad(format!(
            "starts {} ms before the client process started",
            (lo - start) as f64 / 1e6
        ));
    }
    if end > hi + CLOCK_TOLERANCE_NS {
        bad(format!(
            "ends {} ms after the client process ended",
            (end - hi) as f64 / 1e6
        ));
    }
    let duration = span.duration_nanos();
    if duration <= 0 {
        bad(format!("duration {duration} ns is not positive"));
    } else if duration > i128::from(hi - lo + CLOCK_TOLERANCE_NS) {
        bad(format!(
            "duration {} ms exceeds the wall time {} ms around the client",
            duration as f64 / 1e6,
            (hi - lo) as f64 / 1e6
        ));
    }
}

/// An attribute value as shown in messages.
fn shown(value: Option<&AttrValue>) -> String {
    value.map_or("<absent>".to_owned(), ToString::to_string)
}

/// `len` lowercase hex digits, not all zero.
fn valid_id(id: &str, len: usize) -> bool {
    id.len() == len
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && id.bytes().any(|b| b != b'0')
}

/// Asserts the spans match the calls one to one: for every call exactly one
/// SERVER span (from the server's pid, with its method and path) and one
/// CLIENT span (from the client's pid, with its method and path), each with
/// every attribute right, and no other SERVER span from the server nor
/// CLIENT span from the clients.
fn assert_calls_match_spans(spans: &[FlatSpan], calls: &[Expect], what: &str) {
    let mut problems = Vec::new();
    let server_pids: BTreeSet<u32> = calls.iter().map(|c| c.server_pid).collect();
    let client_pids: Vec<u32> = calls
        .iter()
        .map(|c| c.client_pid)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let servers: Vec<&FlatSpan> = spans
        .iter()
        .filter(|s| s.is_server() && s.pid().is_some_and(|p| server_pids.contains(&p)))
        .collect();
    let clients = client_spans(spans, &client_pids);
    if servers.len() != calls.len() {
        problems.push(format!(
            "{} SERVER spans from the server(s) {server_pids:?}, expected {}",
            servers.len(),
            calls.len()
        ));
    }
    if clients.len() != calls.len() {
        problems.push(format!(
            "{} CLIENT spans from the client(s) {client_pids:?}, expected {}",
            clients.len(),
            calls.len()
        ));
    }
    let matches = |s: &FlatSpan, c: &Expect, pid: u32| {
        s.pid() == Some(pid)
            && s.attr_str("http.request.method") == Some(c.method.as_str())
            && s.attr_str("url.path") == Some(c.path.as_str())
    };
    for call in calls {
        for (side, candidates, pid) in [
            (Side::Server, &servers, call.server_pid),
            (Side::Client, &clients, call.client_pid),
        ] {
            let found: Vec<&&FlatSpan> = candidates
                .iter()
                .filter(|s| matches(s, call, pid))
                .collect();
            match found.as_slice() {
                [one] => check_span(one, call, side, &mut problems),
                _ => problems.push(format!(
                    "{} {side:?} spans (pid {pid}) for {}, expected exactly one",
                    found.len(),
                    call.describe()
                )),
            }
        }
    }
    if !problems.is_empty() {
        let mut pids: Vec<u32> = server_pids.into_iter().collect();
        pids.extend(&client_pids);
        panic!(
            "{what}: {} problems:\n  {}\nspans of the test's processes: {}",
            problems.len(),
            problems.join("\n  "),
            summarize_spans(spans_of(spans, &pids))
        );
    }
}

/// True once `spans` hold at least `servers` SERVER spans from `server_pid`
/// and `clients` CLIENT spans from `client_pids`.
fn have_spans(
    spans: &[FlatSpan],
    server_pid: u32,
    servers: usize,
    client_pids: &[u32],
    clients: usize,
) -> bool {
    server_spans(spans, server_pid).len() >= servers
        && client_spans(spans, client_pids).len() >= clients
}

// ---------------------------------------------------------------------------
// (a) one SERVER and one CLIENT span per call, plain and TLS
// ---------------------------------------------------------------------------

/// The five calls of `each_call_is_one_server_and_one_client_span`, with the
/// route each must get.
fn five_calls() -> Vec<(Transfer, &'static str)> {
    vec![
        (Transfer::get("/users/41"), "/users/{id}"),
        (Transfer::get("/users/42?page=2&sort=name"), "/users/{id}"),
        (
            Transfer::post("/hello", "hello from the apiscope e2e test"),
            "/hello",
        ),
        (Transfer::get("/fail/notfound"), "/fail/notfound"),
        (Transfer::get("/fail/boom"), "/fail/boom"),
    ]
}

#[test]
fn each_call_is_one_server_and_one_client_span() {
    let receiver = OtlpReceiver::start();
    let plain = Server::plain();
    let tls = Server::tls();
    let mut agent = receiver.agent(&[], EXPORT_EVERY_500_MS);

    let mut calls = Vec::new();
    for server in [&plain, &tls] {
        for (transfer, route) in five_calls() {
            let run = curl_run(&server.base(), std::slice::from_ref(&transfer));
            calls.push(Expect::from_curl(server, &run, 0, &transfer, route));
        }
    }
    let statuses: Vec<i64> = calls.iter().map(|c| c.status).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 404, 500, 200, 200, 200, 404, 500],
        "statuses curl got"
    );
    let client_pids: Vec<u32> = calls.iter().map(|c| c.client_pid).collect();

    wait_spans(&receiver, &mut agent, "10 calls", |spans| {
        have_spans(spans, plain.pid(), 5, &client_pids, 10)
            && server_spans(spans, tls.pid()).len() >= 5
    });
    agent.stop();
    let spans = receiver.spans();
    assert_calls_match_spans(&spans, &calls, "5 calls each to http and https");

    // The TLS server's spans carry its client's JA4, read from the ClientHello the kernel saw:
    // one curl build, one fingerprint. Plaintext and client spans have none.
    let fingerprints: BTreeSet<Option<&str>> = server_spans(&spans, tls.pid())
        .iter()
        .map(|span| span.attr_str("tls.client.ja4"))
        .collect();
    let [Some(ja4)] = fingerprints.iter().copied().collect::<Vec<_>>()[..] else {
        panic!("TLS server spans' tls.client.ja4: {fingerprints:?}");
    };
    let parts: Vec<&str> = ja4.split('_').collect();
    assert!(
        ja4.starts_with("t1") && parts.len() == 3 && parts[0].len() == 10,
        "{ja4} is not shaped as a JA4"
    );
    let elsewhere = spans_of(&spans, &[plain.pid()])
        .into_iter()
        .chain(client_spans(&spans, &client_pids))
        .find(|span| span.attr_str("tls.client.ja4").is_some());
    assert!(elsewhere.is_none(), "{elsewhere:?}");
}

// ---------------------------------------------------------------------------
// (b) pipelining: three requests in one write
// ---------------------------------------------------------------------------

#[test]
fn pipelined_requests_are_paired_with_their_own_responses() {
    let receiver = OtlpReceiver::start();
    let server = Server::plain();
    let mut agent = receiver.agent(&[], EXPORT_EVERY_500_MS);

    let start_ns = now_unix_nanos();
    let out = run(
        Command::new(python())
            .arg("-u")
            .arg(fixture("pipeline_client.py"))
            .args(["--port", &server.port.to_string()])
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        COMMAND_TIMEOUT,
    );
    let end_ns = now_unix_nanos();
    assert!(
        out.status.success(),
        "pipeline_client.py: {}",
        out.describe()
    );
    let event: Value = serde_json::from_str(out.stdout_text().trim()).unwrap_or_else(|e| {
        panic!(
            "pipeline_client.py printed no JSON ({e}): {}",
            out.describe()
        )
    });
    let local = event["local"].as_str().expect("local");
    let client_port: u16 = local
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("bad local address {local:?}"));
    let client_pid = out.pid;

    // (method, path, status, request body, response body)
    let pairs: [(&str, &str, i64, Option<i64>, i64); 3] = [
        ("GET", "/pipe/1", 200, None, 1),
        ("POST", "/pipe/2", 404, Some(2), 2),
        ("PUT", "/pipe/3", 201, Some(3), 3),
    ];
    wait_spans(&receiver, &mut agent, "3 pipelined calls", |spans| {
        have_spans(spans, server.pid(), 3, &[client_pid], 3)
    });
    agent.stop();
    let spans = receiver.spans();

    let python_exe = exe_name_of_pid(server.pid());
    let calls: Vec<Expect> = pairs
        .iter()
        .map(|&(method, path, status, req_body, resp_body)| Expect {
            scheme: "http",
            method: method.to_owned(),
            path: path.to_owned(),
            query: None,
            route: "/pipe/{id}".to_owned(),
            status,
            req_body,
            resp_body: Some(resp_body),
            user_agent: "apiscope-e2e-pipeline".to_owned(),
            server_port: server.port,
            server_pid: server.pid(),
            server_exe: server.exe.clone(),
            client_pid,
            client_exe: python_exe.clone(),
            client_port,
            window: (start_ns, end_ns),
        })
        .collect();
    assert_calls_match_spans(&spans, &calls, "3 pipelined requests on one connection");

    // In request order on the wire: responses end one after the other.
    let ends: Vec<u64> = pairs
        .iter()
        .map(|(_, path, ..)| {
            server_spans(&spans, server.pid())
                .iter()
                .find(|s| s.attr_str("url.path") == Some(path))
                .map(|s| s.end_unix_nano)
                .expect("checked above")
        })
        .collect();
    assert!(
        ends.windows(2).all(|w| w[0] <= w[1]),
        "pipelined responses end out of order: {ends:?}"
    );
}

// ---------------------------------------------------------------------------
// (c) chunked response, HEAD, 204, Expect: 100-continue
// ---------------------------------------------------------------------------

#[test]
fn chunked_head_no_content_and_expect_continue_are_one_call_each() {
    let receiver = OtlpReceiver::start();
    let server = Server::plain();
    let mut agent = receiver.agent(&[], EXPORT_EVERY_500_MS);
    let base = server.base();

    let upload = "u".repeat(3000);
    // One curl process per line; a line's transfers share one connection.
    let plan: Vec<Vec<(Transfer, &str)>> = vec![
        vec![(Transfer::get("/chunked"), "/chunked")],
        vec![
            (Transfer::head("/hello"), "/hello"),
            (Transfer::get("/after-head"), "/after-head"),
        ],
        vec![
            (Transfer::get("/nocontent"), "/nocontent"),
            (Transfer::get("/after-nocontent"), "/after-nocontent"),
        ],
        vec![(
            Transfer::post("/upload", &upload).header("Expect: 100-continue"),
            "/upload",
        )],
    ];
    let mut calls = Vec::new();
    for line in &plan {
        let transfers: Vec<Transfer> = line.iter().map(|(t, _)| t.clone()).collect();
        let run = curl_run(&base, &transfers);
        let ports: BTreeSet<u16> = run.outcomes.iter().map(|o| o.local_port).collect();
        assert_eq!(
            ports.len(),
            1,
            "curl did not keep one connection for {:?}: {}",
            transfers.iter().map(|t| &t.target).collect::<Vec<_>>(),
            run.out.describe()
        );
        for (n, (transfer, route)) in line.iter().enumerate() {
            calls.push(Expect::from_curl(&server, &run, n, transfer, route));
        }
    }
    let got: Vec<(String, i64, Option<i64>, Option<i64>)> = calls
        .iter()
        .map(|c| (c.path.clone(), c.status, c.req_body, c.resp_body))
        .collect();
    let after_head = "ok GET /after-head 0\n".len() as i64;
    let after_204 = "ok GET /after-nocontent 0\n".len() as i64;
    let upload_answer = format!("ok POST /upload {}\n", upload.len()).len() as i64;
    assert_eq!(
        got,
        [
            ("/chunked".to_owned(), 200, None, Some(16)),
            ("/hello".to_owned(), 200, None, None),
            ("/after-head".to_owned(), 200, None, Some(after_head)),
            ("/nocontent".to_owned(), 204, None, None),
            ("/after-nocontent".to_owned(), 200, None, Some(after_204)),
            ("/upload".to_owned(), 200, Some(3000), Some(upload_answer)),
        ],
        "what curl saw"
    );
    let client_pids: Vec<u32> = calls.iter().map(|c| c.client_pid).collect();

    wait_spans(&receiver, &mut agent, "6 calls", |spans| {
        have_spans(spans, server.pid(), 6, &client_pids, 6)
    });
    agent.stop();
    let spans = receiver.spans();
    assert_calls_match_spans(&spans, &calls, "chunked, HEAD, 204, 100-continue");
}

// ---------------------------------------------------------------------------
// (d) W3C traceparent
// ---------------------------------------------------------------------------

#[test]
fn traceparent_sets_trace_and_parent_ids() {
    let receiver = OtlpReceiver::start();
    let server = Server::plain();
    let mut agent = receiver.agent(&[], EXPORT_EVERY_500_MS);

    let trace_id = random_hex(16);
    let parent_id = random_hex(8);
    let traced =
        Transfer::get("/users/7").header(&format!("traceparent: 00-{trace_id}-{parent_id}-01"));
    let untraced = Transfer::get("/users/8");
    let run1 = curl_run(&server.base(), std::slice::from_ref(&traced));
    let run2 = curl_run(&server.base(), std::slice::from_ref(&untraced));
    let calls = [
        Expect::from_curl(&server, &run1, 0, &traced, "/users/{id}"),
        Expect::from_curl(&server, &run2, 0, &untraced, "/users/{id}"),
    ];

    wait_spans(&receiver, &mut agent, "2 calls", |spans| {
        have_spans(spans, server.pid(), 2, &[run1.pid, run2.pid], 2)
    });
    agent.stop();
    let spans = receiver.spans();
    assert_calls_match_spans(&spans, &calls, "traceparent");

    let pick = |kind: SpanKind, pid: u32, path: &str| -> &FlatSpan {
        spans
            .iter()
            .find(|s| {
                s.kind == kind && s.pid() == Some(pid) && s.attr_str("url.path") == Some(path)
            })
            .expect("checked by assert_calls_match_spans")
    };
    let summary = || summarize_spans(spans_of(&spans, &[server.pid(), run1.pid, run2.pid]));
    for span in [
        pick(SpanKind::Server, server.pid(), "/users/7"),
        pick(SpanKind::Client, run1.pid, "/users/7"),
    ] {
        assert!(
            span.trace_id == trace_id && span.parent_span_id == parent_id,
            "{:?} span of the call with traceparent 00-{trace_id}-{parent_id}-01 has trace {} \
             parent {:?}; {}",
            span.kind,
            span.trace_id,
            span.parent_span_id,
            summary()
        );
        assert_ne!(
            span.span_id,
            parent_id,
            "{:?} span reuses the caller's span id; {}",
            span.kind,
            summary()
        );
    }
    for span in [
        pick(SpanKind::Server, server.pid(), "/users/8"),
        pick(SpanKind::Client, run2.pid, "/users/8"),
    ] {
        assert!(
            span.trace_id != trace_id && span.parent_span_id.is_empty(),
            "{:?} span of the call without traceparent: trace {} (the other call's is \
             {trace_id}), parent {:?}, expected a new trace and no parent; {}",
            span.kind,
            span.trace_id,
            span.parent_span_id,
            summary()
        );
    }
}

// ---------------------------------------------------------------------------
// (d2) sampling: which spans are exported, by the OpenTelemetry sampler variables
// ---------------------------------------------------------------------------

/// A trace id (hex) whose ratio draw, as the SDK's `traceidratio` sampler reads it (the low
/// 8 bytes shifted right by one, against `ratio * 2^63`), is `draw` of 1.
fn trace_id_with_draw(draw: f64) -> String {
    let low = ((draw * (1u64 << 63) as f64) as u64) << 1;
    format!("{}{low:016x}", random_hex(8))
}

/// The ratio draw of hex trace id `trace_id`, 0 to 1.
fn draw_of(trace_id: &str) -> f64 {
    let low = u64::from_str_radix(&trace_id[16..], 16).expect("hex trace id");
    (low >> 1) as f64 / (1u64 << 63) as f64
}

/// The server spans of `server` by path.
fn server_paths<'a>(spans: &'a [FlatSpan], server: &Server) -> Vec<&'a str> {
    server_spans(spans, server.pid())
        .into_iter()
        .filter_map(|span| span.attr_str("url.path"))
        .collect()
}

/// The count of `http.server.request.duration` over `server`'s calls, once the agent stopped.
fn server_calls_measured(receiver: &OtlpReceiver, server: &Server) -> u64 {
    let metrics = receiver.metrics();
    total_count(&histogram_series(
        &metrics,
        "http.server.request.duration",
        |m| m.pid() == Some(server.pid()),
    ))
}

#[test]
fn the_sampler_variables_choose_spans_by_trace_id_and_by_the_callers_decision() {
    let receiver = OtlpReceiver::start();
    let server = Server::plain();
    let sampler = [
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
    ];
    // The sampler alone: the first call of each new endpoint would be kept for its event.
    let mut agent = receiver.agent(
        &["--set", "export.otlp.sampling.keep_with_events=false"],
        &[EXPORT_EVERY_500_MS, &sampler].concat(),
    );
    // A caller that did not sample its trace wins over a draw the ratio would keep, and one
    // that did wins over a draw it would not; requests without a traceparent start a trace of
    // their own, kept by the ratio.
    let traceparent = |draw: f64, flags: &str| {
        format!(
            "traceparent: 00-{}-{}-{flags}",
            trace_id_with_draw(draw),
            random_hex(8)
        )
    };
    const ROOTS: usize = 40;
    let mut transfers = vec![
        Transfer::get("/sampled/caller-said-no").header(&traceparent(0.1, "00")),
        Transfer::get("/sampled/caller-said-yes").header(&traceparent(0.9, "01")),
    ];
    transfers.extend((0..ROOTS).map(|n| Transfer::get(&format!("/sampled/root/{n}"))));
    // Last, and kept: once its span is in, every call before it on the connection was recorded.
    transfers.push(Transfer::get("/sampled/last").header(&traceparent(0.9, "01")));
    let run = curl_run(&server.base(), &transfers);
    wait_spans(&receiver, &mut agent, "the last call's span", |spans| {
        server_paths(spans, &server).contains(&"/sampled/last")
    });
    let metrics = agent.get("/metrics");
    agent.stop();
    let spans = receiver.spans();
    let summary = || summarize_spans(spans_of(&spans, &[server.pid(), run.pid]));
    // Each side decides alone, the same way: curl sends the traceparents the server reads, and
    // each side draws its own trace id for a root.
    for side in [
        server_spans(&spans, server.pid()),
        client_spans(&spans, &[run.pid]),
    ] {
        let paths: Vec<&str> = side.iter().filter_map(|s| s.attr_str("url.path")).collect();
        assert!(!paths.contains(&"/sampled/caller-said-no"), "{}", summary());
        assert!(paths.contains(&"/sampled/caller-said-yes"), "{}", summary());
        let roots: Vec<&&FlatSpan> = side
            .iter()
            .filter(|span| {
                span.attr_str("url.path")
                    .is_some_and(|p| p.starts_with("/sampled/root/"))
            })
            .collect();
        for root in &roots {
            assert!(
                draw_of(&root.trace_id) < 0.25,
                "root span of trace {} (draw {:.3}) exported at a ratio of 0.25",
                root.trace_id,
                draw_of(&root.trace_id)
            );
        }
        // 40 draws at 0.25: none kept, or all, has a chance below 1e-5.
        assert!(
            !roots.is_empty() && roots.len() < ROOTS,
            "{} of {ROOTS} root spans exported at a ratio of 0.25",
            roots.len()
        );
    }
    // Sampling leaves the metrics whole.
    assert_eq!(
        server_calls_measured(&receiver, &server),
        transfers.len() as u64
    );
    assert!(
        support::metric_sample(&metrics, "apiscope_export_spans_not_sampled_total") >= 2,
        "{metrics}"
    );
}

#[test]
fn with_no_sampling_failed_calls_and_findings_keep_their_spans() {
    let receiver = OtlpReceiver::start();
    let server = Server::plain();
    let sampler = [("OTEL_TRACES_SAMPLER", "always_off")];
    let mut agent = receiver.agent(&[], &[EXPORT_EVERY_500_MS, &sampler].concat());
    // The first call of each endpoint is kept for its event (the endpoint is new); the second
    // call of `/fail/boom` only because it failed, and the second of `/search` only for its
    // finding. The second of `/orders/{id}` is not kept.
    let injection = "/search?q=1%27%20OR%20%271%27%3D%271%27%20--";
    let transfers = [
        Transfer::get("/orders/1"),
        Transfer::get("/orders/2"),
        Transfer::get("/fail/boom"),
        Transfer::get("/fail/boom"),
        Transfer::get("/search?q=shoes"),
        Transfer::get(injection),
    ];
    let run = curl_run(&server.base(), &transfers);
    let searches = |spans: &[FlatSpan]| {
        server_paths(spans, &server)
            .iter()
            .filter(|path| **path == "/search")
            .count()
    };
    wait_spans(&receiver, &mut agent, "the finding's span", |spans| {
        searches(spans) == 2
    });
    let inventory: Value = serde_json::from_str(&agent.get("/inventory")).expect("JSON");
    agent.stop();
    let spans = receiver.spans();
    let summary = || summarize_spans(spans_of(&spans, &[server.pid(), run.pid]));
    let mut paths = server_paths(&spans, &server);
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/fail/boom",
            "/fail/boom",
            "/orders/1",
            "/search",
            "/search"
        ],
        "{}",
        summary()
    );
    let finding_span = server_spans(&spans, server.pid())
        .into_iter()
        .filter(|span| span.attr_str("url.path") == Some("/search"))
        .max_by_key(|span| span.start_unix_nano)
        .expect("checked above");
    let logs = receiver.wait_for_logs(
        |logs| {
            logs.iter()
                .any(|log| log.event_name == "api.security.finding")
        },
        Duration::from_secs(30),
    );
    assert!(
        logs.iter()
            .any(|log| log.event_name == "api.security.finding"
                && log.trace_id == finding_span.trace_id
                && log.span_id == finding_span.span_id),
        "no finding names the kept span {}",
        finding_span.span_id
    );
    // Every call still counts in the metrics and the inventory.
    assert_eq!(
        server_calls_measured(&receiver, &server),
        transfers.len() as u64
    );
    let endpoints: Vec<&str> = inventory["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|service| service["endpoints"].as_array().into_iter().flatten())
        .filter_map(|endpoint| endpoint["endpoint"].as_str())
        .collect();
    assert!(
        endpoints.contains(&"GET /orders/{id}"),
        "the unsampled calls' endpoint is not in the inventory: {inventory}"
    );
}

// ---------------------------------------------------------------------------
// (e) secrets never leave the host
// ---------------------------------------------------------------------------

#[test]
fn secrets_in_headers_and_query_are_never_exported() {
    let receiver = OtlpReceiver::start();
    let plain = Server::plain();
    let tls = Server::tls();
    let mut agent = receiver.agent(&[], EXPORT_EVERY_500_MS);

    let bearer = format!("bearer{}", random_hex(16));
    let session = format!("session{}", random_hex(16));
    let api_key = format!("apikey{}", random_hex(16));
    let transfer = Transfer::get(&format!("/login?api_key={api_key}&page=1"))
        .header(&format!("Authorization: Bearer {bearer}"))
        .header(&format!("Cookie: session={session}"));
    let mut calls = Vec::new();
    for server in [&plain, &tls] {
        let run = curl_run(&server.base(), std::slice::from_ref(&transfer));
        calls.push(Expect::from_curl(server, &run, 0, &transfer, "/login"));
    }
    let client_pids: Vec<u32> = calls.iter().map(|c| c.client_pid).collect();
    wait_spans(&receiver, &mut agent, "2 calls with secrets", |spans| {
        have_spans(spans, plain.pid(), 1, &client_pids, 2)
            && !server_spans(spans, tls.pid()).is_empty()
    });
    agent.stop();
    let spans = receiver.spans();
    assert_calls_match_spans(&spans, &calls, "calls with secrets");
    assert_eq!(
        calls[0].query.as_deref(),
        Some("api_key=REDACTED&page=REDACTED")
    );

    let metrics = receiver.metrics();
    assert!(
        metrics
            .iter()
            .any(|m| m.pid() == Some(plain.pid()) && m.name == "http.server.request.duration"),
        "no metrics of the server were exported, so the secret search would miss them; got {}",
        summarize_metrics(&metrics)
    );
    let exported = receiver.all_bytes();
    for (what, secret) in [
        ("Authorization bearer token", &bearer),
        ("session cookie", &session),
        ("api_key query value", &api_key),
    ] {
        assert!(
            find(&exported, secret.as_bytes()).is_none(),
            "the {what} {secret:?} was exported ({} bytes in {} export requests searched); \
             spans: {}",
            exported.len(),
            receiver.request_count(),
            summarize_spans(spans.iter().filter(|s| {
                s.attributes
                    .values()
                    .chain(s.resource.values())
                    .any(|v| v.to_string().contains(secret.as_str()))
            }))
        );
    }
}

// ---------------------------------------------------------------------------
// (f) histograms count every call exactly once
// ---------------------------------------------------------------------------

/// The collapsed series of histogram `name` whose resource passes `pred`.
fn histogram_series(
    metrics: &[FlatMetric],
    name: &str,
    pred: impl Fn(&FlatMetric) -> bool,
) -> Vec<FlatMetric> {
    otlp::collapse_series(metrics.iter().filter(|m| m.name == name && pred(m)))
}

fn total_count(series: &[FlatMetric]) -> u64 {
    series.iter().map(|m| m.count).sum()
}

fn total_sum(series: &[FlatMetric]) -> f64 {
    series.iter().filter_map(|m| m.sum).sum()
}

#[test]
fn http_histograms_count_every_call_once() {
    let receiver = OtlpReceiver::start();
    let server = Server::plain();
    let mut agent = receiver.agent(&[], EXPORT_EVERY_500_MS);

    let body = "histogram body of forty-two bytes........";
    let plan = [
        (Transfer::get("/users/1"), "/users/{id}"),
        (Transfer::get("/users/2"), "/users/{id}"),
        (Transfer::get("/users/3"), "/users/{id}"),
        (Transfer::post("/hello", body), "/hello"),
        (Transfer::post("/hello", body), "/hello"),
    ];
    let mut calls = Vec::new();
    for (transfer, route) in &plan {
        let run = curl_run(&server.base(), std::slice::from_ref(transfer));
        calls.push(Expect::from_curl(&server, &run, 0, transfer, route));
    }
    let client_pids: Vec<u32> = calls.iter().map(|c| c.client_pid).collect();
    wait_spans(&receiver, &mut agent, "5 calls", |spans| {
        have_spans(spans, server.pid(), 5, &client_pids, 5)
    });
    // Stopping flushes the last collection.
    agent.stop();
    let metrics = receiver.metrics();
    let dump = || {
        summarize_metrics(metrics.iter().filter(|m| {
            m.name.starts_with("http.")
                && m.pid()
                    .is_some_and(|p| p == server.pid() || client_pids.contains(&p))
        }))
    };
    let body_len = body.len() as i64;
    let resp_total: i64 = calls.iter().filter_map(|c| c.resp_body).sum();
    let wall_total: f64 = calls
        .iter()
        .map(|c| (c.window.1 - c.window.0) as f64 / 1e9)
        .sum();

    let is_server = |m: &FlatMetric| m.pid() == Some(server.pid());
    let is_client = |m: &FlatMetric| m.pid().is_some_and(|p| client_pids.contains(&p));

    // Durations, server side: per route.
    let server_duration = histogram_series(&metrics, "http.server.request.duration", is_server);
    for m in &server_duration {
        let problems = histogram_problems(m, "s", "http", true, &server.exe);
        assert!(problems.is_empty(), "{problems:?} in {m}; all: {}", dump());
    }
    let by_route = |series: &[FlatMetric], route: &str| -> Vec<FlatMetric> {
        series
            .iter()
            .filter(|m| m.attr_str("http.route") == Some(route))
            .cloned()
            .collect()
    };
    assert_eq!(
        total_count(&by_route(&server_duration, "/users/{id}")),
        3,
        "http.server.request.duration count for GET /users/{{id}}; {}",
        dump()
    );
    assert_eq!(
        total_count(&by_route(&server_duration, "/hello")),
        2,
        "http.server.request.duration count for POST /hello; {}",
        dump()
    );
    assert_eq!(
        total_count(&server_duration),
        5,
        "http.server.request.duration total count; {}",
        dump()
    );
    let seconds = total_sum(&server_duration);
    assert!(
        seconds > 0.0 && seconds <= wall_total + 0.01,
        "server durations add up to {seconds} s, the calls took {wall_total} s; {}",
        dump()
    );

    // Durations, client side: one per curl.
    let client_duration = histogram_series(&metrics, "http.client.request.duration", is_client);
    for m in &client_duration {
        let problems = histogram_problems(m, "s", "http", false, curl_exe());
        assert!(problems.is_empty(), "{problems:?} in {m}; all: {}", dump());
    }
    for pid in &client_pids {
        let of_pid: Vec<FlatMetric> = client_duration
            .iter()
            .filter(|m| m.pid() == Some(*pid))
            .cloned()
            .collect();
        assert_eq!(
            total_count(&of_pid),
            1,
            "http.client.request.duration count for curl pid {pid}; {}",
            dump()
        );
    }

    // Body sizes.
    for (name, pred, side_is_server) in [
        (
            "http.server.request.body.size",
            &is_server as &dyn Fn(&FlatMetric) -> bool,
            true,
        ),
        ("http.client.request.body.size", &is_client, false),
    ] {
        let series = histogram_series(&metrics, name, pred);
        for m in &series {
            let exe = if side_is_server {
                server.exe.as_str()
            } else {
                curl_exe()
            };
            let problems = histogram_problems(m, "By", "http", side_is_server, exe);
            assert!(problems.is_empty(), "{problems:?} in {m}; all: {}", dump());
        }
        let posts: Vec<FlatMetric> = series
            .iter()
            .filter(|m| m.attr_str("http.request.method") == Some("POST"))
            .cloned()
            .collect();
        assert_eq!(
            total_count(&posts),
            2,
            "{name} count for the POSTs; {}",
            dump()
        );
        assert_eq!(
            total_sum(&posts),
            (2 * body_len) as f64,
            "{name} sum for the POSTs; {}",
            dump()
        );
        // Requests without a body: not recorded, or recorded as 0.
        let gets: Vec<FlatMetric> = series
            .iter()
            .filter(|m| m.attr_str("http.request.method") == Some("GET"))
            .cloned()
            .collect();
        assert!(
            total_sum(&gets) == 0.0 && [0, 3].contains(&total_count(&gets)),
            "{name} for the GETs (no body): count {} sum {}; {}",
            total_count(&gets),
            total_sum(&gets),
            dump()
        );
    }
    for (name, pred, side_is_server) in [
        (
            "http.server.response.body.size",
            &is_server as &dyn Fn(&FlatMetric) -> bool,
            true,
        ),
        ("http.client.response.body.size", &is_client, false),
    ] {
        let series = histogram_series(&metrics, name, pred);
        for m in &series {
            let exe = if side_is_server {
                server.exe.as_str()
            } else {
                curl_exe()
            };
            let problems = histogram_problems(m, "By", "http", side_is_server, exe);
            assert!(problems.is_empty(), "{problems:?} in {m}; all: {}", dump());
        }
        assert_eq!(total_count(&series), 5, "{name} count; {}", dump());
        assert_eq!(
            total_sum(&series),
            resp_total as f64,
            "{name} sum (every response body); {}",
            dump()
        );
    }
}

/// What is wrong with one collapsed histogram series of the HTTP metrics.
fn histogram_problems(
    m: &FlatMetric,
    unit: &str,
    scheme: &str,
    server_side: bool,
    exe: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    if m.kind != MetricKind::Histogram {
        problems.push(format!("kind {:?}, expected Histogram", m.kind));
    }
    if !matches!(
        m.temporality,
        AggregationTemporality::Cumulative | AggregationTemporality::Delta
    ) {
        problems.push(format!("temporality {:?}", m.temporality));
    }
    if m.unit != unit {
        problems.push(format!("unit {:?}, expected {unit:?}", m.unit));
    }
    if m.resource_str("service.name") != Some(exe) {
        problems.push(format!(
            "resource service.name {:?}, expected {exe:?}",
            m.resource_str("service.name")
        ));
    }
    for key in ["http.request.method", "http.response.status_code"] {
        if m.attr(key).is_none() {
            problems.push(format!("no {key}"));
        }
    }
    if m.attr_str("url.scheme") != Some(scheme) {
        problems.push(format!(
            "url.scheme = {}, expected {scheme:?}",
            shown(m.attr("url.scheme"))
        ));
    }
    if m.attr_str("network.protocol.version") != Some("1.1") {
        problems.push(format!(
            "network.protocol.version = {}, expected \"1.1\"",
            shown(m.attr("network.protocol.version"))
        ));
    }
    if server_side && m.attr_str("http.route").is_none() {
        problems.push("no http.route".to_owned());
    }
    if m.attr_int("http.response.status_code") != Some(200) {
        problems.push(format!(
            "http.response.status_code = {}, every call got 200",
            shown(m.attr("http.response.status_code"))
        ));
    }
    if !m.bucket_counts.is_empty() && m.bucket_counts.iter().sum::<u64>() != m.count {
        problems.push(format!(
            "bucket counts {:?} do not add up to count {}",
            m.bucket_counts, m.count
        ));
    }
    problems
}

// ---------------------------------------------------------------------------
// (g) through a real collector: rotel, both transports
// ---------------------------------------------------------------------------

fn agent_through_rotel(protocol: &str) {
    let receiver = OtlpReceiver::start();
    let mut rotel = Rotel::start(&receiver.endpoint());
    let endpoint = match protocol {
        "grpc" => rotel.grpc_endpoint(),
        _ => rotel.http_endpoint(),
    };
    let server = Server::plain();
    let mut agent = start_agent(&endpoint, protocol);

    let trace_id = random_hex(16);
    let parent_id = random_hex(8);
    let plan = [
        (
            Transfer::get("/users/9?page=3")
                .header(&format!("traceparent: 00-{trace_id}-{parent_id}-01")),
            "/users/{id}",
        ),
        (Transfer::post("/hello", "through rotel"), "/hello"),
    ];
    let mut calls = Vec::new();
    for (transfer, route) in &plan {
        let run = curl_run(&server.base(), std::slice::from_ref(transfer));
        calls.push(Expect::from_curl(&server, &run, 0, transfer, route));
    }
    let client_pids: Vec<u32> = calls.iter().map(|c| c.client_pid).collect();
    let waited = receiver.try_wait_for_spans(
        |spans| have_spans(spans, server.pid(), 2, &client_pids, 2),
        EXPORT_TIMEOUT,
    );
    if let Err(spans) = waited {
        let log = rotel.log_tail();
        agent.fail(&format!(
            "spans did not arrive through rotel ({protocol} to {endpoint}) within \
             {EXPORT_TIMEOUT:?}; receiver got {}\n{log}",
            summarize_spans(&spans)
        ));
    }
    agent.stop();
    // rotel forwards what the agent flushed at exit on its own time.
    let server_pid = server.pid();
    let metrics = receiver
        .try_wait_for_metrics(
            |points| {
                total_count(&histogram_series(
                    points,
                    "http.server.request.duration",
                    |m| m.pid() == Some(server_pid),
                )) >= 2
            },
            EXPORT_TIMEOUT,
        )
        .unwrap_or_else(|points| {
            panic!(
                "http.server.request.duration for 2 calls did not arrive through rotel; got {}\n{}",
                summarize_metrics(&points),
                rotel.log_tail()
            )
        });
    let spans = receiver.spans();
    assert_calls_match_spans(&spans, &calls, &format!("through rotel over {protocol}"));
    let traced = spans
        .iter()
        .find(|s| {
            s.is_server()
                && s.pid() == Some(server.pid())
                && s.attr_str("url.path") == Some("/users/9")
        })
        .expect("checked above");
    assert!(
        traced.trace_id == trace_id && traced.parent_span_id == parent_id,
        "ids changed on the way through rotel: {traced}"
    );
    assert_eq!(
        total_count(&histogram_series(
            &metrics,
            "http.server.request.duration",
            |m| { m.pid() == Some(server_pid) }
        )),
        2,
        "{}",
        summarize_metrics(metrics.iter().filter(|m| m.pid() == Some(server_pid)))
    );
    let status = rotel.stop();
    assert!(
        status.success() || status.code().is_none(),
        "rotel exited with {status:?} on SIGTERM"
    );
}

#[test]
fn agent_exports_through_rotel_over_grpc() {
    agent_through_rotel("grpc");
}

#[test]
fn agent_exports_through_rotel_over_http_protobuf() {
    agent_through_rotel("http/protobuf");
}

// ---------------------------------------------------------------------------
// The harness itself (no root, no agent)
// ---------------------------------------------------------------------------

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn kv_str(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_owned()))
}

/// A trace export with one SERVER span carrying attributes of every scalar
/// type and an array.
fn sample_traces(service: &str, marker: &str) -> (ExportTraceServiceRequest, Vec<u8>, Vec<u8>) {
    let trace_id = hex_bytes(&random_hex(16));
    let span_id = hex_bytes(&random_hex(8));
    let start = now_unix_nanos();
    let span = Span {
        trace_id: trace_id.clone(),
        span_id: span_id.clone(),
        parent_span_id: hex_bytes("0102030405060708"),
        name: "GET /users/{id}".to_owned(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_234_567,
        attributes: vec![
            kv_str("url.path", &format!("/users/{marker}")),
            kv("http.response.status_code", any_value::Value::IntValue(503)),
            kv("sampled", any_value::Value::BoolValue(true)),
            kv("ratio", any_value::Value::DoubleValue(0.25)),
            kv(
                "tags",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(any_value::Value::StringValue("a".to_owned())),
                        },
                        AnyValue {
                            value: Some(any_value::Value::IntValue(2)),
                        },
                    ],
                }),
            ),
        ],
        status: Some(Status {
            message: "upstream failed".to_owned(),
            code: StatusCode::Error as i32,
        }),
        ..Default::default()
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv_str("service.name", service),
                    kv("process.pid", any_value::Value::IntValue(4242)),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "apiscope-e2e".to_owned(),
                    version: "1".to_owned(),
                    ..Default::default()
                }),
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    (request, trace_id, span_id)
}

fn sample_metrics(service: &str) -> ExportMetricsServiceRequest {
    let now = now_unix_nanos();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", service)],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "http.server.request.duration".to_owned(),
                    unit: "s".to_owned(),
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points: vec![HistogramDataPoint {
                            attributes: vec![kv_str("http.route", "/users/{id}")],
                            start_time_unix_nano: now - 1_000_000_000,
                            time_unix_nano: now,
                            count: 3,
                            sum: Some(0.75),
                            bucket_counts: vec![1, 2, 0],
                            explicit_bounds: vec![0.1, 0.5],
                            ..Default::default()
                        }],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Sends `request` with gRPC (gzip-compressed) to `endpoint`.
fn grpc_export(
    endpoint: &str,
    traces: ExportTraceServiceRequest,
    metrics: ExportMetricsServiceRequest,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect to {endpoint}: {e}"));
        TraceServiceClient::new(channel.clone())
            .send_compressed(tonic::codec::CompressionEncoding::Gzip)
            .export(traces)
            .await
            .unwrap_or_else(|e| panic!("trace export to {endpoint}: {e}"));
        MetricsServiceClient::new(channel)
            .export(metrics)
            .await
            .unwrap_or_else(|e| panic!("metrics export to {endpoint}: {e}"));
    });
}

/// POSTs `body` (protobuf) to `http://127.0.0.1:PORT{path}` over HTTP/1.1
/// and returns the status code.
fn http_post_protobuf(port: u16, path: &str, body: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-protobuf\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .expect("send the OTLP/HTTP request");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

/// Asserts `got` is the span `sent` describes.
fn assert_same_span(got: &FlatSpan, sent: &ExportTraceServiceRequest, what: &str) {
    let expected = FlatSpan::from_request(sent);
    let want = &expected[0];
    assert!(
        got.trace_id == want.trace_id
            && got.span_id == want.span_id
            && got.parent_span_id == want.parent_span_id
            && got.name == want.name
            && got.kind == want.kind
            && got.start_unix_nano == want.start_unix_nano
            && got.end_unix_nano == want.end_unix_nano
            && got.status_code == want.status_code
            && got.status_message == want.status_message
            && got.attributes == want.attributes
            && got.scope_name == want.scope_name
            && want
                .resource
                .iter()
                .all(|(k, v)| got.resource.get(k) == Some(v)),
        "{what}: the span changed on the way:\n  sent {want}\n  got  {got}"
    );
}

#[test]
fn otlp_receiver_round_trip() {
    let receiver = OtlpReceiver::start();
    let marker = format!("receiver{}", random_hex(8));
    let (traces, trace_id, span_id) = sample_traces("apiscope-e2e-receiver", &marker);
    let metrics = sample_metrics("apiscope-e2e-receiver");
    grpc_export(&receiver.endpoint(), traces.clone(), metrics.clone());

    let spans = receiver.wait_for_spans(|s| !s.is_empty(), Duration::from_secs(5));
    assert_eq!(spans.len(), 1, "{}", summarize_spans(&spans));
    let span = &spans[0];
    assert_eq!(span.trace_id, otlp::hex(&trace_id));
    assert_eq!(span.span_id, otlp::hex(&span_id));
    assert_eq!(span.parent_span_id, "0102030405060708");
    assert_eq!(span.kind, SpanKind::Server);
    assert_eq!(span.name, "GET /users/{id}");
    assert_eq!(span.duration_nanos(), 1_234_567);
    assert_eq!(span.status_code, StatusCode::Error);
    assert_eq!(span.attr_int("http.response.status_code"), Some(503));
    assert_eq!(span.attr("sampled"), Some(&AttrValue::Bool(true)));
    assert_eq!(span.attr("ratio"), Some(&AttrValue::Double(0.25)));
    assert_eq!(
        span.attr("tags"),
        Some(&AttrValue::Array(vec![otlp::s("a"), otlp::i(2)]))
    );
    assert_eq!(
        span.resource_str("service.name"),
        Some("apiscope-e2e-receiver")
    );
    assert_eq!(span.pid(), Some(4242));
    assert_eq!(span.scope_name, "apiscope-e2e");

    let points = receiver.wait_for_metrics(|m| !m.is_empty(), Duration::from_secs(5));
    assert_eq!(points.len(), 1, "{}", summarize_metrics(&points));
    let p = &points[0];
    assert_eq!(
        (p.name.as_str(), p.unit.as_str(), p.kind, p.count, p.sum),
        (
            "http.server.request.duration",
            "s",
            MetricKind::Histogram,
            3,
            Some(0.75)
        )
    );
    assert_eq!(p.bucket_counts, [1, 2, 0]);
    assert_eq!(p.temporality, AggregationTemporality::Cumulative);
    assert_eq!(p.attr_str("http.route"), Some("/users/{id}"));

    let bytes = receiver.all_bytes();
    assert!(
        find(&bytes, marker.as_bytes()).is_some(),
        "marker not in all_bytes"
    );
    assert_eq!(
        bytes.len(),
        traces.encoded_len() + metrics.encoded_len(),
        "all_bytes is the encoding of both requests"
    );
    assert_eq!(receiver.trace_requests(), [traces]);
    assert_eq!(receiver.metrics_requests(), [metrics]);
}

#[test]
fn rotel_starts_and_forwards() {
    let receiver = OtlpReceiver::start();
    let mut rotel = Rotel::start(&receiver.endpoint());
    let service = format!("apiscope-e2e-rotel-{}", random_hex(6));

    // Over OTLP/gRPC to rotel.
    let (grpc_traces, grpc_trace_id, _) = sample_traces(&service, "grpc");
    grpc_export(
        &rotel.grpc_endpoint(),
        grpc_traces.clone(),
        sample_metrics(&service),
    );
    // Over OTLP/HTTP (protobuf) to rotel.
    let (http_traces, http_trace_id, _) = sample_traces(&service, "http");
    let status = http_post_protobuf(
        rotel.http_port(),
        "/v1/traces",
        &http_traces.encode_to_vec(),
    );
    assert_eq!(status, 200, "rotel's OTLP/HTTP receiver answered {status}");

    let want = [otlp::hex(&grpc_trace_id), otlp::hex(&http_trace_id)];
    let got = receiver.try_wait_for_spans(
        |spans| want.iter().all(|t| spans.iter().any(|s| &s.trace_id == t)),
        EXPORT_TIMEOUT,
    );
    let spans = match got {
        Ok(spans) => spans,
        Err(spans) => panic!(
            "rotel did not forward both spans within {EXPORT_TIMEOUT:?}; receiver got {}\n{}",
            summarize_spans(&spans),
            rotel.log_tail()
        ),
    };
    for (trace_id, sent, how) in [
        (&want[0], &grpc_traces, "gRPC"),
        (&want[1], &http_traces, "HTTP"),
    ] {
        let forwarded: Vec<&FlatSpan> = spans.iter().filter(|s| &s.trace_id == trace_id).collect();
        assert_eq!(forwarded.len(), 1, "{how}: {}", summarize_spans(forwarded));
        assert_same_span(forwarded[0], sent, &format!("rotel, {how} in, gRPC out"));
    }
    let points = receiver
        .try_wait_for_metrics(
            |m| {
                m.iter()
                    .any(|p| p.resource_str("service.name") == Some(service.as_str()))
            },
            EXPORT_TIMEOUT,
        )
        .unwrap_or_else(|m| {
            panic!(
                "rotel did not forward the metrics; got {}\n{}",
                summarize_metrics(&m),
                rotel.log_tail()
            )
        });
    let p = points
        .iter()
        .find(|p| p.resource_str("service.name") == Some(service.as_str()))
        .expect("waited for it");
    assert_eq!(
        (p.count, p.sum, p.unit.as_str()),
        (3, Some(0.75), "s"),
        "{p}"
    );

    let status = rotel.stop();
    assert!(status.success(), "rotel exited with {status:?} on SIGTERM");
}

// ---------------------------------------------------------------------------
// The collector's side of the agent's own exports
// ---------------------------------------------------------------------------

/// The receiver runs in this test process, which the agent traces like any other: the agent's
/// own exports must not come back as spans of it (each export would beget another).
#[test]
fn the_collector_side_of_the_agents_exports_is_never_traced() {
    let receiver = OtlpReceiver::start();
    let server = Server::plain();
    let mut agent = receiver.agent(&[], EXPORT_EVERY_500_MS);
    let mut client_pids = Vec::new();
    // Three rounds, each awaited at the receiver: the exports of the earlier rounds have
    // reached it, and anything they begot would be in the later ones.
    for round in 1..=3 {
        for (transfer, _) in five_calls().into_iter().take(2) {
            client_pids.push(curl_run(&server.base(), std::slice::from_ref(&transfer)).pid);
        }
        wait_spans(&receiver, &mut agent, &format!("round {round}"), |spans| {
            client_spans(spans, &client_pids).len() >= client_pids.len()
        });
    }
    agent.stop();
    // Other tests' agents run at the same time and trace this process receiving their own
    // exports: only the connections this agent exported over are this test's.
    let ports = receiver.client_ports();
    assert!(!ports.is_empty(), "the receiver saw no client connection");
    let spans = receiver.spans();
    let own = std::process::id();
    let begotten: Vec<&FlatSpan> = spans
        .iter()
        .filter(|s| s.pid() == Some(own))
        .filter(|s| {
            s.attr_int("network.peer.port")
                .is_some_and(|port| ports.iter().any(|p| i64::from(*p) == port))
        })
        .collect();
    assert!(
        begotten.is_empty(),
        "spans of the receiver (pid {own}) receiving from this agent's ports {ports:?}: {}",
        summarize_spans(begotten)
    );
}

// ---------------------------------------------------------------------------
// The agent's own metrics
// ---------------------------------------------------------------------------

/// Every count the agent keeps of what it captured, lost and exported reaches the collector as
/// metrics of its own resource.
#[test]
fn the_agent_exports_its_own_counters() {
    let receiver = OtlpReceiver::start();
    let server = Server::plain();
    let mut agent = receiver.agent(&[], EXPORT_EVERY_500_MS);
    let agent_pid = agent.pid();
    let mut client_pids = Vec::new();
    for (transfer, _) in five_calls() {
        client_pids.push(curl_run(&server.base(), std::slice::from_ref(&transfer)).pid);
    }
    wait_spans(&receiver, &mut agent, "5 calls", |spans| {
        client_spans(spans, &client_pids).len() >= 5
    });
    // Stopping flushes the last collection, after the last spans were exported.
    agent.stop();
    let metrics = receiver.metrics();
    let own: Vec<&FlatMetric> = metrics
        .iter()
        .filter(|m| {
            m.resource_str("service.name") == Some("apiscope") && m.pid() == Some(agent_pid)
        })
        .collect();
    let last = |name: &str, attribute: Option<(&str, &str)>| -> i64 {
        own.iter()
            .filter(|m| m.name == name)
            .filter(|m| attribute.is_none_or(|(key, value)| m.attr_str(key) == Some(value)))
            .filter_map(|m| m.value_int)
            .max()
            .unwrap_or_else(|| {
                panic!(
                    "no {name} {attribute:?} from the agent (pid {agent_pid}): {}",
                    summarize_metrics(own.iter().copied())
                )
            })
    };
    // Each call is at least a request and a response record on each of its two sides.
    assert!(last("apiscope.capture.records", None) >= 20);
    assert_eq!(
        last(
            "apiscope.capture.lost",
            Some(("reason", "ring_buffer_full"))
        ),
        0
    );
    assert!(last("apiscope.export.spans", Some(("outcome", "exported"))) >= 10);
    assert_eq!(
        last("apiscope.export.spans", Some(("outcome", "dropped"))),
        0
    );
    // Every probe group runs here; the groups by state are the agent's one gauge.
    assert_eq!(
        last("apiscope.probe.groups", Some(("state", "on"))),
        support::PROBE_GROUPS.len() as i64
    );
    assert_eq!(last("apiscope.probe.groups", Some(("state", "off"))), 0);
    for metric in own.iter().filter(|m| m.name != "apiscope.probe.groups") {
        assert!(
            metric.is_monotonic,
            "{} is a cumulative counter: {}",
            metric.name,
            summarize_metrics([*metric])
        );
    }
}
