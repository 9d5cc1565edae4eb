//! End-to-end Model Context Protocol: the official `mcp` Python SDK (PyPI) runs a client and a
//! tool server (tests/fixtures/mcp_client.py, mcp_server.py), over streamable HTTP and over
//! stdio, while the real agent watches; spans arrive at an in-process OTLP receiver. The client
//! runs `initialize`, `tools/list`, three `tools/call`s (one a tool error, one that changes a
//! tool's description) and `tools/list` again: the second listing must raise the rug-pull
//! rule, once for the session whichever ends the agent sees, and nothing else may be raised.

mod support;

use std::process::Command;

use serde_json::Value;
use support::otlp::{FlatLog, FlatSpan, OtlpReceiver, summarize_logs, summarize_spans};
use support::{COMMAND_TIMEOUT, fixture, free_port, python, run, start_python_server};

const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The spans one MCP session must give, by name, in the order the client sent them.
const SESSION: [&str; 6] = [
    "initialize",
    "tools/list",
    "tools/call add",
    "tools/call fail",
    "tools/call rotate_notes",
    "tools/list",
];

/// Runs the client with `args`; returns its pid and what it printed.
fn run_client(args: &[&str]) -> (u32, Value) {
    let mut cmd = Command::new(python());
    cmd.arg(fixture("mcp_client.py"))
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = run(&mut cmd, COMMAND_TIMEOUT);
    assert!(out.status.success(), "mcp client: {}", out.describe());
    let seen: Value = serde_json::from_str(out.stdout_text().trim())
        .unwrap_or_else(|e| panic!("client printed no JSON ({e}): {}", out.describe()));
    (out.pid, seen)
}

/// The MCP spans of `pid` on one side, in start order.
fn mcp_spans(spans: &[FlatSpan], pid: u32, server: bool) -> Vec<&FlatSpan> {
    let mut found: Vec<&FlatSpan> = spans
        .iter()
        .filter(|span| {
            span.pid() == Some(pid)
                && span.is_server() == server
                && span.attr_str("mcp.method.name").is_some()
                && span.attr_str("mcp.method.name") != Some("notifications/initialized")
        })
        .collect();
    found.sort_by_key(|span| span.start_unix_nano);
    found
}

/// What is wrong with one side's spans of a session over `transport`.
fn session_problems(spans: &[&FlatSpan], transport: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let names: Vec<&str> = spans.iter().map(|span| span.name.as_str()).collect();
    if names != SESSION {
        problems.push(format!("span names {names:?}, expected {SESSION:?}"));
        return problems;
    }
    let ids: Vec<Option<&str>> = spans
        .iter()
        .map(|span| span.attr_str("jsonrpc.request.id"))
        .collect();
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    if ids.contains(&None) || distinct.len() != ids.len() {
        problems.push(format!("request ids {ids:?} are not one per request"));
    }
    for span in spans {
        let method = span.name.split(' ').next().unwrap_or_default();
        if span.attr_str("mcp.method.name") != Some(method) {
            problems.push(format!("{}: mcp.method.name", span.name));
        }
        if span.attr_str("network.transport") != Some(transport) {
            problems.push(format!("{}: network.transport", span.name));
        }
        if span.attr("apiscope.mcp.incomplete").is_some() {
            problems.push(format!("{}: marked incomplete", span.name));
        }
        let tool = span.name.strip_prefix("tools/call ");
        if span.attr_str("gen_ai.tool.name") != tool {
            problems.push(format!("{}: gen_ai.tool.name", span.name));
        }
        let error = (span.name == "tools/call fail").then_some("tool_error");
        if span.attr_str("error.type") != error {
            problems.push(format!(
                "{}: error.type {:?}",
                span.name,
                span.attr_str("error.type")
            ));
        }
    }
    let first = spans[0];
    if first.attr_str("mcp.protocol.version").is_none()
        || first.attr_str("apiscope.mcp.server.name") != Some("apiscope-test-tools")
    {
        problems.push("initialize lacks the protocol version or the server name".to_owned());
    }
    if spans[1].attr_int("apiscope.mcp.tool.count") != Some(6) {
        problems.push("tools/list does not count its 6 tools".to_owned());
    }
    problems
}

/// The security findings about `spans`, by rule.
fn findings_on<'a>(logs: &'a [FlatLog], spans: &[&FlatSpan]) -> Vec<(&'a str, &'a FlatLog)> {
    logs.iter()
        .filter(|log| log.event_name == "api.security.finding")
        .filter(|log| spans.iter().any(|span| span.span_id == log.span_id))
        .filter_map(|log| Some((log.attr_str("security_rule.name")?, log)))
        .collect()
}

/// Waits for the rug-pull finding on the session's last listing and checks it is the only
/// finding of the session.
fn expect_one_rug_pull(receiver: &OtlpReceiver, session: &[&FlatSpan]) {
    let logs = receiver.wait_for_logs(
        |logs| !findings_on(logs, session).is_empty(),
        EXPORT_TIMEOUT,
    );
    let found = findings_on(&logs, session);
    let rules: Vec<&str> = found.iter().map(|(rule, _)| *rule).collect();
    assert_eq!(rules, ["mcp-tool-rug-pull"], "{}", summarize_logs(&logs));
    let (_, finding) = found[0];
    assert_eq!(
        finding.attr_str("apiscope.finding.location"),
        Some("tool:read_notes")
    );
    let listed_last = session
        .iter()
        .filter(|span| span.name == "tools/list")
        .max_by_key(|span| span.start_unix_nano)
        .expect("a listing");
    let on_a_last_listing = session.iter().any(|span| {
        span.span_id == finding.span_id
            && span.name == "tools/list"
            && span.attr_str("jsonrpc.request.id") == listed_last.attr_str("jsonrpc.request.id")
    });
    assert!(
        on_a_last_listing,
        "the finding is not on the second listing"
    );
}

#[test]
fn streamable_http_sessions_become_mcp_spans_on_both_ends() {
    let receiver = OtlpReceiver::start();
    let port = free_port();
    let server = start_python_server("mcp_server.py", port, &[]);
    let mut agent = receiver.agent(&[], &[("OTEL_BSP_SCHEDULE_DELAY", "200")]);
    let url = format!("http://127.0.0.1:{port}/mcp");
    let (client, seen) = run_client(&["--url", &url]);
    assert_eq!(seen["fail_is_error"], true, "what the client got: {seen}");
    assert_ne!(seen["notes_before"], seen["notes_after"]);
    let session = seen["session_id"]
        .as_str()
        .expect("a session id")
        .to_owned();
    let digest = seen["session_digest"]
        .as_str()
        .expect("its digest")
        .to_owned();

    let spans = receiver.wait_for_spans(
        |spans| {
            mcp_spans(spans, server.pid(), true).len() >= SESSION.len()
                && mcp_spans(spans, client, false).len() >= SESSION.len()
        },
        EXPORT_TIMEOUT,
    );
    let served = mcp_spans(&spans, server.pid(), true);
    let called = mcp_spans(&spans, client, false);
    let mut problems = Vec::new();
    for (side, side_spans) in [("server", &served), ("client", &called)] {
        for problem in session_problems(side_spans, "tcp") {
            problems.push(format!("{side}: {problem}"));
        }
        for span in side_spans.iter() {
            if span.attr_str("mcp.session.id") != Some(digest.as_str()) {
                problems.push(format!("{side}: {} is not in the session", span.name));
            }
        }
    }
    let ids = |spans: &[&FlatSpan]| -> Vec<Option<String>> {
        spans
            .iter()
            .map(|span| span.attr_str("jsonrpc.request.id").map(str::to_owned))
            .collect()
    };
    if problems.is_empty() && ids(&served) != ids(&called) {
        problems.push("the two ends disagree on the request ids".to_owned());
    }
    assert!(
        problems.is_empty(),
        "{}\n{}",
        problems.join("\n"),
        summarize_spans(&spans)
    );
    let both_ends: Vec<&FlatSpan> = served.iter().chain(&called).copied().collect();
    expect_one_rug_pull(&receiver, &both_ends);

    // The inventory's AI section: the server and the client each list the server, its six
    // tools, the one change of `read_notes` and the one call of `add`.
    let inventory: Value = serde_json::from_str(&agent.get("/inventory")).expect("JSON");
    let workloads = inventory["ai"].as_array().cloned().unwrap_or_default();
    for side in ["server", "client"] {
        let key = format!("{side} 127.0.0.1:{port}/mcp");
        let server = workloads
            .iter()
            .find_map(|workload| workload["mcp_servers"].get(&key))
            .unwrap_or_else(|| panic!("no {key} in {workloads:?}"));
        assert_eq!(server["name"], "apiscope-test-tools", "{server}");
        assert_eq!(server["transport"], "tcp");
        let tools = server["tools"].as_object().expect("tools");
        assert_eq!(tools.len(), 6, "{server}");
        assert_eq!(tools["read_notes"]["changes"], 1, "{server}");
        assert_eq!(tools["add"]["calls"], 1, "{server}");
        assert_eq!(tools["add"]["digest"].as_str().map(str::len), Some(64));
    }
    agent.stop();
    let exported = receiver.all_bytes();
    assert!(
        !exported
            .windows(session.len())
            .any(|window| window == session.as_bytes()),
        "the raw session id left the agent"
    );
}

#[test]
fn a_stdio_tool_server_started_by_its_client_is_followed_through_its_pipes() {
    let receiver = OtlpReceiver::start();
    let agent = receiver.agent(
        &["--stdio-command", "*mcp_server.py --stdio*"],
        &[("OTEL_BSP_SCHEDULE_DELAY", "200")],
    );
    let server_script = fixture("mcp_server.py");
    let (client, seen) = run_client(&["--stdio", &server_script.to_string_lossy()]);
    assert_eq!(seen["fail_is_error"], true, "what the client got: {seen}");
    assert_ne!(seen["notes_before"], seen["notes_after"]);

    let piped = |spans: &[FlatSpan]| -> Option<u32> {
        spans
            .iter()
            .find(|span| {
                span.attr_str("network.transport") == Some("pipe") && span.pid() != Some(client)
            })
            .and_then(FlatSpan::pid)
    };
    let spans = receiver.wait_for_spans(
        |spans| piped(spans).is_some_and(|pid| mcp_spans(spans, pid, true).len() >= SESSION.len()),
        EXPORT_TIMEOUT,
    );
    let server = piped(&spans).expect("waited for");
    let session = mcp_spans(&spans, server, true);
    let problems = session_problems(&session, "pipe");
    assert!(
        problems.is_empty(),
        "{}\n{}",
        problems.join("\n"),
        summarize_spans(&spans)
    );
    let sessions: Vec<_> = spans
        .iter()
        .filter(|span| span.attr_str("network.transport") == Some("pipe"))
        .filter_map(|span| span.attr_str("mcp.session.id"))
        .collect();
    assert!(
        sessions.is_empty(),
        "stdio has no session ids: {sessions:?}"
    );
    expect_one_rug_pull(&receiver, &session);
    agent.stop();
}

#[test]
fn an_agent_obeying_an_injected_tool_result_is_flagged() {
    let receiver = OtlpReceiver::start();
    let port = free_port();
    let server = start_python_server("mcp_server.py", port, &[]);
    let agent = receiver.agent(&[], &[("OTEL_BSP_SCHEDULE_DELAY", "200")]);
    let url = format!("http://127.0.0.1:{port}/mcp");
    let (client, seen) = run_client(&["--url", &url, "--agency"]);
    assert_eq!(seen["deleted"], "deleted", "what the client got: {seen}");
    let named = |spans: &[FlatSpan], name: &str| -> Vec<FlatSpan> {
        spans
            .iter()
            .filter(|span| span.name == name)
            .filter(|span| span.pid() == Some(client) || span.pid() == Some(server.pid()))
            .cloned()
            .collect()
    };
    let spans = receiver.wait_for_spans(
        |spans| {
            named(spans, "tools/call fetch_page").len() == 2
                && named(spans, "tools/call delete_notes").len() == 2
        },
        EXPORT_TIMEOUT,
    );
    let fetched = named(&spans, "tools/call fetch_page");
    let deleted = named(&spans, "tools/call delete_notes");
    let fetched: Vec<&FlatSpan> = fetched.iter().collect();
    let deleted: Vec<&FlatSpan> = deleted.iter().collect();
    let logs = receiver.wait_for_logs(
        |logs| !findings_on(logs, &fetched).is_empty() && !findings_on(logs, &deleted).is_empty(),
        EXPORT_TIMEOUT,
    );
    let on_fetch = findings_on(&logs, &fetched);
    let rules: Vec<&str> = on_fetch.iter().map(|(rule, _)| *rule).collect();
    assert_eq!(rules, ["prompt-injection"], "{}", summarize_logs(&logs));
    assert_eq!(
        on_fetch[0].1.attr_str("apiscope.finding.location"),
        Some("tool:fetch_page:result")
    );
    let on_delete = findings_on(&logs, &deleted);
    let rules: Vec<&str> = on_delete.iter().map(|(rule, _)| *rule).collect();
    assert_eq!(rules, ["excessive-agency"], "{}", summarize_logs(&logs));
    let (_, finding) = on_delete[0];
    assert!(
        deleted
            .iter()
            .any(|span| span.span_id == finding.span_id && span.pid() == Some(client)),
        "the finding is not on the agent's own call"
    );
    agent.stop();
}
