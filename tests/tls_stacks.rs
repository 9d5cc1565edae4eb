//! End-to-end tests of TLS plaintext from stacks other than a shared OpenSSL over a socket
//! BIO: Go's `crypto/tls`, with peers built here by Debian's Go 1.19 from
//! `tests/fixtures/go_tls` (the standard library only), plain and stripped, over HTTP/1.1 and
//! HTTP/2 (ALPN `h2`, Go's bundled HTTP/2); Node's `https` client, whose OpenSSL (inside the
//! `node` executable) works over a memory BIO and writes its request before it reads anything,
//! and whose first run is held at exec until the agent has attached to that executable;
//! and GnuTLS's own server (`gnutls-serv --http`, Debian's `gnutls-bin`).
//!
//! The Go server and client start before the agent, so that the agent's start-up scan attaches
//! to them; the client then waits for its URLs on stdin. Each test counts only the spans of its
//! own two processes.

mod support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use support::otlp::{EXPORT_EVERY_500_MS, FlatSpan, OtlpReceiver, summarize_spans};
use support::{
    COMMAND_TIMEOUT, FIXTURE_READY_TIMEOUT, Proc, TempDir, curl, fixture, free_port, make_cert,
    metric_sample, run, system_libssl, without_terminal,
};

/// How long a test waits for its spans at the receiver: long, as the kernel matrix runs the Go
/// test under emulation, where every uprobe hit is a trap emulated in software.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(60);

/// The calls each test makes, with the status the server answers.
const CALLS: [(&str, i64); 4] = [
    ("/api/orders/17", 200),
    ("/status/404", 404),
    ("/api/users/7/profile", 200),
    ("/status/503", 503),
];

/// Builds the Go peer into `dir` as `name`, with `flags` for `go build`.
fn go_build(dir: &TempDir, name: &str, flags: &[&str]) -> PathBuf {
    let output = dir.join(name);
    let source = fixture("go_tls/main.go");
    let out = run(
        Command::new("go")
            .arg("build")
            .args(flags)
            .arg("-o")
            .arg(&output)
            .arg(&source),
        COMMAND_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "go build {name} (Debian's golang-go; `cargo xtask setup` installs it): {}",
        out.describe()
    );
    output
}

/// `go_tls serve` from `binary`, once it listens, and its port.
fn start_server(binary: &Path) -> (Proc, u16) {
    let mut server = Proc::spawn("go_tls serve", Command::new(binary).arg("serve"));
    let line = server.wait_stdout_line("listening PORT", FIXTURE_READY_TIMEOUT, |line| {
        line.starts_with("listening ")
    });
    let port = line
        .trim_start_matches("listening ")
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a port: {line}"));
    (server, port)
}

/// Fetches every call of [`CALLS`] through the waiting client, checking each answer.
fn make_calls(client: &mut Proc, port: u16, protocol: &str) {
    for (path, status) in CALLS {
        client.write_line(&format!("https://127.0.0.1:{port}{path}"));
        let answer = client.wait_stdout_line("STATUS PROTO", COMMAND_TIMEOUT, |_| true);
        assert_eq!(answer.trim(), format!("{status} {protocol}"), "{path}");
    }
}

/// The spans of process `pid` of one kind.
fn spans_of(spans: &[FlatSpan], pid: u32, server: bool) -> Vec<&FlatSpan> {
    spans
        .iter()
        .filter(|span| span.pid() == Some(pid))
        .filter(|span| span.is_server() == server && span.is_client() != server)
        .collect()
}

/// The client spans of process `pid` that carry `path`.
fn client_spans_with_path<'a>(spans: &'a [FlatSpan], pid: u32, path: &str) -> Vec<&'a FlatSpan> {
    spans_of(spans, pid, false)
        .into_iter()
        .filter(|span| span.attr_str("url.path") == Some(path))
        .collect()
}

/// Go peers (the client built with `client_flags`) make [`CALLS`] over `protocol`
/// (`HTTP/1.1` or `HTTP/2.0`); the server's and the client's spans carry each path and
/// status, exactly once.
fn go_calls_become_spans(protocol: &str, client_flags: &[&str]) {
    let dir = TempDir::new("go-tls");
    let server_binary = go_build(&dir, "server", &[]);
    let client_binary = go_build(&dir, "client", client_flags);
    let receiver = OtlpReceiver::start();
    let (server, port) = start_server(&server_binary);
    let mode = if protocol == "HTTP/2.0" { "h2" } else { "h1" };
    let mut client = Proc::spawn(
        "go_tls get",
        Command::new(&client_binary).args(["get", mode]),
    );
    let mut agent = receiver.agent(&[], EXPORT_EVERY_500_MS);
    make_calls(&mut client, port, protocol);
    let wanted = |spans: &[FlatSpan]| {
        spans_of(spans, server.pid(), true).len() >= CALLS.len()
            && spans_of(spans, client.pid(), false).len() >= CALLS.len()
    };
    if let Err(spans) = receiver.try_wait_for_spans(wanted, EXPORT_TIMEOUT) {
        let mine = spans_of(&spans, server.pid(), true)
            .into_iter()
            .chain(spans_of(&spans, client.pid(), false));
        let metrics = agent.get("/metrics");
        let counters: Vec<&str> = metrics
            .lines()
            .filter(|line| {
                line.starts_with("apiscope_kernel_events_total") && !line.ends_with(" 0")
            })
            .collect();
        agent.fail(&format!(
            "{} spans on each side did not arrive within {EXPORT_TIMEOUT:?}; kernel counters {}; \
             got {}",
            CALLS.len(),
            counters.join(", "),
            summarize_spans(mine)
        ));
    }
    agent.stop_for_lines();
    let spans = receiver.spans();
    let version = protocol.trim_start_matches("HTTP/").trim_end_matches(".0");
    let expected: BTreeSet<(String, i64)> = CALLS
        .iter()
        .map(|(path, status)| ((*path).to_owned(), *status))
        .collect();
    for (server_side, pid) in [(true, server.pid()), (false, client.pid())] {
        let mine = spans_of(&spans, pid, server_side);
        let context = || summarize_spans(mine.iter().copied());
        assert_eq!(
            mine.len(),
            CALLS.len(),
            "server={server_side}: {}",
            context()
        );
        let seen: BTreeSet<(String, i64)> = mine
            .iter()
            .map(|span| {
                (
                    span.attr_str("url.path").unwrap_or_default().to_owned(),
                    span.attr_int("http.response.status_code").unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(seen, expected, "server={server_side}: {}", context());
        for span in &mine {
            assert_eq!(span.attr_str("http.request.method"), Some("GET"), "{span}");
            assert_eq!(
                span.attr_str("network.protocol.version"),
                Some(version),
                "{span}"
            );
            assert_eq!(
                span.attr_int("server.port"),
                Some(i64::from(port)),
                "{span}"
            );
            assert!(
                span.attr("apiscope.call.incomplete").is_none(),
                "a whole call reported incomplete: {span}"
            );
        }
    }
}

#[test]
fn go_http1_calls_become_server_and_client_spans() {
    go_calls_become_spans("HTTP/1.1", &[]);
}

#[test]
fn go_http2_calls_become_server_and_client_spans() {
    go_calls_become_spans("HTTP/2.0", &[]);
}

#[test]
fn a_stripped_go_client_is_probed_through_gos_function_table() {
    go_calls_become_spans("HTTP/2.0", &["-ldflags=-s -w"]);
}

#[test]
fn a_go_release_the_agent_does_not_know_is_counted_and_not_probed() {
    let dir = TempDir::new("go-tls-unknown");
    let binary = go_build(&dir, "server", &["-ldflags=-s -w"]);
    // The same program, claiming a release newer than the agent's table; stripped, it has no
    // DWARF to read the layout from either.
    let mut data = std::fs::read(&binary).expect("binary readable");
    let magic = b"\xff Go buildinf:";
    let info = data
        .windows(magic.len())
        .position(|window| window == magic)
        .expect("Go build information");
    let at = info
        + data[info..]
            .windows(6)
            .position(|window| window == b"go1.19")
            .expect("built by Go 1.19");
    data[at..at + 6].copy_from_slice(b"go1.99");
    let unknown = dir.join("unknown");
    std::fs::write(&unknown, data).expect("binary written");
    let mut permissions = std::fs::metadata(&unknown).expect("metadata").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&unknown, permissions).expect("executable");

    let (_server, _port) = start_server(&unknown);
    let receiver = OtlpReceiver::start();
    let mut agent = receiver.agent(&[], EXPORT_EVERY_500_MS);
    let metrics = agent.get("/metrics");
    assert_eq!(
        metric_sample(&metrics, "apiscope_tls_stack_unsupported{stack=\"go\"}"),
        1,
        "{metrics}"
    );
    let (_, log) = agent.stop_for_lines_and_log();
    assert!(
        log.iter()
            .any(|line| line.contains("TLS capture cannot probe") && line.contains("go1.99")),
        "no warning naming the unknown release in\n{}",
        log.join("\n")
    );
}

/// Waits until each kernel counter of `names` is at least one on the agent's `/metrics` (they
/// reach it on the agent's next stats round), then checks that no hold ran out before its
/// probes were attached.
fn wait_for_kernel_counters(agent: &mut support::Agent, names: &[&str]) {
    let counter = |name: &str| format!("apiscope_kernel_events_total{{counter=\"{name}\"}}");
    let deadline = std::time::Instant::now() + EXPORT_TIMEOUT;
    let metrics = loop {
        let metrics = agent.get("/metrics");
        if names
            .iter()
            .all(|name| metric_sample(&metrics, &counter(name)) >= 1)
        {
            break metrics;
        }
        if std::time::Instant::now() > deadline {
            agent.fail(&format!(
                "a kernel counter of {names:?} is still zero:\n{metrics}"
            ));
        }
        // Polling cadence of a counter the agent publishes by itself.
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(
        metric_sample(&metrics, "apiscope_exec_holds_expired_total"),
        0,
        "a hold ran out before the probes were attached:\n{metrics}"
    );
}

#[test]
fn a_node_https_client_is_seen_on_its_first_run_over_a_memory_bio() {
    let dir = TempDir::new("node-https");
    let server_binary = go_build(&dir, "server", &[]);
    let (_server, port) = start_server(&server_binary);
    // No node process runs when the agent starts: the client below is the first run of the
    // `node` executable (and its OpenSSL inside) the agent sees, so it is held at exec until
    // its uprobes are attached.
    let receiver = OtlpReceiver::start();
    let mut agent = receiver.agent(&[], EXPORT_EVERY_500_MS);
    let path = "/api/node/orders/42";
    let script = format!(
        "require('https').get('https://127.0.0.1:{port}{path}', {{ rejectUnauthorized: false }}, \
         (response) => {{ console.log(response.statusCode); response.resume(); }})"
    );
    let out = run(
        without_terminal(Command::new("node").args(["-e", &script])),
        COMMAND_TIMEOUT,
    );
    assert_eq!(out.stdout_text().trim(), "200", "{}", out.describe());
    let found = |spans: &[FlatSpan]| !client_spans_with_path(spans, out.pid, path).is_empty();
    if let Err(spans) = receiver.try_wait_for_spans(found, EXPORT_TIMEOUT) {
        agent.fail(&format!(
            "no client span of node for {path}; its spans: {}",
            summarize_spans(spans_of(&spans, out.pid, false))
        ));
    }
    wait_for_kernel_counters(&mut agent, &["tls_bound_by_write", "exec_held"]);
    agent.stop_for_lines();
    let spans = receiver.spans();
    let mine = client_spans_with_path(&spans, out.pid, path);
    assert_eq!(mine.len(), 1, "{}", summarize_spans(mine.iter().copied()));
    assert_eq!(mine[0].attr_int("http.response.status_code"), Some(200));
    assert_eq!(mine[0].attr_str("http.request.method"), Some("GET"));
}

/// Fetches `path` from the TLS server on `port` with a fresh curl whose dynamic loader finds
/// libssl in `library_dir` first; returns curl's pid once it answered 200.
fn curl_through_copy(library_dir: &TempDir, port: u16, path: &str) -> u32 {
    let out = run(
        without_terminal(
            Command::new("curl")
                .args(["-sk", "--max-time", "30", "-o", "/dev/null"])
                .args(["-w", "%{http_code}"])
                .arg(format!("https://127.0.0.1:{port}{path}"))
                .env("LD_LIBRARY_PATH", library_dir.path()),
        ),
        COMMAND_TIMEOUT,
    );
    assert_eq!(out.stdout_text(), "200", "{}", out.describe());
    out.pid
}

#[test]
fn a_library_copy_new_to_the_agent_is_attached_before_its_first_call() {
    let dir = TempDir::new("libssl-copy");
    let server_binary = go_build(&dir, "server", &[]);
    let (_server, port) = start_server(&server_binary);
    let receiver = OtlpReceiver::start();
    let mut agent = receiver.agent(&[], EXPORT_EVERY_500_MS);
    // A copy of libssl (a new file, as a container image's own copy is) that curl's dynamic
    // loader maps after the exec: the agent first learns of it from that mapping, and holds
    // curl there until the copy's uprobes are attached.
    let copy = dir.join("libssl.so.3");
    std::fs::copy(system_libssl(), &copy).expect("copy libssl");
    // The second call comes after the agent forgot the copy (no process mapped it any more, as
    // when every pod of an image has ended), so it is held for once more.
    let calls = [
        "/api/copied-libssl/invoices/9",
        "/api/copied-libssl/invoices/10",
    ];
    for (round, path) in calls.into_iter().enumerate() {
        if round > 0 {
            agent.wait_log_line("the copy detached", Duration::from_secs(90), |line| {
                line.contains("TLS capture detached from files no process maps any more")
            });
        }
        let pid = curl_through_copy(&dir, port, path);
        let found = |spans: &[FlatSpan]| client_spans_with_path(spans, pid, path).len() == 1;
        if let Err(spans) = receiver.try_wait_for_spans(found, EXPORT_TIMEOUT) {
            agent.fail(&format!(
                "not one client span of curl for {path} through {}; its spans: {}",
                copy.display(),
                summarize_spans(spans_of(&spans, pid, false))
            ));
        }
    }
    wait_for_kernel_counters(&mut agent, &["exec_held"]);
    let (_, log) = agent.stop_for_lines_and_log();
    // Through the process's root: /proc/PID/root/<the copy's path>.
    let copy_path = copy.display().to_string();
    let attached = log
        .iter()
        .filter(|line| {
            line.contains("TLS capture attached to /proc/")
                && line.contains(&format!("{copy_path} ("))
        })
        .count();
    assert_eq!(
        attached,
        2,
        "the copy {copy_path} was not attached twice:\n{}",
        log.join("\n")
    );
}

#[test]
fn a_gnutls_server_is_seen_through_gnutls_record_recv_and_send() {
    let dir = TempDir::new("gnutls-serv");
    let cert = make_cert(&dir);
    let port = free_port();
    let mut server = Proc::spawn(
        "gnutls-serv",
        Command::new("gnutls-serv")
            .args(["--http", "--port", &port.to_string(), "--x509keyfile"])
            .arg(&cert.key)
            .arg("--x509certfile")
            .arg(&cert.cert),
    );
    server.wait_stderr_line("listening", FIXTURE_READY_TIMEOUT, |line| {
        line.starts_with("HTTP Server listening on IPv4")
    });
    let receiver = OtlpReceiver::start();
    let mut agent = receiver.agent(&[], EXPORT_EVERY_500_MS);
    let path = "/api/gnutls/accounts/7";
    let out = curl(&[
        "-sk",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("https://127.0.0.1:{port}{path}"),
    ]);
    assert_eq!(out.stdout_text(), "200", "{}", out.describe());
    let server_spans = |spans: &[FlatSpan]| -> usize {
        spans_of(spans, server.pid(), true)
            .iter()
            .filter(|span| span.attr_str("url.path") == Some(path))
            .count()
    };
    if let Err(spans) = receiver.try_wait_for_spans(|spans| server_spans(spans) > 0, EXPORT_TIMEOUT)
    {
        agent.fail(&format!(
            "no server span of gnutls-serv for {path}; its spans: {}",
            summarize_spans(spans_of(&spans, server.pid(), true))
        ));
    }
    let metrics = agent.get("/metrics");
    assert_eq!(
        metric_sample(&metrics, "apiscope_probes_attached{kind=\"gnutls_files\"}"),
        1,
        "{metrics}"
    );
    agent.stop_for_lines();
    let spans = receiver.spans();
    assert_eq!(
        server_spans(&spans),
        1,
        "{}",
        summarize_spans(spans_of(&spans, server.pid(), true))
    );
    let span = spans_of(&spans, server.pid(), true)
        .into_iter()
        .find(|span| span.attr_str("url.path") == Some(path))
        .expect("counted above");
    assert_eq!(
        span.attr_int("http.response.status_code"),
        Some(200),
        "{span}"
    );
    assert_eq!(span.attr_str("http.request.method"), Some("GET"), "{span}");
}
