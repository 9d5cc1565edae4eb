//! End-to-end selection: processes excluded by the configuration's rules (by executable glob,
//! by cgroup glob) are filtered in the kernel: not one of their bytes reaches the agent, which
//! counts the calls it skipped, while everything else is still captured.

mod support;

use std::{fs, process::Command};

use support::cgroup::TestCgroups;
use support::{
    Agent, CHUNK_TIMEOUT, COMMAND_TIMEOUT, FIXTURE_READY_TIMEOUT, Proc, TempDir, free_port, marker,
    python, run,
};

/// Starts the HTTP fixture with `command` (which execs python with the fixture).
fn http_server(command: &mut Command) -> Proc {
    let mut server = Proc::spawn(
        "http_server.py",
        command.env("PYTHONDONTWRITEBYTECODE", "1"),
    );
    server.wait_stdout_line("READY", FIXTURE_READY_TIMEOUT, |l| l.trim() == "READY");
    server
}

/// `curl` (or a copy of it) fetching `path` from `port`; returns its pid.
fn fetch(curl: &std::path::Path, port: u16, path: &str) -> u32 {
    let url = format!("http://127.0.0.1:{port}{path}");
    let out = run(
        Command::new(curl).args(["-s", "--max-time", "10", "-o", "/dev/null", &url]),
        COMMAND_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "{}: {}",
        curl.display(),
        out.describe()
    );
    out.pid
}

#[test]
fn processes_excluded_by_executable_or_cgroup_never_reach_userspace() {
    let dir = TempDir::new("selection");
    let mut cgroups = TestCgroups::new();
    let excluded_cgroup = cgroups.create("excluded.slice/app.service");
    // A copy of curl under a name the rules exclude; the real curl stays captured.
    let excluded_curl = dir.join("excluded-curl");
    fs::copy("/usr/bin/curl", &excluded_curl).expect("copy curl");
    let config = dir.join("agent.yaml");
    fs::write(
        &config,
        format!(
            "selection:\n  exclude:\n    - cgroup: \"{}/excluded.slice/*\"\n",
            excluded_cgroup
                .rsplit_once("/excluded.slice")
                .map(|(top, _)| top)
                .unwrap()
        ),
    )
    .unwrap();

    // Running before the agent starts: matched from /proc before any probe attaches.
    let fixture = support::fixture("http_server.py");
    let (excluded_port, kept_port) = (free_port(), free_port());
    let excluded_server = http_server(&mut cgroups.command_in(
        &excluded_cgroup,
        python(),
        &[
            "-u",
            fixture.to_str().unwrap(),
            "--port",
            &excluded_port.to_string(),
        ],
    ));
    let kept_server = http_server(
        Command::new(python())
            .arg("-u")
            .arg(&fixture)
            .args(["--port", &kept_port.to_string()]),
    );
    // One rule from the file, one from a flag: both apply.
    let mut agent = Agent::start(&[
        "--config",
        config.to_str().unwrap(),
        "--exclude",
        "{executable: \"*/excluded-*\"}",
    ]);
    let endpoints = agent.endpoints_url();

    // Started after: matched at exec, held until then.
    let to_excluded_server = marker("to-excluded-server");
    let from_excluded_client = marker("from-excluded-client");
    let curl_pid = fetch(
        "curl".as_ref(),
        excluded_port,
        &format!("/{to_excluded_server}"),
    );
    let excluded_curl_pid = fetch(
        &excluded_curl,
        kept_port,
        &format!("/{from_excluded_client}"),
    );

    // The included ends of both exchanges are captured.
    agent.wait_for_chunks(
        |chunks| {
            chunks
                .iter()
                .any(|c| c.pid == curl_pid && c.contains_str(&to_excluded_server))
                && chunks
                    .iter()
                    .any(|c| c.pid == kept_server.pid() && c.contains_str(&from_excluded_client))
        },
        CHUNK_TIMEOUT,
    );
    let metrics = run(
        Command::new("curl").args(["-s", "--max-time", "10", &format!("{endpoints}/metrics")]),
        COMMAND_TIMEOUT,
    )
    .stdout_text();
    let chunks = agent.stop();
    let excluded_pids = [excluded_server.pid(), excluded_curl_pid];
    let leaked: Vec<_> = chunks
        .iter()
        .filter(|c| excluded_pids.contains(&c.pid))
        .collect();
    assert!(
        leaked.is_empty(),
        "chunks of excluded processes: {leaked:#?}"
    );
    let skipped = support::metric_sample(
        &metrics,
        "apiscope_kernel_events_total{counter=\"selection_skipped_calls\"}",
    );
    // At least the excluded server's read and write, and the excluded client's.
    assert!(skipped >= 4, "selection_skipped_calls = {skipped}");
    drop((excluded_server, kept_server));
}
