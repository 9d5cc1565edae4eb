//! End-to-end tests of the kernel side as a whole: every program verifies far below the
//! verifier's limit, whichever way sockets are found, and a probe group the kernel refuses
//! leaves the agent running without it, saying so everywhere an operator looks.

mod support;

use std::process::Command;

use support::{
    Agent, CHUNK_TIMEOUT, COMMAND_TIMEOUT, Direction::Egress, Direction::Ingress, PROBE_GROUPS,
    TempDir, agent_bin, agent_command, curl, marker, run, start_python_server,
};

/// The most instructions the verifier may process for one program: a fifth of its limit.
const VERIFIER_BUDGET: u64 = 200_000;

/// A tracepoint of the `batched_messages` group, hidden from the agent in the tests that make
/// that group fail.
const HIDDEN_TRACEPOINT: &str = "/sys/kernel/tracing/events/syscalls/sys_enter_recvmmsg";

/// The rows of the table of `apiscope check` whose header starts with `header`.
fn table<'a>(stdout: &'a str, header: &'a str) -> impl Iterator<Item = &'a str> {
    stdout
        .lines()
        .skip_while(move |line| !line.starts_with(header))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
}

/// `(program, group, verified instructions)` rows of `apiscope check --verbose`.
fn program_rows(stdout: &str) -> Vec<(String, String, u64)> {
    table(stdout, "PROGRAM")
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let count = fields
                .get(2)
                .and_then(|count| count.parse().ok())
                .unwrap_or_else(|| panic!("no verified count in `{line}`:\n{stdout}"));
            (fields[0].to_owned(), fields[1].to_owned(), count)
        })
        .collect()
}

/// `(group, state)` rows of `apiscope check`.
fn group_rows(stdout: &str) -> Vec<(String, String)> {
    table(stdout, "GROUP")
        .map(|line| {
            let mut fields = line.split_whitespace();
            let group = fields.next().unwrap_or_default().to_owned();
            (group, fields.next().unwrap_or_default().to_owned())
        })
        .collect()
}

#[test]
fn every_program_verifies_within_its_budget_with_each_socket_lookup() {
    // `auto` takes the socket tracepoints where the kernel has them (6.3+); the file-table
    // walk is then checked too, since older kernels use it.
    let mut lookups = vec!["auto"];
    for lookup in ["auto", "fd_table"] {
        if !lookups.contains(&lookup) {
            continue;
        }
        let out = run(
            agent_command().args(["check", "--verbose", "--socket-lookup", lookup]),
            COMMAND_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "`apiscope check --verbose --socket-lookup {lookup}` failed: {}",
            out.describe()
        );
        let stdout = out.stdout_text();
        let tracepoints = stdout
            .lines()
            .any(|line| line.starts_with("sockets") && line.contains("tracepoints"));
        if lookup == "auto" && tracepoints {
            lookups.push("fd_table");
        }
        let groups = group_rows(&stdout);
        assert_eq!(
            groups,
            PROBE_GROUPS.map(|group| (group.to_owned(), "on".to_owned())),
            "{stdout}"
        );
        let programs = program_rows(&stdout);
        assert!(
            programs.len() >= 40,
            "only {} programs listed:\n{stdout}",
            programs.len()
        );
        for (program, group, count) in &programs {
            assert!(
                PROBE_GROUPS.contains(&group.as_str()),
                "{program} is in unknown group {group}"
            );
            assert!(
                *count > 0 && *count <= VERIFIER_BUDGET,
                "{program} ({group}) took {count} verified instructions with {lookup}: over the \
                 budget of {VERIFIER_BUDGET}\n{stdout}"
            );
        }
        let socket_tracepoints = programs
            .iter()
            .any(|(program, ..)| program.starts_with("sock_enter_send"));
        assert_eq!(
            socket_tracepoints, tracepoints,
            "the socket tracepoints are loaded exactly when they find the sockets:\n{stdout}"
        );
    }
}

/// `command` run in a mount namespace of its own, where [`HIDDEN_TRACEPOINT`] is an empty
/// directory: the agent cannot attach there, as on a kernel built without that tracepoint.
fn with_hidden_tracepoint(empty: &TempDir, program: &std::path::Path) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind '{}' {HIDDEN_TRACEPOINT} && exec \"$0\" \"$@\"",
            empty.path().display()
        ))
        .arg(program);
    cmd
}

#[test]
fn a_group_the_kernel_refuses_leaves_the_agent_capturing_without_it() {
    let empty = TempDir::new("hidden-tracepoint");

    let mut check = with_hidden_tracepoint(&empty, &agent_bin());
    check.arg("check");
    let out = run(&mut check, COMMAND_TIMEOUT);
    assert_eq!(
        out.status.code(),
        Some(2),
        "check exits 2 when the agent would run without a group: {}",
        out.describe()
    );
    let stdout = out.stdout_text();
    let states: Vec<(String, String)> = group_rows(&stdout);
    for (group, state) in &states {
        let expected = if group == "batched_messages" {
            "OFF"
        } else {
            "on"
        };
        assert_eq!(state, expected, "state of {group}:\n{stdout}");
    }
    assert_eq!(states.len(), PROBE_GROUPS.len(), "{stdout}");
    assert!(
        stdout.contains("sys_enter_recvmmsg") && stdout.contains("recvmmsg or sendmmsg"),
        "check says what failed and what is lost:\n{stdout}"
    );

    let marker = marker("degraded");
    let port = support::free_port();
    let server = start_python_server("http_server.py", port, &[]);
    let mut cmd = with_hidden_tracepoint(&empty, &agent_bin());
    cmd.args(["run", "--dump"]);
    let mut agent = Agent::launch_command(cmd, &[], true);
    let log = agent.stderr_tail();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("probe group batched_messages is off"))
        .collect();
    assert_eq!(refusals.len(), 1, "one log line for the group:\n{log}");
    assert!(
        refusals[0].contains("batched_messages is off")
            && refusals[0].contains("sys_enter_recvmmsg"),
        "{log}"
    );
    assert!(
        log.lines().count() < 40,
        "a refused group must not flood the log:\n{log}"
    );
    let ready = log
        .lines()
        .find(|line| line.contains("ready:"))
        .unwrap_or_else(|| panic!("no ready line:\n{log}"));
    assert!(
        ready.contains("probe groups off: batched_messages"),
        "{ready}"
    );

    let readyz = agent.get("/readyz");
    assert_eq!(readyz, "ready; probe groups off: batched_messages\n");
    let metrics = agent.get("/metrics");
    assert_eq!(
        support::metric_sample(&metrics, "apiscope_probe_groups{state=\"off\"}"),
        1,
        "{metrics}"
    );
    assert_eq!(
        support::metric_sample(&metrics, "apiscope_probe_groups{state=\"on\"}"),
        PROBE_GROUPS.len() as u64 - 1,
        "{metrics}"
    );

    let out = curl(&["-s", &format!("http://127.0.0.1:{port}/{marker}")]);
    assert!(out.stdout_text().contains(&marker), "{}", out.describe());
    let (curl_pid, server_pid) = (out.pid, server.pid());
    agent.wait_for_chunks(
        |chunks| {
            let seen = |pid, direction| {
                chunks.iter().any(|chunk| {
                    chunk.pid == pid && chunk.direction == direction && chunk.contains_str(&marker)
                })
            };
            seen(curl_pid, Egress) && seen(server_pid, Ingress)
        },
        CHUNK_TIMEOUT,
    );
    agent.stop();
}
