//! The agent when its collector fails it and when traffic outruns it: the collector too slow,
//! then refusing, then gone for 30 s under steady traffic (retries with backoff, nothing queued lost,
//! memory bounded, the OTLP API key from a headers file never in its log), and a flood of
//! calls and 8 MiB uploads into a tiny export queue with the collector refusing (drops
//! counted, memory bounded, back to normal once the collector is, the cut bodies marked).
//!
//! A soak of connection, process and library churn shows the agent's memory and descriptors
//! do not grow, and the uprobes of OpenSSL copies that are no longer mapped are detached.
//!
//! They run one at a time: they measure the agent's memory under load, and each agent
//! would also capture the other's exports.
//!
//! `E2E_LONG_TESTS=1` runs the long versions: a 3-minute outage, a minute-long flood
//! on 2,000 connections and 30 rounds of churn.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::otlp::{FlatSpan, OtlpReceiver};
use support::{
    Agent, ChildGuard, TempDir, marker, metric_sample, one_at_a_time, peak_rss_kib, random_hex,
    reset_peak_rss, rss_kib, spawn_python, start_python_server, system_libssl,
};

/// Whether to run the long versions.
fn long() -> bool {
    std::env::var("E2E_LONG_TESTS").is_ok_and(|value| value == "1")
}

/// Growth of the agent's resident memory allowed over what it held before the trouble: the
/// export queue's limit (16 MiB by default) plus the allocator's slack.
const MEMORY_GROWTH_LIMIT_KIB: u64 = 64 * 1024;

/// The size of each upload during the flood.
const BIG_BODY_BYTES: usize = 8 * 1024 * 1024;

/// How many uploads one curl makes, one after the other, during the flood.
const BIG_UPLOADS: usize = 10;

/// Growth of resident memory allowed between the first round of churn and the last: the
/// allocator's slack, not a leak's slope.
const SOAK_GROWTH_LIMIT_KIB: u64 = 16 * 1024;

/// Batches every 200 ms, metrics every second.
const EXPORT_ENV: &[(&str, &str)] = &[
    ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
];

/// The agent's resident memory from a moment on: what it held then, and the most it has held
/// since, as the kernel records it (so no moment between two looks is missed).
struct Peak {
    pid: u32,
    before_kib: u64,
}

impl Peak {
    fn start(pid: u32) -> Peak {
        reset_peak_rss(pid);
        Peak {
            pid,
            before_kib: rss_kib(pid),
        }
    }

    /// The most the agent has held since [`Peak::start`].
    fn kib(&self) -> u64 {
        peak_rss_kib(self.pid)
    }
}

/// How long an export may take before the agent gives up on it (and retries).
const EXPORT_TIMEOUT_MS: u64 = 1_000;

/// Writes an agent configuration with a 1 s export timeout, fast retries and the OTLP headers
/// file into `dir`; returns its path.
fn write_config(dir: &TempDir, headers: &str, max_elapsed_ms: u64) -> String {
    let headers_file = dir.join("otlp-headers");
    std::fs::write(&headers_file, headers).expect("write the headers file");
    let config = dir.join("apiscope.yaml");
    std::fs::write(
        &config,
        format!(
            "export:\n  otlp:\n    headers_file: {}\n    timeout_ms: {EXPORT_TIMEOUT_MS}\n    retry:\n      initial_interval_ms: 100\n      max_interval_ms: 1000\n      max_elapsed_ms: {max_elapsed_ms}\n",
            headers_file.display()
        ),
    )
    .expect("write the config file");
    config.to_str().expect("utf-8 path").to_owned()
}

/// The server spans of process `pid` for the paths `paths`.
fn served_paths(spans: &[FlatSpan], pid: u32, paths: &BTreeSet<String>) -> BTreeSet<String> {
    spans
        .iter()
        .filter(|span| span.is_server() && span.pid() == Some(pid))
        .filter_map(|span| span.attr_str("url.path"))
        .filter(|path| paths.contains(*path))
        .map(str::to_owned)
        .collect()
}

/// Sends one request (a POST of the file `body` if given, else a GET) and waits up to
/// `within` for its server span to arrive at `receiver`; returns that span, or the path whose
/// span did not come.
fn try_call(
    receiver: &OtlpReceiver,
    port: u16,
    server_pid: u32,
    body: Option<&Path>,
    within: Duration,
) -> Result<FlatSpan, String> {
    let path = format!("/{}", marker("reliability-call"));
    let data = body.map(|file| format!("@{}", file.display()));
    let mut args = vec!["-s", "-o", "/dev/null"];
    if let Some(data) = &data {
        args.extend(["--data-binary", data]);
    }
    let url = format!("http://127.0.0.1:{port}{path}");
    args.push(&url);
    let out = support::curl(&args);
    assert!(out.status.success(), "curl: {}", out.describe());
    let wanted = BTreeSet::from([path.clone()]);
    receiver
        .try_wait_for_spans(
            |spans| !served_paths(spans, server_pid, &wanted).is_empty(),
            within,
        )
        .map_err(|_| path.clone())?
        .into_iter()
        .find(|span| span.is_server() && span.attr_str("url.path") == Some(&path))
        .ok_or(path)
}

/// Fails the test with the agent's counters: the span of `path` did not arrive.
fn missing_span(agent: &mut Agent, path: &str) -> ! {
    let metrics = agent.get("/metrics");
    let counters: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("apiscope_"))
        .collect();
    agent.fail(&format!(
        "the span of {path} did not arrive; counters: {counters:#?}"
    ))
}

/// Like [`try_call`], waiting 30 s, and fails the test when the span does not come.
fn one_call_arrives(
    receiver: &OtlpReceiver,
    agent: &mut Agent,
    port: u16,
    server_pid: u32,
    body: Option<&Path>,
) -> FlatSpan {
    try_call(receiver, port, server_pid, body, Duration::from_secs(30))
        .unwrap_or_else(|path| missing_span(agent, &path))
}

/// Makes calls until one's span arrives again, as it does once the agent's export queue,
/// full when the collector came back, has drained (a call made while it is full is dropped,
/// as it should be); fails after 30 s.
fn export_recovers(receiver: &OtlpReceiver, agent: &mut Agent, port: u16, server_pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match try_call(receiver, port, server_pid, None, Duration::from_secs(2)) {
            Ok(_) => return,
            Err(path) if Instant::now() > deadline => missing_span(agent, &path),
            Err(_) => {}
        }
    }
}

#[test]
fn a_collector_outage_under_load_loses_nothing_queued() {
    let _alone = one_at_a_time();
    let outage_secs: u64 = if long() { 180 } else { 30 };
    let (slow_secs, refusing_secs): (u64, u64) = (5, 5);
    let receiver = OtlpReceiver::start();
    let address = receiver.addr();
    let dir = TempDir::new("reliability-outage");
    let secret = random_hex(16);
    let config = write_config(
        &dir,
        &format!("# the backend's key\nx-api-key={secret}\n"),
        600_000,
    );
    let mut agent = receiver.agent(&["--config", &config], EXPORT_ENV);
    let port = support::free_port();
    let server = start_python_server("http_server.py", port, &[]);
    one_call_arrives(&receiver, &mut agent, port, server.pid(), None);
    assert_eq!(
        receiver.header_values("x-api-key"),
        BTreeSet::from([secret.clone()]),
        "the key of the headers file did not reach the collector"
    );
    let peak = Peak::start(agent.pid());
    let before_kib = peak.before_kib;

    // The collector answers too late for a while, then UNAVAILABLE, then is gone; traffic
    // goes on throughout.
    receiver.answer_after(Some(Duration::from_millis(3 * EXPORT_TIMEOUT_MS)));
    let prefix = marker("outage");
    let rate = 10;
    let seconds = slow_secs + refusing_secs + outage_secs;
    let count = rate * seconds;
    let mut client = spawn_python(
        "paced_client.py",
        &[
            "--port",
            &port.to_string(),
            "--prefix",
            &prefix,
            "--count",
            &count.to_string(),
            "--seconds",
            &seconds.to_string(),
        ],
    );
    let slow_until = format!("SENT {}", rate * slow_secs);
    client.wait_stdout_line(&slow_until, Duration::from_secs(30), |line| {
        line == slow_until
    });
    let retries = metric_sample(&agent.get("/metrics"), "apiscope_export_retries_total");
    assert!(retries > 0, "no export timed out on the slow collector");
    receiver.fail_with(Some(tonic::Code::Unavailable));
    receiver.answer_after(None);
    let refusing_until = format!("SENT {}", rate * (slow_secs + refusing_secs));
    client.wait_stdout_line(&refusing_until, Duration::from_secs(30), |line| {
        line == refusing_until
    });
    assert!(
        receiver.refused_count() > 0,
        "the agent sent nothing while the collector refused"
    );
    drop(receiver);
    client.wait_stdout_line("DONE", Duration::from_secs(outage_secs + 60), |line| {
        line == "DONE"
    });

    // Back on the same address: everything made meanwhile arrives.
    let receiver = OtlpReceiver::start_on(address);
    let paths: BTreeSet<String> = (0..count)
        .map(|index| format!("/{prefix}/{index}"))
        .collect();
    let arrived = receiver.try_wait_for_spans(
        |spans| served_paths(spans, server.pid(), &paths).len() == paths.len(),
        Duration::from_secs(60),
    );
    if let Err(spans) = arrived {
        let got = served_paths(&spans, server.pid(), &paths).len();
        agent.fail(&format!(
            "{got} of the {count} calls made during the outage arrived after it"
        ));
    }
    let metrics = agent.get("/metrics");
    assert!(
        metric_sample(&metrics, "apiscope_export_retries_total") > 0,
        "{metrics}"
    );
    for outcome in ["dropped", "failed"] {
        let series = format!("apiscope_export_spans_total{{outcome=\"{outcome}\"}}");
        assert_eq!(metric_sample(&metrics, &series), 0, "{metrics}");
    }
    let growth = peak.kib().saturating_sub(before_kib);
    assert!(
        growth < MEMORY_GROWTH_LIMIT_KIB,
        "memory grew by {growth} KiB during the outage (from {before_kib} KiB)"
    );
    eprintln!(
        "outage of {outage_secs} s: resident memory {before_kib} KiB before, {} KiB at most",
        peak.kib()
    );

    let (stdout, log) = agent.stop_for_lines_and_log();
    assert!(
        !stdout.iter().chain(&log).any(|line| line.contains(&secret)),
        "the API key was written out"
    );
    let failed_lines = log
        .iter()
        .filter(|line| line.contains("OTLP traces export failed"))
        .count();
    assert_eq!(
        failed_lines, 1,
        "one line per outage, not one per failure: {log:#?}"
    );
    assert!(
        log.iter()
            .any(|line| line.contains("OTLP traces export works again")),
        "{log:#?}"
    );
}

#[test]
fn a_flood_into_a_full_queue_is_counted_bounded_and_recovered_from() {
    let _alone = one_at_a_time();
    let (connections, seconds) = if long() { (2_000, 60) } else { (100, 5) };
    let receiver = OtlpReceiver::start();
    receiver.fail_with(Some(tonic::Code::Unavailable));
    let dir = TempDir::new("reliability-flood");
    let config = write_config(&dir, "", 1_000);
    let mut agent = receiver.agent(
        &[
            "--config",
            &config,
            "--set",
            "export.otlp.max_queue_bytes=65536",
        ],
        EXPORT_ENV,
    );
    let port = support::free_port();
    let server = start_python_server("http_server.py", port, &[]);
    let big_body = dir.join("big-body");
    std::fs::write(&big_body, vec![b'x'; BIG_BODY_BYTES]).expect("write the big body");
    let peak = Peak::start(agent.pid());
    let before_kib = peak.before_kib;
    // Multi-megabyte uploads go on while wrk floods the server with small calls.
    let big_url = format!("http://127.0.0.1:{port}/{}", marker("upload"));
    let mut uploads = ChildGuard::spawn(
        "curl",
        Command::new("curl")
            .args(["-s", "--fail", "--data-binary"])
            .arg(format!("@{}", big_body.display()))
            .args(std::iter::repeat_n(&big_url, BIG_UPLOADS))
            .stdout(std::process::Stdio::null()),
    );
    let mut wrk = ChildGuard::spawn(
        "wrk",
        Command::new("wrk")
            .args(["-t", "2", "-c", &connections.to_string()])
            .args(["-d", &format!("{seconds}s")])
            .arg(format!("http://127.0.0.1:{port}/{}", marker("flood")))
            .stdout(std::process::Stdio::null()),
    );
    let deadline = Instant::now() + Duration::from_secs(seconds + 30);
    let wrk_status = wrk.wait_timeout(deadline.saturating_duration_since(Instant::now()));
    let uploads_status = uploads.wait_timeout(deadline.saturating_duration_since(Instant::now()));
    assert!(
        wrk_status.is_some_and(|status| status.success()),
        "wrk: {wrk_status:?}"
    );
    assert!(
        uploads_status.is_some_and(|status| status.success()),
        "curl uploads: {uploads_status:?}"
    );
    let metrics = agent.get("/metrics");
    let dropped = metric_sample(&metrics, "apiscope_export_spans_total{outcome=\"dropped\"}");
    assert!(dropped > 0, "no drops counted: {metrics}");
    let growth = peak.kib().saturating_sub(before_kib);
    assert!(
        growth < MEMORY_GROWTH_LIMIT_KIB,
        "memory grew by {growth} KiB during the flood (from {before_kib} KiB)"
    );
    eprintln!(
        "flood of {connections} connections for {seconds} s: {dropped} spans dropped, \
         resident memory {before_kib} KiB before, {} KiB at most",
        peak.kib()
    );

    // The collector recovers, and so does the agent; a big upload's span says how big it was
    // and that its body was not all captured.
    receiver.fail_with(None);
    export_recovers(&receiver, &mut agent, port, server.pid());
    let span = one_call_arrives(&receiver, &mut agent, port, server.pid(), Some(&big_body));
    assert_eq!(
        span.attr_int("http.request.body.size"),
        i64::try_from(BIG_BODY_BYTES).ok(),
        "{span:?}"
    );
    assert!(span.attr("apiscope.call.incomplete").is_some(), "{span:?}");
    agent.stop_for_lines();
}

/// How the `/metrics` series of attached OpenSSL files is written.
const OPENSSL_FILES: &str = "apiscope_probes_attached{kind=\"openssl_files\"}";

/// Open file descriptors of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/fd: {e}"))
        .count()
}

/// Polls the agent's `/metrics` until the count of OpenSSL files with uprobes is `wanted`.
fn wait_for_openssl_files(agent: &mut Agent, wanted: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let metrics = agent.get("/metrics");
        let attached = metric_sample(&metrics, OPENSSL_FILES);
        if attached == wanted {
            return;
        }
        if Instant::now() > deadline {
            agent.fail(&format!(
                "{attached} OpenSSL files have uprobes, not {wanted}, after {within:?}"
            ));
        }
        // Polling cadence of a condition the agent reaches by itself.
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One round of churn: `connections` calls on a fresh connection each, `processes` short
/// processes, and `libraries` processes that each map their own copy of OpenSSL and exit once
/// the agent has attached to it.
fn churn_once(agent: &mut Agent, port: u16, copies: &[String], baseline_files: u64) {
    const CONNECTIONS: usize = 200;
    const PROCESSES: usize = 100;
    let url = format!("http://127.0.0.1:{port}/{}", marker("soak"));
    let out = support::curl(
        &[
            &["-s", "--fail", "-o", "/dev/null", "-H", "Connection: close"][..],
            &vec![url.as_str(); CONNECTIONS][..],
        ]
        .concat(),
    );
    assert!(out.status.success(), "curl: {}", out.describe());
    for _ in 0..PROCESSES {
        let status = Command::new("true").status().expect("run true");
        assert!(status.success());
    }
    let holders: Vec<ChildGuard> = copies
        .iter()
        .map(|copy| {
            ChildGuard::spawn(
                "sleep",
                Command::new("sleep").arg("600").env("LD_PRELOAD", copy),
            )
        })
        .collect();
    let loaded = baseline_files + copies.len() as u64;
    wait_for_openssl_files(agent, loaded, Duration::from_secs(30));
    drop(holders);
}

#[test]
fn churn_of_connections_processes_and_libraries_leaves_no_growth() {
    let _alone = one_at_a_time();
    let rounds = if long() { 30 } else { 3 };
    let receiver = OtlpReceiver::start();
    let mut agent = receiver.agent(&[], EXPORT_ENV);
    let port = support::free_port();
    let _server = start_python_server("http_server.py", port, &[]);
    let dir = TempDir::new("reliability-soak");
    let libssl = system_libssl();
    let copies: Vec<String> = (0..4)
        .map(|index| {
            let copy_dir = dir.join(&format!("copy-{index}"));
            std::fs::create_dir_all(&copy_dir).expect("make the copy's directory");
            let copy = copy_dir.join("libssl.so.3");
            std::fs::copy(&libssl, &copy).expect("copy libssl");
            copy.to_str().expect("utf-8 path").to_owned()
        })
        .collect();
    let baseline_files = metric_sample(&agent.get("/metrics"), OPENSSL_FILES);

    // A first round warms the agent's tables and allocator up; the later ones must not grow.
    churn_once(&mut agent, port, &copies, baseline_files);
    wait_for_openssl_files(&mut agent, baseline_files, Duration::from_secs(90));
    let peak = Peak::start(agent.pid());
    let (before_kib, before_fds) = (peak.before_kib, fd_count(agent.pid()));
    for _ in 1..rounds {
        churn_once(&mut agent, port, &copies, baseline_files);
    }
    wait_for_openssl_files(&mut agent, baseline_files, Duration::from_secs(90));
    let (after_kib, after_fds) = (rss_kib(agent.pid()), fd_count(agent.pid()));
    eprintln!(
        "{rounds} rounds of churn: resident memory {before_kib} KiB after the first, \
         {after_kib} KiB at the end ({} KiB at most); descriptors {before_fds} -> {after_fds}",
        peak.kib()
    );
    assert!(
        after_fds <= before_fds + 4,
        "descriptors grew from {before_fds} to {after_fds}"
    );
    assert!(
        after_kib.saturating_sub(before_kib) < SOAK_GROWTH_LIMIT_KIB,
        "memory grew from {before_kib} KiB to {after_kib} KiB"
    );
    let (_, log) = agent.stop_for_lines_and_log();
    assert!(
        log.iter()
            .any(|line| line.contains("TLS capture detached from files no process maps")),
        "{log:#?}"
    );
}
