//! End-to-end tests of the agent's command line: errors, `check`, and
//! shutdown on SIGTERM / SIGINT.

mod support;

use std::process::Command;

use support::{Agent, COMMAND_TIMEOUT, agent_bin, agent_command, random_hex, run};

/// The agent binary, with no backtrace settings inherited, so that error
/// output is what a user sees by default.
fn apiscope() -> Command {
    let mut cmd = agent_command();
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    cmd
}

#[test]
fn unknown_flag_is_a_clean_usage_error() {
    let flag = format!("--no-such-flag-{}", random_hex(4));
    let out = run(apiscope().arg(&flag), COMMAND_TIMEOUT);
    assert!(
        !out.status.success(),
        "an unknown flag was accepted: {}",
        out.describe()
    );
    let stderr = out.stderr_text();
    let lower = stderr.to_lowercase();
    assert!(
        !lower.contains("panicked") && !lower.contains("backtrace"),
        "an unknown flag made the agent panic: {}",
        out.describe()
    );
    assert!(
        stderr.contains(&flag),
        "stderr does not name the flag {flag}: {}",
        out.describe()
    );
}

#[test]
fn missing_config_file_is_reported_with_its_path() {
    // `run` is the command that loads eBPF; as root it must fail on the
    // config before it gets that far, and not run on without one.
    let path = format!("/nonexistent-apiscope-{}.yaml", random_hex(4));
    let out = run(apiscope().args(["run", "--config", &path]), COMMAND_TIMEOUT);
    assert!(
        !out.status.success(),
        "a missing config file was accepted: {}",
        out.describe()
    );
    let stderr = out.stderr_text();
    assert!(
        stderr.contains(&path),
        "stderr does not name {path}: {}",
        out.describe()
    );
    assert!(
        !stderr.contains("panicked"),
        "a missing config file made the agent panic: {}",
        out.describe()
    );
}

#[test]
fn check_reports_every_requirement_and_passes_as_root() {
    let out = run(apiscope().arg("check"), COMMAND_TIMEOUT);
    assert!(
        out.status.success(),
        "`apiscope check` failed: {}",
        out.describe()
    );
    let stdout = out.stdout_text();
    for item in ["BTF", "tracefs", "uprobe", "ring buffer"] {
        let needle = item.to_lowercase();
        assert!(
            stdout.lines().any(|l| l.to_lowercase().contains(&needle)),
            "`apiscope check` printed no line about {item}: {}",
            out.describe()
        );
    }
}

#[test]
fn sigterm_exits_zero() {
    Agent::start(&[]).stop_with(libc::SIGTERM);
}

#[test]
fn sigint_exits_zero() {
    Agent::start(&[]).stop_with(libc::SIGINT);
}

#[test]
fn missing_privileges_are_one_clear_error() {
    // Root without the capabilities that load and attach eBPF programs.
    let out = run(
        Command::new("capsh")
            .env_remove("RUST_BACKTRACE")
            .arg("--drop=cap_sys_admin,cap_bpf,cap_perfmon")
            .arg("--")
            .arg("-c")
            .arg(format!("exec {} run --dump", agent_bin().display())),
        COMMAND_TIMEOUT,
    );
    assert!(
        !out.status.success(),
        "the agent ran without CAP_BPF/CAP_PERFMON: {}",
        out.describe()
    );
    let stderr = out.stderr_text();
    assert!(
        stderr.contains("CAP_BPF") && !stderr.to_lowercase().contains("panicked"),
        "no clear privileges error: {}",
        out.describe()
    );
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "more than one line: {}",
        out.describe()
    );
}

#[test]
fn exporting_a_credential_header_is_refused() {
    let out = run(
        apiscope().args(["run", "--set", "export.http_headers=Authorization"]),
        COMMAND_TIMEOUT,
    );
    assert!(
        !out.status.success(),
        "the agent agreed to export Authorization: {}",
        out.describe()
    );
    let stderr = out.stderr_text();
    assert!(
        stderr.contains("authorization") && stderr.contains("credentials"),
        "no clear refusal: {}",
        out.describe()
    );
}

#[test]
fn without_a_collector_each_call_is_one_readable_line() {
    let port = support::free_port();
    let _server = support::start_python_server("http_server.py", port, &[]);
    let agent = Agent::start_exporting(&[], &[]);
    // The literal last segment tells this test's calls from others; the id must show templated.
    let url = format!("http://127.0.0.1:{port}/orders/42/lines");
    let out = support::curl(&["-s", "-o", "/dev/null", &url]);
    assert!(out.status.success(), "curl failed: {}", out.describe());
    let lines = agent.stop_for_lines();
    // `<time> <service> <side> <method> <route> <status> <duration> <arrow> <peer>`
    let of_call = |side: &str| -> Vec<&String> {
        lines
            .iter()
            .filter(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(2) == Some(&side)
                    && fields.get(3) == Some(&"GET")
                    && fields.get(4) == Some(&"/orders/{id}/lines")
                    && fields.get(5) == Some(&"200")
                    && fields.get(6).is_some_and(|d| d.ends_with("ms"))
            })
            .collect()
    };
    assert_eq!(
        of_call("server").len(),
        1,
        "server line; stdout: {lines:#?}"
    );
    let client = of_call("client");
    assert_eq!(client.len(), 1, "client line; stdout: {lines:#?}");
    assert!(
        client[0].contains(&format!("-> 127.0.0.1:{port}")) && client[0].contains(" curl "),
        "client line names the service and peer: {}",
        client[0]
    );
}

#[test]
fn health_endpoints_report_readiness_probes_and_counters() {
    let mut agent = Agent::start(&[]);
    let url = agent.endpoints_url();
    let get = |path: &str| {
        let out = run(
            Command::new("curl").args(["-s", "--max-time", "10", &format!("{url}{path}")]),
            COMMAND_TIMEOUT,
        );
        assert!(out.status.success(), "curl {path}: {}", out.describe());
        out.stdout_text()
    };
    assert_eq!(get("/healthz"), "ok\n");
    assert_eq!(get("/readyz"), "ready\n");
    // Traffic of its own, so that the counters have something to count.
    assert!(get("/healthz").contains("ok"));
    let metrics = get("/metrics");
    agent.stop();
    let value = |series: &str| support::metric_sample(&metrics, series);
    assert!(
        value("apiscope_probes_attached{kind=\"kernel\"}") > 10,
        "{metrics}"
    );
    assert_eq!(value("apiscope_ready"), 1, "{metrics}");
    assert!(
        value("apiscope_kernel_events_total{counter=\"events_sent\"}") > 0,
        "{metrics}"
    );
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
}
