//! End-to-end HTTP/2 tests: the real agent (`apiscope run --otlp-endpoint ...`, as root) turns
//! real HTTP/2 calls between curl and nginx (or Hypercorn) into spans, exported to an
//! in-process OTLP receiver: h2c with prior knowledge, h2 over TLS (ALPN), several streams
//! multiplexed on one connection, and HTTP/1.1 upgraded to h2c.
//!
//! Each test starts its own receiver, server and agent, and counts only the spans of its own
//! processes (the server's workers for the server side, its curls for the client side): other
//! tests' traffic, and the agent's own exports to the receiver, are not its business.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::nginx::Nginx;
use support::otlp::{EXPORT_EVERY_500_MS, FlatSpan, OtlpReceiver, summarize_spans};
use support::{Agent, Finished, curl, free_port, start_python_server};

/// How long a test waits for its spans at the receiver.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(30);
/// Calls per test.
const N: usize = 4;
/// The path of call `i`: even calls hit `/ok` (200), odd ones a missing page (404).
fn path(i: usize) -> String {
    if i.is_multiple_of(2) {
        "/ok".to_owned()
    } else {
        format!("/missing/{i}")
    }
}

fn expected_status(path: &str) -> i64 {
    if path == "/ok" { 200 } else { 404 }
}

/// The spans of `pids` of one kind.
fn spans_of<'a>(spans: &'a [FlatSpan], pids: &BTreeSet<u32>, server: bool) -> Vec<&'a FlatSpan> {
    spans
        .iter()
        .filter(|span| span.is_server() == server && span.is_client() != server)
        .filter(|span| span.pid().is_some_and(|pid| pids.contains(&pid)))
        .collect()
}

/// Waits for `N` server spans from `workers` (the server's processes) and `N` client spans
/// from `curls`, stops the agent, and checks every span of those processes that was exported
/// (so a duplicate sent late is caught): paths, statuses, the protocol version, the scheme and
/// the peers.
fn check_spans(
    receiver: &OtlpReceiver,
    mut agent: Agent,
    workers: &BTreeSet<u32>,
    curls: &BTreeSet<u32>,
    port: u16,
    scheme: &str,
) {
    let wanted = |spans: &[FlatSpan]| {
        spans_of(spans, workers, true).len() >= N && spans_of(spans, curls, false).len() >= N
    };
    if let Err(spans) = receiver.try_wait_for_spans(wanted, EXPORT_TIMEOUT) {
        let mine = spans_of(&spans, workers, true)
            .into_iter()
            .chain(spans_of(&spans, curls, false));
        agent.fail(&format!(
            "{N} spans on each side did not arrive within {EXPORT_TIMEOUT:?}; got {}",
            summarize_spans(mine)
        ));
    }
    agent.stop_for_lines();
    let spans = receiver.spans();
    let expected_paths: Vec<String> = {
        let mut paths: Vec<String> = (0..N).map(path).collect();
        paths.sort();
        paths
    };
    for (server, pids) in [(true, workers), (false, curls)] {
        let mine = spans_of(&spans, pids, server);
        let context = || summarize_spans(mine.iter().copied());
        assert_eq!(mine.len(), N, "server={server}: {}", context());
        let mut paths: Vec<String> = mine
            .iter()
            .map(|span| span.attr_str("url.path").unwrap_or_default().to_owned())
            .collect();
        paths.sort();
        assert_eq!(paths, expected_paths, "server={server}: {}", context());
        for span in &mine {
            let path = span.attr_str("url.path").unwrap_or_default();
            assert_eq!(
                span.attr_int("http.response.status_code"),
                Some(expected_status(path)),
                "{span}"
            );
            assert_eq!(
                span.attr_str("network.protocol.version"),
                Some("2"),
                "{span}"
            );
            assert_eq!(span.attr_str("http.request.method"), Some("GET"), "{span}");
            assert_eq!(span.attr_str("url.scheme"), Some(scheme), "{span}");
            assert_eq!(span.attr_str("server.address"), Some("127.0.0.1"), "{span}");
            assert_eq!(
                span.attr_int("server.port"),
                Some(i64::from(port)),
                "{span}"
            );
            assert_eq!(
                span.attr_str("network.peer.address"),
                Some("127.0.0.1"),
                "{span}"
            );
            assert!(
                span.attr("apiscope.call.incomplete").is_none(),
                "a whole call reported incomplete: {span}"
            );
            if !server {
                assert_eq!(
                    span.attr_int("network.peer.port"),
                    Some(i64::from(port)),
                    "{span}"
                );
            }
        }
    }
}

/// One curl fetching `urls` with `args`, every transfer over HTTP/2 and all on one connection
/// (the first transfer connects, the others reuse it).
fn curl_on_one_connection(args: &[&str], urls: &[String]) -> Finished {
    let mut all = vec!["-s", "-w", "%{num_connects} %{http_version}\\n"];
    all.extend_from_slice(args);
    for url in urls {
        all.extend(["-o", "/dev/null", url.as_str()]);
    }
    let out = curl(&all);
    let text = out.stdout_text();
    assert!(
        text.lines().count() == urls.len() && text.lines().all(|line| line.ends_with(" 2")),
        "not every transfer used HTTP/2: {}",
        out.describe()
    );
    let connects: u64 = text
        .lines()
        .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(
        connects,
        1,
        "the transfers did not share one connection: {}",
        out.describe()
    );
    out
}

#[test]
fn h2c_prior_knowledge_calls_become_spans() {
    one_curl_per_call_becomes_spans("http2-h2c", "http", &["--http2-prior-knowledge"]);
}

#[test]
fn h2_over_tls_calls_become_spans() {
    // `--http2` over TLS: ALPN chooses h2, which the `2` of each `%{http_version}` proves.
    one_curl_per_call_becomes_spans("http2-tls", "https", &["-k", "--http2"]);
}

/// `N` calls to nginx (started with `config`) over `scheme`, one curl with `flags` each, all
/// of them over HTTP/2, become the spans [`check_spans`] expects.
fn one_curl_per_call_becomes_spans(config: &str, scheme: &str, flags: &[&str]) {
    let receiver = OtlpReceiver::start();
    let nginx = Nginx::start(config);
    let agent = receiver.agent(&[], EXPORT_EVERY_500_MS);
    let port = match scheme {
        "https" => nginx.tls_port,
        _ => nginx.h2c_port,
    };
    let mut curls = BTreeSet::new();
    for i in 0..N {
        let url = format!("{scheme}://127.0.0.1:{port}{}", path(i));
        let mut args = vec!["-s", "-o", "/dev/null"];
        args.extend(flags);
        args.extend(["-w", "%{http_version} %{http_code}", &url]);
        let out = curl(&args);
        let code = expected_status(&path(i));
        assert_eq!(out.stdout_text(), format!("2 {code}"), "{}", out.describe());
        curls.insert(out.pid);
    }
    check_spans(
        &receiver,
        agent,
        &nginx.worker_pids().into_iter().collect(),
        &curls,
        port,
        scheme,
    );
}

#[test]
fn parallel_streams_on_one_connection_become_spans() {
    let receiver = OtlpReceiver::start();
    let nginx = Nginx::start("http2-parallel");
    let agent = receiver.agent(&[], EXPORT_EVERY_500_MS);
    // Over TLS: curl 7.88 (Debian 12) fails `--parallel` with `--http2-prior-knowledge` by
    // itself (exit 16, a framing error, with or without the agent), while after ALPN it waits
    // for the first connection and multiplexes every transfer on it.
    let urls: Vec<String> = (0..N)
        .map(|i| format!("https://127.0.0.1:{}{}", nginx.tls_port, path(i)))
        .collect();
    let out = curl_on_one_connection(&["-k", "--http2", "--parallel"], &urls);
    let curls = BTreeSet::from([out.pid]);
    check_spans(
        &receiver,
        agent,
        &nginx.worker_pids().into_iter().collect(),
        &curls,
        nginx.tls_port,
        "https",
    );
}

/// HTTP/1.1 `Upgrade: h2c`, as `curl --http2` asks for over plain HTTP: the first request goes
/// as HTTP/1.1, its response comes on HTTP/2 stream 1, the others are HTTP/2 streams of the
/// same connection. Hypercorn is the server (nginx does not accept the upgrade).
#[test]
fn h2c_upgrade_calls_become_spans() {
    let receiver = OtlpReceiver::start();
    let port = free_port();
    let server = start_python_server("h2c_server.py", port, &[]);
    let agent = receiver.agent(&[], EXPORT_EVERY_500_MS);
    let urls: Vec<String> = (0..N)
        .map(|i| format!("http://127.0.0.1:{port}{}", path(i)))
        .collect();
    let out = curl_on_one_connection(&["--http2"], &urls);
    let servers = BTreeSet::from([server.pid()]);
    let curls = BTreeSet::from([out.pid]);
    check_spans(&receiver, agent, &servers, &curls, port, "http");
}
