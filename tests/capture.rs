//! End-to-end capture tests: the real agent (`apiscope run --dump`, as root)
//! against real curl and Python peers on 127.0.0.1.
//!
//! Every test starts its own agent, which sees all traffic on the host, so a
//! test finds its own chunks by the pids of the processes it started, the
//! port of its own server and a random marker in its requests. Tests may run
//! in parallel.

mod support;

use std::fs;

use serde_json::Value;
use support::{
    Agent, CHUNK_TIMEOUT, Chunk, DEFAULT_CAPTURE_CAP, Direction, FIXTURE_READY_TIMEOUT, Role,
    TempDir, assert_contiguous, assert_same_addresses, base64_field, concat, count_occurrences,
    curl, find, marker, next_json_event, one_conn_with, spawn_python, start_python_server,
    stream_chunks, summarize,
};

use Direction::{Egress, Ingress};

const MIB: usize = 1 << 20;

fn any_chunk(
    chunks: &[Chunk],
    pid: u32,
    direction: Direction,
    pred: impl Fn(&Chunk) -> bool,
) -> bool {
    chunks
        .iter()
        .any(|c| c.pid == pid && c.direction == direction && pred(c))
}

fn is_http_200(c: &Chunk) -> bool {
    c.contains_str("HTTP/1.1 200") || c.contains_str("HTTP/1.0 200")
}

/// The request head (request line up to and including the blank line) that
/// starts with `start`, cut out of `bytes`.
fn request_head(bytes: &[u8], start: &str, what: &str) -> Vec<u8> {
    let at = find(bytes, start.as_bytes()).unwrap_or_else(|| {
        panic!(
            "{what}: no {start:?} in {:?}",
            String::from_utf8_lossy(bytes)
        )
    });
    let len = find(&bytes[at..], b"\r\n\r\n").unwrap_or_else(|| {
        panic!(
            "{what}: request head not complete in one chunk: {:?}",
            String::from_utf8_lossy(&bytes[at..])
        )
    }) + 4;
    bytes[at..at + len].to_vec()
}

/// Occurrences of `needle` in every `direction` stream of process `pid`
/// (each connection's stream reassembled in offset order).
fn occurrences_in_streams(
    chunks: &[Chunk],
    pid: u32,
    direction: Direction,
    needle: &[u8],
) -> usize {
    let mut conns: Vec<(u32, u64)> = chunks
        .iter()
        .filter(|c| c.pid == pid && c.direction == direction)
        .map(Chunk::conn)
        .collect();
    conns.sort_unstable();
    conns.dedup();
    conns
        .into_iter()
        .map(|conn| count_occurrences(&concat(&stream_chunks(chunks, conn, direction)), needle))
        .sum()
}

/// Asserts the stream `chunks` (one connection, one direction, offset
/// order) starts at offset 0, is contiguous, and that every chunk's data is
/// the bytes of `expected` at its offset.
fn assert_stream_matches(chunks: &[&Chunk], expected: &[u8], what: &str) {
    assert!(!chunks.is_empty(), "{what}: no chunks");
    assert_eq!(
        chunks[0].offset, 0,
        "{what}: first chunk is not at offset 0: {}",
        chunks[0]
    );
    assert_contiguous(chunks, what);
    for c in chunks {
        c.assert_sane();
        let start = c.offset as usize;
        let end = start + c.captured as usize;
        assert!(
            end <= expected.len(),
            "{what}: chunk reaches past the {} bytes sent: {c}",
            expected.len()
        );
        assert!(
            c.bytes() == expected[start..end],
            "{what}: data is not the bytes sent at offset {start}: {c}"
        );
    }
}

#[test]
fn plain_http_request_seen_once_on_each_side() {
    let marker = marker("plain");
    let port = support::free_port();
    let server_addr = format!("127.0.0.1:{port}");
    let server = start_python_server("http_server.py", port, &[]);
    let mut agent = Agent::start(&[]);

    let out = curl(&["-s", &format!("http://{server_addr}/{marker}")]);
    assert!(
        out.stdout_text().contains(&marker),
        "curl got: {}",
        out.describe()
    );
    let (curl_pid, server_pid) = (out.pid, server.pid());

    agent.wait_for_chunks(
        |cs| {
            any_chunk(cs, curl_pid, Egress, |c| c.contains_str(&marker))
                && any_chunk(cs, server_pid, Ingress, |c| c.contains_str(&marker))
                && any_chunk(cs, curl_pid, Ingress, is_http_200)
        },
        CHUNK_TIMEOUT,
    );
    let chunks = agent.stop();

    let request_line = format!("GET /{marker} HTTP/1.1\r\n");
    let client_conn = one_conn_with(&chunks, curl_pid, Egress, &marker, "curl egress");
    let client_out = stream_chunks(&chunks, client_conn, Egress);
    let request = request_head(&concat(&client_out), &request_line, "curl egress");
    assert!(
        find(&request, format!("\r\nHost: {server_addr}\r\n").as_bytes()).is_some(),
        "request has no Host header for {server_addr}: {:?}",
        String::from_utf8_lossy(&request)
    );

    let client = client_out[0];
    for c in &client_out {
        c.assert_sane();
        assert_eq!(c.comm, "curl", "comm of curl's chunk: {c}");
        assert_eq!(c.role, Role::Client, "role of curl's chunk: {c}");
        assert_eq!(c.peer, server_addr, "peer of curl's chunk: {c}");
        assert!(!c.tls, "plain HTTP reported as TLS: {c}");
    }
    assert_same_addresses(&client_out, "curl egress");

    let server_conn = one_conn_with(&chunks, server_pid, Ingress, &marker, "server ingress");
    let server_in = stream_chunks(&chunks, server_conn, Ingress);
    let server = server_in[0];
    for c in &server_in {
        c.assert_sane();
        assert_eq!(c.role, Role::Server, "role of the server's chunk: {c}");
        assert_eq!(c.local, server_addr, "local of the server's chunk: {c}");
        assert!(!c.tls, "plain HTTP reported as TLS: {c}");
    }
    assert_same_addresses(&server_in, "server ingress");

    // Exactly once on each side: not lost, not duplicated (e.g. by two
    // probes on one syscall path).
    let sent = occurrences_in_streams(&chunks, curl_pid, Egress, &request);
    let received = occurrences_in_streams(&chunks, server_pid, Ingress, &request);
    assert!(
        sent == 1 && received == 1,
        "request {:?} seen {sent} times in curl's egress and {received} times in the server's \
         ingress, expected once each; saw {}",
        String::from_utf8_lossy(&request),
        summarize(&chunks)
    );

    // Both ends of one TCP connection.
    assert_eq!(client.local, server.peer, "client local vs server peer");
    assert_eq!(client.peer, server.local, "client peer vs server local");

    // The response, on the client.
    let client_in = stream_chunks(&chunks, client_conn, Ingress);
    let response = concat(&client_in);
    assert!(
        find(&response, b"HTTP/1.1 200").is_some() || find(&response, b"HTTP/1.0 200").is_some(),
        "no 200 response in curl's ingress: {:?}",
        String::from_utf8_lossy(&response)
    );
    for c in &client_in {
        c.assert_sane();
        assert_eq!(c.peer, server_addr, "peer of curl's ingress chunk: {c}");
    }
}

#[test]
fn tls_plaintext_captured_on_both_sides_without_ciphertext() {
    check_tls_capture(&[]);
}

/// Python's asyncio runs OpenSSL over memory BIOs: no syscall inside `SSL_read`/`SSL_write`
/// tells the socket, the ciphertext reads around them do.
#[test]
fn tls_over_memory_bios_captured_on_both_sides() {
    check_tls_capture(&["--asyncio"]);
}

/// One curl request to https_server.py (started with `server_args`): its plaintext is seen on
/// both sides, tied to the right connections, and no ciphertext is.
fn check_tls_capture(server_args: &[&str]) {
    let marker = marker("tls");
    let dir = TempDir::new("tls");
    let port = support::free_port();
    let server_addr = format!("127.0.0.1:{port}");
    let server = support::start_https_server(&dir, port, server_args);
    let mut agent = Agent::start(&[]);

    let out = curl(&["-sk", &format!("https://{server_addr}/{marker}")]);
    assert!(
        out.stdout_text().contains(&marker),
        "curl got: {}",
        out.describe()
    );
    let (curl_pid, server_pid) = (out.pid, server.pid());
    let request_line = format!("GET /{marker} HTTP/1.1\r\n");

    agent.wait_for_chunks(
        |cs| {
            any_chunk(cs, curl_pid, Egress, |c| {
                c.tls && c.contains_str(&request_line)
            }) && any_chunk(cs, server_pid, Ingress, |c| {
                c.tls && c.contains_str(&request_line)
            }) && any_chunk(cs, curl_pid, Ingress, |c| c.tls && is_http_200(c))
        },
        CHUNK_TIMEOUT,
    );
    let chunks = agent.stop();

    let client_conn = one_conn_with(&chunks, curl_pid, Egress, &request_line, "curl egress");
    let server_conn = one_conn_with(
        &chunks,
        server_pid,
        Ingress,
        &request_line,
        "server ingress",
    );

    for c in chunks.iter().filter(|c| c.conn() == client_conn) {
        c.assert_sane();
        assert_eq!(c.comm, "curl", "comm of curl's chunk: {c}");
        assert_eq!(c.role, Role::Client, "role of curl's chunk: {c}");
        assert_eq!(c.peer, server_addr, "peer of curl's chunk: {c}");
    }
    for c in chunks.iter().filter(|c| c.conn() == server_conn) {
        c.assert_sane();
        assert_eq!(c.role, Role::Server, "role of the server's chunk: {c}");
        assert_eq!(c.local, server_addr, "local of the server's chunk: {c}");
    }

    let response = concat(&stream_chunks(&chunks, client_conn, Ingress));
    assert!(
        find(&response, b"HTTP/1.1 200").is_some() || find(&response, b"HTTP/1.0 200").is_some(),
        "no 200 response in curl's TLS ingress: {:?}",
        String::from_utf8_lossy(&response)
    );

    // No ciphertext: neither the connections' own chunks, nor any other
    // chunk of these processes on these addresses, come from the socket
    // layer (handshake and records included).
    let ciphertext: Vec<&Chunk> = chunks
        .iter()
        .filter(|c| !c.tls)
        .filter(|c| {
            c.conn() == client_conn
                || c.conn() == server_conn
                || (c.pid == curl_pid && c.peer == server_addr)
                || (c.pid == server_pid && c.local == server_addr)
        })
        .collect();
    assert!(
        ciphertext.is_empty(),
        "{} tls=false chunks on the TLS connections (ciphertext leaked), e.g.:\n{}",
        ciphertext.len(),
        ciphertext
            .iter()
            .take(10)
            .map(|c| format!("  {c}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(dir);
}

#[test]
fn vectored_io_server_response_captured_whole() {
    let marker = marker("vectored");
    let port = support::free_port();
    let server_addr = format!("127.0.0.1:{port}");
    let mut server = start_python_server("vectored_server.py", port, &[]);
    let mut agent = Agent::start(&[]);

    // Two URLs on one curl command line share one keep-alive connection:
    // the server answers the 1st with sendmsg and the 2nd with writev.
    let urls = [1, 2].map(|n| format!("http://{server_addr}/{marker}/{n}"));
    let out = curl(&["-s", &urls[0], &urls[1]]);

    // What the server really sent, as it reports it.
    let sent: Vec<(Value, Vec<u8>)> = (0..2)
        .map(|_| {
            let event = next_json_event(&mut server, "a `sent` event");
            let data = base64_field(&event, "data_b64");
            (event, data)
        })
        .collect();
    assert_eq!(sent[0].0["via"], "sendmsg", "1st event: {}", sent[0].0);
    assert_eq!(sent[1].0["via"], "writev", "2nd event: {}", sent[1].0);
    assert_eq!(
        sent[0].0["peer"],
        sent[1].0["peer"],
        "curl did not reuse its connection for both URLs: {}",
        out.describe()
    );
    let client_addr = sent[0].0["peer"].as_str().expect("peer").to_owned();
    let expected: Vec<u8> = [sent[0].1.as_slice(), sent[1].1.as_slice()].concat();

    let server_pid = server.pid();
    let is_ours = |c: &Chunk| {
        c.pid == server_pid
            && c.direction == Egress
            && c.local == server_addr
            && c.peer == client_addr
    };
    agent.wait_for_chunks(
        |cs| cs.iter().filter(|c| is_ours(c)).map(|c| c.len).sum::<u64>() >= expected.len() as u64,
        CHUNK_TIMEOUT,
    );
    let chunks = agent.stop();

    let mut conns: Vec<(u32, u64)> = chunks
        .iter()
        .filter(|c| is_ours(c))
        .map(Chunk::conn)
        .collect();
    conns.sort_unstable();
    conns.dedup();
    assert_eq!(
        conns.len(),
        1,
        "server egress to {client_addr} spans connections {conns:?}"
    );
    let server_out = stream_chunks(&chunks, conns[0], Egress);

    let got = concat(&server_out);
    assert!(
        got == expected,
        "server egress is not the two responses as sent\n--- expected ({} bytes):\n{}\n--- got \
         ({} bytes):\n{}\n--- chunks:\n{}",
        expected.len(),
        String::from_utf8_lossy(&expected),
        got.len(),
        String::from_utf8_lossy(&got),
        server_out
            .iter()
            .map(|c| format!("  {c}\n"))
            .collect::<String>()
    );
    assert_stream_matches(&server_out, &expected, "server egress");
    for c in &server_out {
        assert_eq!(c.len, c.captured, "vectored chunk truncated: {c}");
        assert_eq!(c.role, Role::Server, "role of the server's chunk: {c}");
        assert!(!c.tls, "plain HTTP reported as TLS: {c}");
    }
    // One chunk per syscall, covering every buffer of its iovec.
    let lens: Vec<u64> = server_out.iter().map(|c| c.len).collect();
    assert_eq!(
        lens,
        [sent[0].1.len() as u64, sent[1].1.len() as u64],
        "expected one chunk per sendmsg/writev call with the call's whole length"
    );
}

#[test]
fn large_request_body_captured_up_to_cap() {
    let marker = marker("large");
    let dir = TempDir::new("large");
    let body_path = dir.join("body.bin");
    let body = pattern_body(&marker, MIB);
    fs::write(&body_path, &body).expect("write body file");

    let port = support::free_port();
    let server_addr = format!("127.0.0.1:{port}");
    let server = start_python_server("http_server.py", port, &[]);
    let mut agent = Agent::start(&[]);

    let data_arg = format!("@{}", body_path.display());
    let out = curl(&[
        "-s",
        "--data-binary",
        &data_arg,
        &format!("http://{server_addr}/{marker}"),
    ]);
    assert!(
        out.stdout_text()
            .contains(&format!("ok POST /{marker} {MIB}")),
        "server did not get the whole body: {}",
        out.describe()
    );
    let (curl_pid, server_pid) = (out.pid, server.pid());
    let request_line = format!("POST /{marker} HTTP/1.1\r\n");

    // Everything sent and received on each side (headers + 1 MiB).
    let stream_len = |cs: &[Chunk], pid: u32, dir: Direction| -> u64 {
        let Some(conn) = cs
            .iter()
            .find(|c| c.pid == pid && c.direction == dir && c.contains_str(&request_line))
            .map(Chunk::conn)
        else {
            return 0;
        };
        cs.iter()
            .filter(|c| c.conn() == conn && c.direction == dir)
            .map(|c| c.len)
            .sum()
    };
    agent.wait_for_chunks(
        |cs| {
            stream_len(cs, curl_pid, Egress) >= MIB as u64
                && stream_len(cs, server_pid, Ingress) >= MIB as u64
                && any_chunk(cs, curl_pid, Ingress, is_http_200)
        },
        CHUNK_TIMEOUT,
    );
    let chunks = agent.stop();

    let client_conn = one_conn_with(&chunks, curl_pid, Egress, &request_line, "curl egress");
    let client_out = stream_chunks(&chunks, client_conn, Egress);
    let head = request_head(
        &client_out[0].bytes(),
        &request_line,
        "curl's first egress chunk",
    );
    let expected: Vec<u8> = [head.as_slice(), body.as_slice()].concat();

    for (what, stream) in [
        ("curl egress", client_out),
        (
            "server ingress",
            stream_chunks(
                &chunks,
                one_conn_with(
                    &chunks,
                    server_pid,
                    Ingress,
                    &request_line,
                    "server ingress",
                ),
                Ingress,
            ),
        ),
    ] {
        let total: u64 = stream.iter().map(|c| c.len).sum();
        assert_eq!(
            total,
            expected.len() as u64,
            "{what}: sum of len is not the {} header bytes + {MIB} body bytes; chunks:\n{}",
            head.len(),
            stream
                .iter()
                .map(|c| format!("  {c}\n"))
                .collect::<String>()
        );
        for c in &stream {
            assert!(
                c.captured <= DEFAULT_CAPTURE_CAP,
                "{what}: captured above the default cap {DEFAULT_CAPTURE_CAP}: {c}"
            );
            assert!(!c.tls, "{what}: plain HTTP reported as TLS: {c}");
        }
        assert!(
            stream.len() > 1 || stream.iter().any(|c| c.captured < c.len),
            "{what}: 1 MiB in one untruncated chunk: {}",
            stream[0]
        );
        // Contiguous offsets from 0, and each chunk holds the first
        // `captured` bytes of what its call moved.
        assert_stream_matches(&stream, &expected, what);
        assert_same_addresses(&stream, what);
    }
    drop(dir);
}

/// `len` bytes: lines of "<marker> <line number>", so that any misplaced
/// byte range is caught.
fn pattern_body(marker: &str, len: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while body.len() < len {
        body.extend_from_slice(format!("{marker} {i:08}\n").as_bytes());
        i += 1;
    }
    body.truncate(len);
    body
}

#[test]
fn keepalive_connection_opened_before_agent_is_captured() {
    let marker = marker("keepalive");
    let port = support::free_port();
    let server_addr = format!("127.0.0.1:{port}");
    let server = start_python_server("http_server.py", port, &[]);

    // The client connects and makes its first request before the agent runs.
    let port_arg = port.to_string();
    let mut client = spawn_python(
        "keepalive_client.py",
        &["--port", &port_arg, "--marker", &marker],
    );
    let line = client.wait_stdout_line("its local address", FIXTURE_READY_TIMEOUT, |l| {
        l.starts_with('{')
    });
    let local: Value = serde_json::from_str(&line).expect("keepalive_client.py prints JSON");
    let client_addr = local["local"].as_str().expect("`local` field").to_owned();

    let mut agent = Agent::start(&[]);
    client.write_line("go");
    client.wait_stdout_line("DONE", FIXTURE_READY_TIMEOUT, |l| l.trim() == "DONE");
    let status = client.wait_exit(FIXTURE_READY_TIMEOUT);
    assert!(status.success(), "keepalive_client.py: {status}");

    let (client_pid, server_pid) = (client.pid(), server.pid());
    agent.wait_for_chunks(
        |cs| {
            any_chunk(cs, client_pid, Egress, |c| c.contains_str(&marker))
                && any_chunk(cs, server_pid, Ingress, |c| c.contains_str(&marker))
        },
        CHUNK_TIMEOUT,
    );
    let chunks = agent.stop();

    let request_line = format!("GET /{marker} HTTP/1.1\r\n");
    let client_conn = one_conn_with(&chunks, client_pid, Egress, &request_line, "client egress");
    let server_conn = one_conn_with(
        &chunks,
        server_pid,
        Ingress,
        &request_line,
        "server ingress",
    );
    for c in chunks.iter().filter(|c| c.conn() == client_conn) {
        c.assert_sane();
        assert_eq!(c.local, client_addr, "local of the client's chunk: {c}");
        assert_eq!(c.peer, server_addr, "peer of the client's chunk: {c}");
        assert!(!c.tls, "plain HTTP reported as TLS: {c}");
    }
    for c in chunks.iter().filter(|c| c.conn() == server_conn) {
        c.assert_sane();
        assert_eq!(c.local, server_addr, "local of the server's chunk: {c}");
        assert_eq!(c.peer, client_addr, "peer of the server's chunk: {c}");
        assert!(!c.tls, "plain HTTP reported as TLS: {c}");
    }
}

#[test]
fn agent_never_reports_itself() {
    let marker = marker("self");
    let port = support::free_port();
    let _server = start_python_server("http_server.py", port, &[]);
    let mut agent = Agent::start(&[]);
    let agent_pid = agent.pid();

    let out = curl(&["-s", &format!("http://127.0.0.1:{port}/{marker}")]);
    let curl_pid = out.pid;
    agent.wait_for_chunks(
        |cs| any_chunk(cs, curl_pid, Egress, |c| c.contains_str(&marker)),
        CHUNK_TIMEOUT,
    );
    // The agent has printed at least that chunk to its stdout (a pipe) by
    // now; nothing it does itself may come back as a chunk.
    let chunks = agent.stop();
    let own: Vec<&Chunk> = chunks.iter().filter(|c| c.pid == agent_pid).collect();
    assert!(
        own.is_empty(),
        "the agent (pid {agent_pid}) reported {} chunks of its own, e.g. {}",
        own.len(),
        own[0]
    );
}

#[test]
fn capture_cap_option_limits_captured_bytes() {
    const CAP: u64 = 1000;
    let marker = marker("cap");
    let dir = TempDir::new("cap");
    let body_path = dir.join("body.bin");
    let body = pattern_body(&marker, 64 * 1024);
    fs::write(&body_path, &body).expect("write body file");

    let port = support::free_port();
    let _server = start_python_server("http_server.py", port, &[]);
    let mut agent = Agent::start(&["--set", &format!("capture.capture_cap={CAP}")]);

    let data_arg = format!("@{}", body_path.display());
    let out = curl(&[
        "-s",
        "--data-binary",
        &data_arg,
        &format!("http://127.0.0.1:{port}/{marker}"),
    ]);
    let curl_pid = out.pid;
    let request_line = format!("POST /{marker} HTTP/1.1\r\n");
    let sent = |cs: &[Chunk]| -> u64 {
        let Some(conn) = cs
            .iter()
            .find(|c| c.pid == curl_pid && c.direction == Egress && c.contains_str(&request_line))
            .map(Chunk::conn)
        else {
            return 0;
        };
        cs.iter()
            .filter(|c| c.conn() == conn && c.direction == Egress)
            .map(|c| c.len)
            .sum()
    };
    agent.wait_for_chunks(|cs| sent(cs) >= body.len() as u64, CHUNK_TIMEOUT);
    let chunks = agent.stop();

    let conn = one_conn_with(&chunks, curl_pid, Egress, &request_line, "curl egress");
    let stream = stream_chunks(&chunks, conn, Egress);
    for c in &stream {
        c.assert_sane();
        assert!(c.captured <= CAP, "captured above --capture-cap {CAP}: {c}");
    }
    assert!(
        stream.iter().any(|c| c.captured == CAP && c.len > CAP),
        "no chunk truncated at exactly --capture-cap {CAP}; chunks:\n{}",
        stream
            .iter()
            .map(|c| format!("  {c}\n"))
            .collect::<String>()
    );
    assert_contiguous(&stream, "curl egress");
    drop(dir);
}

#[test]
fn sendfile_body_is_a_counted_gap_that_keeps_the_stream_aligned() {
    let marker = marker("sendfile");
    let dir = TempDir::new("sendfile");
    let body_path = dir.join("body.bin");
    let body = pattern_body(&marker, 100_000);
    fs::write(&body_path, &body).expect("write the body file");
    let port = support::free_port();
    let server_addr = format!("127.0.0.1:{port}");
    let body_arg = body_path.to_str().expect("UTF-8 temp path");
    let mut server = start_python_server("sendfile_server.py", port, &["--body", body_arg]);
    let mut agent = Agent::start(&[]);

    // Two requests on one keep-alive connection: the second head must sit right after the
    // first body in the server's egress stream, although no body byte was captured.
    let urls = [1, 2].map(|n| format!("http://{server_addr}/{marker}/{n}"));
    let out = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        &urls[0],
        &urls[1],
    ]);
    let events: Vec<Value> = (0..2)
        .map(|_| next_json_event(&mut server, "a `sent` event"))
        .collect();
    for event in &events {
        assert_eq!(event["body_len"], body.len(), "{}", out.describe());
    }
    let client_addr = events[0]["peer"].as_str().expect("peer").to_owned();
    let heads: Vec<Vec<u8>> = events.iter().map(|e| base64_field(e, "head_b64")).collect();
    let server_pid = server.pid();
    let is_ours = |c: &Chunk| {
        c.pid == server_pid
            && c.direction == Egress
            && c.local == server_addr
            && c.peer == client_addr
    };
    let total = (heads[0].len() + heads[1].len() + 2 * body.len()) as u64;
    agent.wait_for_chunks(
        |cs| cs.iter().filter(|c| is_ours(c)).map(|c| c.len).sum::<u64>() >= total,
        CHUNK_TIMEOUT,
    );
    let chunks = agent.stop();
    let mine: Vec<&Chunk> = chunks.iter().filter(|c| is_ours(c)).collect();
    let conn = mine.first().expect("server egress captured").conn();
    let stream = stream_chunks(&chunks, conn, Egress);
    assert_contiguous(&stream, "server egress");
    assert_eq!(
        stream.iter().map(|c| c.len).sum::<u64>(),
        total,
        "{}",
        summarize(&chunks)
    );

    let body_len = body.len() as u64;
    let mut offset = 0;
    for head in &heads {
        let head_chunks: Vec<&Chunk> = stream
            .iter()
            .copied()
            .filter(|c| c.offset >= offset && c.offset < offset + head.len() as u64)
            .collect();
        assert_eq!(concat(&head_chunks), *head, "response head in the stream");
        assert!(head_chunks.iter().all(|c| !c.gap), "head marked as a gap");
        offset += head.len() as u64;
        let gap: u64 = stream
            .iter()
            .filter(|c| c.offset >= offset && c.offset < offset + body_len)
            .inspect(|c| {
                assert!(c.gap, "body bytes not marked as a gap: {c}");
                assert_eq!(c.captured, 0, "gap chunk with data: {c}");
            })
            .map(|c| c.len)
            .sum();
        assert_eq!(gap, body_len, "the sendfile gap must count every body byte");
        offset += body_len;
    }
}

/// Bytes no decoder wants are not copied at all: once the agent has seen the first message of
/// a binary protocol, it mutes the connection in the kernel map, and the kernel then only
/// counts its calls (`payload_muted`), while HTTP is still decoded.
#[test]
fn connections_no_decoder_wants_are_muted_in_the_kernel() {
    const MESSAGES: u64 = 300;
    let port = support::free_port();
    let _server = start_python_server("http_server.py", port, &[]);
    let mut agent = Agent::start_exporting(&[], &[("RUST_LOG", "info,agent::pipeline=debug")]);
    let mut peers = spawn_python("binary_peer.py", &[]);
    peers.wait_stdout_line("ready", FIXTURE_READY_TIMEOUT, |line| {
        line.contains("ready")
    });
    peers.write_line("send 1");
    peers.wait_stdout_line("sent 1", FIXTURE_READY_TIMEOUT, |line| {
        line.contains("sent")
    });
    let peer_pid = format!("tgid: {},", peers.pid());
    agent.wait_log_line("the peers' connection muted", CHUNK_TIMEOUT, |line| {
        line.contains("payload policies") && line.contains(&peer_pid) && line.contains("Mute")
    });
    peers.write_line(&format!("send {MESSAGES}"));
    peers.wait_stdout_line("sent", FIXTURE_READY_TIMEOUT, |line| {
        line.contains(&format!("\"sent\": {MESSAGES}"))
    });
    let out = curl(&[
        "-s",
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{port}/still-decoded"),
    ]);
    assert!(out.status.success(), "curl failed: {}", out.describe());

    let (lines, log) = agent.stop_for_lines_and_log();
    let totals = log
        .iter()
        .rev()
        .find_map(|line| line.split_once("capture totals: ").map(|(_, list)| list))
        .unwrap_or_else(|| panic!("no capture totals in the log: {log:#?}"));
    let muted: u64 = totals
        .split(", ")
        .find_map(|pair| pair.strip_prefix("payload_muted="))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no payload_muted counter in `{totals}`"));
    // Each message is a send and a receive on the client's fd: both muted once it is.
    assert!(
        muted >= 2 * MESSAGES,
        "payload_muted={muted}, expected at least {} (totals: {totals})",
        2 * MESSAGES
    );
    assert!(
        lines
            .iter()
            .any(|line| line.contains(" server ") && line.contains("/still-decoded")),
        "HTTP is still decoded after muting; stdout: {lines:#?}"
    );
}
